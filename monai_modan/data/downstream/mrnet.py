"""MRNet knee MRI (Bien et al., *PLoS Med* 15:e1002699, 2018) -> 2-D binary task datalist.

Release layout::

    MRNet-v1.0/
      train/{axial,coronal,sagittal}/0000.npy ... 1129.npy     # (S, 256, 256) uint8, slice axis first in every plane
      valid/{axial,coronal,sagittal}/1130.npy ... 1249.npy
      train-acl.csv  valid-acl.csv  (also -meniscus, -abnormal)  # no header: "0000,1"

The encoder is 2-D, so each exam contributes chosen slices of one plane (:class:`SlicePolicy`); every chosen slice
is written as a lossless 8-bit PNG (the ``.npy`` values unchanged) to an image folder beside the datalist, so every
reader (and a person) can open it. All slices of an exam share ``group`` = exam id, so they never straddle folds.

Also: the ACL slice-CSV release (:func:`convert_mrnet_slices`): a CSV ``filename,acl_label`` with ``yes``/``no``,
file names relative to the CSV's folder.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils.enums import StrEnum
from PIL import Image

from ...utils.io import atomic_path, utf8_problem
from .generic import LabelMapper, _drop_row_info, _finish, read_csv_items
from .task import DownstreamError, TaskDatalist, parse_binary_label

__all__ = ["SlicePolicy", "MRNET_PLANES", "MRNET_SPLITS", "MRNET_POSITIVE", "select_slices", "convert_mrnet",
           "convert_mrnet_slices", "find_mrnet_root"]

MRNET_PLANES = ("sagittal", "coronal", "axial")
MRNET_SPLITS = ("train", "valid")
MRNET_POSITIVE = {"acl": "acl_tear", "meniscus": "meniscal_tear", "abnormal": "abnormal"}


class SlicePolicy(StrEnum):
    """Which slices of an exam's volume ``(S, H, W)`` become 2-D images.

    - ``central`` (default): ``num_slices`` consecutive slices centred on index ``S // 2`` (``num_slices=1``: just
      ``S // 2``, the same slice as the reader's ``FramePolicy.MIDDLE``). Sagittal knee series are centred on the
      joint, so the central slices usually pass near the intercondylar notch, where the ACL runs; an exam whose
      ACL lies off-centre is mislabelled for a 2-D model -- a limitation of any fixed slice choice.
    - ``all``: every slice (most slices show no ACL; a weak but much larger data set).
    """

    CENTRAL = "central"
    ALL = "all"


def select_slices(num: int, policy: SlicePolicy | str = SlicePolicy.CENTRAL, num_slices: int = 1) -> list[int]:
    """Indices into a stack of ``num`` slices. ``central`` with ``num_slices >= num`` gives every slice."""
    policy = SlicePolicy(policy)
    if num < 1:
        raise ValueError(f"a volume needs at least one slice, got {num}")
    if int(num_slices) < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    if policy == SlicePolicy.ALL:
        return list(range(num))
    k = min(int(num_slices), num)
    start = min(max(num // 2 - k // 2, 0), num - k)
    return list(range(start, start + k))


def find_mrnet_root(path: str | Path) -> Path:
    """``MRNet-v1.0`` itself or a folder containing it -> the release folder; else :class:`DownstreamError`."""
    path = Path(path)
    if (path / "MRNet-v1.0").is_dir():
        path = path / "MRNet-v1.0"
    if not any((path / s).is_dir() for s in MRNET_SPLITS):
        raise DownstreamError(f"{path}: not an MRNet release (expected MRNet-v1.0/{{train,valid}}/<plane>/NNNN.npy)")
    return path


def _read_exam_labels(csv_path: Path) -> dict[str, int]:
    """Header-less ``exam,label`` rows -> ``{"0000": 1}`` (ids zero-padded to 4 digits; a header row is skipped)."""
    labels: dict[str, int] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DownstreamError(f"cannot read MRNet label file {csv_path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise DownstreamError(f"{csv_path}: MRNet label file is not UTF-8 text ({utf8_problem(csv_path)})") from None
    except csv.Error as e:
        raise DownstreamError(f"{csv_path}: not a readable CSV ({e})") from None
    for line, row in enumerate(rows, start=1):
        if not any(c.strip() for c in row):
            continue
        if len(row) < 2:
            raise DownstreamError(f"{csv_path}: line {line}: expected 'exam,label', got {','.join(row)!r}")
        exam, value = row[0].strip(), row[1].strip()
        if not exam.isdigit():
            if line == 1:
                continue  # an optional header
            raise DownstreamError(f"{csv_path}: line {line}: exam id {exam!r} is not a number")
        exam = exam.zfill(4)
        label = parse_binary_label(value, f"{csv_path}: line {line} (exam {exam})")
        if labels.get(exam, label) != label:
            raise DownstreamError(f"{csv_path}: line {line}: exam {exam} is listed again with another label")
        labels[exam] = label
    if not labels:
        raise DownstreamError(f"{csv_path}: no 'exam,label' rows")
    return labels


def _load_volume(path: Path) -> np.ndarray:
    """An exam's ``(S, H, W)`` uint8 volume; raises ``ValueError`` with the cause."""
    volume = np.load(path, mmap_mode="r", allow_pickle=False)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"expected a volume (S, H, W), got shape {volume.shape}")
    if volume.dtype != np.uint8:
        if not np.issubdtype(volume.dtype, np.integer) or volume.min() < 0 or volume.max() > 255:
            raise ValueError(f"expected uint8 values 0..255 (MRNet), got {volume.dtype} "
                             f"in [{volume.min()}, {volume.max()}]")
        volume = volume.astype(np.uint8)
    return volume


