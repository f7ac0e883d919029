"""The hybrid.json overlay of the modan_pretrain bundle on the embedded synthetic corpus (CPU, 32 px): it trains
(plain and fast path), logs both terms, exports an encoder that plain MONAI resnet18 loads and the experiment runner
finds as the ``hybrid`` init, and refuses a negative λ before training."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.networks.nets import resnet18
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_modan.engines.pretrain import build_pretraining_model
from monai_modan.evaluation.inits import pretrained_inits
from monai_modan.losses import HybridContrastiveLoss, MulSupConLoss, NTXentLoss
from monai_modan.utils.errors import UserInputError, root_cause

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "modan_pretrain"
CONFIGS = BUNDLE / "configs"
SMALL = {"image_size": 32, "batch_size": 16, "checkpoint_interval": 1}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(out: Path, *overlays: str, **overrides) -> None:
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "hybrid.json")] + [str(CONFIGS / o) for o in overlays]
    run(config_file=files, bundle_root=str(BUNDLE), logging_file=str(CONFIGS / "logging.conf"),
        **{**SMALL, "output_dir": str(out), "model_file": str(out / "model.pt"), **overrides})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus):
    """A runs folder in the pretrain bundle's layout, holding one hybrid run of 1 epoch (λ = 0.5 given)."""
    root = tmp_path_factory.mktemp("runs")
    _run(root / "hybrid", epochs=1, datalist=corpus, instance_weight=0.5)
    return root


def test_the_overlay_trains_and_writes_everything(runs):
    out = runs / "hybrid"
    for name in ("checkpoint_final.pt", "encoder.pt", "config.json", "model.pt"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "checkpoint_final.pt", weights_only=True)
    config = ckpt["config"]
    assert ckpt["epoch"] == 1 and config["method"] == "hybrid"
    assert (config["instance_weight"], config["metadata_weight"], config["instance_temperature"]) == (0.5, 1.0, 0.1)
    assert config["temperature"] == 0.07 and config["threshold"] == 0.3  # the MulSupCon term's
    assert config["separate_heads"] is True
    assert any(k.startswith("instance_projection.") for k in ckpt["model"])  # one head per term
    assert any(k.startswith("projection.") for k in ckpt["model"])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_the_encoder_loads_into_plain_monai_resnet18_and_is_the_hybrid_init(runs):
    encoder = runs / "hybrid" / "encoder.pt"
    net = resnet18(spatial_dims=2, n_input_channels=1, conv1_t_size=3, conv1_t_stride=1, num_classes=2)
    missing, unexpected = net.load_state_dict(torch.load(encoder, weights_only=True), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    assert pretrained_inits(runs, scratch=False) == {"hybrid": str(encoder)}


def test_the_overlay_states_the_package_defaults():
    """The bundle states its values (model-zoo style); they must be the package's."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "hybrid.json")])
    hybrid = inspect.signature(HybridContrastiveLoss).parameters
    assert parser["instance_weight"] == hybrid["instance_weight"].default
    assert parser["metadata_weight"] == hybrid["metadata_weight"].default
    assert parser["instance_temperature"] == inspect.signature(NTXentLoss).parameters["temperature"].default
    assert parser["temperature"] == inspect.signature(MulSupConLoss).parameters["temperature"].default
    assert parser["separate_heads"] == inspect.signature(build_pretraining_model).parameters["separate_heads"].default
    loss = parser.get_parsed_content("loss", lazy=False, instantiate=True)
    assert isinstance(loss.loss, HybridContrastiveLoss) and loss.loss.instance_loss.temperature == 0.1


def test_the_logs_hold_both_terms(runs):
    events = EventAccumulator(str(runs / "hybrid" / "tensorboard"))
    events.Reload()
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    assert {"metadata_loss", "instance_loss", "positives_per_anchor"} <= set(scalars), sorted(scalars)
    assert scalars["metadata_loss"] > 0 and scalars["instance_loss"] > 0


def test_the_fast_overlay_trains_the_hybrid_like_the_plain_path(tmp_path, runs, corpus):
    _run(tmp_path, "fast_train.json", epochs=1, datalist=corpus, instance_weight=0.5)
    fast = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    plain = torch.load(runs / "hybrid" / "checkpoint_final.pt", weights_only=True)
    assert fast["config"] == plain["config"] and fast["iteration"] == plain["iteration"]
    assert fast["model"].keys() == plain["model"].keys() and (tmp_path / "encoder.pt").is_file()


@pytest.mark.parametrize("overrides, message", [
    ({"instance_weight": -0.5}, r"instance_weight=-0.5 \(hybrid: weight lambda of the NT-Xent term.*must be >= 0"),
    ({"instance_temperature": 0}, r"instance_temperature=0 .*must be > 0"),
    ({"instance_weight": 0.0, "metadata_weight": 0.0}, r"instance_weight=0.0 and metadata_weight=0.0: .*nothing"),
])
def test_bad_values_stop_before_training(tmp_path, corpus, overrides, message):
    with pytest.raises(Exception) as info:
        _run(tmp_path, epochs=1, datalist=corpus, **overrides)
    cause = root_cause(info.value)
    assert isinstance(cause, UserInputError) and re.search(message, str(cause)), repr(cause)
    assert not (tmp_path / "tensorboard").exists() and not list(tmp_path.glob("*.pt"))
