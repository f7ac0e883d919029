"""Index a RadImageNet tree into labelled records, and draw / save / reload the miniRIN subset.

The tree is ``<root>/radiology_ai/<modality>/[<anatomy>/]<class>/<image>`` (see :mod:`monai_modan.labels.radimagenet`);
``<root>`` may also hold the split lists ``RadiologyAI_{train,val,test}.csv`` (header ``filename,label``, filenames
relative to ``<root>``). Splits come from those lists; the ``label`` text of the lists is not used (the folder path
is the label's source of truth).

Policies (reported in :attr:`IndexResult.notes` / :attr:`IndexResult.skipped`):

* an image on disk that no split CSV lists goes to ``unlisted_split`` (default ``"training"``), or is skipped when
  ``unlisted_split=None``; without any split CSV every image is ``"training"``;
* a CSV row whose file is missing is skipped ("CSV row points to a missing file", naming the CSV and line);
* a file listed in two different split CSVs is skipped ("listed in several split CSVs") -- it would leak between splits;
* non-image files, hidden files (``.DS_Store``, ``._x.png``), files at the wrong folder depth, folders inside class
  folders and unknown modality folders are skipped with their reason.

Records are ordered by class id, then file name, whatever order the file system lists them in.
"""

from __future__ import annotations

import csv
import os
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..labels.radimagenet import (
    RADIMAGENET_DIR,
    ClassLabels,
    FolderLayout,
    RadImageNetPathError,
    RadImageNetRules,
    class_id,
    class_key,
)
from ..labels.vocabulary import LabelSpace
from ..utils.io import atomic_path, utf8_problem
from .records import SPLITS, ImageRecord, IndexResult, SkippedFile

__all__ = [
    "SPLIT_CSV_NAMES",
    "RadImageNetError",
    "MissingImagesError",
    "RadImageNetIndex",
    "find_radimagenet_root",
    "looks_like_radimagenet",
    "list_radimagenet_classes",
    "index_radimagenet",
    "sample_minirin",
    "write_selection",
    "read_selection",
]

SOURCE = "radimagenet"
SPLIT_CSV_NAMES = {"training": "RadiologyAI_train.csv", "validation": "RadiologyAI_val.csv", "test": "RadiologyAI_test.csv"}
DEFAULT_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CONFLICT = "\0conflict"  # split marker of a file listed in two different split CSVs


class RadImageNetError(ValueError):
    """A RadImageNet tree, split CSV or selection list cannot be used; the message names the file and the cause."""


class MissingImagesError(RadImageNetError, FileNotFoundError):
    """Files named by a selection list are not on disk; ``missing`` holds their paths."""

    def __init__(self, message: str, missing: Sequence[str]):
        super().__init__(message)
        self.missing = list(missing)


@dataclass
class RadImageNetIndex:
    """An :class:`IndexResult` of RadImageNet images plus the class list of the tree.

    Args:
        result: the records (``extra = {"class": id, "class_index": int, "source": "radimagenet"}``), skipped files,
            unmapped names and notes.
        classes: every class id of the tree, sorted; ``class_index`` is the position in this list. A datalist for the
            supervised-165 baseline stores it as ``class_names``. Subsets (miniRIN) keep the full list so indices
            stay comparable.
        space: the label space the labels belong to.
        rules: the folder-name rules that produced the labels.
    """

    result: IndexResult
    classes: list[str]
    space: LabelSpace
    rules: RadImageNetRules = field(default_factory=RadImageNetRules.load)

    @property
    def root(self) -> Path:
        """The folder that contains ``radiology_ai/``."""
        return Path(self.result.root)

    @property
    def class_to_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}


