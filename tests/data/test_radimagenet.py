"""RadImageNet: path -> labels rules, tree indexer with split CSVs, miniRIN sampler and selection lists.

Every test builds a tiny tree in the real layout (``radiology_ai/{CT,MR}/<anatomy>/<class>/``, flat ``US/<class>/``)
with the real folder quirks, written as few-pixel PNGs.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_modan.data.radimagenet_index import (
    MissingImagesError,
    RadImageNetError,
    find_radimagenet_root,
    index_radimagenet,
    list_radimagenet_classes,
    looks_like_radimagenet,
    read_selection,
    sample_minirin,
    write_selection,
)
from monai_modan.labels import LabelSpace, VocabularyError
from monai_modan.labels.radimagenet import (
    RadImageNetPathError,
    RadImageNetRules,
    class_id,
    class_key,
    radimagenet_labels,
    split_class_id,
)

SPACE = LabelSpace.default()

# class folder -> number of images; quirks of the real folders: capitals, "++", trailing "_", "normal" x 3
TREE = {
    "CT/lung/Airspace_opacity": 3,
    "CT/lung/normal": 2,
    "CT/abd/Liver_lesion_": 2,
    "CT/abd/normal": 2,
    "MR/knee/acl": 12,
    "MR/knee/normal": 2,
    "MR/shoulder/ca++_tendinosis": 2,
    "MR/af/Plantar_fascia_pathology": 2,
    "MR/mriabd/Liver_lesion": 2,
    "US/gb": 2,
    "US/thyroid_nodule": 2,
    "US/ovary": 2,
    "US/mystery_organ": 2,
}
LABEL_TEXT = {"CT/lung/Airspace_opacity": "lung-airspace opacity", "MR/knee/acl": "knee-anterior cruciate ligament pathology",
              "US/gb": "US-gb", "US/thyroid_nodule": "US-thyroid nodule"}


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value % 256, dtype=np.uint8)).save(path)


def make_tree(base: Path, order: list[str] | None = None, csvs: bool = True) -> dict[str, list[str]]:
    """Write the tree (classes in ``order``) and return split -> relative filenames listed in the CSVs."""
    images: list[str] = []
    for n_class, cid in enumerate(order or list(TREE)):
        for i in range(TREE[cid]):
            rel = f"radiology_ai/{cid}/{cid.split('/')[-1].lower()}{i:03d}.png"
            _png(base / rel, 7 * n_class + i)
            images.append(rel)
    # oddities the walk must skip
    _png(base / "radiology_ai/MR/knee/stray.png", 1)  # file at the anatomy level
    (base / "radiology_ai/MR/knee/acl/notes.txt").write_text("not an image")
    (base / "radiology_ai/US/gb/.DS_Store").write_bytes(b"\0")
    if not csvs:
        return {}
    images.sort()
    unlisted = "radiology_ai/US/ovary/ovary001.png"
    twice = "radiology_ai/CT/abd/normal/normal001.png"
    listed = [i for i in images if i != unlisted]
    splits = {"training": [], "validation": [], "test": []}
    for k, rel in enumerate(listed):
        splits[("training", "training", "validation", "test")[k % 4]].append(rel)
    splits["test"].append(twice) if twice not in splits["test"] else splits["validation"].append(twice)
    rows = {s: [(f, LABEL_TEXT.get(f.split("/", 1)[1].rsplit("/", 1)[0], "some label")) for f in v] for s, v in splits.items()}
    rows["validation"].insert(1, ("radiology_ai/MR/knee/acl/gone.png", "knee-anterior cruciate ligament pathology"))
    for split, name in (("training", "train"), ("validation", "val"), ("test", "test")):
        with open(base / f"RadiologyAI_{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            w.writerows(rows[split])
    return splits


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    base = tmp_path_factory.mktemp("rin")
    return base, make_tree(base)


@pytest.fixture(scope="module")
def index(tree):
    return index_radimagenet(tree[0], SPACE, progress=False)


def rel(root: Path, image: str) -> str:
    return Path(os.path.relpath(image, root)).as_posix()


# path -> labels -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, modality, anatomy, cid",
    [
        ("radiology_ai/MR/af/Plantar_fascia_pathology/x.png", "MR", "ankle_foot", "MR/af/Plantar_fascia_pathology"),
        ("radiology_ai/CT/lung/Airspace_opacity/x.png", "CT", "chest", "CT/lung/Airspace_opacity"),
        ("radiology_ai/CT/abd/Liver_lesion_/x.png", "CT", "abdomen", "CT/abd/Liver_lesion_"),
        ("radiology_ai/MR/mriabd/Liver_lesion/x.png", "MR", "abdomen", "MR/mriabd/Liver_lesion"),
        ("radiology_ai/MR/brain/normal/x.png", "MR", "head", "MR/brain/normal"),
        ("MR/shoulder/ca++_tendinosis/x.png", "MR", "shoulder", "MR/shoulder/ca++_tendinosis"),
        ("radiology_ai/US/thyroid_nodule/x.png", "US", "thyroid", "US/thyroid_nodule"),
        ("radiology_ai/US/thyroid/x.png", "US", "thyroid", "US/thyroid"),
        ("radiology_ai/US/ovary/x.png", "US", "pelvis", "US/ovary"),
        ("radiology_ai/US/uterus/x.png", "US", "pelvis", "US/uterus"),
        ("radiology_ai/US/gb/x.png", "US", "abdomen", "US/gb"),
        ("radiology_ai/US/portal_vein/x.png", "US", "abdomen", "US/portal_vein"),
        ("/data/RadImageNet/radiology_ai/US/mystery_organ/x.png", "US", None, "US/mystery_organ"),
        ("radiology_ai\\MR\\knee\\acl\\x.png", "MR", "knee", "MR/knee/acl"),
    ],
)
def test_labels_from_path(path, modality, anatomy, cid):
    labels, sources, got = radimagenet_labels(path, SPACE)
    assert got == cid
    assert labels == {"modality": modality, "anatomy": anatomy}
    assert sources["modality"] == f"path:{cid.split('/')[0]}"
    if anatomy is None:
        assert sources["anatomy"] is None
    else:
        assert sources["anatomy"] == "path:" + "/".join(cid.split("/")[:2])


@pytest.mark.parametrize("bad", ["radiology_ai/MR/knee/x.png", "radiology_ai/US/a/b/x.png", "radiology_ai/PET/a/b/x.png", ""])
def test_bad_paths_are_errors(bad):
    with pytest.raises(RadImageNetPathError, match="RadImageNet"):
        radimagenet_labels(bad, SPACE)


def test_class_ids_keep_quirks_and_match_robustly():
    assert class_id("MR", "knee", "acl") == "MR/knee/acl"
    assert class_id("US", None, "gb") == "US/gb"
    assert split_class_id("US/gb") == ("US", None, "gb")
    assert split_class_id("CT/abd/Liver_lesion_") == ("CT", "abd", "Liver_lesion_")
    assert class_key("CT/abd/Liver_lesion_") == class_key("ct/ABD/liver_lesion")
    assert class_key("MR/knee/normal") != class_key("CT/abd/normal")
    assert RadImageNetRules.load().layout("us") == "flat" and RadImageNetRules.load().layout("Mr") == "anatomy"
    with pytest.raises(RadImageNetPathError):
        split_class_id("MR/knee/acl/extra")


def test_user_rules_extend_and_bad_target_is_reported(tmp_path):
    extra = tmp_path / "rin.yaml"
    extra.write_text("flat_classes:\n  mystery_organ: neck\nanatomy_folders:\n  wrist: upper_limb\n"
                     "modality_folders:\n  XR: anatomy\n")
    rules = RadImageNetRules.load(extra)
    assert radimagenet_labels("radiology_ai/US/mystery_organ/x.png", SPACE, rules)[0]["anatomy"] == "neck"
    assert radimagenet_labels("radiology_ai/XR/wrist/fracture/x.png", SPACE, rules)[0] == {"modality": "XR", "anatomy": "upper_limb"}
    assert radimagenet_labels("radiology_ai/US/gb/x.png", SPACE, rules)[0]["anatomy"] == "abdomen"  # shipped rules kept
    bad = tmp_path / "bad.yaml"
    bad.write_text("flat_classes:\n  gb: gizzard\n")
    with pytest.raises(VocabularyError, match="gizzard"):
        radimagenet_labels("radiology_ai/US/gb/x.png", SPACE, RadImageNetRules.load(bad))


@pytest.mark.parametrize(
    "text, match",
    [("flat_classes:\n  no: neck\n", r"'flat_classes' has the folder name False: .*quote it"),
     ("anatomy_folders:\n  ~: knee\n", r"'anatomy_folders' has the folder name None"),
     ("anatomy_folders:\n  '--': knee\n", r"'anatomy_folders' has the folder name '--'"),
     ("flat_classes:\n  gb: abdomen\n  gb: neck\n", r"key 'gb' appears twice under flat_classes \(lines 2 and 3\)"),
     ("flat_classes: [gb]\n", "'flat_classes' must map folder name"),
     (b"flat_classes:\n  pi\xe9d: ankle_foot\n", r"not UTF-8 text \(byte 0xe9 at offset 18, line 2\)")],
)
def test_bad_rules_yaml_names_file_and_entry(tmp_path, text, match):
    path = tmp_path / "rin.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(VocabularyError, match=match) as e:
        RadImageNetRules.load(path)
    assert str(e.value).startswith(str(path))


# indexing ---------------------------------------------------------------------------------------------------------
def test_auto_detection(tree, tmp_path):
    root = tree[0]
    assert find_radimagenet_root(root) == root.absolute()
    assert find_radimagenet_root(root / "radiology_ai") == root.absolute()
    assert looks_like_radimagenet(root) and looks_like_radimagenet(root / "radiology_ai")
    (tmp_path / "other" / "CT").mkdir(parents=True)
    assert find_radimagenet_root(tmp_path / "other") is None and not looks_like_radimagenet(tmp_path / "other")
    (tmp_path / "fake" / "radiology_ai" / "docs").mkdir(parents=True)  # right name, no modality folder
    assert not looks_like_radimagenet(tmp_path / "fake")
    with pytest.raises(RadImageNetError, match="not a RadImageNet tree"):
        index_radimagenet(tmp_path / "other", SPACE, progress=False)


def test_index_matches_an_independent_walk(tree, index):
    root = tree[0]
    expected = sorted(p.relative_to(root).as_posix() for p in
                      [*root.glob("radiology_ai/[CM][TR]/*/*/*.png"), *root.glob("radiology_ai/US/*/*.png")])
    expected.remove("radiology_ai/CT/abd/normal/normal001.png")  # listed in two split CSVs
    assert sorted(rel(root, r.image) for r in index.result.records) == expected
    assert index.classes == sorted(TREE) and len(index.classes) == len(TREE)
    # the same tree reached through radiology_ai/ gives the same records
    again = index_radimagenet(root / "radiology_ai", SPACE, progress=False)
    assert [r.image for r in again.result.records] == [r.image for r in index.result.records]


def test_records_carry_class_and_labels(tree, index):
    root = tree[0]
    normals = {r.extra["class"] for r in index.result.records if r.extra["class"].endswith("/normal")}
    assert normals == {"CT/lung/normal", "CT/abd/normal", "MR/knee/normal"}  # one class per anatomy, not one "normal"
    for r in index.result.records:
        cid = r.extra["class"]
        assert r.extra["source"] == "radimagenet"
        assert index.classes[r.extra["class_index"]] == cid
        assert rel(root, r.image).startswith(f"radiology_ai/{cid}/")
        assert (r.labels, r.label_sources) == radimagenet_labels(rel(root, r.image), SPACE)[:2]
    by_class = {r.extra["class"]: r for r in index.result.records}
    assert by_class["MR/af/Plantar_fascia_pathology"].labels == {"modality": "MR", "anatomy": "ankle_foot"}
    assert by_class["CT/abd/Liver_lesion_"].labels["anatomy"] == "abdomen"
    item = by_class["US/mystery_organ"].to_item(SPACE)
    assert item["anatomy"] is None and sum(item["label"]) == 1  # modality known, anatomy block all-zero
    assert dict(index.result.unmapped[("anatomy", "path:US")]) == {"mystery_organ": 2}
    assert len(index.result.unmapped) == 1


def test_splits_come_from_the_csvs(tree, index):
    root, splits = tree
    got = {rel(root, r.image): r.split for r in index.result.records}
    for split, files in splits.items():
        for f in files:
            if f != "radiology_ai/CT/abd/normal/normal001.png":
                assert got[f] == split, f
    assert got["radiology_ai/US/ovary/ovary001.png"] == "training"  # in no CSV: default split, with a note
    assert any("1 image(s) on disk are in no split CSV" in n for n in index.result.notes)
    assert {r.split for r in index.result.records} == {"training", "validation", "test"}


def test_skipped_files_have_reasons(index):
    reasons = {(Path(s.path).name, s.reason): s.detail for s in index.result.skipped}
    assert ("stray.png", "unexpected folder level") in reasons
    assert ("notes.txt", "not an image") in reasons
    assert (".DS_Store", "hidden file") in reasons
    missing = reasons[("gone.png", "CSV row points to a missing file")]
    assert "RadiologyAI_val.csv line 3" in missing  # header is line 1, the bad row the second data row
    assert ("normal001.png", "listed in several split CSVs") in reasons
    assert len(index.result.skipped) == 5


def test_unlisted_split_none_and_no_csvs(tmp_path):
    make_tree(tmp_path)
    strict = index_radimagenet(tmp_path, SPACE, progress=False, unlisted_split=None)
    assert "radiology_ai/US/ovary/ovary001.png" not in {rel(tmp_path, r.image) for r in strict.result.records}
    assert any(s.reason == "not in any split CSV" for s in strict.result.skipped)
    ignored = index_radimagenet(tmp_path, SPACE, progress=False, split_csvs=False)
    assert {r.split for r in ignored.result.records} == {"training"} and len(ignored.result.records) == sum(TREE.values())

    bare = tmp_path / "bare"
    make_tree(bare, csvs=False)
    result = index_radimagenet(bare, SPACE, progress=False)
    assert {r.split for r in result.result.records} == {"training"}
    assert any("no split CSVs" in n for n in result.result.notes)


def test_csv_without_filename_column_is_an_error(tmp_path):
    make_tree(tmp_path, csvs=False)
    (tmp_path / "RadiologyAI_train.csv").write_text("path,label\nradiology_ai/US/gb/gb000.png,US-gb\n")
    with pytest.raises(RadImageNetError, match="RadiologyAI_train.csv.*filename"):
        index_radimagenet(tmp_path, SPACE, progress=False)


def test_non_utf8_or_ambiguous_split_csv_is_an_error_naming_the_file(tmp_path):
    make_tree(tmp_path, csvs=False)
    csv_path = tmp_path / "RadiologyAI_val.csv"
    rows = "".join(f"radiology_ai/US/gb/gb{i:03d}.png,US-gb\n" for i in range(3))
    csv_path.write_bytes(b"filename,label\n" + rows.encode() + "radiology_ai/US/gb/gb000.png,US-v\xe9sicule\n".encode("cp1252"))
    offset = len("filename,label\n" + rows + "radiology_ai/US/gb/gb000.png,US-v")
    with pytest.raises(RadImageNetError, match=rf"RadiologyAI_val.csv: not UTF-8 text \(byte 0xe9 at offset {offset}, line 5\)"):
        index_radimagenet(tmp_path, SPACE, progress=False)
    csv_path.write_text("filename,label,filename\nradiology_ai/US/gb/gb000.png,US-gb,radiology_ai/US/gb/gb001.png\n")
    with pytest.raises(RadImageNetError, match=r"RadiologyAI_val.csv: the header names the column\(s\) \['filename'\] more"):
        index_radimagenet(tmp_path, SPACE, progress=False)
    csv_path.write_text("filename\n" + "x" * 200_000 + "\n")  # a binary file that happens to decode
    with pytest.raises(RadImageNetError, match=r"RadiologyAI_val.csv: line \d+: not a readable CSV \(field larger"):
        index_radimagenet(tmp_path, SPACE, progress=False)


# miniRIN ---------------------------------------------------------------------------------------------------------
def _picked(sample, root) -> list[str]:
    return [rel(root, r.image) for r in sample.result.records]


def test_sampler_caps_and_takes_small_classes(tree, index):
    sample = sample_minirin(index, per_class=4, seed=0)
    counts: dict[str, int] = {}
    for r in sample.result.records:
        assert r.split == "training"
        counts[r.extra["class"]] = counts.get(r.extra["class"], 0) + 1
    training = {}
    for r in index.result.records:
        if r.split == "training":
            training[r.extra["class"]] = training.get(r.extra["class"], 0) + 1
    assert counts == {c: min(4, n) for c, n in training.items()}
    assert training["MR/knee/acl"] > 4 and counts["MR/knee/acl"] == 4
    assert set(r.image for r in sample.result.records) <= {r.image for r in index.result.records}
    assert sample.classes == index.classes  # class indices stay those of the full tree
    everything = sample_minirin(index, per_class=1000, split=None)
    assert len(everything.result.records) == len(index.result.records)
    with pytest.raises(ValueError, match="per_class"):
        sample_minirin(index, per_class=0)


def test_sampler_is_seeded_and_class_independent(tree, index):
    root = tree[0]
    first = _picked(sample_minirin(index, per_class=3, seed=5, split=None), root)
    assert first == _picked(sample_minirin(index, per_class=3, seed=5, split=None), root)
    draws = {tuple(_picked(sample_minirin(index, per_class=3, seed=s, split=None), root)) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    # dropping other classes does not change a class's draw
    acl_only = [r for r in index.result.records if r.extra["class"] == "MR/knee/acl"]
    sub = type(index)(type(index.result)(index.result.source, index.result.root, acl_only), index.classes, SPACE)
    acl_first = [f for f in first if "/MR/knee/acl/" in f"/{f}"]
    assert _picked(sample_minirin(sub, per_class=3, seed=5, split=None), root) == acl_first


def test_sampler_ignores_listing_and_creation_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a)
    order = list(TREE)
    random.Random(3).shuffle(order)
    make_tree(b, order=order)  # same files, created in another order

    real_scandir = os.scandir

    class Reversed:  # a file system that lists entries backwards
        def __init__(self, path):
            with real_scandir(path) as it:
                self.entries = list(reversed(list(it)))

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

        def __iter__(self):
            return iter(self.entries)

    idx_a = index_radimagenet(a, SPACE, progress=False)
    pick_a = _picked(sample_minirin(idx_a, per_class=3, seed=1), a)
    monkeypatch.setattr(os, "scandir", Reversed)
    idx_b = index_radimagenet(b, SPACE, progress=False)
    assert [rel(b, r.image) for r in idx_b.result.records] == [rel(a, r.image) for r in idx_a.result.records]
    assert _picked(sample_minirin(idx_b, per_class=3, seed=1), b) == pick_a
    idx_b.result.records.reverse()  # record order of the input does not matter either
    assert _picked(sample_minirin(idx_b, per_class=3, seed=1), b) == pick_a


def test_selection_round_trip(tree, index, tmp_path):
    root = tree[0]
    sample = sample_minirin(index, per_class=3, seed=2, split=None)
    path = write_selection(sample, tmp_path / "sel" / "minirin.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "class", "split"] and len(rows) == len(sample.result.records) + 1
    assert all(r[0].startswith("radiology_ai/") and not os.path.isabs(r[0]) for r in rows[1:])
    assert not [p for p in path.parent.iterdir() if p.name != "minirin.csv"]  # no temporary left behind

    back = read_selection(root / "radiology_ai", path, SPACE)
    assert back.classes == index.classes
    strip = lambda ix: [(r.image, r.labels, r.label_sources, r.split, r.extra) for r in ix.result.records]  # noqa: E731
    assert strip(back) == strip(sample)
    assert dict(back.result.unmapped) == dict(sample.result.unmapped)


def test_selection_errors_name_the_problem(tmp_path):
    make_tree(tmp_path, csvs=False)
    idx = index_radimagenet(tmp_path, SPACE, progress=False)
    path = write_selection(sample_minirin(idx, per_class=2), tmp_path / "sel.csv")
    gone = tmp_path / "radiology_ai/US/gb/gb000.png"
    gone.unlink()
    with pytest.raises(MissingImagesError, match="gb000.png") as err:
        read_selection(tmp_path, path, SPACE)
    assert err.value.missing == [str(gone)] and isinstance(err.value, FileNotFoundError)

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("filename,class\nradiology_ai/US/ovary/ovary000.png,US/gb\n")
    with pytest.raises(RadImageNetError, match="line 2.*does not match"):
        read_selection(tmp_path, wrong, SPACE)
    robust = tmp_path / "robust.csv"  # class column matched case-insensitively, trailing "_" ignored; no split column
    robust.write_text("filename,class\nradiology_ai/CT/abd/Liver_lesion_/liver_lesion_000.png,ct/abd/liver_lesion\n")
    (only,) = read_selection(tmp_path, robust, SPACE).result.records
    assert only.extra["class"] == "CT/abd/Liver_lesion_" and only.split == "training"
    assert list_radimagenet_classes(tmp_path) == sorted(TREE)
