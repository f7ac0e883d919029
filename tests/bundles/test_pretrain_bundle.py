"""The modan_pretrain bundle end to end on the embedded synthetic corpus (CPU, 32 px): every method runs, resuming
reproduces an uninterrupted run exactly, bad resumes and bad data are refused, and MONAI's bundle checks pass."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ckpt_export, run, verify_metadata, verify_net_in_out
from monai.optimizers import WarmupCosineSchedule

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "modan_pretrain"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "monai_modan" / "resources" / "bundle_meta_schema.json"

SMALL = {"image_size": 32, "batch_size": 16, "synthetic_images_per_class": 4, "checkpoint_interval": 1}


def _run(tmp: Path, *overlays: str, **overrides):
    files = [str(CONFIGS / "train.json")] + [str(CONFIGS / o) for o in overlays]
    kwargs = {**SMALL, "output_dir": str(tmp), "model_file": str(tmp / "model.pt"), **overrides}
    run(config_file=files if len(files) > 1 else files[0], bundle_root=str(BUNDLE),
        logging_file=str(CONFIGS / "logging.conf"), **kwargs)


def _chain(exc: BaseException) -> str:
    """Messages of an exception and its causes (the bundle runner wraps errors in RuntimeError)."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _assert_fails(match: str, *args, **kwargs) -> str:
    with pytest.raises(Exception) as info:
        _run(*args, **kwargs)
    text = _chain(info.value)
    assert re.search(match, text), text
    return text


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("mulsupcon")
    _run(out, epochs=2, datalist=corpus)
    return out


def test_mulsupcon_run_writes_everything(two_epoch_run):
    out = two_epoch_run
    for name in ("checkpoint_final.pt", "checkpoint_epoch=1.pt", "encoder.pt", "config.json", "model.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir()), "TensorBoard scalars written"
    ckpt = torch.load(out / "checkpoint_final.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["method"] == "mulsupcon"
    assert {"model", "optimizer", "scheduler", "rng", "config"} <= set(ckpt)
    assert not list(out.glob(".*.tmp")), "no temporary files left behind"


def test_resume_reproduces_uninterrupted_run(tmp_path, two_epoch_run, corpus):
    _run(tmp_path, epochs=2, datalist=corpus, resume_from=str(two_epoch_run / "checkpoint_epoch=1.pt"))
    full = torch.load(two_epoch_run / "checkpoint_final.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)["model"]
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], rtol=0, atol=0, msg=k)


def test_resume_from_other_configuration_is_refused(tmp_path, two_epoch_run, corpus):
    text = _assert_fails("different configuration.*image_size: checkpoint 32 vs now 24", tmp_path, epochs=2,
                         datalist=corpus, image_size=24, resume_from=str(two_epoch_run / "checkpoint_epoch=1.pt"))
    assert "CheckpointError" in text


def test_resume_from_a_file_that_is_not_weights(tmp_path, corpus):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"definitely not a checkpoint")
    _assert_fails("bogus.pt is not a weights file", tmp_path, epochs=1, datalist=corpus, resume_from=str(bogus))


@pytest.mark.parametrize("overlay, method", [("simclr.json", "simclr"), ("supervised.json", "supervised")])
def test_baselines_run_as_overlays(tmp_path, corpus, overlay, method):
    _run(tmp_path, overlay, epochs=1, datalist=corpus)
    ckpt = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert ckpt["config"]["method"] == method
    if method == "supervised":
        n_classes = len(json.loads(Path(corpus).read_text())["classes"])
        assert ckpt["model"]["classifier.weight"].shape[0] == n_classes
        # the paper's baseline: Adam with torch's defaults at a constant rate (supervised_sgd.json: the SGD one)
        group, state = ckpt["optimizer"]["param_groups"][0], next(iter(ckpt["optimizer"]["state"].values()))
        assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.999) and "exp_avg" in state