# locating the tree --------------------------------------------------------------------------------------------
def find_radimagenet_root(path: str | os.PathLike) -> Path | None:
    """The folder that contains ``radiology_ai/``, given that folder or ``radiology_ai`` itself; ``None`` otherwise."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    if path.name.casefold() == RADIMAGENET_DIR:
        return path.absolute().parent
    if (path / RADIMAGENET_DIR).is_dir():
        return path.absolute()
    try:  # a case-insensitive name on a case-sensitive file system
        with os.scandir(path) as entries:
            for e in entries:
                if e.name.casefold() == RADIMAGENET_DIR and e.is_dir():
                    return path.absolute()
    except OSError:
        return None
    return None


def _top(root: Path) -> Path:
    """``<root>/radiology_ai`` whatever its case on disk."""
    exact = root / RADIMAGENET_DIR
    if exact.is_dir():
        return exact
    with os.scandir(root) as entries:
        return next(Path(e.path) for e in entries if e.name.casefold() == RADIMAGENET_DIR and e.is_dir())


def looks_like_radimagenet(path: str | os.PathLike, rules: RadImageNetRules | None = None) -> bool:
    """True when ``path`` (or its ``radiology_ai/``) holds a ``radiology_ai`` folder with a known modality folder."""
    root = find_radimagenet_root(path)
    if root is None:
        return False
    rules = rules or RadImageNetRules.load()
    try:
        with os.scandir(_top(root)) as entries:
            return any(e.is_dir() and rules.layout(e.name) is not None for e in entries)
    except OSError:
        return False


def _require_root(path: str | os.PathLike) -> tuple[Path, Path]:
    root = find_radimagenet_root(path)
    if root is None:
        raise RadImageNetError(
            f"{path} is not a RadImageNet tree: expected a folder containing '{RADIMAGENET_DIR}/' or that folder itself"
        )
    return root, _top(root)


# walking ------------------------------------------------------------------------------------------------------
def _entries(path: str | os.PathLike) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _class_folders(top: Path, rules: RadImageNetRules, result: IndexResult | None = None) -> list[tuple[str, str]]:
    """``[(class id, folder path)]`` sorted by id; files/folders at the wrong level are recorded in ``result``."""

    def skip(entry: os.DirEntry, reason: str, detail: str) -> None:
        if result is not None:
            result.skipped.append(SkippedFile(entry.path, reason, detail))

    split_csvs = {n.casefold() for n in SPLIT_CSV_NAMES.values()}
    folders: list[tuple[str, str]] = []

    def add_classes(parent: str, modality: str, anatomy: str | None) -> None:
        where = "/".join(p for p in (RADIMAGENET_DIR, modality, anatomy) if p)
        for e in _entries(parent):
            if e.name.startswith("."):
                skip(e, "hidden entry", f"{e.name!r} in {where}")
            elif e.is_dir():
                folders.append((class_id(modality, anatomy, e.name), e.path))
            else:
                skip(e, "unexpected folder level", f"file directly in {where}: expected {where}/<class>/<image>")

    for m in _entries(top):
        if m.name.startswith("."):
            skip(m, "hidden entry", f"{m.name!r} in {RADIMAGENET_DIR}")
            continue
        if not m.is_dir():
            if m.name.casefold() not in split_csvs:
                skip(m, "unexpected folder level", f"file directly in {RADIMAGENET_DIR}: expected {RADIMAGENET_DIR}/<modality>/...")
            continue
        layout = rules.layout(m.name)
        if layout is None:
            skip(m, "unknown modality folder",
                 f"{RADIMAGENET_DIR}/{m.name} is not in the RadImageNet rules (known: {sorted(rules.modality_folders)}); "
                 "add it under 'modality_folders:' with its layout to index it (not searched)")
        elif layout is FolderLayout.FLAT:
            add_classes(m.path, m.name, None)
        else:
            for a in _entries(m.path):
                if a.name.startswith("."):
                    skip(a, "hidden entry", f"{a.name!r} in {RADIMAGENET_DIR}/{m.name}")
                elif a.is_dir():
                    add_classes(a.path, m.name, a.name)
                else:
                    skip(a, "unexpected folder level",
                         f"file directly in {RADIMAGENET_DIR}/{m.name}: expected {RADIMAGENET_DIR}/{m.name}/<anatomy>/<class>/<image>")
    return sorted(folders)


def list_radimagenet_classes(root: str | os.PathLike, rules: RadImageNetRules | None = None) -> list[str]:
    """Sorted ids of every class folder of the tree (reads folders only, not the images inside them)."""
    _, top = _require_root(root)
    return [cid for cid, _ in _class_folders(top, rules or RadImageNetRules.load())]


@dataclass
class _ClassImages:
    cid: str
    folder: str
    names: list[str]  # image file names, sorted
    splits: list[str | None]


def _list_images(cid: str, folder: str, suffixes: tuple[str, ...], result: IndexResult) -> _ClassImages:
    names = []
    for e in _entries(folder):  # DirEntry.is_dir() uses the d_type the listing already gave: no stat per file
        if e.name.startswith("."):
            result.skipped.append(SkippedFile(e.path, "hidden file", f"hidden entry {e.name!r} in class {cid}"))
        elif e.is_dir():
            result.skipped.append(SkippedFile(
                e.path, "unexpected folder level",
                f"folder inside class folder {RADIMAGENET_DIR}/{cid}: not searched (images belong directly in the class folder)",
            ))
        elif e.name.lower().endswith(suffixes):
            names.append(e.name)
        else:
            result.skipped.append(SkippedFile(e.path, "not an image", f"suffix {Path(e.name).suffix!r} is not one of {list(suffixes)}"))
    return _ClassImages(cid, folder, names, [None] * len(names))


# split CSVs ---------------------------------------------------------------------------------------------------
def _find_split_csvs(root: Path, top: Path, split_csvs: bool | str | os.PathLike) -> dict[str, Path]:
    if split_csvs is False or split_csvs is None:
        return {}
    folders = [root, top] if split_csvs is True else [Path(split_csvs)]
    if split_csvs is not True and not folders[0].is_dir():
        raise RadImageNetError(f"split CSV folder {folders[0]} does not exist")
    wanted = {name.casefold(): split for split, name in SPLIT_CSV_NAMES.items()}
    found: dict[str, Path] = {}
    for folder in folders:
        for e in _entries(folder):
            split = wanted.get(e.name.casefold())
            if split is not None and split not in found and e.is_file():
                found[split] = Path(e.path)
    return {s: found[s] for s in SPLITS if s in found}


def _csv_rows(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> Iterable[tuple[int, list[str]]]:
    """``(line number, [value of each column in required + optional])`` of a CSV; header names are case-insensitive
    and a missing optional column reads as ``""``."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise RadImageNetError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip().casefold() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise RadImageNetError(f"{path}: header must name the column(s) {missing} (found {header or 'no header'})")
            twice = [c for c in (*required, *optional) if header.count(c) > 1]
            if twice:
                raise RadImageNetError(f"{path}: the header names the column(s) {twice} more than once ({header}); "
                                       "which one to read is ambiguous")
            columns = [header.index(c) if c in header else None for c in (*required, *optional)]
            for row in reader:
                if any(c.strip() for c in row):
                    yield reader.line_num, [row[i].strip() if i is not None and i < len(row) else "" for i in columns]
        except UnicodeDecodeError:
            raise RadImageNetError(f"{path}: not UTF-8 text ({utf8_problem(path)}); save the CSV as UTF-8") from None
        except csv.Error as e:
            raise RadImageNetError(f"{path}: line {reader.line_num}: not a readable CSV ({e})") from None


