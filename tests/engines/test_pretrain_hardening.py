"""The plain pretraining bundle against bad input: bad values stop it before training with one line naming the key,
bad images are left out (counted, named in the log and in skipped.json) and the run goes on, too many stop it
before training, and a killed writer's temporary files are removed by the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import run

from monai_modan.engines.pretrain import build_pretraining_loss, check_pretraining_settings
from monai_modan.utils.errors import UserInputError, root_cause

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "modan_pretrain"
CONFIGS = BUNDLE / "configs"
SMALL = {"image_size": 32, "batch_size": 8, "checkpoint_interval": 1, "epochs": 1}


def _run(out: Path, **overrides) -> None:
    run(config_file=str(CONFIGS / "train.json"), bundle_root=str(BUNDLE), logging_file=str(CONFIGS / "logging.conf"),
        **{**SMALL, "output_dir": str(out), "model_file": str(out / "model.pt"), **overrides})


@pytest.fixture(scope="module")
def datalist_with_bad_images(tmp_path_factory):
    """A real corpus datalist plus one missing and one undecodable image."""
    from monai_modan.synthetic import default_pretraining_datalist

    root = tmp_path_factory.mktemp("bad_corpus")
    good = json.loads(Path(default_pretraining_datalist(root, images_per_class=4, image_size=32)).read_text())
    broken = root / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    template = good["training"][0]
    good["training"] += [{**template, "image": str(root / "gone.png")}, {**template, "image": str(broken)}]
    path = root / "with_bad.json"
    path.write_text(json.dumps(good))
    return path, len(good["training"])


@pytest.mark.parametrize(("key", "value", "message"), [
    ("epochs", "abc", r"epochs='abc' \(training epochs\): must be an integer >= 1"),
    ("lr", float("nan"), r"lr=nan \(learning rate\): must be a finite number"),
    ("temperature", 0, r"temperature=0 .*must be > 0"),
    ("checkpoint_interval", 0, r"checkpoint_interval=0 .*must be >= 1"),
    ("batch_size", 1, r"batch_size=1 .*>= 2 -- a contrastive batch needs at least 2 images"),
    ("threshold", 1.5, r"threshold=1.5 .*<= 1"),
    ("image_size", 64.5, r"image_size=64.5 .*integer"),
    ("num_views", 1, r"num_views=1 .*>= 2"),
    ("warmup_epochs", -1, r"warmup_epochs=-1 .*>= 0"),
])
def test_bad_bundle_values_stop_before_training(tmp_path, key, value, message):
    with pytest.raises(Exception) as info:
        _run(tmp_path, **{key: value})
    cause = root_cause(info.value)
    assert isinstance(cause, UserInputError), repr(cause)
    assert __import__("re").search(message, str(cause)), str(cause)
    assert "\n" not in str(cause)
    assert not (tmp_path / "tensorboard").exists() and not list(tmp_path.glob("*.pt"))  # nothing started


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(UserInputError, match="warmup_epochs=5 is longer than epochs=2"):
        check_pretraining_settings(epochs=2, warmup_epochs=5)


def test_a_zero_temperature_is_refused_not_replaced():
    """``temperature or 0.07`` used to train a requested T = 0 at 0.07 while the checkpoint recorded 0."""
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        build_pretraining_loss("mulsupcon", temperature=0)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        build_pretraining_loss("simclr", temperature=0.0)
    assert build_pretraining_loss("mulsupcon", temperature=None).loss.temperature == 0.07  # the loss's default
    assert build_pretraining_loss("simclr").loss.temperature == 0.1


def test_the_command_line_prints_one_line(tmp_path):
    """Through ``python -m monai.bundle run``: one line naming the key and value, not MONAI's chained traceback."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("MONAI_MODAN_TRACEBACK", None)
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json"),
                           "--bundle_root", str(BUNDLE), "--output_dir", str(tmp_path), "--epochs", "abc"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert lines[-1].startswith("error: epochs='abc' (training epochs): must be an integer >= 1"), proc.stderr
    assert "Traceback" not in proc.stderr and "ConfigExpression" not in proc.stderr, proc.stderr


def test_the_plain_path_trains_past_bad_images_and_names_them(tmp_path, datalist_with_bad_images, capfd):
    datalist, total = datalist_with_bad_images
    _run(tmp_path, datalist=str(datalist))
    assert (tmp_path / "encoder.pt").is_file()  # the run finished
    skipped = json.loads((tmp_path / "skipped.json").read_text())
    assert skipped["total"] == total
    names = {Path(s["image"]).name: s["reason"] for s in skipped["skipped"]}
    assert set(names) == {"gone.png", "broken.png"}
    assert all(name in reason for name, reason in names.items())  # each reason names its file
    captured = capfd.readouterr()
    logged = captured.out + captured.err  # the bundle's logging.conf logs to stdout
    assert "2 of" in logged and "gone.png" in logged and "broken.png" in logged
    # the verdicts are cached: a second check decodes nothing (the cache holds every image)
    cache = json.loads((tmp_path / "image_check.json").read_text())
    assert len(cache["files"]) == total - 1  # the missing file has no identity to key on


def test_too_many_bad_images_stop_before_training(tmp_path, datalist_with_bad_images):
    datalist, _ = datalist_with_bad_images
    with pytest.raises(Exception) as info:
        _run(tmp_path, datalist=str(datalist), max_bad_fraction=0.001)
    cause = root_cause(info.value)
    assert isinstance(cause, UserInputError) and "2 of" in str(cause) and "max_bad_fraction=0.001" in str(cause)
    assert not (tmp_path / "encoder.pt").exists() and (tmp_path / "skipped.json").is_file()


def test_a_killed_writers_temporaries_are_removed(tmp_path, datalist_with_bad_images):
    datalist, _ = datalist_with_bad_images
    tmp_path.mkdir(exist_ok=True)
    litter = [tmp_path / ".checkpoint_epoch=3.pt.k2j4h1.tmp", tmp_path / ".encoder.pt.abc.tmp"]
    for path in litter:
        torch.save({"x": torch.zeros(4)}, path)
    keep = tmp_path / "notes.tmp"
    keep.write_text("not ours")
    _run(tmp_path, datalist=str(datalist))
    assert not any(p.exists() for p in litter) and keep.exists()


def test_the_end_of_a_run_prints_where_its_outputs_are(tmp_path, datalist_with_bad_images, capfd):
    datalist, _ = datalist_with_bad_images
    _run(tmp_path, datalist=str(datalist))
    out = capfd.readouterr().out
    tail = out[out.index("pretraining finished; outputs:"):]
    for name in ("encoder.pt", "model.pt", "config.json", "checkpoint_final.pt", "tensorboard"):
        assert str(tmp_path / name) in tail, name