def _write_png(path: Path, pixels: np.ndarray) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(tmp, format="PNG")


def convert_mrnet(root: str | Path, out: str | Path, *, label: str = "acl", plane: str = "sagittal",
                  slices: SlicePolicy | str = SlicePolicy.CENTRAL, num_slices: int = 1,
                  splits: Sequence[str] = MRNET_SPLITS, image_dir: str | Path | None = None,
                  task: str | None = None, positive: str | None = None) -> TaskDatalist:
    """MRNet release -> task datalist of PNG slices.

    Args:
        root: ``MRNet-v1.0`` or the folder containing it.
        out: the datalist JSON to write.
        label: which label file: ``acl`` (default), ``meniscus`` or ``abnormal`` (``<split>-<label>.csv``).
        plane: ``sagittal`` (default), ``coronal`` or ``axial``.
        slices, num_slices: :class:`SlicePolicy`; ``num_slices`` consecutive central slices per exam (``central``).
        splits: release splits to pool (default both; each item keeps its split as ``source_split``). MRNet's
            test set is not public.
        image_dir: where the PNGs go (default ``<out folder>/images``); names
            ``mrnet_<split>_<plane>_<exam>_s<slice>.png``.
        task: default ``knee_<label>``; positive: default from :data:`MRNET_POSITIVE` (``acl_tear`` ...).

    Exams listed in a label file without a volume, volumes without a label, and unreadable volumes are
    excluded with the reason.

    Raises:
        DownstreamError: not an MRNet release, a missing label file or plane folder, a malformed label row.
    """
    root = find_mrnet_root(root)
    slices = SlicePolicy(slices)
    if plane not in MRNET_PLANES:
        raise DownstreamError(f"plane must be one of {MRNET_PLANES}, got {plane!r}")
    if not splits or any(s not in MRNET_SPLITS for s in splits):
        raise DownstreamError(f"splits must be a non-empty subset of {MRNET_SPLITS}, got {list(splits)}")
    select_slices(1, slices, num_slices)  # validates num_slices
    out = Path(out)
    image_dir = Path(image_dir) if image_dir is not None else out.parent / "images"
    items: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    for split in splits:
        csv_path = root / f"{split}-{label}.csv"
        volume_dir = root / split / plane
        if not csv_path.is_file():
            raise DownstreamError(f"{root}: no label file {csv_path.name} for label={label!r} "
                                  f"(found: {sorted(p.name for p in root.glob('*.csv'))})")
        if not volume_dir.is_dir():
            raise DownstreamError(f"{root}: no folder {split}/{plane}")
        labels = _read_exam_labels(csv_path)
        on_disk = {p.stem: p for p in volume_dir.glob("*.npy")}
        for stem in sorted(set(on_disk) - set(labels)):
            excluded.append({"image": os.path.abspath(on_disk[stem]),
                             "reason": f"exam {stem} has no label in {csv_path.name}"})
        for exam, exam_label in sorted(labels.items()):
            path = volume_dir / f"{exam}.npy"
            if exam not in on_disk:
                excluded.append({"image": os.path.abspath(path),
                                 "reason": f"exam {exam} is listed in {csv_path.name} but has no {plane} volume"})
                continue
            try:
                volume = _load_volume(path)
            except (OSError, ValueError) as e:
                excluded.append({"image": os.path.abspath(path), "reason": f"cannot read the volume: {e}"})
                continue
            for index in select_slices(volume.shape[0], slices, num_slices):
                png = image_dir / f"mrnet_{split}_{plane}_{exam}_s{index:03d}.png"
                _write_png(png, volume[index])
                items.append({"image": os.path.abspath(png), "label": exam_label, "group": exam, "exam": exam,
                              "slice": index, "slices_in_volume": int(volume.shape[0]), "source_split": split})
    what = (f"{num_slices} central slice(s) around index S // 2" if slices == SlicePolicy.CENTRAL
            else "every slice")
    notes = [f"MRNet (Bien et al. 2018): label 1 = {label} positive in {'/'.join(f'{s}-{label}.csv' for s in splits)}",
             f"2-D images: {plane} plane, slice policy {slices.value}: {what} per exam; written as lossless 8-bit PNG "
             f"(values unchanged) to {image_dir.absolute()}",
             "group = exam id: all slices of one exam stay in one fold",
             f"splits {list(splits)} pooled (origin kept per item as source_split); MRNet's test set is not public"]
    return _finish(items, out, task=task or f"knee_{label}", positive=positive or MRNET_POSITIVE.get(label, label),
                   notes=notes, excluded=excluded, source="mrnet", root=str(root.absolute()),
                   options={"label": label, "plane": plane, "slices": slices.value, "num_slices": int(num_slices),
                            "splits": list(splits)})