class _ImageLookup:
    """(class id from a path, file name) -> (class position, image position), matching class ids robustly."""

    def __init__(self, classes: list[_ClassImages], result: IndexResult):
        self.classes = classes
        self.by_id = {c.cid: i for i, c in enumerate(classes)}
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(classes):
            by_key[class_key(c.cid)].append(i)
        self.by_key = dict(by_key)
        for ids in self.by_key.values():
            if len(ids) > 1:
                result.notes.append(
                    f"class folders {[classes[i].cid for i in ids]} differ only by case or a trailing '_': "
                    "list rows naming them are matched to the exact folder only"
                )
        self._names: dict[int, dict[str, int]] = {}

    def class_position(self, cid: str) -> int | None:
        if cid in self.by_id:
            return self.by_id[cid]
        ids = self.by_key.get(class_key(cid), [])
        return ids[0] if len(ids) == 1 else None

    def find(self, cid: str, name: str) -> tuple[int, int] | None:
        ci = self.class_position(cid)
        if ci is None:
            return None
        names = self._names.get(ci)
        if names is None:
            names = self._names[ci] = {n: i for i, n in enumerate(self.classes[ci].names)}
        pos = names.get(name)
        return None if pos is None else (ci, pos)


def _apply_split_csvs(csvs: dict[str, Path], lookup: _ImageLookup, top: Path, rules: RadImageNetRules,
                      result: IndexResult, progress: bool) -> Counter:
    duplicates, listed = 0, Counter()
    folder_class: dict[str, str | RadImageNetPathError] = {}  # parse each folder of the lists once, not each row
    for split, path in csvs.items():
        for line, (filename,) in tqdm(_csv_rows(path, ["filename"]), desc=path.name, unit=" rows", disable=not progress):
            where = f"{path.name} line {line}"
            folder, _, name = filename.replace("\\", "/").rpartition("/")
            if not name:
                result.skipped.append(SkippedFile(filename, "bad CSV row", f"{where}: no file name"))
                continue
            if folder not in folder_class:
                try:
                    folder_class[folder] = rules.class_of_path(filename)[0]
                except RadImageNetPathError as e:
                    folder_class[folder] = e
            cid = folder_class[folder]
            if isinstance(cid, RadImageNetPathError):
                result.skipped.append(SkippedFile(filename, "bad CSV row", f"{where}: {cid}"))
                continue
            hit = lookup.find(cid, name)
            if hit is None:
                on_disk = top / cid / name
                if not on_disk.exists():  # an existing file here was already skipped by the walk, with its reason
                    result.skipped.append(SkippedFile(str(on_disk), "CSV row points to a missing file", f"{where}: {filename}"))
                continue
            ci, pos = hit
            splits = lookup.classes[ci].splits
            if splits[pos] is None:
                splits[pos] = split
                listed[split] += 1
            elif splits[pos] == split:
                duplicates += 1
            elif splits[pos] != _CONFLICT:
                result.skipped.append(SkippedFile(
                    os.path.join(lookup.classes[ci].folder, name), "listed in several split CSVs",
                    f"{where} lists it as {split!r}; an earlier CSV as {splits[pos]!r}",
                ))
                listed[splits[pos]] -= 1
                splits[pos] = _CONFLICT
    if duplicates:
        result.notes.append(f"{duplicates} repeated split-CSV rows ignored")
    return listed


