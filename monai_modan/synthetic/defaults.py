"""The embedded data a bundle or the command line trains on when it is given none.

"No data given -> the embedded synthetic corpus / task" is decided by the entry layer -- the bundle configs
(``modan_pretrain`` ``datalist_path``, the task bundles' ``task_datalist``) and the CLI -- which call these functions;
the pretraining engine and the task preparation only handle data they are given and refuse to run without.

Both functions are deterministic by ``seed``, write under ``<out_dir>/synthetic/`` and reuse what an earlier call with
the same arguments wrote, so every bundle runs offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..data.datalist import write_datalist
from ..data.downstream.task import load_task_datalist
from ..data.index import index_path
from ..labels import LabelSpace
from ..utils.defaults import IMAGE_SIZE
from ..utils.distributed import barrier, rank
from .tasks import SyntheticTask, generate_downstream_task
from .writers import GENERATOR, MANIFEST_NAME, ensure_pretraining_corpus

__all__ = ["SYNTHETIC_FOR_TASK", "default_pretraining_datalist", "default_task_datalist"]

# the synthetic stand-in for each public task (bundle / CLI task name -> SyntheticTask)
SYNTHETIC_FOR_TASK = {"acl_mrnet": SyntheticTask.KNEE_ACL, "breast_us": SyntheticTask.BREAST_US,
                      "thyroid_us": SyntheticTask.THYROID_US, "knee_acl": SyntheticTask.KNEE_ACL}


def default_pretraining_datalist(output_dir: str | Path, *, images_per_class: int = 8, image_size: int = IMAGE_SIZE,
                                 seed: int = 0, progress: bool = False) -> str:
    """Path of the pretraining datalist of the embedded synthetic corpus: ``output_dir/synthetic/datalist.json``.

    The corpus (27 classes x ``images_per_class`` PNGs of ``image_size`` px, RadImageNet and DICOM layouts) is
    generated under ``output_dir/synthetic/`` unless one with the same arguments is there, and its RadImageNet tree
    indexed with the default label space. Under DDP rank 0 alone writes, the other ranks wait at a barrier, so no two
    processes write the same files.
    """
    out = Path(output_dir) / "synthetic" / "datalist.json"
    if rank() == 0:
        _build_corpus_datalist(out, images_per_class, image_size, seed, progress)
    barrier()
    return str(out)


def _build_corpus_datalist(out: Path, images_per_class: int, image_size: int, seed: int, progress: bool) -> None:
    manifest = out.parent / MANIFEST_NAME
    before = _stamp(manifest)
    corpus = ensure_pretraining_corpus(out.parent, images_per_class=images_per_class, image_size=image_size,
                                       seed=seed, progress=progress)
    if out.exists() and _stamp(manifest) == before:  # the corpus was reused: so is its index
        return
    space = LabelSpace.default()
    result, classes = index_path(corpus.radimagenet_root, space, "radimagenet", progress=progress)
    write_datalist(result, space, out, classes=classes)


def _stamp(path: Path) -> tuple[int, int] | None:
    """``(inode, mtime in ns)`` of ``path``, or ``None``: changes when the file is (atomically) rewritten."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def default_task_datalist(task: str, out_dir: str | Path, *, n_images: int = 120, image_size: int = IMAGE_SIZE,
                          seed: int = 0, overwrite: bool = False) -> str:
    """Path of the validated datalist of ``task``'s embedded synthetic stand-in (see :data:`SYNTHETIC_FOR_TASK`).

    The task (``n_images`` PNGs of ``image_size`` px, grouped in cases) is written to
    ``out_dir/synthetic/<synthetic task>/`` unless a datalist made with the same ``n_images``, ``image_size`` and
    ``seed`` is there (or ``overwrite``).

    Raises:
        ValueError: ``task`` has no synthetic stand-in.
    """
    synthetic = SYNTHETIC_FOR_TASK.get(task)
    if synthetic is None:
        raise ValueError(f"no embedded synthetic data for task {task!r} (known: {sorted(SYNTHETIC_FOR_TASK)}); "
                         "pass a data source (--data_source)")
    out = Path(out_dir) / "synthetic" / synthetic.value / "datalist.json"
    if overwrite or not _same_task(out, n_images, image_size, seed):
        out = generate_downstream_task(synthetic, Path(out_dir) / "synthetic", n_images=n_images,
                                       image_size=image_size, seed=seed)
    load_task_datalist(out)  # validate now: clear errors before any training
    return str(out)


def _same_task(path: Path, n_images: int, image_size: int, seed: int) -> bool:
    """``path`` is a synthetic task datalist written with these arguments, whose images lie in its own folder (one
    moved or copied from elsewhere lists the images of its old place: it is written again here, identically)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (isinstance(meta, dict) and meta.get("generator") == GENERATOR and meta.get("n_images") == int(n_images)
            and meta.get("image_size") == int(image_size) and meta.get("seed") == int(seed)):
        return False
    folder = path.parent.resolve()
    images = [Path(str(it.get("image", ""))) for it in meta.get("training") or [] if isinstance(it, dict)]
    return bool(images) and all(p.is_file() and folder in p.resolve().parents for p in images)
