"""The embedded real MedMNIST subset: what it holds, that it stays out of the task it is evaluated on, and that the
bundle overlay and the CLI reach it."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser

from monai_modan.data.downstream.task import load_task_datalist
from monai_modan.embedded import EMBEDDED_DIR, EMBEDDED_TASKS, embedded_pretraining_datalist, embedded_task_datalist

REPO = Path(__file__).resolve().parents[2]
BREASTMNIST_SHA256 = "3a22d2a4625e7dd8903f0f59030e81a3d0c222bece2e5e10927456cb50efdec1"  # the MedMNIST release


def test_pretraining_corpus_is_four_real_classes_without_breast_ultrasound(tmp_path):
    data = json.loads(Path(embedded_pretraining_datalist(tmp_path)).read_text())
    pairs = Counter((it["modality"], it["anatomy"]) for it in data["training"])
    assert pairs == {("XR", "chest"): 800, ("OP", "eye"): 400, ("CT", "abdomen"): 250, ("MR", "head"): 250}
    assert all(it["image"].startswith(str(EMBEDDED_DIR / "pretrain")) for it in data["training"])
    again = embedded_pretraining_datalist(tmp_path)  # reused, not rewritten
    assert Path(again).stat().st_mtime_ns == (tmp_path / "embedded" / "medmnist.json").stat().st_mtime_ns


def test_breastmnist_is_the_release_file_and_converts_with_malignant_positive(tmp_path):
    source = EMBEDDED_TASKS["breastmnist"]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == BREASTMNIST_SHA256
    items, _ = load_task_datalist(embedded_task_datalist("breastmnist", tmp_path))
    labels = [it["label"] for it in items]
    with np.load(source) as f:  # independent count: stored label 0 = malignant
        malignant = sum(int((f[f"{s}_labels"] == 0).sum()) for s in ("train", "val", "test"))
    assert len(labels) == 780 and sum(labels) == malignant == 210


def test_no_task_image_is_in_the_pretraining_corpus():
    """Leakage check by pixels: no BreastMNIST image equals any embedded pretraining image."""
    with np.load(EMBEDDED_TASKS["breastmnist"]) as f:
        task = {f[f"{s}_images"][i].tobytes() for s in ("train", "val", "test") for i in range(len(f[f"{s}_images"]))}
    for path in sorted((EMBEDDED_DIR / "pretrain").glob("*.npz")):
        with np.load(path) as f:
            assert not any(img.tobytes() in task for img in f["train_images"]), path.name


def test_unknown_embedded_task_is_named(tmp_path):
    with pytest.raises(ValueError, match="'busi'.*embedded: \\['breastmnist'\\]"):
        embedded_task_datalist("busi", tmp_path)


def test_demo_overlay_trains_on_the_embedded_corpus(tmp_path):
    configs = REPO / "bundles" / "modan_pretrain" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "demo.json")])
    parser.update({"bundle_root": str(REPO / "bundles" / "modan_pretrain"), "output_dir": str(tmp_path)})
    assert parser.get_parsed_content("datalist_path") == str(tmp_path / "embedded" / "medmnist.json")
    assert parser.get_parsed_content("image_size") == 28
    assert len(parser.get_parsed_content("data").items("training")) == 1700
