"""Generic sources of a binary task: a CSV, a folder per class, an existing datalist JSON, a MedMNIST ``.npz``.

Shared CSV reading (header row, one image column, one label column, an optional group column) is also used by the
DDTI fold CSVs and the MRNet ACL slice CSV.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...utils.defaults import TASK_SPLITS
from ...utils.io import utf8_problem
from ..medmnist import medmnist_reference
from ..readers import IMAGE_SUFFIXES
from .duplicates import (
    DuplicatePolicy,
    apply_duplicate_policy,
    pixel_hash,
)
from .task import (
    _RESERVED,
    DownstreamError,
    TaskDatalist,
    _ReferenceChecker,
    load_task_datalist,
    parse_binary_label,
    write_task_datalist,
)

__all__ = [
    "IMAGE_COLUMNS",
    "LABEL_COLUMNS",
    "GROUP_COLUMNS",
    "FOLD_COLUMNS",
    "FOLD_DIR",
    "IMAGE_SUFFIXES",
    "MASK_PATTERN",
    "MEDMNIST_POSITIVE",
    "LabelMapper",
    "read_csv_items",
    "convert_csv",
    "convert_folder",
    "convert_json",
    "convert_medmnist",
]

# header names recognised (case-insensitive), in order of preference
IMAGE_COLUMNS = ("image", "path", "filename", "file", "img_dir", "img", "image_path", "filepath")
LABEL_COLUMNS = ("label", "acl_label", "class", "target", "diagnosis", "y")
GROUP_COLUMNS = ("group", "case", "case_id", "patient", "patient_id", "exam", "exam_id", "subject")
FOLD_COLUMNS = ("fold",)  # the data set's own test fold of each row (0..k-1), kept as the item's "fold"
FOLD_DIR = re.compile(r"^fold[_-]?(\d+)$", re.IGNORECASE)  # a folder of a published fold: fold_1, fold-2, Fold3
# IMAGE_SUFFIXES (re-exported): every suffix the image reader reads, from readers.py, the one list -- DICOM, Pillow,
# NIfTI, NRRD/MetaImage (.nrrd/.nhdr, .mha/.mhd; a .mhd's .raw pixel file is not an image), NumPy
MASK_PATTERN = re.compile(r"_mask(?:_\d+)?$", re.IGNORECASE)  # BUSI-style segmentation masks: x_mask.png, x_mask_1.png

# MedMNIST flag -> (original labels that mean "positive", name of the positive class). Sources: medmnist 3.0.2 INFO.
MEDMNIST_POSITIVE: dict[str, tuple[frozenset[int], str]] = {
    "breastmnist": (frozenset({0}), "malignant"),  # 0 = malignant, 1 = normal + benign
    "pneumoniamnist": (frozenset({1}), "pneumonia"),  # 0 = normal, 1 = pneumonia
    "adrenalmnist3d": (frozenset({1}), "hyperplasia"),  # 0 = normal, 1 = hyperplasia (shape masks)
}
_MEDMNIST_SIZE = re.compile(r"_(?:28|64|128|224)$")


class LabelMapper:
    """Class name or 0/1 text -> binary label.

    Args:
        positive: class name(s) that mean label 1 (case-insensitive). ``None``: the values must be binary already
            (``0``/``1``, ``yes``/``no``, ``true``/``false``).
        negative: class name(s) that mean label 0. ``None``: every value that is not positive. Values in neither
            give ``None`` (the caller excludes the row).
    """

    def __init__(self, positive: str | Sequence[str] | None = None, negative: str | Sequence[str] | None = None):
        def names(v):
            return None if v is None else frozenset(s.strip().lower() for s in ([v] if isinstance(v, str) else v))

        self.positive, self.negative = names(positive), names(negative)
        if self.positive is not None and self.negative is not None and self.positive & self.negative:
            raise DownstreamError(f"classes {sorted(self.positive & self.negative)} are both positive and negative")
        self.seen: Counter = Counter()  # (value, label) -> count, for the notes

    def __call__(self, value: Any, where: str) -> int | None:
        text = str(value).strip()
        if self.positive is None:
            label = parse_binary_label(text, where)
        elif text.lower() in self.positive:
            label = 1
        elif self.negative is None or text.lower() in self.negative:
            label = 0
        else:
            label = None
        self.seen[(text, label)] += 1
        return label

    def note(self) -> str:
        parts = [f"{value!r} -> {'excluded' if label is None else label} ({n})"
                 for (value, label), n in sorted(self.seen.items(), key=lambda kv: (str(kv[0][1]), kv[0][0]))]
        return "label values: " + ", ".join(parts)


def _pick_column(fieldnames: Sequence[str], requested: str | None, candidates: Sequence[str], what: str,
                 csv_path: Path, required: bool = True) -> str | None:
    if requested is not None:
        if requested not in fieldnames:
            raise DownstreamError(f"{csv_path}: no column {requested!r} (header: {list(fieldnames)})")
        return requested
    lower = {f.strip().lower(): f for f in fieldnames}
    for c in candidates:
        if c in lower:
            return lower[c]
    if required:
        raise DownstreamError(f"{csv_path}: no {what} column in the header {list(fieldnames)}; expected one of "
                              f"{list(candidates)}, or pass {what}_column=<name>")
    return None


def _resolve_image(value: str, base_dirs: Sequence[Path], where: str) -> str:
    """A CSV cell -> an absolute image path (or NPZ reference) that exists; else :class:`DownstreamError`."""
    text = value.strip()
    if not text:
        raise DownstreamError(f"{where}: empty image path")
    file, sep, member = text.rpartition("#")
    is_reference = bool(sep) and file.lower().endswith(".npz")
    target = Path(file if is_reference else text)
    candidates = [target] if target.is_absolute() else [d / target for d in base_dirs]
    for c in candidates:
        if c.is_file():
            return f"{os.path.abspath(c)}#{member}" if is_reference else os.path.abspath(c)
    looked = ", ".join(str(d) for d in base_dirs) if not target.is_absolute() else "as given"
    raise DownstreamError(f"{where}: image file not found: {text!r} (looked {looked})")


def read_csv_items(csv_path: str | Path, *, label_of: Callable[[Any, str], int | None],
                   image_column: str | None = None, label_column: str | None = None,
                   group_column: str | None = None, group_of: Callable[[str], str] | None = None,
                   image_root: str | Path | Sequence[str | Path] | None = None,
                   fold_column: str | None = None, split_column: str | None = None,
                   ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Read a CSV with a header into items ``{"image", "label", "group", "csv_row"[, "fold"][, "split"]}``.

    Args:
        label_of: ``(cell, where) -> 0 | 1 | None``; ``None`` excludes the row (reason given).
        image_column, label_column, group_column: header names; by default the first of :data:`IMAGE_COLUMNS`,
            :data:`LABEL_COLUMNS` and :data:`GROUP_COLUMNS` present (case-insensitive; the group is optional).
        group_of: ``image path -> group`` when the CSV has no group column; default: the image path.
        image_root: folder(s) relative image paths are looked up in, first hit wins; default the CSV's folder.
        fold_column: the column of the data set's own test fold of each row (an integer >= 0; the protocol then
            uses these folds instead of drawing its own); default the first of :data:`FOLD_COLUMNS` present, if any.
        split_column: the column marking the data set's validation part (``train`` / ``val``); only when named.

    Returns:
        ``(items, excluded)``.

    Raises:
        DownstreamError: unreadable or empty CSV, a missing column, a row whose image does not exist (the message
            names the CSV, the line and the file), a non-binary label without ``positive``, or a fold that is not an
            integer >= 0 / a split other than ``train``/``val`` (names the line).
    """
    csv_path = Path(csv_path)
    if image_root is None:
        base_dirs = [csv_path.parent.absolute()]
    elif isinstance(image_root, (str, os.PathLike)):
        base_dirs = [Path(image_root).absolute()]
    else:
        base_dirs = [Path(d).absolute() for d in image_root]
    reader = None
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, skipinitialspace=True)
            fieldnames = [n.strip() for n in (reader.fieldnames or [])]
            if not fieldnames:
                raise DownstreamError(f"{csv_path}: empty CSV (a header row such as 'image,label' is required)")
            twice = sorted({n for n in fieldnames if fieldnames.count(n) > 1})
            if twice:
                raise DownstreamError(f"{csv_path}: the header names the column(s) {twice} more than once "
                                      f"({fieldnames}); which one to read is ambiguous")
            reader.fieldnames = fieldnames
            image_col = _pick_column(fieldnames, image_column, IMAGE_COLUMNS, "image", csv_path)
            label_col = _pick_column(fieldnames, label_column, LABEL_COLUMNS, "label", csv_path)
            group_col = _pick_column(fieldnames, group_column, GROUP_COLUMNS, "group", csv_path, required=False)
            fold_col = _pick_column(fieldnames, fold_column, FOLD_COLUMNS, "fold", csv_path, required=False)
            split_col = _pick_column(fieldnames, split_column, (), "split", csv_path, required=False)
            items, excluded = [], []
            for row in reader:
                where = f"{csv_path}: line {reader.line_num}"
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue  # blank line
                cell = row.get(image_col)
                if cell is None or row.get(label_col) is None:
                    raise DownstreamError(f"{where}: row has fewer columns than the header {fieldnames}")
                if row.get(None):  # DictReader keeps the fields beyond the header under None
                    raise DownstreamError(f"{where}: row has {len(fieldnames) + len(row[None])} fields but the header "
                                          f"{fieldnames} has {len(fieldnames)} (a file name with an unquoted comma?)")
                image = _resolve_image(cell, base_dirs, where)
                label = label_of(row[label_col], f"{where} ({cell.strip()})")
                if label is None:
                    excluded.append({"image": image, "reason": f"{where}: label {row[label_col].strip()!r} is "
                                                               "neither a positive nor a negative class"})
                    continue
                group = (row.get(group_col) or "").strip() if group_col else ""
                if not group:
                    group = group_of(image) if group_of else image
                item = {"image": image, "label": label, "group": group, "csv_row": where}
                if fold_col:
                    item.update(_fold_cell(row.get(fold_col), where))
                if split_col:
                    item.update(_split_cell(row.get(split_col), where))
                items.append(item)
    except OSError as e:
        raise DownstreamError(f"cannot read CSV {csv_path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise DownstreamError(f"{csv_path}: not UTF-8 text ({utf8_problem(csv_path)}); save the CSV as UTF-8") from None
    except csv.Error as e:
        line = f" line {reader.line_num}:" if reader is not None else ""
        raise DownstreamError(f"{csv_path}:{line} not a readable CSV ({e})") from None
    return items, excluded


def _fold_cell(cell: str | None, where: str) -> dict[str, int]:
    """``{"fold": f}`` of a fold cell (an empty cell: ``{}``, which the loader then names as a missing fold)."""
    text = (cell or "").strip()
    if not text:
        return {}
    if not text.isdigit():
        raise DownstreamError(f"{where}: fold {text!r} is not an integer >= 0 (the row's test fold, 0..k-1)")
    return {"fold": int(text)}


def _split_cell(cell: str | None, where: str) -> dict[str, str]:
    text = (cell or "").strip().lower()
    if not text:
        return {}
    if text not in TASK_SPLITS:
        raise DownstreamError(f"{where}: split {text!r} is not one of {list(TASK_SPLITS)}")
    return {"split": text}


def merge_csv_items(item_lists: Iterable[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], int]:
    """Merge items of several CSVs (e.g. train/test of every fold): one item per image.

    Returns ``(items, repeats dropped)``. Raises :class:`DownstreamError` when an image appears with two labels (or
    two folds or splits).
    """
    merged: dict[str, dict[str, Any]] = {}
    repeats = 0
    for items in item_lists:
        for it in items:
            first = merged.get(it["image"])
            if first is None:
                merged[it["image"]] = it
                continue
            repeats += 1
            for key in ("label", "fold", "split"):
                if first.get(key) != it.get(key):
                    raise DownstreamError(f"{it['image']} has {key} {first.get(key)} at {first['csv_row']} but {key} "
                                          f"{it.get(key)} at {it['csv_row']}")
    return list(merged.values()), repeats


def _drop_row_info(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in it.items() if k != "csv_row"} for it in items]


