"""The pretrain bundle's paper settings, parsed (nothing trains): paper.json (the ModAn pretraining recipe) composes
with multi_gpu_train.json and fast_train.json; supervised.json is the paper's supervised-165 baseline (Adam with torch's
defaults, constant rate) and supervised_sgd.json restores the SGD + warm-up cosine baseline of before."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.optimizers import WarmupCosineSchedule

from monai_modan.losses import MulSupConLoss
from monai_modan.utils.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "modan_pretrain"
CONFIGS = BUNDLE / "configs"
PAPER = {"image_size": 224, "batch_size": 256, "epochs": 1000, "temperature": 0.07, "threshold": 0.3, "lr": 0.05,
         "stem": "conv3x3", "num_views": 2}


def parser(*overlays: str, **overrides) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(CONFIGS / "train.json")] + [str(CONFIGS / o) for o in overlays])
    p.update({"bundle_root": str(BUNDLE), "device": "$torch.device('cpu')", **overrides})
    return p


def _raw(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


@pytest.mark.parametrize("overlays", [(), ("fast_train.json",), ("multi_gpu_train.json",),
                                      ("multi_gpu_train.json", "fast_train.json")])
def test_paper_overlay_composes_with_the_multi_gpu_and_fast_paths(overlays):
    p = parser("paper.json", *overlays)
    for key, value in PAPER.items():
        assert p.get_parsed_content(key) == value, key
    p.get_parsed_content("settings_check")  # the paper's values pass the bundle's checks
    loss = p.get_parsed_content("loss").loss
    assert isinstance(loss, MulSupConLoss) and (loss.temperature, loss.threshold) == (0.07, 0.3)
    defaults = inspect.signature(MulSupConLoss).parameters  # the paper's values are the package's defaults
    assert (defaults["temperature"].default, defaults["threshold"].default) == (0.07, 0.3)
    distributed = "multi_gpu_train.json" in overlays
    network = p["network"]
    assert (isinstance(network, dict) and network["_target_"] == "torch.nn.parallel.DistributedDataParallel") == \
        distributed
    if distributed:  # under DDP: the sampler shards the (plain path's) data, each rank a batch of 256
        assert p["train#sampler#_target_"] == "DistributedSampler" and p["train#dataloader#sampler"]
    assert p.get_parsed_content("train#dataloader#batch_size") == 256
    if "fast_train.json" in overlays:
        augment = p.get_parsed_content("fast#augment")
        assert tuple(augment.recipe.image_size) == (224, 224) and p.get_parsed_content("fast#trainer#batch_size") == 256
    if not distributed:  # the optimiser and schedule need the network, which DDP wraps only in a process group
        path = "fast" if "fast_train.json" in overlays else "train"
        p[f"{path}#lr_scheduler#warmup_steps"] = "$@warmup_epochs * 10"  # 10 steps per epoch, not the real corpus
        p[f"{path}#lr_scheduler#t_total"] = "$@epochs * 10"
        schedule = p.get_parsed_content(f"{path}#lr_scheduler")
        assert isinstance(schedule, WarmupCosineSchedule) and schedule.t_total == 10_000
        optimizer = p.get_parsed_content("optimizer")
        assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.05


def test_a_method_overlay_after_paper_json_keeps_its_own_values():
    simclr = parser("paper.json", "simclr.json")
    assert simclr.get_parsed_content("temperature") == 0.1 and simclr.get_parsed_content("image_size") == 224
    supervised = parser("paper.json", "supervised.json")
    assert supervised.get_parsed_content("lr") == 0.001 and supervised.get_parsed_content("epochs") == 1000


def _supervised_parts(*overlays: str, path: str = "train") -> tuple[torch.optim.Optimizer, object]:
    p = parser(*overlays, **{"network_def#num_classes": 5})  # not len(@data.classes): no datalist is read
    p.get_parsed_content("settings_check")
    p[f"{path}#lr_scheduler#warmup_steps"] = "$@warmup_epochs * 10"
    p[f"{path}#lr_scheduler#t_total"] = "$@epochs * 10"
    return p.get_parsed_content("optimizer"), p.get_parsed_content(f"{path}#lr_scheduler")


@pytest.mark.parametrize("fast", [False, True])
def test_supervised_overlay_is_the_papers_adam_with_torch_defaults(fast):
    overlays = ("supervised.json", "fast_train.json") if fast else ("supervised.json",)
    optimizer, schedule = _supervised_parts(*overlays, path="fast" if fast else "train")
    assert type(optimizer) is torch.optim.Adam
    adam = {k: v.default for k, v in inspect.signature(torch.optim.Adam).parameters.items()
            if k in ("lr", "betas", "eps", "weight_decay", "amsgrad")}
    assert {k: optimizer.defaults[k] for k in adam} == adam  # lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay
    assert isinstance(schedule, torch.optim.lr_scheduler.ConstantLR)
    for _ in range(30):  # a constant rate, no warm-up, no decay
        optimizer.step()
        schedule.step()
        assert optimizer.param_groups[0]["lr"] == adam["lr"]


def test_supervised_sgd_overlay_is_the_baseline_of_before():
    optimizer, schedule = _supervised_parts("supervised.json", "supervised_sgd.json")
    assert type(optimizer) is torch.optim.SGD and isinstance(schedule, WarmupCosineSchedule)
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"], optimizer.defaults["weight_decay"]) == (
        0.05, 0.9, 1e-4) and schedule.warmup_steps == 10
    train, old = _raw("train.json"), _raw("supervised_sgd.json")
    for key in ("lr", "momentum", "weight_decay", "warmup_epochs", "lr_schedule", "optimizer", "method_settings"):
        assert old[key] == train[key], key  # train.json's own values: the two cannot drift apart
    # method_settings {} as before: a supervised checkpoint of an earlier release resumes with this overlay


@pytest.mark.parametrize(("overlay", "overrides", "message"), [
    ("supervised.json", {"warmup_epochs": 2},
     r"lr_schedule=constant has no warm-up, but warmup_epochs=2: set warmup_epochs to 0"),
    ("paper.json", {"lr_schedule": "cosine"}, r"lr_schedule='cosine': must be one of warmup_cosine, constant"),
])
def test_a_bad_schedule_setting_is_refused_by_the_settings_check(overlay, overrides, message):
    with pytest.raises(RuntimeError) as info:  # the bundle parser wraps the check's one-line error
        parser(overlay, **overrides).get_parsed_content("settings_check")
    cause = info.value.__cause__
    assert isinstance(cause, UserInputError) and re.search(message, str(cause)), info.value