def test_exported_encoder_loads_into_plain_monai_resnet18(two_epoch_run):
    from monai.networks.nets import resnet18

    net = resnet18(spatial_dims=2, n_input_channels=1, conv1_t_size=3, conv1_t_stride=1, num_classes=2)
    missing, unexpected = net.load_state_dict(torch.load(two_epoch_run / "encoder.pt", weights_only=True), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected


def test_inference_overlay_writes_embeddings(two_epoch_run, corpus):
    import numpy as np

    _run(two_epoch_run, "inference.json", datalist=corpus)
    emb = np.load(two_epoch_run / "embeddings_training.npz")
    n = len(json.loads(Path(corpus).read_text())["training"])
    assert emb["embeddings"].shape == (n, 512) and np.isfinite(emb["embeddings"]).all()
    assert set(emb["modality"]) <= {"CT", "MR", "US"}


def test_too_few_images_for_a_batch(tmp_path, corpus):
    _assert_fails(r"\d+ training images with batch_size=4096", tmp_path, epochs=1, datalist=corpus, batch_size=4096)


def test_wrong_label_width_is_refused(tmp_path, corpus):
    data = json.loads(Path(corpus).read_text())
    data["training"][3]["label"] = data["training"][3]["label"][:-1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    _assert_fails(r"training\[3\] has a label of width", tmp_path, epochs=1, datalist=str(bad))


OVERLAYS = sorted(p.name for p in CONFIGS.glob("*.json") if p.name not in ("metadata.json", "train.json"))


@pytest.mark.parametrize("overlay", [None, *OVERLAYS])
def test_bundle_metadata_and_network_checks_pass_with_every_overlay(overlay, tmp_path, two_epoch_run):
    """metadata.json describes what every method exports, the encoder (encoder_def: [B, 1, H, W] -> [B, 512], the
    runs' encoder.pt), so MONAI's shape check and TorchScript export pass with any overlay -- supervised.json and
    spark.json included, whose network_def outputs class logits / a SparK output -- and need no data."""
    from monai_modan.networks import load_encoder

    files = [str(CONFIGS / "train.json")] + ([str(CONFIGS / overlay)] if overlay else [])
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    verify_net_in_out(net_id="encoder_def", meta_file=str(CONFIGS / "metadata.json"), config_file=files, n=1, any=8,
                      device="cpu", output_dir=str(tmp_path))
    ckpt_export(net_id="encoder_def", filepath=str(tmp_path / "encoder.ts"), ckpt_file=str(two_epoch_run / "encoder.pt"),
                meta_file=str(CONFIGS / "metadata.json"), config_file=files, bundle_root=str(BUNDLE),
                output_dir=str(tmp_path))
    scripted = torch.jit.load(str(tmp_path / "encoder.ts"))  # our own export, loaded by the test alone
    encoder = load_encoder(two_epoch_run / "encoder.pt").eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), encoder(x))
    assert scripted(x).shape == (2, 512)
    assert not (tmp_path / "synthetic").exists(), "the checks read no data"


def test_multi_gpu_overlay_runs_ddp_on_cpu_with_gloo(tmp_path, corpus):
    """torchrun, 2 processes, gloo, no datalist given: rank 0 alone generates the corpus and writes the checkpoint."""
    import os
    import subprocess
    import sys

    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(BUNDLE), "--synthetic_images_per_class", "4",
           "--image_size", "32", "--batch_size", "8", "--epochs", "1", "--output_dir", str(tmp_path),
           "--model_file", str(tmp_path / "model.pt"), "--logging_file", str(CONFIGS / "logging.conf")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["model"])
    assert (tmp_path / "synthetic" / "datalist.json").is_file()
    # the loss saw the global batch: 2 ranks x 8 images, so an anchor can have more than 7 same-label positives
    assert "positives_per_anchor" in proc.stdout + proc.stderr


def test_fast_overlay_writes_the_plain_paths_outputs_and_resumes_across_paths(tmp_path, two_epoch_run, corpus):
    """fast_train.json (packed corpus + FastPretrainer) writes what train.json writes, with the same configuration
    fingerprint, reuses its pack, and continues a plain-path checkpoint."""
    fast = tmp_path / "fast"
    _run(fast, "fast_train.json", epochs=2, datalist=corpus)
    for name in ("checkpoint_final.pt", "checkpoint_epoch=1.pt", "encoder.pt", "config.json", "model.pt",
                 "packed/index.json"):
        assert (fast / name).is_file(), name
    ckpt = torch.load(fast / "checkpoint_final.pt", weights_only=True)
    plain = torch.load(two_epoch_run / "checkpoint_final.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["iteration"] == plain["iteration"]
    assert ckpt["config"] == plain["config"]
    assert json.loads((fast / "config.json").read_text()) == plain["config"]
    assert ckpt["model"].keys() == plain["model"].keys()
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())

    # a plain-path checkpoint resumes on the fast path; the pack made by the first run is reused
    pack_mtime = (fast / "packed" / "images.u8").stat().st_mtime_ns
    _run(fast, "fast_train.json", epochs=2, datalist=corpus, resume_from=str(two_epoch_run / "checkpoint_epoch=1.pt"))
    assert (fast / "packed" / "images.u8").stat().st_mtime_ns == pack_mtime
    assert torch.load(fast / "checkpoint_final.pt", weights_only=True)["epoch"] == 2
    # and a changed configuration is refused as on the plain path
    _assert_fails("different configuration", fast, "fast_train.json", epochs=2, datalist=corpus, image_size=24,
                  resume_from=str(two_epoch_run / "checkpoint_epoch=1.pt"))


