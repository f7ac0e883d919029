"""Exact duplicate images: found by a hash of the decoded pixels, handled by a :class:`DuplicatePolicy`.

"Exact duplicate" means *the same picture*, not the same file: two PNGs with identical pixels can differ in their
bytes (compression level, ancillary chunks, grey stored as ``L`` or as ``RGB`` with R = G = B), and every pair of
byte-identical files also has identical pixels. So the hash is over the decoded, displayed pixels: Pillow decodes
(EXIF orientation applied), 8-bit images are compared as RGB (RGBA when an alpha channel is not fully opaque), 16-bit
and float images as their stored values, and formats Pillow does not read (DICOM, NPY, NIfTI) as the grey image of
:func:`monai_modan.data.readers.load_grayscale`. Near duplicates (resized, re-cropped, re-compressed JPEG) are *not*
found.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils.enums import StrEnum
from PIL import Image, ImageOps

from ..readers import ImageLoadError, load_grayscale
from .task import DownstreamError

__all__ = ["DuplicatePolicy", "pixel_hash", "apply_duplicate_policy", "PILLOW_SUFFIXES"]

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
_VALUE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class DuplicatePolicy(StrEnum):
    """What to do with a set of images whose decoded pixels are identical.

    - ``drop_all_but_first`` (default): when every copy has the same (final, binary) label keep the first copy in
      the converter's order and exclude the others; when the copies carry *conflicting* labels (the same picture
      filed as benign and as malignant) exclude every copy -- no label can be trusted, and keeping one would put
      a wrongly labelled image in the data.
    - ``drop_all``: exclude every copy of a duplicated image.
    - ``keep``: keep every copy (each stays its own group, so copies can straddle folds); the sets are only
      reported in the notes.

    Labels are compared after the class -> label mapping, so with BUSI's ``normal`` counted as benign a
    normal/benign duplicate is a same-label duplicate.
    """

    DROP_ALL_BUT_FIRST = "drop_all_but_first"
    DROP_ALL = "drop_all"
    KEEP = "keep"


def pixel_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of an image's decoded pixels, its shape and pixel type. Raises :class:`DownstreamError`."""
    path = Path(path)
    if path.suffix.lower() in PILLOW_SUFFIXES:
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                if image.mode in _VALUE_MODES:
                    tag, pixels = "values", np.asarray(image)
                else:
                    rgba = np.asarray(image.convert("RGBA"))
                    opaque = bool((rgba[..., 3] == 255).all())
                    tag, pixels = ("RGB", rgba[..., :3]) if opaque else ("RGBA", rgba)
        except Exception as e:  # UnidentifiedImageError, truncated file, bad EXIF ...
            raise DownstreamError(f"{path}: cannot decode image: {e}") from e
    else:
        try:
            tag, pixels = "grey", load_grayscale(path)
        except ImageLoadError as e:
            raise DownstreamError(str(e)) from e
    digest = hashlib.sha256(f"{tag}|{pixels.shape}|{pixels.dtype.str}|".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def apply_duplicate_policy(items: Sequence[dict[str, Any]], hashes: Sequence[str], policy: DuplicatePolicy | str,
                           name=lambda item: Path(item["image"]).name) -> tuple[list[dict], list[dict], list[str]]:
    """Split ``items`` (in their priority order, with ``hashes[i]`` of ``items[i]``) into kept and excluded.

    Returns:
        ``(kept items, excluded [{"image", "reason"}], notes)``; the notes count the duplicate sets and say what
        was done with them.
    """
    policy = DuplicatePolicy(policy)
    if len(items) != len(hashes):
        raise ValueError(f"{len(items)} items but {len(hashes)} hashes")
    copies: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        copies[h].append(i)
    dropped: dict[int, str] = {}
    same, conflicting = [], []
    for members in copies.values():
        if len(members) < 2:
            continue
        labels = {items[i]["label"] for i in members}
        names = [name(items[i]) for i in members]
        (conflicting if len(labels) > 1 else same).append(names)
        if policy == DuplicatePolicy.KEEP:
            continue
        for rank, i in enumerate(members):
            others = ", ".join(n for r, n in enumerate(names) if r != rank)
            if len(labels) > 1:
                dropped[i] = f"exact duplicate with a conflicting label (same pixels as {others}): every copy dropped"
            elif policy == DuplicatePolicy.DROP_ALL:
                dropped[i] = f"exact duplicate (same pixels as {others}): every copy dropped (duplicates=drop_all)"
            elif rank > 0:
                dropped[i] = f"exact duplicate of {names[0]} (same pixels); the first copy is kept"
    kept = [it for i, it in enumerate(items) if i not in dropped]
    excluded = [{"image": items[i]["image"], "reason": reason} for i, reason in sorted(dropped.items())]
    notes = []
    if same or conflicting:
        notes.append(
            f"exact duplicates (identical decoded pixels): {len(same)} set(s) with one label, {len(conflicting)} "
            f"set(s) with conflicting labels; policy duplicates={policy.value}, {len(dropped)} image(s) excluded")
        notes += [f"duplicate set (same label): {', '.join(n)}" for n in same]
        notes += [f"duplicate set (CONFLICTING labels): {', '.join(n)}" for n in conflicting]
    else:
        notes.append("exact duplicates (identical decoded pixels): none found")
    return kept, excluded, notes
