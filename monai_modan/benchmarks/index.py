"""DICOM indexing benchmark: the project's header indexer (parallel, cached) against a naive full-read loop.

The naive baseline is what a first script does: ``pydicom.dcmread(path, force=True)`` of every file -- the whole
file, Pixel Data included, but nothing decoded -- in one process, then the same labelling
(:func:`~monai_modan.labels.dicom_labels.label_header`). The candidate is
:func:`~monai_modan.data.dicom_index.index_dicom_folder` with its default ``os.cpu_count()`` reader processes, once
with an empty header cache (cold: every header read, the cache written) and once with the cache of the previous
run (warm: files only ``stat``-ed). Both index the same files; ``ratio`` = naive seconds / indexer seconds =
files/s of the indexer over the naive loop. Target: >= 5x.

The export: a synthetic PACS-like export (:func:`~monai_modan.synthetic.generate_pretraining_corpus`, DICOM
layout) at 512 px -- CT/MR as 12-bit ``uint16`` (512 KiB of Pixel Data per file, as real CT slices), US as
``uint8`` -- replicated into copies of the tree until it holds ``files`` images (plus the SR/KO documents and
README of each copy, which both sides must skip). ``source=DIR`` replicates a folder of real files instead (e.g.
``../shared/data/dicom``). With ``drop_os_cache`` (default where the OS offers ``posix_fadvise``), every file's
pages are dropped from the OS page cache before each timed run, so both sides read from storage, as when an
export is indexed for the first time.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .common import Timed, comparison, make_result, measure_interleaved

__all__ = ["run", "prepare_export", "naive_index", "drop_page_cache"]

DEFAULT_FILES = 1000
DEFAULT_IMAGE_SIZE = 512


def _files(root: Path) -> list[Path]:
    return sorted(Path(folder) / name for folder, _, names in os.walk(root) for name in names)


def drop_page_cache(paths: list[Path]) -> bool:
    """Ask the OS to drop the cached pages of ``paths`` (``POSIX_FADV_DONTNEED``); False where unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def prepare_export(workdir: str | Path, files: int = DEFAULT_FILES, image_size: int = DEFAULT_IMAGE_SIZE,
                   source: str | Path | None = None, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """Write an export of at least ``files`` image files under ``workdir/export`` (see the module docstring).
    Returns ``(export root, description)``."""
    from ..synthetic import RADIMAGENET_CLASSES, generate_pretraining_corpus

    workdir = Path(workdir)
    export = workdir / "export"
    if source is None:
        per_class = max(1, min(4, math.ceil(files / len(RADIMAGENET_CLASSES))))
        corpus = generate_pretraining_corpus(workdir / "generated", images_per_class=per_class,
                                             image_size=image_size, seed=seed, layouts=("dicom",), progress=False)
        template, images_per_copy = corpus.dicom_root, corpus.counts["dicom_images"]
        what = f"synthetic PACS-like export at {image_size} px ({images_per_copy} images per copy)"
    else:
        template = Path(source)
        if not template.is_dir():
            raise FileNotFoundError(f"{template}: no such folder to replicate")
        images_per_copy = sum(1 for _ in _files(template))
        what = f"copies of {template} ({images_per_copy} files per copy)"
    copies = max(1, math.ceil(files / max(1, images_per_copy)))
    for i in range(copies):
        shutil.copytree(template, export / f"copy{i:03d}")
    if hasattr(os, "sync"):
        os.sync()  # write the new export back now: dirty pages cannot be dropped, and write-back would compete
    all_files = _files(export)
    description = {"export": what, "copies": copies, "files": len(all_files),
                   "bytes": sum(p.stat().st_size for p in all_files)}
    return export, description


def naive_index(root: str | Path, space) -> dict[str, int]:
    """The baseline: ``dcmread`` every file whole, label those with Pixel Data; counts of labelled and failed files."""
    import pydicom

    from ..labels.dicom_labels import label_header

    counts = {"labelled": 0, "failed": 0, "no_pixels": 0}
    for path in _files(Path(root)):
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:  # noqa: BLE001 - the naive loop skips what it cannot read, like the indexer
            counts["failed"] += 1
            continue
        if "PixelData" not in ds:
            counts["no_pixels"] += 1
            continue
        label_header(ds, space)
        counts["labelled"] += 1
    return counts


def run(
    files: int = DEFAULT_FILES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    source: str | Path | None = None,
    workers: int | None = None,
    drop_os_cache: bool | None = None,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Measure and return the result dict (see :mod:`monai_modan.benchmarks.common`). ``device`` is accepted for a
    uniform command line; indexing runs on the CPU."""
    import logging

    from ..data.dicom_index import index_dicom_folder
    from ..labels import LabelSpace

    space = LabelSpace.default()
    drop_os_cache = hasattr(os, "posix_fadvise") if drop_os_cache is None else drop_os_cache
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    logging.getLogger("monai_modan.data.dicom_index").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="modan-bench-index-") as tmp:
        export, description = prepare_export(tmp, files, image_size, source, seed)
        paths = _files(export)
        cache = Path(tmp) / "header-cache.json"

        def cold_setup() -> None:
            cache.unlink(missing_ok=True)
            if drop_os_cache:
                drop_page_cache(paths)

        def warm_setup() -> None:
            if drop_os_cache:
                drop_page_cache(paths)

        def indexer():
            return index_dicom_folder(export, space, workers=n_workers, cache=cache, progress=False)

        naive_counts = naive_index(export, space)
        n = len(paths)
        baseline, cold, warm = measure_interleaved([
            Timed("naive loop: pydicom.dcmread (whole file) + label_header, 1 process",
                  lambda: naive_index(export, space), n, "files", setup=warm_setup),
            Timed(f"index_dicom_folder, {n_workers} workers, empty header cache", indexer, n, "files",
                  setup=cold_setup),
            # runs right after the cold run, which left the cache complete
            Timed(f"index_dicom_folder, {n_workers} workers, warm header cache", indexer, n, "files",
                  setup=warm_setup),
        ], warmup=warmup, repeats=repeats)
        result = indexer()
    comparisons = [
        comparison("header indexer (cold cache) vs naive full read", baseline, cold, target=(">=", 5.0)),
        comparison("header indexer (warm cache) vs naive full read", baseline, warm, target=(">=", 5.0)),
    ]
    sizes = {**description, "workers": n_workers, "os_page_cache_dropped": bool(drop_os_cache),
             "indexed_images": len(result.records), "skipped_files": len(result.skipped),
             "naive_labelled": naive_counts["labelled"]}
    notes = ["both sides label the same files; the indexer also skips non-image objects and checks truncation"]
    if not drop_os_cache:
        notes.append("files were read from the OS page cache (warm): the naive full read is favoured")
    return make_result("index", "DICOM header indexing: parallel cached indexer vs naive full pydicom.dcmread loop",
                       "cpu", sizes, comparisons, notes)