def test_fast_overlay_runs_ddp_on_cpu_with_gloo(tmp_path, corpus):
    """train + multi_gpu_train + fast_train under torchrun (2 processes, gloo): rank 0 packs, each rank trains on
    its strided half of the pack, the loss sees the global batch, rank 0 writes the outputs."""
    import os
    import subprocess
    import sys

    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}','{CONFIGS / 'fast_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(BUNDLE), "--datalist", corpus,
           "--image_size", "32", "--batch_size", "8", "--epochs", "1", "--output_dir", str(tmp_path),
           "--model_file", str(tmp_path / "model.pt"), "--logging_file", str(CONFIGS / "logging.conf")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    n_images = len(json.loads(Path(corpus).read_text())["training"])
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == (n_images // 2) // 8, "each rank steps through its half"
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert (tmp_path / "packed" / "index.json").is_file() and (tmp_path / "encoder.pt").is_file()
    # different images on each rank, one global-batch loss: both ranks log the same epoch loss
    losses = re.findall(r"epoch 1: loss (\S+),", proc.stdout + proc.stderr)
    assert len(losses) == 2 and losses[0] == losses[1], losses


def test_fast_overlay_under_ddp_fails_on_every_rank_when_rank_0_cannot_pack(tmp_path, corpus):
    """Rank 0 packs alone; when it cannot, rank 1 raises rank 0's error at once instead of waiting out the
    process-group timeout."""
    import os
    import subprocess
    import sys

    data = json.loads(Path(corpus).read_text())
    for item in data["training"]:
        item["image"] = str(tmp_path / "gone" / Path(item["image"]).name)  # every image missing
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}','{CONFIGS / 'fast_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(BUNDLE), "--datalist",
           str(broken), "--image_size", "32", "--batch_size", "8", "--epochs", "1", "--output_dir", str(tmp_path),
           "--logging_file", str(CONFIGS / "logging.conf")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"rank 0 could not pack {broken}" in output, output[-3000:]  # rank 1's error
    assert "images of split 'training' could be decoded" in output  # rank 0's own, quoted by rank 1


def test_resume_keeps_this_runs_schedule_horizon():
    """A run resumed with more epochs follows its own cosine to its own end, from the checkpoint's step."""
    from monai_modan.engines.pretrain import _load_schedule_progress

    def schedule(t_total):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
        return WarmupCosineSchedule(opt, warmup_steps=5, t_total=t_total)

    old = schedule(50)
    for _ in range(25):
        old.optimizer.step()
        old.step()
    resumed, fresh = schedule(100), schedule(100)
    _load_schedule_progress(resumed, old.state_dict(), "ckpt.pt")
    for _ in range(25):
        fresh.optimizer.step()
        fresh.step()
    assert resumed.t_total == 100 and resumed.last_epoch == 25
    lrs = []
    for _ in range(75):
        resumed.optimizer.step()
        resumed.step()
        fresh.optimizer.step()
        fresh.step()
        lrs.append(resumed.get_last_lr()[0])
        assert lrs[-1] == pytest.approx(fresh.get_last_lr()[0])
    assert lrs[-1] < 1e-3 and lrs == sorted(lrs, reverse=True)  # down to the end, never back up


def test_rotation_of_a_resumed_run_counts_the_checkpoints_already_there(tmp_path):
    from monai_modan.engines.pretrain import CheckpointRotation

    for epoch in (1, 2, 3, 10):
        (tmp_path / f"checkpoint_epoch={epoch}.pt").write_bytes(b"x")
    rotation = CheckpointRotation(keep_last=2, save_dir=tmp_path)
    (tmp_path / "checkpoint_epoch=11.pt").write_bytes(b"x")
    rotation.add(tmp_path / "checkpoint_epoch=11.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=10.pt", "checkpoint_epoch=11.pt"]


def test_a_corpus_too_small_for_every_rank_is_refused(corpus, monkeypatch):
    from monai_modan.engines import pretrain

    n = len(json.loads(Path(corpus).read_text())["training"])
    monkeypatch.setattr(pretrain, "world_size", lambda: 4)
    with pytest.raises(ValueError, match=rf"{n // 4} per rank on 4 ranks"):
        pretrain.load_pretraining_data(corpus, batch_size=n // 4 + 1)
