"""Two-view augmentation for contrastive pretraining: MONAI transforms (per image) and a batched device twin."""

from __future__ import annotations

from monai_modan.transforms.batched import BatchedTwoViewAugment, TwoViewParameters
from monai_modan.transforms.two_view import (
    BrightnessContrast,
    CropBox,
    RandBrightnessContrast,
    RandBrightnessContrastd,
    RandResizedCrop,
    RandResizedCropd,
    ResizedCrop,
    TwoViewAugmentd,
    ViewParameters,
)

__all__ = [
    "BatchedTwoViewAugment",
    "BrightnessContrast",
    "CropBox",
    "RandBrightnessContrast",
    "RandBrightnessContrastd",
    "RandResizedCrop",
    "RandResizedCropd",
    "ResizedCrop",
    "TwoViewAugmentd",
    "TwoViewParameters",
    "ViewParameters",
]
