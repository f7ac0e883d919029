"""BUSI breast ultrasound (Al-Dhabyani et al., *Data in Brief* 28:104863, 2020) -> binary task datalist.

Release layout::

    Dataset_BUSI_with_GT/
      benign/benign (1).png, benign (1)_mask.png, benign (4)_mask_1.png ...   437 images
      malignant/malignant (1).png ...                                          210 images
      normal/normal (1).png ...                                                133 images

Masks (``_mask``, ``_mask_1`` ...) are left out. Label 1 = malignant; ``normal`` counts as benign (label 0) by
default, as in the paper (779 = 569 / 210). BUSI has no patient ids: every image is its own group, so images of one
patient or lesion may straddle folds (Pawłowska et al., *Data in Brief* 48:109247, 2023, report near-duplicate
images, some filed under both benign and malignant). Exact (pixel-identical) duplicates are found and handled by a
:class:`~monai_modan.data.downstream.duplicates.DuplicatePolicy`.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from .duplicates import PILLOW_SUFFIXES, DuplicatePolicy
from .generic import MASK_PATTERN, _deduplicate, _finish, _natural_key
from .task import DownstreamError, TaskDatalist

__all__ = ["BUSI_CLASSES", "convert_busi", "find_busi_root"]

BUSI_CLASSES = ("benign", "malignant", "normal")


def find_busi_root(path: str | Path) -> Path:
    """``Dataset_BUSI_with_GT`` itself or a folder containing it -> the release folder."""
    path = Path(path)
    if (path / "Dataset_BUSI_with_GT").is_dir():
        path = path / "Dataset_BUSI_with_GT"
    missing = [c for c in ("benign", "malignant") if not (path / c).is_dir()]
    if missing:
        found = sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        raise DownstreamError(f"{path}: not a BUSI release: no class folder(s) {missing} (found {found}; expected "
                              "Dataset_BUSI_with_GT/{benign,malignant,normal}/)")
    return path


def convert_busi(root: str | Path, out: str | Path, *, include_normal: bool = True, normal_label: int = 0,
                 duplicates: DuplicatePolicy | str = DuplicatePolicy.DROP_ALL_BUT_FIRST,
                 task: str = "breast_us") -> TaskDatalist:
    """BUSI release -> task datalist (label 1 = malignant).

    Args:
        root: ``Dataset_BUSI_with_GT`` or the folder containing it.
        out: the datalist JSON to write.
        include_normal: keep the ``normal`` images (default, as the paper); if ``False`` they are excluded.
        normal_label: the label of ``normal`` images: 0 (benign, default) or 1.
        duplicates: :class:`DuplicatePolicy` for pixel-identical images, applied to the final labels in the order
            benign, malignant, normal, then image number (so "first" is the lowest-numbered copy).
        task: task name.

    Each item: ``{"image", "label", "group": "<class> (<n>)", "class": "<folder>"}``. Undecodable images are
    excluded with the cause.
    """
    if not isinstance(include_normal, bool):  # a string "false" from a command line would silently mean True
        raise DownstreamError(f"include_normal must be true or false, got {include_normal!r}")
    root = find_busi_root(root)
    if normal_label not in (0, 1):
        raise DownstreamError(f"normal_label must be 0 (benign) or 1, got {normal_label!r}")
    duplicates = DuplicatePolicy(duplicates)
    labels = {"benign": 0, "malignant": 1, "normal": normal_label if include_normal else None}
    items, excluded = [], []
    masks, other_files = 0, []
    for name in BUSI_CLASSES:
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in PILLOW_SUFFIXES:
                other_files.append(path.name)
                continue
            if MASK_PATTERN.search(path.stem):
                masks += 1
                continue
            if labels[name] is None:
                excluded.append({"image": os.path.abspath(path), "reason": "normal image (include_normal=False)"})
                continue
            items.append({"image": os.path.abspath(path), "label": labels[name], "group": path.stem,
                          "class": name})
    items, ex, dup_notes = _deduplicate(items, duplicates)
    excluded += ex
    per_class = Counter(it["class"] for it in items)
    normal = ("left out (include_normal=False)" if not include_normal
              else "counted as benign (label 0), as in the paper" if normal_label == 0 else "given label 1")
    positive = "malignant" if normal_label == 0 or not include_normal else "malignant+normal"
    notes = [f"BUSI (Al-Dhabyani et al. 2020): label 1 = malignant; normal images {normal}",
             f"kept per class folder: {dict(per_class)}; {masks} mask file(s) (*_mask*.png) left out",
             "BUSI has no patient ids: group = image id, so images of one patient may straddle folds "
             "(near-duplicates reported by Pawłowska et al. 2023 are not detected)",
             *dup_notes]
    if not (root / "normal").is_dir():
        notes.append(f"{root}: no 'normal' folder")
    if other_files:
        notes.append(f"{len(other_files)} non-image file(s) ignored, e.g. {other_files[:3]}")
    return _finish(items, out, task=task, positive=positive, notes=notes, excluded=excluded, source="busi",
                   root=str(root.absolute()),
                   options={"include_normal": include_normal, "normal_label": normal_label,
                            "duplicates": duplicates.value})
