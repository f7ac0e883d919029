"""The spark.json overlay of the modan_pretrain bundle on the embedded synthetic corpus (CPU, 32 px): it trains end
to end, writes what every method writes plus the reconstruction picture, resumes exactly, refuses bad values before
training, and composes with multi_gpu_train.json (2 gloo processes) and fast_train.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run
from PIL import Image

from monai_modan.utils.errors import UserInputError, root_cause

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "modan_pretrain"
CONFIGS = BUNDLE / "configs"
SMALL = {"image_size": 32, "batch_size": 16, "checkpoint_interval": 1}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(out: Path, *overlays: str, **overrides) -> None:
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "spark.json")] + [str(CONFIGS / o) for o in overlays]
    run(config_file=files, bundle_root=str(BUNDLE), logging_file=str(CONFIGS / "logging.conf"),
        **{**SMALL, "output_dir": str(out), "model_file": str(out / "model.pt"), **overrides})


@pytest.fixture(scope="module")
def spark_run(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("spark")
    _run(out, epochs=2, datalist=corpus)
    return out


def test_the_overlay_trains_and_writes_everything(spark_run):
    out = spark_run
    for name in ("checkpoint_final.pt", "checkpoint_epoch=1.pt", "encoder.pt", "config.json", "model.pt",
                 "reconstruction.png"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir()), "TensorBoard scalars written"
    with Image.open(out / "reconstruction.png") as picture:
        assert picture.format == "PNG" and picture.height > picture.width  # 4 rows of 3 panels
    ckpt = torch.load(out / "checkpoint_final.pt", weights_only=True)
    config = ckpt["config"]
    assert ckpt["epoch"] == 2 and config["method"] == "spark" and config["num_views"] == 1
    assert config["mask_ratio"] == 0.6 and config["decoder_width"] == 256
    assert json.loads((out / "config.json").read_text()) == config
    # the optimiser: AdamW, lr = 2e-4 x batch / 256, weight decay 0.04 on weights and 0 on biases / norms / tokens
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.04, 0.0]
    assert all(g["initial_lr"] == pytest.approx(2e-4 * 16 / 256) and tuple(g["betas"]) == (0.9, 0.95) for g in groups)
    assert config["lr"] == pytest.approx(2e-4 * 16 / 256)
    assert any(k.startswith("decoder.") for k in ckpt["model"]) and any(k.startswith("densify.") for k in ckpt["model"])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_resume_reproduces_the_uninterrupted_run(tmp_path, spark_run, corpus):
    _run(tmp_path, epochs=2, datalist=corpus, resume_from=str(spark_run / "checkpoint_epoch=1.pt"))
    full = torch.load(spark_run / "checkpoint_final.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)["model"]
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], rtol=0, atol=0, msg=k)
    assert (tmp_path / "reconstruction.png").is_file()


def test_resume_with_another_mask_ratio_is_refused(tmp_path, spark_run, corpus):
    with pytest.raises(Exception) as info:
        _run(tmp_path, epochs=2, datalist=corpus, mask_ratio=0.5, resume_from=str(spark_run / "checkpoint_epoch=1.pt"))
    assert re.search(r"different configuration.*mask_ratio: checkpoint 0.6 vs now 0.5", str(root_cause(info.value)))


def test_the_exported_encoder_loads_into_plain_monai_resnet18(spark_run):
    from monai.networks.nets import resnet18

    net = resnet18(spatial_dims=2, n_input_channels=1, conv1_t_size=3, conv1_t_stride=1, num_classes=2)
    missing, unexpected = net.load_state_dict(torch.load(spark_run / "encoder.pt", weights_only=True), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected


@pytest.mark.parametrize("overrides, error, message", [
    ({"num_views": 2}, UserInputError, r"num_views=2 \(views per image\): SparK trains on one view per image"),
    ({"mask_ratio": 1.0}, UserInputError, r"mask_ratio=1.0 .*must be in \(0, 1\)"),
    ({"max_grad_norm": -1}, UserInputError, r"max_grad_norm=-1 .*must be > 0"),
    ({"image_size": 40}, ValueError, r"image_size=40 must be a positive multiple of the 16-pixel mask patch"),
])
def test_bad_values_stop_before_training(tmp_path, corpus, overrides, error, message):
    with pytest.raises(Exception) as info:
        _run(tmp_path, epochs=1, datalist=corpus, **overrides)
    cause = root_cause(info.value)
    assert isinstance(cause, error) and re.search(message, str(cause)), repr(cause)
    assert not (tmp_path / "tensorboard").exists() and not list(tmp_path.glob("*.pt"))


def test_the_overlay_composes_with_multi_gpu_and_fast_train():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / n) for n in ("train.json", "spark.json", "multi_gpu_train.json",
                                                   "fast_train.json")])
    assert parser["method"] == "spark" and parser["network"]["_target_"].endswith("DistributedDataParallel")
    assert parser["network_def"]["image_size"] == "@image_size"
    assert parser["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert parser["fast"]["trainer"]["max_grad_norm"] == "@max_grad_norm"
    assert parser["fast"]["augment"]["scale"] == "@crop_scale"
    assert parser.get_parsed_content("num_views") == 1 and parser.get_parsed_content("crop_scale") == [0.67, 1.0]


def test_the_fast_overlay_trains_spark_like_the_plain_path(tmp_path, spark_run, corpus):
    _run(tmp_path, "fast_train.json", epochs=2, datalist=corpus)
    for name in ("checkpoint_final.pt", "encoder.pt", "config.json", "model.pt", "reconstruction.png"):
        assert (tmp_path / name).is_file(), name
    fast = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    plain = torch.load(spark_run / "checkpoint_final.pt", weights_only=True)
    assert fast["config"] == plain["config"] and fast["iteration"] == plain["iteration"]
    assert fast["model"].keys() == plain["model"].keys()


def test_the_multi_gpu_overlay_runs_spark_ddp_on_cpu_with_gloo(tmp_path, corpus):
    """torchrun, 2 processes, gloo: the learning rate scales with the global batch (2 x 8), rank 0 writes the
    outputs and the picture."""
    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'spark.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(BUNDLE), "--datalist", corpus,
           "--image_size", "32", "--batch_size", "8", "--epochs", "1", "--output_dir", str(tmp_path),
           "--model_file", str(tmp_path / "model.pt"), "--logging_file", str(CONFIGS / "logging.conf")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    n_images = len(json.loads(Path(corpus).read_text())["training"])
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == (n_images // 2) // 8
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert ckpt["config"]["lr"] == pytest.approx(2e-4 * 8 * 2 / 256)
    assert (tmp_path / "encoder.pt").is_file() and (tmp_path / "reconstruction.png").is_file()


def test_the_inference_overlay_embeds_with_the_spark_encoder(spark_run, corpus):
    import numpy as np

    _run(spark_run, "inference.json", datalist=corpus)
    emb = np.load(spark_run / "embeddings_training.npz")
    n = len(json.loads(Path(corpus).read_text())["training"])
    assert emb["embeddings"].shape == (n, 512) and np.isfinite(emb["embeddings"]).all()
