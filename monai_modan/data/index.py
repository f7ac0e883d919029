"""Index any supported source: detect whether a path is a RadImageNet tree, MedMNIST files or a DICOM export, and
run the matching indexer. Used by the CLI and by the pretraining bundle's ``--dataset_dir``."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from ..labels.vocabulary import LabelSpace
from .dicom_index import index_dicom_folder
from .medmnist import index_medmnist
from .radimagenet_index import index_radimagenet, looks_like_radimagenet

__all__ = ["SourceType", "detect_source", "index_path"]


class SourceType(StrEnum):
    """What ``index`` reads: ``auto`` detects it (:func:`detect_source`)."""

    AUTO = "auto"
    DICOM = "dicom"
    RADIMAGENET = "radimagenet"
    MEDMNIST = "medmnist"


def detect_source(path: Path) -> SourceType:
    """RadImageNet if a ``radiology_ai`` tree is found, MedMNIST for ``.npz`` files, DICOM otherwise."""
    if path.is_file():
        return SourceType.MEDMNIST if path.suffix == ".npz" else SourceType.DICOM
    if looks_like_radimagenet(path):
        return SourceType.RADIMAGENET
    files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")] if path.is_dir() else []
    if files and all(p.suffix == ".npz" for p in files):
        return SourceType.MEDMNIST
    return SourceType.DICOM


def index_path(path: str | Path, space: LabelSpace, source: SourceType | str = SourceType.AUTO, *, workers: int | None = None,
               cache: str | Path | None = None, link_dir: str | Path | None = None,
               exclude: Sequence[str | Path] = (), progress: bool = True):
    """Index one folder/file; returns ``(IndexResult, classes)`` (``classes`` is empty unless the source has them).

    ``cache``, ``link_dir`` and ``exclude`` apply to DICOM exports (see
    :func:`~monai_modan.data.dicom_index.index_dicom_folder`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    source = SourceType(source)
    if source == SourceType.AUTO:
        source = detect_source(path)
    if source == SourceType.RADIMAGENET:
        index = index_radimagenet(path, space, progress=progress)
        return index.result, index.classes
    if source == SourceType.MEDMNIST:
        return index_medmnist(path, space), []
    return index_dicom_folder(path, space, workers=workers, cache=cache, link_dir=link_dir, exclude=exclude,
                              progress=progress), []
