"""Data: index records, datalists and the one image loading path.

The image readers import torch and MONAI, so they are exported lazily: ``import monai_modan.data.records``
(or any light submodule) does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    name: "monai_modan.data.readers"
    for name in (
        "ImageLoadError",
        "FramePolicy",
        "WindowPolicy",
        "dicom_to_grayscale",
        "load_grayscale",
        "LoadGrayscaleImage",
        "LoadGrayscaleImaged",
    )
}
_LAZY.update({
    name: "monai_modan.data.medmnist"
    for name in ("MedMNISTError", "MEDMNIST_MODALITY_ANATOMY", "index_medmnist", "medmnist_reference")
})

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