# labels -------------------------------------------------------------------------------------------------------
def _count_unmapped(result: IndexResult, class_counts: Counter, labels: dict[str, ClassLabels]) -> None:
    for cid, n in class_counts.items():
        for group, tag, value in labels[cid].unmapped:
            result.unmapped[(group, tag)][value] += n


def _make_record(path: str, cl: ClassLabels, split: str, cid: str, index: int) -> ImageRecord:
    return ImageRecord(path, dict(cl.labels), dict(cl.sources), split, {"class": cid, "class_index": index, "source": SOURCE})


def _summary(records: Sequence[ImageRecord], n_classes: int) -> str:
    by_split = Counter(r.split for r in records)
    by_modality = Counter(r.extra["class"].split("/")[0] for r in records)
    return (f"RadImageNet: {len(records)} images in {n_classes} classes; by modality folder "
            f"{dict(sorted(by_modality.items()))}; by split {dict(by_split)}")


def index_radimagenet(
    root: str | os.PathLike,
    space: LabelSpace,
    *,
    split_csvs: bool | str | os.PathLike = True,
    image_suffixes: Sequence[str] = DEFAULT_IMAGE_SUFFIXES,
    progress: bool = True,
    unlisted_split: str | None = "training",
    rules: RadImageNetRules | None = None,
) -> RadImageNetIndex:
    """Walk a RadImageNet tree into labelled records.

    Args:
        root: the folder containing ``radiology_ai/``, or ``radiology_ai`` itself.
        space: label space; ``modality`` and ``anatomy`` are read from the path (other groups stay unknown).
        split_csvs: ``True``: use ``RadiologyAI_{train,val,test}.csv`` found in ``root`` or ``radiology_ai/``;
            a folder: look there; ``False``: ignore them (every image ``"training"``).
        image_suffixes: file suffixes indexed (case-insensitive); other files are skipped as "not an image".
        progress: show a progress bar over class folders (stderr).
        unlisted_split: split of an image that split CSVs exist for but do not list; ``None`` skips it.
        rules: folder-name rules (default: ``resources/radimagenet.yaml``).

    Raises:
        RadImageNetError: ``root`` is not a RadImageNet tree, or a split CSV has no ``filename`` column.
    """
    if unlisted_split is not None and unlisted_split not in SPLITS:
        raise ValueError(f"unlisted_split must be one of {SPLITS} or None, got {unlisted_split!r}")
    rules = rules or RadImageNetRules.load()
    root, top = _require_root(root)
    suffixes = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in image_suffixes)
    result = IndexResult(source=SOURCE, root=str(root))

    folders = _class_folders(top, rules, result)
    classes = [c for c, _ in folders]
    bar = tqdm(folders, desc="RadImageNet classes", unit="class", disable=not progress)
    images = [_list_images(cid, folder, suffixes, result) for cid, folder in bar]
    empty = [c.cid for c in images if not c.names]
    if empty:
        result.notes.append(f"{len(empty)} class folder(s) hold no image (kept in the class list): {empty}")

    csvs = _find_split_csvs(root, top, split_csvs)
    if csvs:
        listed = _apply_split_csvs(csvs, _ImageLookup(images, result), top, rules, result, progress)
        result.notes.append(f"splits from {', '.join(p.name for p in csvs.values())}: {dict(listed)}")
        absent = [SPLIT_CSV_NAMES[s] for s in SPLITS if s not in csvs]
        if absent:
            result.notes.append(f"no {', '.join(absent)} found: that split is empty")
    elif split_csvs is not False:
        result.notes.append(f"no split CSVs ({', '.join(SPLIT_CSV_NAMES.values())}) found in {root} or {top}: "
                            "every image is 'training'")
    default_split = unlisted_split if csvs else "training"

    labels = {cid: rules.labels_for_class(cid, space) for cid in classes}
    unlisted, class_counts = 0, Counter()
    for index, c in enumerate(images):  # images is in the order of `classes`
        for name, split in zip(c.names, c.splits):
            if split == _CONFLICT:
                continue
            if split is None:
                unlisted += bool(csvs)
                split = default_split
                if split is None:
                    result.skipped.append(SkippedFile(os.path.join(c.folder, name), "not in any split CSV",
                                                      "unlisted_split=None skips images no split CSV lists"))
                    continue
            result.records.append(_make_record(f"{c.folder}{os.sep}{name}", labels[c.cid], split, c.cid, index))
            class_counts[c.cid] += 1
    if unlisted:
        fate = f"put in {unlisted_split!r}" if unlisted_split else "skipped"
        result.notes.append(f"{unlisted} image(s) on disk are in no split CSV: {fate}")
    _count_unmapped(result, class_counts, labels)
    result.notes.insert(0, _summary(result.records, len(classes)))
    return RadImageNetIndex(result, classes, space, rules)