def convert_mrnet_slices(csv_path: str | Path, out: str | Path, *, image_column: str | None = None,
                         label_column: str | None = None, group_pattern: str = r"(\d+)",
                         image_root: str | Path | None = None, task: str = "knee_acl",
                         positive: str = "acl_tear") -> TaskDatalist:
    """The ACL slice-CSV release (``filename,acl_label`` with ``yes``/``no``) -> task datalist.

    Args:
        csv_path: the CSV; file names are relative to its folder (or ``image_root``).
        image_column, label_column: default the first known names (``filename``, ``acl_label`` ...).
        group_pattern: regular expression searched in the file name (without suffix); its first group (or the
            whole match) is the exam id = ``group``, e.g. ``0042`` from ``0042_s017.png``. A name without a match
            is its own group (noted).
    """
    pattern = re.compile(group_pattern)
    unmatched: list[str] = []

    def group_of(image: str) -> str:
        stem = Path(image).stem
        m = pattern.search(stem)
        if m is None:
            unmatched.append(stem)
            return stem
        return m.group(1) if m.groups() else m.group(0)

    items, excluded = read_csv_items(csv_path, label_of=LabelMapper(), image_column=image_column,
                                     label_column=label_column, group_of=group_of, image_root=image_root)
    notes = [f"MRNet ACL slice CSV {Path(csv_path).absolute()}: label 1 = yes ({positive})",
             f"group = exam id from the file name by the pattern {group_pattern!r}: slices of one exam stay in one "
             "fold"]
    if unmatched:
        notes.append(f"{len(unmatched)} file name(s) did not match the group pattern and are their own group, "
                     f"e.g. {unmatched[:3]}")
    return _finish(_drop_row_info(items), out, task=task, positive=positive, notes=notes, excluded=excluded,
                   source="mrnet_slices", root=str(Path(csv_path).absolute().parent),
                   options={"group_pattern": group_pattern})
