"""Downstream converters: each on a tiny synthetic tree in the data set's real layout, plus the real BreastMNIST."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_modan.data.downstream import (
    TASK_FORMAT, DownstreamError, DuplicatePolicy, SlicePolicy, TaskDatalistError, TaskSource, UnknownLayoutError,
    apply_duplicate_policy, convert, convert_busi, convert_csv, convert_ddti, convert_ddti_csv, convert_folder,
    convert_json, convert_medmnist, convert_mrnet, convert_mrnet_slices, ddti_case, detect_source,
    load_task_datalist, pixel_hash, select_slices, tirads_label, write_task_datalist)


def _png(path: Path, pixels: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, np.uint8)).save(path, **save)
    return path


def _noise(seed: int, shape=(16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _by_name(items) -> dict[str, dict]:
    return {Path(it["image"]).name: it for it in items}


# ------------------------------------------------------------------------------------------------------ MRNet


@pytest.fixture
def mrnet_tree(tmp_path: Path) -> Path:
    """MRNet-v1.0 with 4 train + 2 valid exams (S x 16 x 16, S = 5..7). Exam 0003 lacks its sagittal volume;
    sagittal 0009 has no label."""
    root = tmp_path / "mrnet" / "MRNet-v1.0"
    labels = {"train": {"0000": 1, "0001": 0, "0002": 1, "0003": 0}, "valid": {"0004": 0, "0005": 1}}
    for split, exams in labels.items():
        (root / f"{split}-acl.csv").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}-acl.csv").write_text("".join(f"{e},{y}\n" for e, y in exams.items()))
        (root / f"{split}-meniscus.csv").write_text("".join(f"{e},{1 - y}\n" for e, y in exams.items()))
        for p, plane in enumerate(("axial", "coronal", "sagittal")):
            folder = root / split / plane
            folder.mkdir(parents=True)
            for e in exams:
                if plane == "sagittal" and e == "0003":
                    continue
                n = 5 + int(e) % 3
                np.save(folder / f"{e}.npy", _noise(int(e) * 10 + p, (n, 16, 16)))
    np.save(root / "train" / "sagittal" / "0009.npy", _noise(99, (5, 16, 16)))
    return root.parent


def _volume(tree: Path, split: str, exam: str, plane: str = "sagittal") -> np.ndarray:
    return np.load(tree / "MRNet-v1.0" / split / plane / f"{exam}.npy")


def test_select_slices():
    assert select_slices(7) == [3] and select_slices(6) == [3]
    assert select_slices(7, "central", 3) == [2, 3, 4]
    assert select_slices(6, "central", 2) == [2, 3]
    assert select_slices(3, "central", 5) == [0, 1, 2]  # more than the volume holds: every slice
    assert select_slices(4, SlicePolicy.ALL) == [0, 1, 2, 3]
    assert select_slices(1) == [0]
    with pytest.raises(ValueError):
        select_slices(5, "central", 0)
    with pytest.raises(ValueError):
        select_slices(5, "middle")


def test_mrnet_central_slice_pixels_labels_groups(mrnet_tree, tmp_path):
    out = tmp_path / "out" / "knee.json"
    result = convert_mrnet(mrnet_tree, out)
    assert result.task == "knee_acl" and result.positive == "acl_tear"
    assert len(result.items) == 5 and result.counts == {0: 2, 1: 3}
    for it in result.items:
        split = "valid" if it["exam"] in ("0004", "0005") else "train"
        volume = _volume(mrnet_tree, split, it["exam"])
        assert it["group"] == it["exam"] and it["source_split"] == split
        assert it["slice"] == volume.shape[0] // 2
        png = np.asarray(Image.open(it["image"]))
        assert png.dtype == np.uint8 and np.array_equal(png, volume[volume.shape[0] // 2])  # lossless, right plane
        assert Path(it["image"]).parent == out.parent / "images"
    labels = {it["exam"]: it["label"] for it in result.items}
    assert labels == {"0000": 1, "0001": 0, "0002": 1, "0004": 0, "0005": 1}
    reasons = {Path(e["image"]).name: e["reason"] for e in result.excluded}
    assert "no sagittal volume" in reasons["0003.npy"] and "no label" in reasons["0009.npy"]
    items, meta = load_task_datalist(out)
    assert meta["format"] == TASK_FORMAT and meta["options"]["slices"] == "central"
    assert [it["image"] for it in items] == [it["image"] for it in result.items]


def test_mrnet_k_central_slices_share_the_exam_group(mrnet_tree, tmp_path):
    result = convert_mrnet(mrnet_tree / "MRNet-v1.0", tmp_path / "k.json", num_slices=3, splits=("train",),
                           plane="coronal", label="meniscus")
    assert result.positive == "meniscal_tear" and len(result.items) == 4 * 3  # coronal 0003 exists
    for exam in ("0000", "0001", "0002", "0003"):
        slices = [it for it in result.items if it["exam"] == exam]
        volume = _volume(mrnet_tree, "train", exam, "coronal")
        c = volume.shape[0] // 2
        assert sorted(it["slice"] for it in slices) == [c - 1, c, c + 1]
        assert {it["group"] for it in slices} == {exam}
        for it in slices:
            assert np.array_equal(np.asarray(Image.open(it["image"])), volume[it["slice"]])
    assert {it["exam"]: it["label"] for it in result.items}["0000"] == 0  # meniscus file: 1 - acl


def test_mrnet_all_slices(mrnet_tree, tmp_path):
    result = convert_mrnet(mrnet_tree, tmp_path / "all.json", slices="all", splits=("valid",))
    expected = sum(_volume(mrnet_tree, "valid", e).shape[0] for e in ("0004", "0005"))
    assert len(result.items) == expected and result.counts[1] == _volume(mrnet_tree, "valid", "0005").shape[0]


def test_mrnet_label_file_with_header_and_unpadded_ids(mrnet_tree, tmp_path):
    root = mrnet_tree / "MRNet-v1.0"
    (root / "valid-acl.csv").write_text("exam,label\n4,0\n5,1\n")
    result = convert_mrnet(mrnet_tree, tmp_path / "v.json", splits=("valid",))
    assert sorted(it["exam"] for it in result.items) == ["0004", "0005"]


def test_mrnet_errors(mrnet_tree, tmp_path):
    root = mrnet_tree / "MRNet-v1.0"
    with pytest.raises(DownstreamError, match="train-abnormal.csv"):
        convert_mrnet(mrnet_tree, tmp_path / "x.json", label="abnormal")
    with pytest.raises(DownstreamError, match="plane"):
        convert_mrnet(mrnet_tree, tmp_path / "x.json", plane="oblique")
    (root / "valid-acl.csv").write_text("0004,0\n0005,2\n")
    with pytest.raises(DownstreamError, match=r"valid-acl.csv: line 2 .*'2' is not binary"):
        convert_mrnet(mrnet_tree, tmp_path / "x.json")
    (root / "valid-acl.csv").write_text("0004,1\n0005,1\n")
    (root / "train-acl.csv").write_text("0000,1\n")
    with pytest.raises(TaskDatalistError, match="only one class"):
        convert_mrnet(mrnet_tree, tmp_path / "x.json")
    with pytest.raises(DownstreamError, match="not an MRNet release"):
        convert_mrnet(tmp_path / "nowhere", tmp_path / "x.json")


def test_mrnet_acl_slice_csv(tmp_path):
    folder = tmp_path / "acl_slices"
    for name, seed in (("0001_s010.png", 1), ("0001_s011.png", 2), ("0002_s009.png", 3), ("0003_s012.png", 4)):
        _png(folder / "images" / name, _noise(seed))
    (folder / "labels.csv").write_text("filename,acl_label\nimages/0001_s010.png,yes\nimages/0001_s011.png,yes\n"
                                       "images/0002_s009.png,no\nimages/0003_s012.png,No\n")
    assert detect_source(folder / "labels.csv") == TaskSource.MRNET_SLICES
    result = convert(folder / "labels.csv", out=tmp_path / "acl.json")
    by = _by_name(result.items)
    assert {n: it["label"] for n, it in by.items()} == {"0001_s010.png": 1, "0001_s011.png": 1,
                                                         "0002_s009.png": 0, "0003_s012.png": 0}
    assert {n: it["group"] for n, it in by.items()}["0001_s011.png"] == "0001"
    assert len(result.groups) == 3
    (folder / "labels.csv").write_text("filename,acl_label\nimages/0001_s010.png,yes\nimages/0004_s001.png,no\n")
    with pytest.raises(DownstreamError, match=r"labels.csv: line 3: image file not found: 'images/0004_s001.png'"):
        convert_mrnet_slices(folder / "labels.csv", tmp_path / "acl.json")


# ------------------------------------------------------------------------------------------------------- BUSI


@pytest.fixture
def busi_tree(tmp_path: Path) -> Path:
    """Dataset_BUSI_with_GT with masks and three duplicate sets:
    benign (3) = benign (1) (same pixels, other bytes), malignant (3) = benign (4) (conflicting labels),
    normal (2) = benign (2) (normal counts as benign: same label)."""
    root = tmp_path / "busi" / "Dataset_BUSI_with_GT"
    img = {f"benign ({i})": _noise(i) for i in (1, 2, 4)}
    img.update({f"malignant ({i})": _noise(10 + i) for i in (1, 2)})
    img["normal (1)"] = _noise(21)
    for name, pixels in img.items():
        _png(root / name.split(" ")[0] / f"{name}.png", np.stack([pixels] * 3, -1))  # BUSI PNGs are RGB
    _png(root / "benign" / "benign (3).png", img["benign (1)"], compress_level=0)  # grey, uncompressed
    _png(root / "malignant" / "malignant (3).png", np.stack([img["benign (4)"]] * 3, -1))
    _png(root / "normal" / "normal (2).png", img["benign (2)"])
    for mask in ("benign (1)_mask.png", "benign (2)_mask.png", "benign (2)_mask_1.png", "malignant (1)_mask.png",
                 "normal (1)_mask.png"):
        cls = mask.split(" ")[0]
        _png(root / cls / mask, (_noise(5) > 128).astype(np.uint8) * 255)
    return root.parent


def test_busi_default_normal_as_benign_masks_and_duplicates(busi_tree, tmp_path):
    root = busi_tree / "Dataset_BUSI_with_GT"
    assert (root / "benign" / "benign (1).png").read_bytes() != (root / "benign" / "benign (3).png").read_bytes()
    result = convert_busi(busi_tree, tmp_path / "busi.json")
    by = _by_name(result.items)
    assert not any("_mask" in n for n in by)
    assert set(by) == {"benign (1).png", "benign (2).png", "malignant (1).png", "malignant (2).png", "normal (1).png"}
    assert result.counts == {0: 3, 1: 2} and by["normal (1).png"]["label"] == 0
    assert by["benign (2).png"]["group"] == "benign (2)" and len(result.groups) == 5
    reasons = {Path(e["image"]).name: e["reason"] for e in result.excluded}
    assert "duplicate of benign (1).png" in reasons["benign (3).png"]
    assert "duplicate of benign (2).png" in reasons["normal (2).png"]
    assert "conflicting" in reasons["benign (4).png"] and "conflicting" in reasons["malignant (3).png"]
    assert any("1 set(s) with conflicting labels" in n for n in result.notes)
    assert any("no patient ids" in n for n in result.notes)


def test_busi_normal_options_and_duplicate_policies(busi_tree, tmp_path):
    no_normal = convert_busi(busi_tree, tmp_path / "a.json", include_normal=False)
    assert not any(it["class"] == "normal" for it in no_normal.items) and no_normal.counts == {0: 2, 1: 2}
    assert sum("include_normal=False" in e["reason"] for e in no_normal.excluded) == 2
    normal_pos = convert_busi(busi_tree, tmp_path / "b.json", normal_label=1)
    names = set(_by_name(normal_pos.items))
    assert "benign (2).png" not in names and "normal (2).png" not in names  # now a conflicting pair: both dropped
    assert normal_pos.counts == {0: 1, 1: 3}
    keep = convert_busi(busi_tree, tmp_path / "c.json", duplicates="keep")
    assert len(keep.items) == 9 and keep.counts == {0: 6, 1: 3}
    drop_all = convert_busi(busi_tree, tmp_path / "d.json", duplicates=DuplicatePolicy.DROP_ALL)
    assert set(_by_name(drop_all.items)) == {"malignant (1).png", "malignant (2).png", "normal (1).png"}
    with pytest.raises(DownstreamError, match="normal_label"):
        convert_busi(busi_tree, tmp_path / "e.json", normal_label=2)


def test_busi_undecodable_image_and_bad_layout(busi_tree, tmp_path):
    (busi_tree / "Dataset_BUSI_with_GT" / "malignant" / "malignant (4).png").write_bytes(b"not a png")
    result = convert_busi(busi_tree / "Dataset_BUSI_with_GT", tmp_path / "busi.json")
    reasons = {Path(e["image"]).name: e["reason"] for e in result.excluded}
    assert "cannot decode" in reasons["malignant (4).png"]
    os.rename(busi_tree / "Dataset_BUSI_with_GT" / "malignant", busi_tree / "Dataset_BUSI_with_GT" / "cancer")
    with pytest.raises(DownstreamError, match=r"not a BUSI release: no class folder\(s\) \['malignant'\]"):
        convert_busi(busi_tree, tmp_path / "x.json")


def test_pixel_hash_ignores_encoding_but_not_content(tmp_path):
    pixels = _noise(3)
    a = _png(tmp_path / "a.png", pixels)
    b = _png(tmp_path / "b.png", np.stack([pixels] * 3, -1), compress_level=9)
    c = _png(tmp_path / "c.png", pixels ^ 1)  # every pixel differs in its lowest bit
    np.save(tmp_path / "d.npy", pixels)
    assert a.read_bytes() != b.read_bytes() and pixel_hash(a) == pixel_hash(b)
    assert pixel_hash(c) != pixel_hash(a) and pixel_hash(tmp_path / "d.npy") != pixel_hash(a)
    items = [{"image": "x", "label": 0}, {"image": "y", "label": 0}, {"image": "z", "label": 1}]
    kept, excluded, _ = apply_duplicate_policy(items, ["h", "h", "g"], "drop_all_but_first")
    assert [it["image"] for it in kept] == ["x", "z"] and excluded[0]["image"] == "y"


# ------------------------------------------------------------------------------------------------------- DDTI

_DDTI_XML = ("<?xml version='1.0' encoding='UTF-8'?><case><number>{n}</number><age>49</age><sex>F</sex>"
             "<composition>solid</composition><echogenicity>hypoechogenicity</echogenicity>"
             "<margins>well defined</margins><calcifications>non</calcifications><tirads>{t}</tirads>"
             "<reportbacaf/><reporteco/><mark><image>1</image><svg>[{{\"points\": []}}]</svg></mark></case>")


@pytest.fixture
def ddti_tree(tmp_path: Path) -> Path:
    root = tmp_path / "ddti"
    root.mkdir()
    cases = {"1": ("2", 2), "2": ("3", 1), "3": ("4a", 1), "4": ("4b", 1), "5": ("4c", 1), "6": ("5", 2),
             "7": ("", 1), "8": ("5", 0), "11": ("4", 1), "12": ("6", 1)}
    for case, (tirads, n_images) in cases.items():
        (root / f"{case}.xml").write_text(_DDTI_XML.format(n=case, t=tirads))
        for k in range(1, n_images + 1):
            _png(root / f"{case}_{k}.jpg", np.stack([_noise(int(case) * 10 + k)] * 3, -1))
    (root / "9.xml").write_text("<case><number>9</number><tirads>3</tir")  # truncated XML
    _png(root / "9_1.jpg", _noise(91))
    _png(root / "10_1.jpg", _noise(101))  # no 10.xml
    return root


def test_tirads_label():
    assert [tirads_label(t) for t in ("2", "3", "4a", "4b", "4c", "5")] == [0, 0, 1, 1, 1, 1]
    assert [tirads_label(t, "4b") for t in ("3", "4a", "4b", "5")] == [0, 0, 1, 1]
    assert tirads_label(" 4A ") == 1 and tirads_label("4") == 1 and tirads_label("4", "4b") is None
    assert tirads_label("4", "5") == 0
    with pytest.raises(DownstreamError, match="unknown TI-RADS"):
        tirads_label("6")
    with pytest.raises(DownstreamError, match="malignant_from"):
        tirads_label("3", "7")


def test_ddti_default_cut_groups_and_exclusions(ddti_tree, tmp_path):
    assert detect_source(ddti_tree) == TaskSource.DDTI
    result = convert(ddti_tree, out=tmp_path / "ddti.json")
    by = _by_name(result.items)
    assert {n: it["label"] for n, it in by.items()} == {
        "1_1.jpg": 0, "1_2.jpg": 0, "2_1.jpg": 0, "3_1.jpg": 1, "4_1.jpg": 1, "5_1.jpg": 1, "6_1.jpg": 1,
        "6_2.jpg": 1, "11_1.jpg": 1}
    assert by["1_2.jpg"]["group"] == "1" and by["6_1.jpg"]["group"] == by["6_2.jpg"]["group"] == "6"
    assert by["3_1.jpg"]["tirads"] == "4a"
    reasons = {Path(e["image"]).name: e["reason"] for e in result.excluded}
    assert "no TI-RADS value" in reasons["7_1.jpg"]
    assert "has no image" in reasons["8.xml"]
    assert "unreadable XML 9.xml" in reasons["9_1.jpg"]
    assert "no 10.xml" in reasons["10_1.jpg"]
    assert "unknown TI-RADS category '6'" in reasons["12_1.jpg"]


def test_ddti_cut_variants(ddti_tree, tmp_path):
    at_4b = convert_ddti(ddti_tree, tmp_path / "b.json", malignant_from="4b")
    labels = {Path(it["image"]).name: it["label"] for it in at_4b.items}
    assert labels["3_1.jpg"] == 0 and labels["4_1.jpg"] == 1 and "11_1.jpg" not in labels
    assert any("straddles the cut" in e["reason"] for e in at_4b.excluded)
    at_5 = convert_ddti(ddti_tree, tmp_path / "c.json", malignant_from="5")
    assert at_5.counts == {0: 7, 1: 2}
    no_4a = convert_ddti(ddti_tree, tmp_path / "d.json", exclude_tirads=["4A"])
    assert "3_1.jpg" not in _by_name(no_4a.items) and no_4a.counts == {0: 3, 1: 5}
    with pytest.raises(DownstreamError, match="malignant_from"):
        convert_ddti(ddti_tree, tmp_path / "e.json", malignant_from="4d")
    with pytest.raises(DownstreamError, match="no DDTI case files"):
        convert_ddti(tmp_path / "elsewhere", tmp_path / "e.json")


def test_ddti_fold_csvs(tmp_path):
    root = tmp_path / "ddti_folds"
    labels = {"22_1.jpg": "benign", "22_2.jpg": "benign", "23_1.jpg": "malignant", "24_1.jpg": "malignant",
              "25_1.jpg": "malignant"}
    for i, name in enumerate(labels):
        _png(root / "images" / name, _noise(i))
    names = list(labels)
    for fold, test in ((1, names[:2]), (2, names[2:])):
        for part, rows in (("test", test), ("train", [n for n in names if n not in test])):
            (root / f"fold_{fold}").mkdir(exist_ok=True)
            (root / f"fold_{fold}" / f"{part}.csv").write_text(
                "img_dir,label\n" + "".join(f"images/{n},{labels[n]}\n" for n in rows))
    assert detect_source(root) == TaskSource.DDTI_CSV
    result = convert(root, out=tmp_path / "folds.json")
    by = _by_name(result.items)
    assert len(by) == 5 and result.counts == {0: 2, 1: 3}
    assert by["22_1.jpg"]["group"] == by["22_2.jpg"]["group"] == "22" and len(result.groups) == 4
    with pytest.raises(TaskDatalistError, match=r"only one class \(all 2 items have label 0"):
        convert_ddti_csv(root / "fold_1" / "test.csv", tmp_path / "one.json")  # benign rows only
    with open(root / "fold_2" / "test.csv", "a") as f:
        f.write("images/22_1.jpg,malignant\n")
    with pytest.raises(DownstreamError, match=r"22_1.jpg has label 0 at .*line 2 but label 1 at .*fold_2"):
        convert_ddti_csv(root, tmp_path / "x.json")
    assert ddti_case("images/31_4.jpg") == "31" and ddti_case("x.jpg") == "x"


# ---------------------------------------------------------------------------------------------------- generic


def test_folder_per_class(tmp_path):
    root = tmp_path / "classes"
    for cls, n in (("tumour", 3), ("healthy", 2), ("unsure", 1)):
        for i in range(n):
            _png(root / cls / f"{cls}_{i}.png", _noise(hash((cls, i)) % 1000))
    _png(root / "tumour" / "tumour_0_mask.png", _noise(7))
    (root / "tumour" / "notes.txt").write_text("not an image")
    assert detect_source(root) == TaskSource.FOLDER
    with pytest.raises(DownstreamError, match=r"needs option\(s\) \['positive'\].*'healthy'"):
        convert(root, out=tmp_path / "f.json")
    result = convert(root, out=tmp_path / "f.json", positive="Tumour", negative="healthy")
    assert result.counts == {0: 2, 1: 3} and result.positive == "tumour"
    assert not any("mask" in it["image"] for it in result.items)
    assert [e["reason"] for e in result.excluded] == ["class 'unsure' is neither positive nor negative"]
    assert all(it["group"] == it["image"] for it in result.items)
    rest = convert_folder(root, tmp_path / "g.json", positive="tumour")
    assert rest.counts == {0: 3, 1: 3}
    with pytest.raises(DownstreamError, match=r"positive class folder\(s\) \['benign'\] not found"):
        convert_folder(root, tmp_path / "h.json", positive="benign")


def test_folder_of_nrrd_and_metaimage_volumes_converts(tmp_path):
    """The folder converter and the layout detection take every suffix the image reader reads, from the reader's
    own list: NRRD (.nrrd/.nhdr) and MetaImage (.mha/.mhd) volumes too (were left out, the converters kept a copy
    without them); the .raw pixel files beside .nhdr/.mhd headers are not images."""
    import SimpleITK as sitk  # lazy in the package too: only NRRD/MetaImage need it

    import monai_modan.data.downstream.generic as generic
    from monai_modan.data import readers

    assert generic.IMAGE_SUFFIXES is readers.IMAGE_SUFFIXES
    root = tmp_path / "volumes"
    for seed, (cls, name) in enumerate((("lesion", "a.nrrd"), ("lesion", "b.mha"), ("normal", "c.nhdr"),
                                        ("normal", "d.mhd"))):
        (root / cls).mkdir(parents=True, exist_ok=True)
        volume = np.random.default_rng(seed).integers(-1000, 3000, (5, 12, 12)).astype(np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(root / cls / name))
    assert sorted(p.suffix for p in root.rglob("*.raw")) == [".raw", ".raw"]  # the .nhdr and .mhd pixel files
    assert detect_source(root) == TaskSource.FOLDER
    result = convert(root, out=tmp_path / "v.json", positive="lesion")
    assert {name: it["label"] for name, it in _by_name(result.items).items()} == {
        "a.nrrd": 1, "b.mha": 1, "c.nhdr": 0, "d.mhd": 0}
    assert result.excluded == []  # every volume decoded (the duplicate check reads each one)
    assert "exact duplicates (identical decoded pixels): none found" in result.notes


def test_csv_generic_labels_groups_and_missing_file(tmp_path):
    for i in range(4):
        _png(tmp_path / "img" / f"{i}.png", _noise(i))
    csv_path = tmp_path / "task.csv"
    csv_path.write_text("path,label,group\nimg/0.png,1,p1\nimg/1.png,0,p1\nimg/2.png,0,\n" +
                        f"{tmp_path / 'img' / '3.png'},1,p3\n")
    assert detect_source(csv_path) == TaskSource.CSV
    result = convert(csv_path, out=tmp_path / "out" / "t.json", task="toy")
    by = _by_name(result.items)
    assert result.counts == {0: 2, 1: 2} and result.task == "toy"
    assert by["0.png"]["group"] == by["1.png"]["group"] == "p1"
    assert by["2.png"]["group"] == by["2.png"]["image"] == str(tmp_path / "img" / "2.png")  # default: the image
    named = tmp_path / "named.csv"
    named.write_text("image,class\nimg/0.png,Malignant\nimg/1.png,benign\nimg/2.png,normal\nimg/3.png,other\n")
    result = convert_csv(named, tmp_path / "n.json", positive="malignant", negative=["benign", "normal"])
    assert result.counts == {0: 2, 1: 1} and "'other' is neither" in result.excluded[0]["reason"]
    with pytest.raises(DownstreamError, match=r"label 'Malignant' is not binary"):
        convert_csv(named, tmp_path / "n.json")
    csv_path.write_text("path,label\nimg/0.png,1\nimg/9.png,0\n")
    with pytest.raises(DownstreamError, match=r"task.csv: line 3: image file not found: 'img/9.png'"):
        convert_csv(csv_path, tmp_path / "t.json")
    csv_path.write_text("file_name,y_true\nimg/0.png,1\n")
    with pytest.raises(DownstreamError, match=r"no image column in the header \['file_name', 'y_true'\]"):
        convert_csv(csv_path, tmp_path / "t.json")
    csv_path.write_text("path,label\nimg/0.png,1\nimg/1.png,1\n")
    with pytest.raises(TaskDatalistError, match=r"only one class \(all 2 items have label 1"):
        convert_csv(csv_path, tmp_path / "t.json")


def test_json_passthrough_and_loader_errors(tmp_path):
    for i in range(3):
        _png(tmp_path / "images" / f"case{i}_1.png", _noise(i))
    synthetic = {"task": "knee_acl", "modality": "MR", "training": [
        {"image": "images/case0_1.png", "label": 1, "group": "case0"},
        {"image": "images/case1_1.png", "label": 0, "group": "case1"},
        {"image": "images/case2_1.png", "label": 0}]}
    src = tmp_path / "datalist.json"
    src.write_text(json.dumps(synthetic))
    assert detect_source(src) == TaskSource.JSON
    result = convert_json(src, tmp_path / "copy" / "task.json", positive="acl_tear")
    assert result.task == "knee_acl" and result.positive == "acl_tear" and result.counts == {0: 2, 1: 1}
    assert all(os.path.isabs(it["image"]) and os.path.isfile(it["image"]) for it in result.items)
    assert _by_name(result.items)["case2_1.png"]["group"] == str(tmp_path / "images" / "case2_1.png")
    items, meta = load_task_datalist(result.path)
    assert meta["modality"] == "MR" and meta["source"] == "json"  # the source's extra keys travel along
    assert meta["positive"] == "acl_tear" and meta["counts"] == {"0": 2, "1": 1, "groups": 3}

    from monai.data import load_decathlon_datalist  # MONAI reads the file as is
    assert len(load_decathlon_datalist(str(result.path), data_list_key="training")) == 3

    def broken(change) -> Path:
        data = json.loads(json.dumps(synthetic))
        change(data)
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(data))
        return path

    with pytest.raises(TaskDatalistError, match=r"item 1: image .*case7_1.png: file not found"):
        load_task_datalist(broken(lambda d: d["training"][1].update(image="images/case7_1.png")))
    with pytest.raises(TaskDatalistError, match=r"item 2 .*label 2 is not binary"):
        load_task_datalist(broken(lambda d: d["training"][2].update(label=2)))
    with pytest.raises(TaskDatalistError, match="only one class"):
        load_task_datalist(broken(lambda d: d["training"][0].update(label=0)))
    with pytest.raises(TaskDatalistError, match="listed twice"):
        load_task_datalist(broken(lambda d: d["training"].append(dict(d["training"][0]))))
    with pytest.raises(TaskDatalistError, match="not a task datalist"):
        load_task_datalist(broken(lambda d: d.update(format="monai-modan/datalist/1")))
    with pytest.raises(TaskDatalistError, match="no 'training' list"):
        load_task_datalist(broken(lambda d: d.pop("training")))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TaskDatalistError, match="not valid JSON"):
        load_task_datalist(tmp_path / "bad.json")


def _task_datalist(tmp_path: Path, change=None) -> Path:
    for i in range(3):
        _png(tmp_path / "images" / f"case{i}_1.png", _noise(i))
    data = {"task": "knee_acl", "positive": "acl_tear", "training": [
        {"image": "images/case0_1.png", "label": 1, "group": "case0"},
        {"image": "images/case1_1.png", "label": 0, "group": "case1"},
        {"image": "images/case2_1.png", "label": 0}]}
    if change is not None:
        change(data)
    path = tmp_path / "task.json"
    path.write_text(json.dumps(data))
    return path


def _item(i, **fields):
    return lambda d: d["training"][i].update(fields)


@pytest.mark.parametrize(
    "change, match",
    [(lambda d: d["training"].__setitem__(1, "images/case1_1.png"),
      r"item 1 is not a mapping \{'image': ..., 'label': 0 \| 1\}: str 'images/case1_1.png'"),
     (lambda d: d["training"][1].pop("label"), r"item 1 \(.*case1_1.png\) has no 'label' \(keys: \['group', 'image'\]\)"),
     (lambda d: d["training"][1].pop("image"), r"item 1 has no 'image' \(keys: \['group', 'label'\]\)"),
     (_item(1, image=""), r"item 1: 'image' must be a non-empty path, got ''"),
     (_item(1, image=3), r"item 1: 'image' must be a non-empty path, got 3"),
     (_item(1, label=2), r"item 1 \(.*case1_1.png\): label 2 is not binary"),
     (_item(1, label=None), r"item 1 \(.*case1_1.png\): label None is not binary"),
     (_item(1, label=[0, 1]), r"item 1 \(.*case1_1.png\): label \[0, 1\] is not binary"),
     (_item(1, label="maybe"), r"item 1 \(.*case1_1.png\): label 'maybe' is not binary"),
     (_item(1, image="images/case9_1.png"), r"item 1: image .*case9_1.png: file not found"),
     (_item(1, group=["case0", "case1"]), r"item 1 \(.*case1_1.png\): 'group' must be a text or integer id, got \['case0'"),
     (_item(1, group=float("nan")), r"item 1 \(.*case1_1.png\): 'group' must be a text or integer id, got nan"),
     (_item(1, group=True), r"'group' must be a text or integer id, got True"),
     (lambda d: d.pop("training"), r"no 'training' list of items: 'training' is missing"),
     (lambda d: d.__setitem__("training", {"a": 1}), r"no 'training' list of items: 'training' is a dict"),
     (lambda d: d.__setitem__("positive", 1), r"'positive' must be a non-empty text, got 1"),
     (lambda d: d.__setitem__("task", ""), r"'task' must be a non-empty text, got ''"),
     (lambda d: d.__setitem__("notes", "checked by hand"), r"'notes' must be a list of texts, got 'checked by hand'"),
     (lambda d: d.__setitem__("excluded", ["x.png"]), r"excluded\[0\] must be a mapping with 'image' and 'reason'"),
     (lambda d: d.__setitem__("excluded", {"x.png": "blurred"}), r"'excluded' must be a list of"),
     ],
)
def test_task_datalist_errors_name_file_item_and_cause(tmp_path, change, match):
    path = _task_datalist(tmp_path, change)
    with pytest.raises(TaskDatalistError, match=match) as e:
        load_task_datalist(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_task_datalist_integer_groups_and_bom_are_accepted(tmp_path):
    path = _task_datalist(tmp_path, _item(1, group=7))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # saved by a Windows editor
    items, _ = load_task_datalist(path)
    assert items[1]["group"] == "7"


def test_non_utf8_task_inputs_name_file_and_byte(tmp_path):
    path = _task_datalist(tmp_path)
    path.write_bytes(path.read_bytes().replace(b"knee_acl", b"genou_\xe9"))
    with pytest.raises(TaskDatalistError, match=r"task.json: task datalist is not UTF-8 text \(byte 0xe9 at offset 16, line 1\)"):
        load_task_datalist(path)
    _png(tmp_path / "a.png", _noise(1))
    _png(tmp_path / "b.png", _noise(2))
    csv_path = tmp_path / "labels.csv"
    body = "image,label\n" + "a.png,1\n" * 2000  # past the reader's first 8 KiB chunk: the offset is the file's
    csv_path.write_bytes(body.encode() + b"b.png,0 # \xe9\n")
    with pytest.raises(DownstreamError, match=rf"labels.csv: not UTF-8 text \(byte 0xe9 at offset {len(body) + 10}, line 2002\)"):
        convert_csv(csv_path, tmp_path / "t.json")
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "x.csv").write_bytes(b"im\xe1ge,label\n")
    with pytest.raises(DownstreamError, match=r"x.csv: not UTF-8 text \(byte 0xe1 at offset 2, line 1\)"):
        detect_source(tmp_path / "det")  # the layout detection reads the CSV headers
    mrnet_labels = tmp_path / "train-acl.csv"
    mrnet_labels.write_bytes(b"0000,1\n0001,\xff\n")
    from monai_modan.data.downstream.mrnet import _read_exam_labels
    with pytest.raises(DownstreamError, match=r"train-acl.csv: MRNet label file is not UTF-8 text \(byte 0xff at offset 12, line 2\)"):
        _read_exam_labels(mrnet_labels)


def test_csv_header_twice_or_row_too_long_is_an_error(tmp_path):
    _png(tmp_path / "a.png", _noise(1))
    _png(tmp_path / "b.png", _noise(2))
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("image,label,label\na.png,1,0\nb.png,0,1\n")  # which label? DictReader kept the last
    with pytest.raises(DownstreamError, match=r"t.csv: the header names the column\(s\) \['label'\] more than once"):
        convert_csv(csv_path, tmp_path / "t.json")
    csv_path.write_text("image,label\na.png,1\nimages/b,2.png,0\n")  # an unquoted comma: 3 fields
    with pytest.raises(DownstreamError, match=r"t.csv: line 3: row has 3 fields but the header \['image', 'label'\] has 2"):
        convert_csv(csv_path, tmp_path / "t.json")


def test_writer_is_atomic_and_checks(tmp_path):
    _png(tmp_path / "a.png", _noise(1))
    _png(tmp_path / "b.png", _noise(2))
    out = tmp_path / "t.json"
    write_task_datalist([{"image": "a.png", "label": 1}, {"image": tmp_path / "b.png", "label": "0"}], out,
                        task="t", positive="p", notes=["n"], excluded=[{"image": "c.png", "reason": "r"}],
                        source="test")
    data = json.loads(out.read_text())
    assert data["format"] == TASK_FORMAT and data["source"] == "test" and data["notes"] == ["n"]
    assert data["training"][0] == {"image": str(tmp_path / "a.png"), "label": 1, "group": str(tmp_path / "a.png")}
    assert data["training"][1]["label"] == 0 and data["excluded"] == [{"image": "c.png", "reason": "r"}]
    with pytest.raises(TaskDatalistError, match="only one class"):
        write_task_datalist([{"image": "a.png", "label": 1}], out, task="t", positive="p")
    assert json.loads(out.read_text()) == data  # a failed write leaves the previous file intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(TaskDatalistError, match="clash"):
        write_task_datalist([], out, task="t", positive="p", counts={})


def test_medmnist_breast_counts_match_the_readme(medmnist_dir, tmp_path):
    from monai_modan.data.readers import load_grayscale

    npz = medmnist_dir / "breastmnist.npz"
    assert detect_source(npz) == TaskSource.MEDMNIST
    train = convert(npz, out=tmp_path / "train.json", splits=["train"])
    assert train.positive == "malignant" and train.counts == {1: 147, 0: 399}  # README: train 147 malignant / 399
    assert all(it["label"] == 1 - it["task_label"] for it in train.items)
    every = convert_medmnist(npz, tmp_path / "all.json")
    assert every.counts == {1: 147 + 21 + 42, 0: 399 + 57 + 114} and len(every.groups) == 780
    with np.load(npz) as z:
        for it in (every.items[0], every.items[600]):
            split, index = it["image"].rsplit("#", 1)[1].split("/")
            assert np.allclose(load_grayscale(it["image"]), z[split][int(index)] / 255.0)
            assert it["label"] == int(z[split.replace("images", "labels")][int(index), 0] == 0)
    items, _ = load_task_datalist(every.path)  # the loader checks every reference against the archive
    assert len(items) == 780


def test_medmnist_needs_positive_labels_for_unknown_flags(medmnist_dir, tmp_path):
    with pytest.raises(DownstreamError, match="positive_labels"):
        convert_medmnist(medmnist_dir / "retinamnist.npz", tmp_path / "r.json")
    graded = convert_medmnist(medmnist_dir / "retinamnist.npz", tmp_path / "r.json", positive_labels={3, 4},
                              splits=("train",))
    assert graded.counts == {1: 194 + 66, 0: 486 + 128 + 206}  # README grades 0..4: 486/128/206/194/66


def test_detect_source_and_convert_dispatch(mrnet_tree, busi_tree, tmp_path):
    assert detect_source(mrnet_tree) == detect_source(mrnet_tree / "MRNet-v1.0") == TaskSource.MRNET
    assert detect_source(busi_tree) == TaskSource.BUSI
    assert detect_source(busi_tree / "Dataset_BUSI_with_GT") == TaskSource.BUSI
    direct = convert_busi(busi_tree, tmp_path / "a.json", duplicates="keep")
    auto = convert(busi_tree, "auto", tmp_path / "b.json", duplicates="keep")
    assert [it["image"] for it in auto.items] == [it["image"] for it in direct.items]
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "readme.txt").write_text("?")
    with pytest.raises(UnknownLayoutError, match=r"unknown layout \(it holds \['readme.txt'\]\)"):
        convert(tmp_path / "odd", out=tmp_path / "c.json")
    with pytest.raises(UnknownLayoutError, match="unknown source file type"):
        detect_source(tmp_path / "odd" / "readme.txt")
    with pytest.raises(DownstreamError, match=r"does not take option\(s\) \['slices'\]"):
        convert(busi_tree, out=tmp_path / "d.json", slices="all")
    with pytest.raises(DownstreamError, match="unknown kind"):
        convert(busi_tree, "dicom", tmp_path / "d.json")
    with pytest.raises(DownstreamError, match="no such file"):
        detect_source(tmp_path / "missing")


def test_prepare_task_reconverts_when_the_request_changes(medmnist_dir, tmp_path):
    from monai_modan.data.downstream.prepare import prepare_task

    path = prepare_task("breast", tmp_path, medmnist_dir / "breastmnist.npz", options={"splits": ["test"]})
    first = load_task_datalist(path)[0]
    assert len(first) == 156
    again = prepare_task("breast", tmp_path, medmnist_dir / "breastmnist.npz", options={"splits": ["test"]})
    assert again == path and len(load_task_datalist(again)[0]) == 156
    changed = prepare_task("breast", tmp_path, medmnist_dir / "breastmnist.npz", options={"splits": ["val"]})
    assert len(load_task_datalist(changed)[0]) == 78


def test_numeric_tirads_cut_and_strict_include_normal(tmp_path):
    from monai_modan.data.downstream import DownstreamError, convert_busi, tirads_label

    assert tirads_label("5", 5) == 1 and tirads_label("4c", 5) == 0 and tirads_label(3, "4a") == 0
    with pytest.raises(DownstreamError, match="include_normal must be true or false, got 'false'"):
        convert_busi(tmp_path, tmp_path / "x.json", include_normal="false")
