"""DDTI thyroid ultrasound (Pedraza et al., *Proc. SPIE* 9287, 2015) -> binary task datalist.

Release layout (one flat folder)::

    1.xml  1_1.jpg  2.xml  2_1.jpg  2_2.jpg ...

Each ``<case>.xml`` is ``<case><number>..</number><age/><sex/><composition/><echogenicity/><margins/>
<calcifications/><tirads>4a</tirads><mark><image>1</image><svg>...</svg></mark>...</case>``; the images of a case
are ``<case>_<k>.jpg``. DDTI has no pathology: the label is derived from the radiologists' TI-RADS category, cut at
``malignant_from`` (default ``4a``: benign = 2, 3; malignant = 4a, 4b, 4c, 5 -- the split used by published DDTI
classification work). A bare ``4`` (no sub-category) means one of 4a..4c: it is labelled when all three fall on the
same side of the cut, else excluded. ``group`` = case, so all images of a case (one patient / nodule) stay together.

Also the 5-fold CSV release (:func:`convert_ddti_csv`): CSVs ``img_dir,label`` (``images/22_1.jpg,benign``), one or
many (e.g. every ``fold_k/{train,test}.csv``); the case is parsed from the file name (``22_1.jpg`` -> ``22``). When
the release has its folds (``fold_<k>/test.csv`` files), each image keeps the fold whose ``test.csv`` lists it, as
its ``fold`` (``0..k-1`` in the order of ``k``), and the protocol uses these published folds instead of drawing its
own (``keep_folds=False``: merge and draw, as before).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from .generic import (
    FOLD_DIR,
    LabelMapper,
    _csv_files,
    _drop_row_info,
    _finish,
    _natural_key,
    merge_csv_items,
    read_csv_items,
)
from .task import DownstreamError, TaskDatalist

__all__ = ["TIRADS_CATEGORIES", "tirads_label", "convert_ddti", "convert_ddti_csv", "ddti_case", "published_fold"]

TIRADS_CATEGORIES = ("1", "2", "3", "4a", "4b", "4c", "5")  # ordered by risk
_BARE_FOUR = ("4a", "4b", "4c")
_IMAGE = re.compile(r"^(\d+)_(\d+)\.jpe?g$", re.IGNORECASE)
_CASE = re.compile(r"^(\d+)_\d+")


def published_fold(csv_file: str | Path) -> tuple[int, str] | None:
    """``(k, part)`` of a CSV of a fold release, ``fold_<k>/<part>.csv`` (``part`` lower-case, e.g. ``"test"``), or
    ``None`` for a CSV outside a ``fold_<k>`` folder."""
    path = Path(csv_file)
    m = FOLD_DIR.match(path.parent.name)
    return (int(m.group(1)), path.stem.lower()) if m else None


def _normalise_tirads(value: str | int) -> str:
    # str(): categories arrive as ints from YAML/CLI options (``malignant_from=5``)
    return re.sub(r"\s+", "", str(value)).lower()


def tirads_label(value: str, malignant_from: str = "4a") -> int | None:
    """TI-RADS category -> 1 (``>= malignant_from``), 0, or ``None`` for a bare ``4`` straddling the cut.

    Raises:
        DownstreamError: an unknown category (the message lists the known ones).
    """
    cut = _normalise_tirads(malignant_from)
    if cut not in TIRADS_CATEGORIES:
        raise DownstreamError(f"malignant_from must be one of {TIRADS_CATEGORIES}, got {malignant_from!r}")
    v = _normalise_tirads(value)
    members = _BARE_FOUR if v == "4" else (v,)
    if any(m not in TIRADS_CATEGORIES for m in members):
        raise DownstreamError(f"unknown TI-RADS category {value!r} (known: {', '.join(TIRADS_CATEGORIES)})")
    sides = {TIRADS_CATEGORIES.index(m) >= TIRADS_CATEGORIES.index(cut) for m in members}
    return int(sides.pop()) if len(sides) == 1 else None


def ddti_case(image: str | Path) -> str:
    """The DDTI case of an image file name: ``22_1.jpg`` -> ``"22"``; a name without ``<case>_<k>`` -> its stem."""
    stem = Path(image).stem
    m = _CASE.match(stem)
    return m.group(1) if m else stem


def convert_ddti(root: str | Path, out: str | Path, *, malignant_from: str = "4a",
                 exclude_tirads: Sequence[str] = (), task: str = "thyroid_us") -> TaskDatalist:
    """DDTI release (XML + JPG) -> task datalist (label 1 = TI-RADS ``>= malignant_from``).

    Args:
        root: the folder with ``<case>.xml`` and ``<case>_<k>.jpg``.
        out: the datalist JSON to write.
        malignant_from: the TI-RADS cut (one of :data:`TIRADS_CATEGORIES`; default ``4a``).
        exclude_tirads: categories to leave out (e.g. ``("4a",)`` to drop the indeterminate nodules).
        task: task name.

    Excluded with the reason: images of a case whose XML is unreadable, lacks ``<tirads>``, has an unknown or
    excluded category; images without a ``<case>.xml``; XMLs without images.

    Raises:
        DownstreamError: ``root`` holds no DDTI XML files, or a bad ``malignant_from``/``exclude_tirads``.
    """
    root = Path(root)
    tirads_label("2", malignant_from)  # validates the cut
    excluded_categories = {_normalise_tirads(t) for t in exclude_tirads}
    if unknown := excluded_categories - set(TIRADS_CATEGORIES) - {"4"}:
        raise DownstreamError(f"exclude_tirads has unknown categories {sorted(unknown)}")
    xmls = {p.stem: p for p in root.glob("*.xml")} if root.is_dir() else {}
    if not xmls:
        raise DownstreamError(f"{root}: no DDTI case files (<case>.xml beside <case>_<k>.jpg)")
    images: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(root.iterdir(), key=lambda p: _natural_key(p.name)):
        if m := _IMAGE.match(p.name):
            images[m.group(1)].append(p)
    items, excluded = [], []
    categories: Counter = Counter()

    def exclude(case: str, reason: str) -> None:
        for p in images.get(case) or [xmls[case]]:
            excluded.append({"image": os.path.abspath(p), "reason": reason})

    for case in sorted(set(images) - set(xmls), key=int):
        exclude(case, f"no {case}.xml (no TI-RADS) for this image")
    for case in sorted(xmls, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c)):
        xml = xmls[case]
        if case not in images:
            exclude(case, f"case {case} has no image ({case}_<k>.jpg)")
            continue
        try:
            node = ElementTree.parse(xml).getroot().find(".//tirads")
        except (ElementTree.ParseError, OSError, UnicodeDecodeError) as e:
            exclude(case, f"unreadable XML {xml.name}: {e}")
            continue
        value = (node.text or "").strip() if node is not None else ""
        if not value:
            exclude(case, f"{xml.name} has no TI-RADS value")
            continue
        try:
            label = tirads_label(value, malignant_from)
        except DownstreamError as e:
            exclude(case, f"{xml.name}: {e}")
            continue
        category = _normalise_tirads(value)
        if category in excluded_categories:
            exclude(case, f"TI-RADS {category} excluded (exclude_tirads)")
            continue
        if label is None:
            exclude(case, f"TI-RADS {value!r} has no sub-category and straddles the cut at {malignant_from}")
            continue
        categories[category] += len(images[case])
        for p in images[case]:
            items.append({"image": os.path.abspath(p), "label": label, "group": case, "tirads": category})
    notes = [f"DDTI: label from the radiologists' TI-RADS category (no pathology in DDTI): malignant (1) = TI-RADS "
             f">= {malignant_from}, benign (0) below" +
             (f"; excluded categories {sorted(excluded_categories)}" if excluded_categories else ""),
             f"images per TI-RADS category: {dict(sorted(categories.items()))}",
             "group = case (<case>.xml): all images of a case stay in one fold"]
    return _finish(items, out, task=task, positive="malignant", notes=notes, excluded=excluded, source="ddti",
                   root=str(root.absolute()),
                   options={"malignant_from": malignant_from, "exclude_tirads": sorted(excluded_categories)})


def convert_ddti_csv(source: str | Path | Sequence[str | Path], out: str | Path, *,
                     image_root: str | Path | None = None, positive: str = "malignant", negative: str = "benign",
                     task: str = "thyroid_us", keep_folds: bool = True) -> TaskDatalist:
    """The 5-fold CSV release (``img_dir,label`` rows like ``images/22_1.jpg,benign``) -> task datalist.

    Args:
        source: one CSV, several, or a folder (all ``*.csv`` below it, e.g. ``fold_*/{train,test}.csv``). An image
            listed in several CSVs is kept once (a conflicting label is an error).
        image_root: the folder image paths are relative to; default: each CSV's folder, then its parent (so both
            ``root/train.csv`` and ``root/fold_1/train.csv`` find ``root/images/``).
        positive, negative: the label names (rows with other names are excluded).
        keep_folds: when the CSVs include ``fold_<k>/test.csv`` files, give each image the fold whose ``test.csv``
            lists it (``fold`` = position of ``k`` among the release's fold numbers), so that the protocol uses the
            published folds. ``False``: merge the CSVs and let the protocol draw its own folds.

    ``group`` = case parsed from the file name (``22_1.jpg`` -> ``22``).

    Raises:
        DownstreamError: besides the CSV errors, with published folds: an image in two folds' ``test.csv`` or in
            the ``train.csv`` of its own test fold, an image in no fold's ``test.csv``, or a case whose images lie
            in two test folds (the message names the images and files).
    """
    files = _csv_files(source)
    mapper = LabelMapper(positive, negative)
    lists, excluded = [], []
    for f in files:
        roots = [image_root] if image_root is not None else [f.parent, f.parent.parent]
        items, ex = read_csv_items(f, label_of=mapper, group_of=ddti_case, image_root=roots)
        lists.append(items)
        excluded += ex
    tests = {f: fold[0] for f in files if (fold := published_fold(f)) is not None and fold[1] == "test"}
    folds_note = None
    if keep_folds and tests:
        merge_csv_items(lists)  # a conflicting label is named first, as without folds
        folds_note = _assign_published_folds(files, lists, tests)
    items, repeats = merge_csv_items(lists)
    notes = [f"DDTI CSV release: {len(files)} CSV file(s) ({', '.join(str(f) for f in files[:6])}"
             f"{' ...' if len(files) > 6 else ''}); {repeats} repeated row(s) merged",
             mapper.note(), "group = case parsed from the file name (<case>_<k>.jpg): images of a case stay together"]
    if folds_note:
        notes.append(folds_note)
    elif tests:
        notes.append("keep_folds=false: the release's folds were merged; the protocol draws its own")
    return _finish(_drop_row_info(items), out, task=task, positive=positive, notes=notes, excluded=excluded,
                   source="ddti_csv", root=str(files[0].parent.absolute()),
                   options={"positive": positive, "negative": negative, "keep_folds": keep_folds})


def _assign_published_folds(files: Sequence[Path], lists: Sequence[list[dict]], tests: dict[Path, int]) -> str:
    """Set ``fold`` on every item of ``lists`` (one list per CSV of ``files``) from the ``fold_<k>/test.csv`` that
    lists its image; returns the note. Raises :class:`DownstreamError` when the test files do not partition the
    images (or a case straddles two folds)."""
    numbers = sorted(set(tests.values()))
    index = {k: i for i, k in enumerate(numbers)}
    fold_of: dict[str, tuple[int, str]] = {}
    for f, items in zip(files, lists):
        if f not in tests:
            continue
        for it in items:
            seen = fold_of.get(it["image"])
            if seen is not None and seen[0] != tests[f]:
                raise DownstreamError(f"{it['image']} is in the test.csv of two folds ({seen[1]} and {it['csv_row']}): "
                                      "published folds must not share an image; pass keep_folds=false to draw new "
                                      "folds")
            fold_of.setdefault(it["image"], (tests[f], it["csv_row"]))
    for f, items in zip(files, lists):
        own = published_fold(f)
        for it in items:
            if it["image"] not in fold_of:
                raise DownstreamError(f"{it['image']} ({it['csv_row']}) is in no fold's test.csv: the release's "
                                      f"folds ({', '.join(f'fold_{k}' for k in numbers)}) do not cover it; pass "
                                      "keep_folds=false to draw new folds")
            k, where = fold_of[it["image"]]
            if own is not None and own[0] == k and own[1] != "test":
                raise DownstreamError(f"{it['image']} is in fold_{k}'s test part ({where}) and in its {own[1]} part "
                                      f"({it['csv_row']}): the published fold leaks; pass keep_folds=false")
            it["fold"] = index[k]
    case_fold: dict[str, tuple[int, str]] = {}
    for items in lists:
        for it in items:
            first = case_fold.setdefault(it["group"], (it["fold"], it["image"]))
            if first[0] != it["fold"]:
                raise DownstreamError(f"case {it['group']}: {first[1]} is in published fold {numbers[first[0]]} but "
                                      f"{it['image']} in fold {numbers[it['fold']]}: a case must lie in one fold; pass "
                                      "keep_folds=false to draw grouped folds")
    return (f"published folds kept: {', '.join(f'fold_{k}' for k in numbers)} (the test.csv of each) are folds "
            f"0..{len(numbers) - 1} of the items ('fold'); the protocol uses them instead of drawing its own")
