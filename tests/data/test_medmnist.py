"""MedMNIST indexer: real files from ../shared/data/medmnist, mappings and the error paths."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest

from monai_modan.data.medmnist import MedMNISTError, index_medmnist, medmnist_reference
from monai_modan.labels import LabelSpace


@pytest.fixture(scope="module")
def space() -> LabelSpace:
    return LabelSpace.default()


def _split_counts(result, dataset):
    return Counter(r.split for r in result.records if r.extra["dataset"] == dataset)


def test_real_folder_counts_labels_and_references(medmnist_dir, space):
    result = index_medmnist(medmnist_dir, space)
    assert result.source == "medmnist" and not result.skipped
    assert _split_counts(result, "breastmnist") == {"training": 546, "validation": 78, "test": 156}
    assert _split_counts(result, "pneumoniamnist") == {"training": 4708, "validation": 524, "test": 624}
    assert _split_counts(result, "adrenalmnist3d_64") == {"training": 1188, "validation": 98, "test": 298}
    assert _split_counts(result, "vesselmnist3d") == {"training": 1335, "validation": 191, "test": 382}
    expected = {"breastmnist": ("US", "breast"), "pneumoniamnist": ("XR", "chest"), "retinamnist": ("OP", "eye"),
                "adrenalmnist3d": ("CT", "abdomen"), "adrenalmnist3d_64": ("CT", "abdomen"),
                "vesselmnist3d": ("MR", "head"), "vesselmnist3d_64": ("MR", "head")}
    for r in result.records:
        assert (r.labels["modality"], r.labels["anatomy"]) == expected[r.extra["dataset"]]
        assert r.label_sources["modality"].startswith("medmnist:")
    # the reference points at the right array element, and task_label is the file's own label (independent read)
    with np.load(medmnist_dir / "breastmnist.npz") as npz:
        train = [r for r in result.records if r.extra["dataset"] == "breastmnist" and r.split == "training"]
        for i in (0, 17, 545):
            assert train[i].image == f"{(medmnist_dir / 'breastmnist.npz').resolve()}#train_images/{i}"
            assert train[i].extra["task_label"] == int(npz["train_labels"][i, 0])
        assert Counter(r.extra["task_label"] for r in train) == {0: 147, 1: 399}  # 0 = malignant
    assert any("0 = malignant" in n for n in result.notes) and any("shape masks" in n for n in result.notes)
    item = train[0].to_item(space)
    assert item["modality"] == "US" and item["anatomy"] == "breast" and sum(item["label"]) == 2


def test_single_file_splits_and_mapping_override(medmnist_dir, space):
    path = medmnist_dir / "pneumoniamnist.npz"
    only_test = index_medmnist(path, space, splits=("test",))
    assert len(only_test.records) == 624 and {r.split for r in only_test.records} == {"test"}
    remapped = index_medmnist([path], space, modality_anatomy={"pneumoniamnist": ("CR", "THORAX")}, splits=("val",))
    assert {(r.labels["modality"], r.labels["anatomy"]) for r in remapped.records} == {("XR", "chest")}
    assert remapped.records[0].label_sources["anatomy"] == "mapping:pneumoniamnist"
    assert medmnist_reference(path, "val", 3) == f"{path.resolve()}#val_images/3"
    with pytest.raises(MedMNISTError, match="splits"):
        index_medmnist(path, space, splits=("validation",))


def test_unknown_stem_needs_a_mapping(medmnist_dir, space, tmp_path):
    mystery = tmp_path / "mystery.npz"
    shutil.copy(medmnist_dir / "breastmnist.npz", mystery)
    with pytest.raises(MedMNISTError, match="mystery.npz.*modality_anatomy"):
        index_medmnist(mystery, space)
    result = index_medmnist(mystery, space, modality_anatomy={"mystery": ("MRI", "knee")}, splits=("val",))
    assert {(r.labels["modality"], r.labels["anatomy"]) for r in result.records} == {("MR", "knee")}
    path_like = tmp_path / "pathmnist.npz"
    shutil.copy(medmnist_dir / "breastmnist.npz", path_like)
    with pytest.raises(MedMNISTError, match="histopathology"):
        index_medmnist(path_like, space)
    with pytest.raises(MedMNISTError, match="not a class or synonym"):
        index_medmnist(mystery, space, modality_anatomy={"mystery": ("MRI", "elbowpit")})


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_malformed_files_are_named(space, tmp_path):
    images, labels = np.zeros((4, 28, 28), np.uint8), np.zeros((4, 1), np.uint8)
    only_train = _write(tmp_path / "breastmnist.npz", train_images=images, train_labels=labels)
    with pytest.raises(MedMNISTError, match=r"breastmnist\.npz: missing array\(s\) \['val_images'"):
        index_medmnist(only_train, space)
    assert len(index_medmnist(only_train, space, splits=("train",)).records) == 4
    (tmp_path / "sub").mkdir()
    mismatched = _write(tmp_path / "sub" / "breastmnist.npz", train_images=images, train_labels=labels[:3])
    with pytest.raises(MedMNISTError, match="4 images but train_labels has 3 labels"):
        index_medmnist(mismatched, space, splits=("train",))
    text = tmp_path / "chestmnist.npz"
    text.write_text("not numpy")
    with pytest.raises(MedMNISTError, match="chestmnist.npz: not an .npz"):
        index_medmnist(text, space)
    npy = tmp_path / "organamnist.npz"
    np.save(tmp_path / "organamnist.npy", images)
    (tmp_path / "organamnist.npy").rename(npy)
    with pytest.raises(MedMNISTError, match="organamnist.npz: not an .npz"):
        index_medmnist(npy, space)
    with pytest.raises(MedMNISTError, match="no such file"):
        index_medmnist(tmp_path / "retinamnist.npz", space)
    # non-strict: bad files are skipped and counted, good ones indexed
    result = index_medmnist([only_train, text], space, splits=("train",), strict=False)
    assert len(result.records) == 4 and len(result.skipped) == 1 and "chestmnist.npz" in result.skipped[0].detail


def test_multilabel_and_size_variants(space, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_{k}": v for s in ("train", "val", "test") for k, v in
              (("images", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)), ("labels", rng.integers(0, 2, (3, 14))))}
    chest = _write(tmp_path / "chestmnist_64.npz", **arrays)
    result = index_medmnist(chest, space)
    assert len(result.records) == 9
    first = result.records[0]
    assert (first.labels["modality"], first.labels["anatomy"]) == ("XR", "chest")
    assert first.extra["task_label"] == arrays["train_labels"][0].tolist() and first.extra["dataset"] == "chestmnist_64"


def test_images_no_reader_can_show_are_refused(space, tmp_path):
    labels = np.zeros((3, 1), np.uint8)
    cases = {
        "complex": (np.ones((3, 8, 8), np.complex64), r"train_images has pixel type complex64; expected integer"),
        "twochannel": (np.zeros((3, 8, 8, 2), np.uint8), r"train_images has shape \(3, 8, 8, 2\): 2 channels per"),
        "nopixels": (np.zeros((3, 0, 8), np.uint8), r"train_images has shape \(3, 0, 8\): images without pixels"),
    }
    for stem, (images, message) in cases.items():
        path = _write(tmp_path / f"{stem}.npz", train_images=images, train_labels=labels)
        with pytest.raises(MedMNISTError, match=rf"{stem}\.npz: {message}"):
            index_medmnist(path, space, modality_anatomy={stem: ("CT", "chest")}, splits=("train",))


def test_float_images_with_nan_are_refused_or_skipped_one_by_one(space, tmp_path):
    images = np.random.default_rng(1).random((5, 8, 8)).astype(np.float32)
    images[1, 3, 3] = np.nan
    images[4] = np.inf
    path = _write(tmp_path / "floaty.npz", train_images=images, train_labels=np.arange(5)[:, None])
    mapping = {"floaty": ("CT", "chest")}
    with pytest.raises(MedMNISTError, match=r"floaty\.npz: train_images: 2 of 5 images have NaN/Inf pixel values "
                                            r"\(first indices \[1, 4\]\)"):
        index_medmnist(path, space, modality_anatomy=mapping, splits=("train",))
    result = index_medmnist(path, space, modality_anatomy=mapping, splits=("train",), strict=False)
    assert [r.extra["task_label"] for r in result.records] == [0, 2, 3]
    assert [(s.path, s.reason) for s in result.skipped] == [
        (medmnist_reference(path, "train", 1), "non-finite pixels"), (medmnist_reference(path, "train", 4),
                                                                     "non-finite pixels")]