def _csv_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            files = sorted(p.rglob("*.csv"))
            if not files:
                raise DownstreamError(f"{p}: folder holds no .csv files")
            return files
        return [p]
    files = [Path(p) for p in source]
    if not files:
        raise DownstreamError("no CSV files given")
    return files


def convert_csv(source: str | Path | Sequence[str | Path], out: str | Path, *,
                positive: str | Sequence[str] | None = None, negative: str | Sequence[str] | None = None,
                task: str | None = None, positive_name: str | None = None, image_column: str | None = None,
                label_column: str | None = None, group_column: str | None = None,
                image_root: str | Path | Sequence[str | Path] | None = None, fold_column: str | None = None,
                split_column: str | None = None) -> TaskDatalist:
    """A CSV (or several, or a folder of them) with a header ``path,label[,group][,fold]`` -> task datalist.

    Args:
        source: one CSV, several, or a folder (its ``*.csv``, recursively). Several CSVs are merged; an image
            listed in more than one must have the same label each time.
        positive: the class name(s) that mean label 1 when labels are class names; ``None``: labels must be
            0/1 (or yes/no, true/false). negative: class name(s) for label 0 (default: every other name); rows
            with other names are excluded.
        task: task name (default: the first CSV's stem); positive_name: what label 1 means (default: ``positive``
            joined with ``+``, or ``"positive"``).
        image_column, label_column, group_column, image_root: see :func:`read_csv_items`. Without a group column
            every image is its own group.
        fold_column, split_column: the data set's own folds (a ``fold`` column is found by default) and validation
            part (only when named), kept as the items' ``fold`` / ``split``: the protocol then uses them instead of
            drawing its own (see :func:`read_csv_items`).
    """
    files = _csv_files(source)
    mapper = LabelMapper(positive, negative)
    lists, excluded = [], []
    for f in files:
        items, ex = read_csv_items(f, label_of=mapper, image_column=image_column, label_column=label_column,
                                   group_column=group_column, image_root=image_root, fold_column=fold_column,
                                   split_column=split_column)
        lists.append(items)
        excluded += ex
    items, repeats = merge_csv_items(lists)
    name = positive_name or (positive if isinstance(positive, str) else "+".join(positive) if positive else "positive")
    notes = [f"CSV source: {', '.join(str(f) for f in files)}", mapper.note()]
    if repeats:
        notes.append(f"{repeats} repeated row(s) of the same image with the same label merged")
    if not any(it["group"] != it["image"] for it in items):
        notes.append("no group column: every image is its own group (images of one patient may straddle folds)")
    if any("fold" in it for it in items):
        notes.append(f"folds from the CSV's fold column ({len({it.get('fold') for it in items})} values): the "
                     "protocol uses them instead of drawing its own")
    if any("split" in it for it in items):
        notes.append("validation part from the CSV's split column (split: val): the protocol uses it instead of "
                     "drawing one")
    return _finish(_drop_row_info(items), out, task=task or files[0].stem, positive=name, notes=notes,
                   excluded=excluded, source="csv", root=str(files[0].parent.absolute()),
                   options={"positive": positive, "negative": negative, "fold_column": fold_column,
                     "split_column": split_column})


