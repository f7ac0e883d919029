"""The pretrain bundle on a mixed corpus: a RadImageNet-layout tree and a DICOM export indexed together, one epoch
(CPU, 32 px); the run's config.json names the datalist, which the experiment's leakage check reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import run

from monai_modan.data.datalist import write_datalist
from monai_modan.data.index import index_sources
from monai_modan.evaluation.leakage import pretraining_datalist
from monai_modan.labels import LabelSpace
from monai_modan.synthetic import generate_pretraining_corpus

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "modan_pretrain" / "configs"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pretrain_on_a_tree_plus_an_export(tmp_path):
    corpus = generate_pretraining_corpus(tmp_path / "data", images_per_class=1, image_size=32, progress=False)
    space = LabelSpace.default()
    merged, classes, sources = index_sources([corpus.radimagenet_root, corpus.dicom_root], space, workers=0,
                                             progress=False)
    datalist = write_datalist(merged, space, tmp_path / "mixed.json", classes=classes, sources=sources)
    out = tmp_path / "run"
    run(config_file=str(CONFIGS / "train.json"), bundle_root=str(REPO / "bundles" / "modan_pretrain"),
        logging_file=str(CONFIGS / "logging.conf"), output_dir=str(out), model_file=str(out / "model.pt"),
        datalist=str(datalist), epochs=1, batch_size=16, image_size=32)
    assert (out / "encoder.pt").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["datalist"] == str(datalist.resolve())
    assert pretraining_datalist(out / "encoder.pt") == (datalist.resolve(), "")
