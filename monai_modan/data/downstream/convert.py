"""One entry point: ``convert(source, kind, out, **options)`` with detection of the source's layout."""

from __future__ import annotations

import csv
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai.utils.enums import StrEnum

from ...utils.io import utf8_problem
from .busi import convert_busi
from .ddti import _IMAGE as _DDTI_IMAGE
from .ddti import convert_ddti, convert_ddti_csv
from .generic import IMAGE_SUFFIXES, convert_csv, convert_folder, convert_json, convert_medmnist
from .mrnet import MRNET_PLANES, MRNET_SPLITS, convert_mrnet, convert_mrnet_slices
from .task import DownstreamError, TaskDatalist

__all__ = ["TaskSource", "UnknownLayoutError", "detect_source", "convert", "CONVERTERS"]


class TaskSource(StrEnum):
    """Layouts :func:`convert` reads (``auto``: :func:`detect_source` decides)."""

    AUTO = "auto"
    MRNET = "mrnet"  # MRNet-v1.0/{train,valid}/<plane>/NNNN.npy + <split>-<label>.csv
    MRNET_SLICES = "mrnet_slices"  # CSV filename,acl_label (yes/no)
    BUSI = "busi"  # Dataset_BUSI_with_GT/{benign,malignant,normal}/
    DDTI = "ddti"  # <case>.xml + <case>_<k>.jpg
    DDTI_CSV = "ddti_csv"  # CSV(s) img_dir,label
    CSV = "csv"  # CSV path,label[,group]
    JSON = "json"  # an existing datalist
    MEDMNIST = "medmnist"  # MedMNIST .npz
    FOLDER = "folder"  # root/<class>/*.png


CONVERTERS: dict[TaskSource, Callable[..., TaskDatalist]] = {
    TaskSource.MRNET: convert_mrnet,
    TaskSource.MRNET_SLICES: convert_mrnet_slices,
    TaskSource.BUSI: convert_busi,
    TaskSource.DDTI: convert_ddti,
    TaskSource.DDTI_CSV: convert_ddti_csv,
    TaskSource.CSV: convert_csv,
    TaskSource.JSON: convert_json,
    TaskSource.MEDMNIST: convert_medmnist,
    TaskSource.FOLDER: convert_folder,
}

_BUSI_IMAGE = re.compile(r"^(benign|malignant|normal) \(\d+\)\.png$", re.IGNORECASE)


class UnknownLayoutError(DownstreamError):
    """:func:`detect_source` recognised no supported layout; the message says what it saw."""


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [h.strip().lower() for h in next(csv.reader(f), [])]
    except OSError as e:
        raise DownstreamError(f"cannot read CSV {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise DownstreamError(f"{path}: not UTF-8 text ({utf8_problem(path)}); save the CSV as UTF-8") from None
    except csv.Error as e:
        raise DownstreamError(f"{path}: not a readable CSV ({e})") from None


def _csv_kind(path: Path) -> TaskSource:
    header = _csv_header(path)
    if "acl_label" in header:
        return TaskSource.MRNET_SLICES
    if "img_dir" in header:
        return TaskSource.DDTI_CSV
    return TaskSource.CSV


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) for p in folder.rglob("*"))


