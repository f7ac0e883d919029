"""Mixed corpora: several sources (a RadImageNet tree, a DICOM export, a datalist indexed before) -> one datalist
with one label space, per-source counts and label sources in the report; label spaces that cannot merge are named."""

from __future__ import annotations

import json

import pytest

from monai_modan.data.datalist import load_datalist, write_datalist
from monai_modan.data.index import MergeError, index_path, index_sources
from monai_modan.labels import LabelSpace
from monai_modan.synthetic import generate_pretraining_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    return generate_pretraining_corpus(root, images_per_class=1, image_size=32, progress=False)


def test_a_tree_and_an_export_make_one_corpus(corpus, tmp_path):
    space = LabelSpace.default()
    merged, classes, sources = index_sources([corpus.radimagenet_root, corpus.dicom_root], space, workers=0,
                                             cache=tmp_path / "c.json", progress=False)
    alone = [index_path(p, space, workers=0, progress=False)[0] for p in (corpus.radimagenet_root, corpus.dicom_root)]
    assert len(merged.records) == sum(len(r.records) for r in alone) == 54
    assert [s["type"] for s in sources] == ["radimagenet", "dicom"]
    assert [s["images"] for s in sources] == [len(r.records) for r in alone]
    assert "Modality" in sources[1]["label_sources"]["modality"] and \
        all(k.startswith("path:") for k in sources[0]["label_sources"]["modality"])
    fine = [r for r in merged.records if "class" in r.extra]
    assert len(fine) == 27 and all(classes[r.extra["class_index"]] == r.extra["class"] for r in fine)
    assert any("supervised baseline cannot" in n for n in merged.notes)
    out = write_datalist(merged, space, tmp_path / "corpus.json", classes=classes, sources=sources)
    data = load_datalist(out)
    assert data.space == space and len(data.items("training")) + sum(len(data.items(s)) for s in
                                                                     ("validation", "test")) == 54
    report = (tmp_path / "corpus.report.md").read_text()
    assert "## Sources (one corpus, one label space)" in report and str(corpus.dicom_root) in report
    assert len(json.loads((tmp_path / "corpus.report.json").read_text())["sources"]) == 2
    assert (tmp_path / "c.0.json").is_file()  # the export's own header cache (a cache holds one folder)


def test_a_datalist_indexed_before_merges_when_its_label_space_is_the_same(corpus, tmp_path):
    space = LabelSpace.default()
    result, classes = index_path(corpus.radimagenet_root, space, progress=False)
    first = write_datalist(result, space, tmp_path / "rin.json", classes=classes, report=False)
    merged, merged_classes, _ = index_sources([first, corpus.dicom_root], space, workers=0, progress=False)
    assert merged_classes == classes and len(merged.records) == 54
    assert {r.image for r in merged.records} >= {r.image for r in result.records}

    wider = LabelSpace.default(extra_groups=["laterality"])
    with pytest.raises(MergeError, match=r"rin\.json: its label space differs .*laterality/left"):
        index_sources([first, corpus.dicom_root], wider, workers=0, progress=False)
    with pytest.raises(MergeError, match="given twice"):
        index_sources([corpus.dicom_root, corpus.dicom_root], space, progress=False)
    with pytest.raises(FileNotFoundError, match="nope"):
        index_sources([corpus.dicom_root, tmp_path / "nope"], space, progress=False)
