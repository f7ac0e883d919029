"""Synthetic binary downstream tasks whose label lives in fine local detail (a torn ligament, a spiculated or
lobulated margin, microcalcifications) while global intensity statistics do not separate the classes.

:func:`generate_downstream_task` writes a task's PNGs and its datalist; :func:`render_task_image` draws one image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.utils.enums import StrEnum

from ..utils.defaults import IMAGE_SIZE
from ..utils.io import atomic_write_json
from .phantoms import render_phantom
from .physics import to_display
from .writers import GENERATOR, MIN_IMAGE_SIZE, SyntheticCorpusError, save_png

__all__ = ["SyntheticTask", "render_task_image", "generate_downstream_task"]


class SyntheticTask(StrEnum):
    """Binary synthetic downstream tasks whose label lives in fine local detail."""

    KNEE_ACL = "knee_acl"  # knee MR: positive = ACL band with a discontinuity (tear)
    BREAST_US = "breast_us"  # breast US: positive = spiculated/irregular mass margin (vs circumscribed oval)
    THYROID_US = "thyroid_us"  # thyroid US: positive = lobulated margin + microcalcifications (vs smooth nodule)


@dataclass(frozen=True)
class _TaskSpec:
    modality: str
    anatomy: str
    phantom: str
    negative: str | None
    positive: str
    description: str


_TASKS = {
    SyntheticTask.KNEE_ACL: _TaskSpec("MR", "knee", "knee", None, "acl_tear",
                                      "sagittal knee MR; 1 = ACL band interrupted by a gap, 0 = intact band"),
    SyntheticTask.BREAST_US: _TaskSpec("US", "breast", "breast_us", "oval_mass", "spiculated_mass",
                                       "breast US mass; 1 = spiculated/irregular margin, 0 = circumscribed oval"),
    SyntheticTask.THYROID_US: _TaskSpec("US", "thyroid", "thyroid_us", "nodule", "suspicious_nodule",
                                        "thyroid US nodule; 1 = lobulated margin with microcalcifications, "
                                        "0 = smooth solid nodule"),
}
_TASK_IDS = {t: i for i, t in enumerate(SyntheticTask)}


def render_task_image(task: SyntheticTask | str, label: int, image_size: int, case_entropy: Sequence[int],
                      image_entropy: Sequence[int]) -> np.ndarray:
    """One 8-bit image of a downstream task.

    The anatomy, lesion size and position, pose, acquisition gain and noise are drawn from the entropies only, the
    finding's detail from its own stream: for the same entropies, ``label=0`` and ``label=1`` differ only where the
    finding is (the torn ACL segment, the lesion margin).

    Returns:
        ``[image_size, image_size]`` uint8.
    """
    task = SyntheticTask(task)
    spec = _TASKS[task]
    # acquisition settings vary from image to image: overall gain and (US) the display dynamic range
    settings = np.random.default_rng(list(image_entropy) + [3])
    gain, dynamic_range = float(settings.uniform(0.75, 1.3)), float(settings.uniform(32.0, 50.0))
    signal = render_phantom(spec.phantom, spec.modality, spec.positive if label else spec.negative, image_size,
                            case_entropy, image_entropy, gain=gain)
    return to_display(spec.modality, signal, dynamic_range_db=dynamic_range)


def generate_downstream_task(task: SyntheticTask | str, out_dir: str | Path, *, n_images: int = 120,
                             image_size: int = IMAGE_SIZE, seed: int = 0, positive_fraction: float = 0.4,
                             images_per_case: int = 4) -> Path:
    """Write a synthetic binary task and its datalist.

    Images are grouped in cases (one synthetic patient / lesion seen ``images_per_case`` times with another pose
    and noise), all images of a case share its label, so splits must be grouped by ``group``. Exactly
    ``round(positive_fraction * n_images)`` images are positive. Lesion area, intensity and acquisition gain are
    drawn independently of the label, so global statistics do not separate the classes.

    Layout: ``out_dir/<task>/images/case0001_1.png`` ... and ``out_dir/<task>/datalist.json``::

        {"task": "knee_acl", "modality": "MR", "anatomy": "knee", "description": ..., "seed": 0, ...,
         "training": [{"image": "/abs/.../case0001_1.png", "label": 1, "group": "case0001"}, ...]}

    Returns:
        Path of the datalist JSON.
    """
    task = SyntheticTask(task)
    spec = _TASKS[task]
    if int(n_images) < 2 or int(images_per_case) < 1:
        raise SyntheticCorpusError(f"need n_images >= 2 and images_per_case >= 1, got {n_images}, {images_per_case}")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise SyntheticCorpusError(f"image_size must be >= {MIN_IMAGE_SIZE} pixels, got {image_size}")
    n_pos = round(float(positive_fraction) * n_images)
    if not 0 < n_pos < n_images:
        raise SyntheticCorpusError(
            f"positive_fraction={positive_fraction} gives {n_pos} positives of {n_images}; both classes are needed")
    # cases of images_per_case images (the last one of each class may be smaller); shuffle so labels interleave
    sizes = [(label, min(images_per_case, count - start)) for label, count in ((1, n_pos), (0, n_images - n_pos))
             for start in range(0, count, images_per_case)]
    sizes = [sizes[i] for i in np.random.default_rng([seed, 10, _TASK_IDS[task]]).permutation(len(sizes))]
    task_dir = Path(out_dir) / task.value
    image_dir = task_dir / "images"
    items, written = [], set()
    for c, (label, k) in enumerate(sizes, start=1):
        group = f"case{c:04d}"
        for j in range(1, k + 1):
            pixels = render_task_image(task, label, image_size, [seed, 11, _TASK_IDS[task], c],
                                       [seed, 12, _TASK_IDS[task], c, j])
            path = image_dir / f"{group}_{j}.png"
            save_png(path, pixels)
            written.add(path.name)
            items.append({"image": str(path.resolve()), "label": int(label), "group": group})
    for stale in image_dir.glob("case*_*.png"):  # images of an earlier, larger run
        if stale.name not in written:
            stale.unlink()
    datalist = {"task": task.value, "modality": spec.modality, "anatomy": spec.anatomy,
                "description": spec.description, "generator": GENERATOR, "seed": int(seed),
                "image_size": int(image_size), "n_images": len(items), "n_cases": len(sizes),
                "positive_fraction": n_pos / len(items), "training": items}
    return atomic_write_json(task_dir / "datalist.json", datalist, indent=1)