def convert_folder(root: str | Path, out: str | Path, *, positive: str | Sequence[str],
                   negative: str | Sequence[str] | None = None, task: str | None = None,
                   duplicates: DuplicatePolicy | str = DuplicatePolicy.DROP_ALL_BUT_FIRST,
                   exclude_masks: bool = True, folds_from_dirs: bool = False) -> TaskDatalist:
    """Folder per class (``root/<class>/**/<image>``) -> task datalist.

    Args:
        positive: the class folder name(s) of label 1 (case-insensitive). negative: class folder(s) of label 0
            (default: every other class folder; others are excluded).
        task: default ``root``'s name.
        duplicates: :class:`DuplicatePolicy` for exact (pixel-identical) duplicates.
        exclude_masks: leave out files named like segmentation masks (``*_mask.png``, ``*_mask_1.png``).
        folds_from_dirs: the data set's own folds are sub-folders of each class folder, ``root/<class>/fold_<k>/``
            (:data:`FOLD_DIR`): each image gets ``fold`` = position of ``k`` among the fold numbers found, and the
            protocol uses these folds instead of drawing its own. An image outside every ``fold_<k>`` folder is an
            error naming it.

    Images: files with a suffix in :data:`IMAGE_SUFFIXES` (hidden files skipped); every image is its own group.
    """
    root = Path(root)
    if not root.is_dir():
        raise DownstreamError(f"{root}: not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    mapper = LabelMapper(positive, negative)
    unknown = sorted(mapper.positive - {c.lower() for c in classes})
    if unknown:
        raise DownstreamError(f"{root}: positive class folder(s) {unknown} not found; class folders: {classes}")
    items, excluded, masks = [], [], 0
    per_class: Counter = Counter()
    for name in classes:
        label = mapper(name, str(root / name))
        for path in sorted((root / name).rglob("*"), key=lambda p: _natural_key(str(p))):
            if not path.is_file() or path.name.startswith(".") or not path.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            if exclude_masks and MASK_PATTERN.search(_stem(path)):
                masks += 1
                continue
            image = os.path.abspath(path)
            if label is None:
                excluded.append({"image": image, "reason": f"class {name!r} is neither positive nor negative"})
            else:
                item = {"image": image, "label": label, "group": image, "class": name}
                if folds_from_dirs:
                    item["fold"] = _fold_dir_number(path.relative_to(root / name), image)
                items.append(item)
            per_class[(name, label)] += 1
    fold_note = []
    if folds_from_dirs and items:
        numbers = sorted({it["fold"] for it in items})
        for it in items:
            it["fold"] = numbers.index(it["fold"])
        fold_note = [f"folds from the fold_<k> folders ({', '.join(f'fold_{k}' for k in numbers)} -> folds "
                     f"0..{len(numbers) - 1}): the protocol uses them instead of drawing its own"]
    items, ex, dup_notes = _deduplicate(items, duplicates)
    excluded += ex
    mapping = ", ".join(f"{name!r} -> {'excluded' if label is None else label} ({n} images)"
                        for (name, label), n in per_class.items())
    notes = [f"folder per class: {mapping}",
             "every image is its own group (a folder layout carries no patient ids)", *fold_note, *dup_notes]
    if masks:
        notes.append(f"{masks} mask file(s) (*_mask*.*) left out")
    positive_name = "+".join(c for c in classes if c.lower() in mapper.positive)
    return _finish(items, out, task=task or root.name, positive=positive_name, notes=notes,
                   excluded=excluded, source="folder", root=str(root.absolute()),
                   options={"positive": positive, "negative": negative, "duplicates": str(duplicates),
                            "exclude_masks": exclude_masks, "folds_from_dirs": folds_from_dirs})


def convert_json(path: str | Path, out: str | Path, *, task: str | None = None,
                 positive: str | None = None) -> TaskDatalist:
    """An existing datalist JSON (a task datalist, or a MONAI decathlon JSON with binary ``label`` and optional
    ``group``) -> validated task datalist with absolute image paths; ``task``/``positive`` override the file's."""
    items, meta = load_task_datalist(path)
    notes = list(meta.get("notes") or []) + [f"validated copy of {Path(path).absolute()}"]
    provenance = {k: v for k, v in meta.items() if k not in _RESERVED}  # e.g. modality, anatomy, seed
    provenance.setdefault("source", "json")
    provenance.setdefault("root", str(Path(path).absolute().parent))
    return _finish(items, out, task=task or str(meta["task"]), positive=positive or str(meta["positive"]),
                   notes=notes, excluded=list(meta.get("excluded") or []), **provenance)


def convert_medmnist(path: str | Path, out: str | Path, *, positive_labels: Iterable[int] | None = None,
                     splits: Sequence[str] = ("train", "val", "test"), task: str | None = None,
                     positive: str | None = None) -> TaskDatalist:
    """A MedMNIST ``.npz`` -> task datalist of ``"/abs/x.npz#<split>_images/<i>"`` references (nothing copied).

    Args:
        positive_labels: the file's own labels that become label 1. Default from :data:`MEDMNIST_POSITIVE` by the
            file's flag (size suffixes such as ``_64`` ignored); e.g. BreastMNIST stores 0 = malignant, so its
            positive set is ``{0}`` and label = 1 - stored label.
        splits: MedMNIST splits to include (default all; each item keeps its split as ``source_split``).
        task: default the file's stem; positive: name of label 1 (default from :data:`MEDMNIST_POSITIVE`).

    Every image is its own group: MedMNIST carries no patient ids.
    """
    path = Path(path)
    flag = _MEDMNIST_SIZE.sub("", path.stem.lower())
    known = MEDMNIST_POSITIVE.get(flag)
    if positive_labels is None and known is None:
        raise DownstreamError(f"{path}: no default positive class for {flag!r}; pass positive_labels=<set of the "
                              f"file's labels meaning positive> (known: {sorted(MEDMNIST_POSITIVE)})")
    pos = frozenset(int(v) for v in positive_labels) if positive_labels is not None else known[0]
    name = positive or (known[1] if known and positive_labels is None else f"label in {sorted(pos)}")
    if not splits or any(s not in ("train", "val", "test") for s in splits):
        raise DownstreamError(f"splits must be a non-empty subset of ('train', 'val', 'test'), got {list(splits)}")
    lengths = _ReferenceChecker()._lengths(str(path))
    if isinstance(lengths, str):
        raise DownstreamError(f"{path}: {lengths}")
    items, stored = [], Counter()
    try:
        with np.load(path, allow_pickle=False) as archive:
            for split in splits:
                if f"{split}_images" not in lengths or f"{split}_labels" not in lengths:
                    raise DownstreamError(f"{path}: no {split}_images/{split}_labels arrays (it holds "
                                          f"{sorted(lengths)})")
                labels = np.asarray(archive[f"{split}_labels"])
                if labels.ndim == 2 and labels.shape[1] == 1:
                    labels = labels[:, 0]
                if labels.ndim != 1:
                    raise DownstreamError(f"{path}: {split}_labels has shape {labels.shape}; a multi-label file "
                                          "is not one binary task")
                if len(labels) != lengths[f"{split}_images"]:
                    raise DownstreamError(f"{path}: {split}_images has {lengths[f'{split}_images']} images but "
                                          f"{split}_labels has {len(labels)} labels")
                for i, value in enumerate(labels.tolist()):
                    stored[int(value)] += 1
                    reference = medmnist_reference(path, split, i)
                    items.append({"image": reference, "label": int(int(value) in pos), "group": reference,
                                  "source_split": split, "task_label": int(value)})
    except (OSError, ValueError) as e:
        if isinstance(e, DownstreamError):
            raise
        raise DownstreamError(f"{path}: cannot read the archive ({e})") from None
    notes = [f"MedMNIST {flag}: label 1 ({name}) = stored label in {sorted(pos)}; stored label counts "
             f"{dict(sorted(stored.items()))}; splits {list(splits)} (kept per item as source_split)",
             "every image is its own group (MedMNIST carries no patient ids)"]
    if flag == "breastmnist":
        notes.append("BreastMNIST is BUSI resized to 28x28 with normal merged into benign (stored 1 = normal + "
                     "benign, 0 = malignant)")
    return _finish(items, out, task=task or path.stem, positive=name, notes=notes, excluded=[], source="medmnist",
                   root=str(path.absolute()), options={"positive_labels": sorted(pos), "splits": list(splits)})


# -------------------------------------------------------------------------------------------------- shared helpers


def _fold_dir_number(relative: Path, image: str) -> int:
    """The ``k`` of the first ``fold_<k>`` folder on an image's path below its class folder."""
    for part in relative.parts[:-1]:
        if m := FOLD_DIR.match(part):
            return int(m.group(1))
    raise DownstreamError(f"{image} lies in no fold_<k> folder below its class folder (folds_from_dirs): give every "
                          "image a fold, or convert without folds_from_dirs")


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _natural_key(text: str) -> list:
    """Sort key with numbers compared as numbers: ``benign (2)`` before ``benign (10)``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _deduplicate(items: list[dict[str, Any]], policy: DuplicatePolicy | str):
    """Hash every item's pixels; undecodable images are excluded. Returns ``(kept, excluded, notes)``."""
    hashed, hashes, excluded = [], [], []
    for it in items:
        try:
            hashes.append(pixel_hash(it["image"]))
            hashed.append(it)
        except DownstreamError as e:
            excluded.append({"image": it["image"], "reason": f"cannot decode: {e}"})
    kept, dropped, notes = apply_duplicate_policy(hashed, hashes, policy)
    return kept, excluded + dropped, notes


def _finish(items: list[dict[str, Any]], out: str | Path, *, task: str, positive: str, notes: list[str],
            excluded: list[dict[str, str]], **provenance: Any) -> TaskDatalist:
    """Write the datalist and return it with validated items."""
    out = Path(out)
    counts = Counter(it["label"] for it in items)
    notes = [*notes, f"{len(items)} images: {counts.get(1, 0)} {positive} (label 1), {counts.get(0, 0)} other "
                     f"(label 0), {len({it['group'] for it in items})} groups; {len(excluded)} excluded"]
    write_task_datalist(items, out, task=task, positive=positive, notes=notes, excluded=excluded, **provenance)
    loaded, _ = load_task_datalist(out, check_images=False)
    return TaskDatalist(items=loaded, task=task, positive=positive, notes=notes, excluded=excluded, path=out)