# miniRIN ------------------------------------------------------------------------------------------------------
def _class_rng(seed: int, cid: str) -> np.random.Generator:
    # one stream per class: a class's draw does not depend on which other classes exist
    return np.random.default_rng([seed, zlib.crc32(cid.encode("utf-8"))])


def sample_minirin(index: RadImageNetIndex, *, per_class: int = 100, seed: int = 0,
                   split: str | None = "training") -> RadImageNetIndex:
    """miniRIN: up to ``per_class`` images of every class (all of a smaller class), drawn from ``split``.

    The draw is a function of ``(seed, class id, the sorted image paths of the class)`` only: each class gets its own
    ``numpy`` Generator seeded by ``[seed, crc32(class id)]`` and samples without replacement from its images sorted
    by path, so neither the file system's listing order nor the presence of other classes changes it.

    Args:
        index: a full index (:func:`index_radimagenet`).
        per_class: cap per class (>= 1).
        seed: non-negative seed.
        split: split the images come from; ``None`` for all splits.

    Returns:
        A :class:`RadImageNetIndex` over the chosen records (ordered by class, then path) with the same class list.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in index.result.records:
        if split is None or r.split == split:
            cid = r.extra.get("class")
            if cid is None:
                raise RadImageNetError(f"record {r.image} has no 'class' field: not a RadImageNet index record")
            by_class[cid].append(r)

    chosen: list[ImageRecord] = []
    small: list[str] = []
    for cid in sorted(by_class):
        members = sorted(by_class[cid], key=lambda r: r.image)
        if len(members) <= per_class:
            chosen.extend(members)
            small += [f"{cid} ({len(members)})"] if len(members) < per_class else []
        else:
            picks = np.sort(_class_rng(seed, cid).choice(len(members), size=per_class, replace=False))
            chosen.extend(members[i] for i in picks)

    pool = sum(len(v) for v in by_class.values())
    result = IndexResult(source=index.result.source, root=index.result.root, records=chosen)
    result.notes.append(f"miniRIN: {len(chosen)} images, up to {per_class} per class (seed {seed}) from {pool} "
                        f"{split or 'all-split'} images of {index.result.root}")
    if small:
        result.notes.append(f"{len(small)} class(es) had fewer than {per_class} images, all taken: {small}")
    absent = [c for c in index.classes if c not in by_class]
    if absent:
        result.notes.append(f"{len(absent)} class(es) have no {split + ' ' if split else ''}image: {absent}")
    labels = {cid: index.rules.labels_for_class(cid, index.space) for cid in by_class}
    _count_unmapped(result, Counter(r.extra["class"] for r in chosen), labels)
    return RadImageNetIndex(result, list(index.classes), index.space, index.rules)


def write_selection(index: RadImageNetIndex, path: str | os.PathLike) -> Path:
    """Write the chosen images as CSV ``filename,class,split`` (filenames relative to the folder containing
    ``radiology_ai/``, ``/``-separated), atomically. :func:`read_selection` rebuilds the same index from it."""
    root = os.path.abspath(index.result.root)
    rows = []
    for r in index.result.records:
        rel = os.path.relpath(os.path.abspath(r.image), root)
        if rel.startswith(os.pardir):
            raise RadImageNetError(f"record {r.image} is not under the index root {root}")
        rows.append((Path(rel).as_posix(), r.extra["class"], r.split))
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["filename", "class", "split"])
            writer.writerows(rows)
    return Path(path)


def read_selection(root: str | os.PathLike, path: str | os.PathLike, space: LabelSpace, *,
                   rules: RadImageNetRules | None = None) -> RadImageNetIndex:
    """Rebuild an index from a selection list written by :func:`write_selection`.

    ``root`` is the tree the list is applied to (folder containing ``radiology_ai/`` or that folder). A missing
    ``split`` column means ``"training"``. Class folders are matched robustly (case, trailing ``_``).

    Raises:
        MissingImagesError: listed files are not on disk (all of them are named, up to 20 in the message).
        RadImageNetError: bad header, a row whose ``class`` disagrees with its path, a duplicate or a bad split.
    """
    rules = rules or RadImageNetRules.load()
    root, top = _require_root(root)
    path = Path(path)
    folders = dict(_class_folders(top, rules))
    classes = sorted(folders)
    lookup_by_key: dict[str, list[str]] = defaultdict(list)
    for cid in classes:
        lookup_by_key[class_key(cid)].append(cid)
    position = {c: i for i, c in enumerate(classes)}

    result = IndexResult(source=SOURCE, root=str(root))
    labels: dict[str, ClassLabels] = {}
    seen: dict[str, int] = {}
    missing: list[str] = []
    for line, (filename, listed_class, split) in _csv_rows(path, ["filename", "class"], ["split"]):
        where = f"{path} line {line}"
        try:
            cid, name = rules.class_of_path(filename)
        except RadImageNetPathError as e:
            raise RadImageNetError(f"{where}: {e}") from None
        if class_key(listed_class) != class_key(cid):
            raise RadImageNetError(f"{where}: class {listed_class!r} does not match the path {filename!r} ({cid})")
        split = split or "training"
        if split not in SPLITS:
            raise RadImageNetError(f"{where}: split {split!r} is not one of {SPLITS}")
        disk = cid if cid in folders else (lookup_by_key.get(class_key(cid)) or [None])[0]
        image = os.path.join(folders[disk], name) if disk else str(top / cid / name)
        if disk is None or not os.path.isfile(image):
            missing.append(image)
            continue
        if image in seen:
            raise RadImageNetError(f"{where}: {filename} is listed twice (first on line {seen[image]})")
        seen[image] = line
        if disk not in labels:
            labels[disk] = rules.labels_for_class(disk, space)
        result.records.append(_make_record(image, labels[disk], split, disk, position[disk]))
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise MissingImagesError(f"{path}: {len(missing)} selected file(s) are not under {top}:\n  {shown}", missing)
    _count_unmapped(result, Counter(r.extra["class"] for r in result.records), labels)
    result.notes.append(f"selection {path}: {len(result.records)} images")
    result.notes.insert(0, _summary(result.records, len(classes)))
    return RadImageNetIndex(result, classes, space, rules)
