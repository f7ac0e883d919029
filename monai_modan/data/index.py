"""Index any supported source: detect whether a path is a RadImageNet tree, MedMNIST files or a DICOM export, and
run the matching indexer. Used by the CLI and by the pretraining bundle's ``--dataset_dir``.

:func:`index_sources` indexes several sources into **one corpus with one label space** (a RadImageNet tree plus a
hospital's PACS export, say): every source is labelled with the same :class:`~monai_modan.labels.LabelSpace`, and a
source may also be a datalist JSON indexed before, whose label space must then be that one (else
:class:`MergeError`). Fine classes (RadImageNet's) are merged into one sorted list and each image's ``class_index``
renumbered into it. The per-source summaries (images, skipped files, modality x anatomy, which tag produced each
label) go into the datalist's report."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..labels.vocabulary import LabelSpace
from .datalist import DatalistError, load_datalist, report_dict
from .dicom_index import index_dicom_folder
from .medmnist import index_medmnist
from .radimagenet_index import index_radimagenet, looks_like_radimagenet
from .records import ImageRecord, IndexResult

__all__ = ["SourceType", "MergeError", "detect_source", "index_path", "index_sources"]


class MergeError(ValueError):
    """Sources cannot be merged into one corpus (different label spaces); the message names the files."""


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


def _read_indexed(path: Path, space: LabelSpace) -> tuple[IndexResult, list[str]]:
    """A datalist JSON written by ``index`` back as an :class:`IndexResult`; its label space must be ``space``."""
    try:
        data = load_datalist(path)
    except DatalistError as e:
        raise MergeError(f"{path}: cannot be merged: {e}") from None
    if data.space != space:
        def groups(sp: LabelSpace) -> str:
            return "; ".join(f"{g}: {len(sp[g].classes)} classes" for g in sp.names)

        mine, theirs = set(space.class_names), set(data.space.class_names)
        differ = sorted(mine ^ theirs)[:6]
        raise MergeError(
            f"{path}: its label space differs from the corpus' ({groups(data.space)} vs {groups(space)}"
            + (f"; classes in one only: {', '.join(differ)}" if differ else "; same classes in another order")
            + "): label vectors cannot be merged. Index its source folder again in this run (same --vocab and "
              "--groups), or re-index it with them")
    result = IndexResult(source=data.source or "datalist", root=str(path.parent.absolute()))
    for split, items in data.splits.items():
        for item in items:
            image = item["image"]
            if "#" not in image and not Path(image).is_absolute():
                image = str((path.parent / image).absolute())
            extra = {k: v for k, v in item.items() if k not in ("image", "label", "label_source", *space.names)}
            result.records.append(ImageRecord(image=image, labels={g: item.get(g) for g in space.names},
                                              label_sources=dict(item.get("label_source") or {}), split=split,
                                              extra=extra))
    return result, list(data.classes)


def _source_summary(path: Path, kind: str, result: IndexResult, space: LabelSpace) -> dict[str, Any]:
    rep = report_dict(result, space)
    return {"source": str(path), "type": kind, "images": rep["images"], "skipped": rep["skipped"],
            "splits": rep["splits"], "modality_x_anatomy": rep["modality_x_anatomy"],
            "label_sources": rep["label_sources"]}


def index_sources(paths: Sequence[str | Path], space: LabelSpace, source: SourceType | str = SourceType.AUTO, *,
                  workers: int | None = None, cache: str | Path | None = None, link_dir: str | Path | None = None,
                  exclude: Sequence[str | Path] = (), progress: bool = True,
                  ) -> tuple[IndexResult, list[str], list[dict[str, Any]]]:
    """Index several sources into one corpus: ``(merged IndexResult, classes, per-source summaries)``.

    Each path is indexed as :func:`index_path` does (``source`` forces the type of every non-JSON path), or read
    back when it is a datalist ``.json`` (its label space must be ``space``). With several DICOM exports, each gets
    its own header cache (``cache`` with ``.<k>`` before the suffix; a cache holds one folder). Every ``class``
    (RadImageNet's fine class) is kept, the class list is the sorted union and ``class_index`` is renumbered;
    images of sources without fine classes carry none (the supervised-165 baseline then cannot use the corpus,
    which its run says).

    Raises:
        FileNotFoundError: a path does not exist. MergeError: a datalist's label space is not ``space``, or the
            same path is given twice.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise MergeError("no source to index")
    seen: dict[Path, int] = {}
    for k, p in enumerate(paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if p.resolve() in seen:
            raise MergeError(f"{p} is given twice (sources {seen[p.resolve()] + 1} and {k + 1}): its images would be "
                             "listed twice")
        seen[p.resolve()] = k
    parts: list[tuple[IndexResult, list[str]]] = []
    summaries: list[dict[str, Any]] = []
    dicom_k = 0
    for p in paths:
        if p.is_file() and p.suffix.lower() == ".json":
            result, classes = _read_indexed(p, space)
            kind = "datalist"
        else:
            kind = SourceType(source) if SourceType(source) != SourceType.AUTO else detect_source(p)
            source_cache = cache
            if kind == SourceType.DICOM and cache is not None and len(paths) > 1:
                source_cache = Path(cache).with_suffix(f".{dicom_k}{Path(cache).suffix}")
                dicom_k += 1
            result, classes = index_path(p, space, kind, workers=workers, cache=source_cache, link_dir=link_dir,
                                         exclude=exclude, progress=progress)
            kind = kind.value
        if len(paths) > 1:  # which source each image came from, for the per-source audit
            for r in result.records:
                r.extra.setdefault("source_path", str(p))
        parts.append((result, classes))
        summaries.append(_source_summary(p, kind, result, space))
    union = sorted({c for _, classes in parts for c in classes})
    position = {c: i for i, c in enumerate(union)}
    merged = IndexResult(source=parts[0][0].source, root=parts[0][0].root if len(parts) == 1 else
                         "; ".join(str(p) for p in paths))
    for result, _ in parts:
        for r in result.records:
            if "class" in r.extra:
                r.extra["class_index"] = position[r.extra["class"]]
        merged.extend(result)
    if union and len(parts) > 1:
        without = sum("class" not in r.extra for r in merged.records)
        if without:
            merged.notes.append(f"fine classes (RadImageNet) for {len(merged.records) - without} of "
                                f"{len(merged.records)} images; the other {without} have none, so the supervised "
                                "baseline cannot pretrain on this corpus (MulSupCon, SimCLR and SparK can)")
    return merged, union, summaries
