"""A small real data set inside the package: the README's main job learns something real, offline, in minutes.

Real images from MedMNIST v2 (Yang et al., *Sci Data* 10:41, 2023; CC BY 4.0, see ``ATTRIBUTION.md`` here), 28 px:

- ``pretrain/``: a seeded subset of four MedMNIST training splits -- 800 paediatric chest X-rays (PneumoniaMNIST),
  400 fundus photographs (RetinaMNIST), 250 adrenal-gland shape masks from CT (AdrenalMNIST3D) and 250 vessel shapes
  from brain MRA (VesselMNIST3D): 1,700 images, four (modality, anatomy) classes from the files' metadata.
- ``tasks/breastmnist.npz``: the whole official BreastMNIST file (780 breast-ultrasound images, 210 malignant),
  byte-identical to the MedMNIST release. No breast ultrasound is in ``pretrain/`` (no leakage; a cross-modality
  transfer, as docs/downstream.md describes for the full-size run).

Like :mod:`monai_modan.synthetic.defaults`, the entry layer (bundle overlay ``demo.json``, the CLI's
``--task breastmnist``) chooses these; nothing below it does. The images stay inside the package: the datalists
reference them as ``<file>.npz#train_images/<i>``.
"""

from __future__ import annotations

from pathlib import Path

from ..data.datalist import write_datalist
from ..data.downstream.prepare import prepare_task
from ..data.index import index_path
from ..labels import LabelSpace
from ..utils.distributed import barrier, rank

__all__ = ["EMBEDDED_DIR", "EMBEDDED_TASKS", "embedded_pretraining_datalist", "embedded_task_datalist"]

EMBEDDED_DIR = Path(__file__).resolve().parent
# task name -> embedded source file (converted by the project's own MedMNIST converter)
EMBEDDED_TASKS = {"breastmnist": EMBEDDED_DIR / "tasks" / "breastmnist.npz"}


def embedded_pretraining_datalist(output_dir: str | Path) -> str:
    """Path of the datalist of ``pretrain/`` (default label space), written to ``output_dir/embedded/medmnist.json``
    unless it is there and newer than the package's files. Under DDP rank 0 alone writes."""
    out = Path(output_dir) / "embedded" / "medmnist.json"
    sources = sorted((EMBEDDED_DIR / "pretrain").glob("*.npz"))
    if rank() == 0 and not (out.is_file() and out.stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in sources)):
        space = LabelSpace.default()
        result, classes = index_path(EMBEDDED_DIR / "pretrain", space, "medmnist")
        write_datalist(result, space, out, classes=classes)
    barrier()
    return str(out)


def embedded_task_datalist(task: str, out_dir: str | Path) -> str:
    """Path of the validated task datalist of an embedded real task (:data:`EMBEDDED_TASKS`), converted into
    ``out_dir`` by :func:`~monai_modan.data.downstream.prepare.prepare_task` (BreastMNIST: malignant = 1).

    Raises:
        ValueError: ``task`` is not embedded.
    """
    source = EMBEDDED_TASKS.get(task)
    if source is None:
        raise ValueError(f"no embedded real data for task {task!r} (embedded: {sorted(EMBEDDED_TASKS)})")
    return prepare_task(task, out_dir, source)
