"""Deterministic synthetic corpora: a miniRIN-like pretraining corpus and binary downstream tasks.

Nothing here is patient data. Images are drawn from anatomical *phantoms* -- a map of tissue classes (air, fat,
muscle, bone, fluid, lesion ...) painted from simple vectorised shapes -- and a modality *physics* turns the tissue
map into a signal (CT in HU, MR with bias field and Rician noise, US with speckle, shadows and a fan).

Modules, lowest first:

* :mod:`~monai_modan.synthetic.physics`: :class:`Tissue`, the CT / MR / US signal models, the 8-bit display mapping.
* :mod:`~monai_modan.synthetic.phantoms`: the canvas, shapes and the anatomical phantoms; :func:`render_phantom`.
* :mod:`~monai_modan.synthetic.catalogue`: :class:`SyntheticClass` and :data:`RADIMAGENET_CLASSES`.
* :mod:`~monai_modan.synthetic.writers`: the corpus on disk (RadImageNet tree, DICOM export, manifest):
  :func:`generate_pretraining_corpus`, :func:`ensure_pretraining_corpus`.
* :mod:`~monai_modan.synthetic.tasks`: :class:`SyntheticTask`, :func:`render_task_image`,
  :func:`generate_downstream_task`.
* :mod:`~monai_modan.synthetic.defaults`: the data a bundle or the CLI uses when given none:
  :func:`default_pretraining_datalist`, :func:`default_task_datalist`.
"""

from __future__ import annotations

from .catalogue import RADIMAGENET_CLASSES, SyntheticClass
from .defaults import (
                      SYNTHETIC_FOR_TASK,
                      default_pretraining_datalist,
                      default_task_datalist,
)
from .phantoms import phantom_tissue_map, render_phantom
from .physics import (
                      Tissue,
                      ct_signal,
                      mr_signal,
                      speckle_field,
                      to_display,
                      ultrasound_fan_mask,
                      ultrasound_signal,
)
from .tasks import SyntheticTask, generate_downstream_task, render_task_image
from .writers import (
                      LAYOUTS,
                      MANIFEST_NAME,
                      SyntheticCorpus,
                      SyntheticCorpusError,
                      ensure_pretraining_corpus,
                      generate_pretraining_corpus,
)

__all__ = [
    "Tissue",
    "SyntheticClass",
    "RADIMAGENET_CLASSES",
    "SyntheticCorpus",
    "SyntheticCorpusError",
    "SyntheticTask",
    "generate_pretraining_corpus",
    "ensure_pretraining_corpus",
    "generate_downstream_task",
    "render_phantom",
    "phantom_tissue_map",
    "render_task_image",
    "ct_signal",
    "mr_signal",
    "ultrasound_signal",
    "ultrasound_fan_mask",
    "to_display",
    "speckle_field",
    "LAYOUTS",
    "MANIFEST_NAME",
    "SYNTHETIC_FOR_TASK",
    "default_pretraining_datalist",
    "default_task_datalist",
]
