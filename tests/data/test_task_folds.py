"""A task's own partition (``fold`` and ``split`` on its items): kept by the DDTI fold-CSV converter, named by a CSV's
fold column or a folder's fold_<k> sub-folders, checked by the loader (bad values, folds on some items only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_modan.data.downstream import (
    DownstreamError, TaskDatalistError, convert, convert_csv, convert_ddti_csv, convert_folder, load_task_datalist,
    write_task_datalist)


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)).save(path)
    return path


def _by_name(items) -> dict[str, dict]:
    return {Path(it["image"]).name: it for it in items}


# cases 20..25: 20, 21, 22 benign (22 with two images), 23, 24, 25 malignant; three published folds
LABELS = {"20_1.jpg": "benign", "21_1.jpg": "benign", "22_1.jpg": "benign", "22_2.jpg": "benign",
          "23_1.jpg": "malignant", "24_1.jpg": "malignant", "25_1.jpg": "malignant"}
TEST_OF = {1: ["20_1.jpg", "23_1.jpg"], 2: ["21_1.jpg", "24_1.jpg"], 3: ["22_1.jpg", "22_2.jpg", "25_1.jpg"]}


def _ddti_folds(root: Path, test_of=TEST_OF) -> Path:
    for i, name in enumerate(LABELS):
        _png(root / "images" / name, i)
    for k, test in test_of.items():
        (root / f"fold_{k}").mkdir(parents=True, exist_ok=True)
        for part, names in (("test", test), ("train", [n for n in LABELS if n not in test])):
            (root / f"fold_{k}" / f"{part}.csv").write_text(
                "img_dir,label\n" + "".join(f"images/{n},{LABELS[n]}\n" for n in names))
    return root


def test_ddti_fold_release_keeps_its_published_folds(tmp_path):
    root = _ddti_folds(tmp_path / "ddti")
    result = convert(root, out=tmp_path / "ddti.json")  # detected as ddti_csv
    by = _by_name(result.items)
    expected = {name: k - 1 for k, names in TEST_OF.items() for name in names}  # fold_1..fold_3 -> 0..2
    assert {name: it["fold"] for name, it in by.items()} == expected
    assert by["22_1.jpg"]["group"] == by["22_2.jpg"]["group"] == "22"
    assert any("published folds kept: fold_1, fold_2, fold_3" in n for n in result.notes)
    items, _ = load_task_datalist(tmp_path / "ddti.json")  # written and read back with the folds
    assert [it["fold"] for it in items] == [it["fold"] for it in result.items]
    merged = convert_ddti_csv(root, tmp_path / "merged.json", keep_folds=False)  # the behaviour before
    assert all("fold" not in it for it in merged.items) and len(merged.items) == len(LABELS)


@pytest.mark.parametrize(("edit", "message"), [
    # an image in two folds' test parts
    (lambda r: (r / "fold_2" / "test.csv").open("a").write("images/20_1.jpg,benign\n"),
     r"20_1\.jpg is in the test\.csv of two folds \(.*fold_1.*test\.csv: line 2 and .*fold_2.*test\.csv: line 4\)"),
    # an image in no fold's test part (folds for only some items)
    (lambda r: (r / "fold_3" / "test.csv").write_text("img_dir,label\nimages/22_1.jpg,benign\n"
                                                      "images/22_2.jpg,benign\n"),
     r"25_1\.jpg \(.*line \d\) is in no fold's test\.csv: the release's folds \(fold_1, fold_2, fold_3\) do not "
     r"cover it"),
    # an image in its own test fold's train part: the published fold leaks
    (lambda r: (r / "fold_1" / "train.csv").open("a").write("images/23_1.jpg,malignant\n"),
     r"23_1\.jpg is in fold_1's test part .* and in its train part"),
])
def test_bad_published_folds_are_named(tmp_path, edit, message):
    root = _ddti_folds(tmp_path / "ddti")
    edit(root)
    with pytest.raises(DownstreamError, match=message):
        convert_ddti_csv(root, tmp_path / "x.json")


def test_a_case_split_across_published_folds_is_refused(tmp_path):
    test_of = {1: ["20_1.jpg", "23_1.jpg", "22_1.jpg"], 2: ["21_1.jpg", "24_1.jpg"], 3: ["22_2.jpg", "25_1.jpg"]}
    root = _ddti_folds(tmp_path / "ddti", test_of)
    with pytest.raises(DownstreamError, match=r"case 22: .*22_1\.jpg is in published fold 1 but .*22_2\.jpg in fold 3"):
        convert_ddti_csv(root, tmp_path / "x.json")


def test_a_csv_names_its_folds_and_validation_part(tmp_path):
    for i in range(8):
        _png(tmp_path / f"{i}.png", i)
    rows = "".join(f"{i}.png,{i % 2},{i // 2 % 2},{'val' if i in (2, 3) else 'train'}\n" for i in range(8))
    (tmp_path / "task.csv").write_text("path,label,fold,split\n" + rows)
    result = convert_csv(tmp_path / "task.csv", tmp_path / "task.json", split_column="split")
    by = _by_name(result.items)
    assert {n: (it["fold"], it["split"]) for n, it in by.items()} == {
        f"{i}.png": (i // 2 % 2, "val" if i in (2, 3) else "train") for i in range(8)}
    without_split = convert_csv(tmp_path / "task.csv", tmp_path / "t2.json")  # the fold column is found by itself
    assert all("fold" in it and "split" not in it for it in without_split.items)
    (tmp_path / "bad.csv").write_text("path,label,fold\n0.png,0,1\n1.png,1,x\n")
    with pytest.raises(DownstreamError, match=r"bad\.csv: line 3: fold 'x' is not an integer >= 0"):
        convert_csv(tmp_path / "bad.csv", tmp_path / "bad.json")
    (tmp_path / "some.csv").write_text("path,label,fold\n0.png,0,1\n1.png,1,\n2.png,0,0\n")
    with pytest.raises(TaskDatalistError, match=r"item 1 \(.*1\.png\) has no 'fold' while 2 of the 3 items do"):
        convert_csv(tmp_path / "some.csv", tmp_path / "some.json")
    (tmp_path / "split.csv").write_text("path,label,split\n0.png,0,train\n1.png,1,test\n")
    with pytest.raises(DownstreamError, match=r"split\.csv: line 3: split 'test' is not one of \['train', 'val'\]"):
        convert_csv(tmp_path / "split.csv", tmp_path / "split.json", split_column="split")


def test_a_folder_task_names_its_folds_with_fold_folders(tmp_path):
    root = tmp_path / "set"
    for c, cls in enumerate(("benign", "malignant")):
        for k in (1, 2, 4):
            for j in range(2):
                _png(root / cls / f"fold_{k}" / f"{cls}{k}{j}.png", 100 * c + 10 * k + j)
    result = convert(root, out=tmp_path / "f.json", positive="malignant", folds_from_dirs=True)
    assert {n: it["fold"] for n, it in _by_name(result.items).items()} == {
        f"{cls}{k}{j}.png": {1: 0, 2: 1, 4: 2}[k] for cls in ("benign", "malignant") for k in (1, 2, 4) for j in (0, 1)}
    assert all("fold" not in it for it in convert_folder(root, tmp_path / "g.json", positive="malignant").items)
    _png(root / "benign" / "stray.png", 999)
    with pytest.raises(DownstreamError, match=r"stray\.png lies in no fold_<k> folder below its class folder"):
        convert_folder(root, tmp_path / "h.json", positive="malignant", folds_from_dirs=True)


@pytest.mark.parametrize(("change", "message"), [
    ({1: {"fold": -1}}, r"item 1 \(.*1\.png\): 'fold' must be an integer >= 0 .*got -1"),
    ({1: {"fold": "2"}}, r"item 1 \(.*1\.png\): 'fold' must be an integer >= 0 .*got '2'"),
    ({1: {"fold": True}}, r"'fold' must be an integer >= 0 .*got True"),
    ({2: {"split": "validation"}}, r"item 2 \(.*2\.png\): 'split' must be one of \['train', 'val'\], got "
                                   r"'validation'"),
    ({3: {"fold": None}}, r"item 3 \(.*3\.png\) has no 'fold' while 3 of the 4 items do"),
])
def test_the_loader_names_bad_partition_values(tmp_path, change, message):
    items = [{"image": str(_png(tmp_path / f"{i}.png", i)), "label": i % 2, "fold": i // 2, "split": "train"}
             for i in range(4)]
    for i, values in change.items():
        items[i].update(values)
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"training": items}))
    with pytest.raises(TaskDatalistError, match=message):
        load_task_datalist(path)
    with pytest.raises(TaskDatalistError, match=message):
        write_task_datalist(items, tmp_path / "w.json", task="t", positive="p")