def detect_source(path: str | Path) -> TaskSource:
    """The layout of ``path`` (a file or folder), checked in this order:

    ``.npz`` -> medmnist; ``.json`` -> json; ``.csv`` -> mrnet_slices (``acl_label`` column), ddti_csv
    (``img_dir`` column) or csv. A folder: MRNet release (``MRNet-v1.0`` or ``{train,valid}/<plane>/``), BUSI
    (``Dataset_BUSI_with_GT`` or ``benign/benign (n).png``), DDTI (``*.xml`` beside ``<case>_<k>.jpg``), ddti_csv
    (CSVs with ``img_dir``, here or one level down), folder per class (two or more sub-folders holding images), csv
    (CSVs at the top).

    Raises:
        UnknownLayoutError: none of these; the message lists what the folder holds.
    """
    path = Path(path)
    if not path.exists():
        raise DownstreamError(f"{path}: no such file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return TaskSource.MEDMNIST
        if suffix == ".json":
            return TaskSource.JSON
        if suffix == ".csv":
            return _csv_kind(path)
        raise UnknownLayoutError(f"{path}: unknown source file type {suffix!r} (expected .csv, .json or .npz, or a "
                                 "folder)")
    release = path / "MRNet-v1.0" if (path / "MRNet-v1.0").is_dir() else path
    if any((release / s / p).is_dir() for s in MRNET_SPLITS for p in MRNET_PLANES):
        return TaskSource.MRNET
    busi = path / "Dataset_BUSI_with_GT" if (path / "Dataset_BUSI_with_GT").is_dir() else path
    if (busi / "benign").is_dir() and (busi / "malignant").is_dir() and (
            busi.name == "Dataset_BUSI_with_GT" or any(_BUSI_IMAGE.match(p.name) for p in (busi / "benign").iterdir())):
        return TaskSource.BUSI
    if any(path.glob("*.xml")) and any(_DDTI_IMAGE.match(p.name) for p in path.iterdir()):
        return TaskSource.DDTI
    csvs = sorted(path.glob("*.csv")) + sorted(path.glob("*/*.csv"))
    if any("img_dir" in _csv_header(c) for c in csvs):
        return TaskSource.DDTI_CSV
    class_dirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_images(p)]
    if len(class_dirs) >= 2:
        return TaskSource.FOLDER
    if any(path.glob("*.csv")):
        return TaskSource.CSV
    seen = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    raise UnknownLayoutError(
        f"{path}: unknown layout (it holds {seen[:12]}{' ...' if len(seen) > 12 else ''}); supported: "
        "MRNet-v1.0/{train,valid}/<plane>/NNNN.npy, Dataset_BUSI_with_GT/{benign,malignant,normal}/, DDTI "
        "<case>.xml + <case>_<k>.jpg, CSV path,label[,group], datalist .json, MedMNIST .npz, folder per class "
        "<root>/<class>/*.png")


def convert(source: str | Path, kind: TaskSource | str = TaskSource.AUTO, out: str | Path | None = None,
            **options: Any) -> TaskDatalist:
    """Convert a downstream data set to a task datalist JSON at ``out``.

    Args:
        source: the data set (file or folder; see :func:`detect_source`).
        kind: a :class:`TaskSource`, or ``auto`` to detect it.
        out: the JSON file to write.
        options: passed to the converter (:data:`CONVERTERS`), e.g. ``slices="all"`` for MRNet,
            ``include_normal=False`` for BUSI, ``malignant_from="4b"`` for DDTI, ``positive="malignant"`` for a
            folder per class.

    Raises:
        DownstreamError: unknown layout (:class:`UnknownLayoutError`), an option the converter does not take (the
            message lists those it takes), or any conversion error.
    """
    if out is None:
        raise DownstreamError("convert() needs out=<datalist .json path>")
    try:
        kind = TaskSource(kind)
    except ValueError:
        raise DownstreamError(f"unknown kind {kind!r}; one of {[k.value for k in TaskSource]}") from None
    if kind == TaskSource.AUTO:
        kind = detect_source(source)
    converter = CONVERTERS[kind]
    accepted = [n for n, p in inspect.signature(converter).parameters.items() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DownstreamError(f"{kind.value} converter ({converter.__name__}) does not take option(s) {unknown}; "
                              f"it takes {accepted}")
    missing = [n for n, p in inspect.signature(converter).parameters.items()
               if p.kind == p.KEYWORD_ONLY and p.default is p.empty and n not in options]
    if missing:
        hint = ""
        if kind == TaskSource.FOLDER:
            classes = sorted(p.name for p in Path(source).iterdir() if p.is_dir() and not p.name.startswith("."))
            hint = f" (positive=<the class folder of label 1>, one of {classes})"
        raise DownstreamError(f"{kind.value} source {source} needs option(s) {missing}{hint}")
    return converter(source, out, **options)
