"""Two-view augmentation for contrastive pretraining: one recipe (:class:`TwoViewRecipe`), applied by MONAI transforms
(per image, :class:`TwoViewAugment` / :class:`TwoViewAugmentd`) and by a batched device twin
(:class:`BatchedTwoViewAugment`)."""

from __future__ import annotations

from monai_modan.transforms.batched import BatchedTwoViewAugment, TwoViewParameters
from monai_modan.transforms.recipe import TwoViewRecipe
from monai_modan.transforms.two_view import (
    BrightnessContrast,
    CropBox,
    RandBrightnessContrast,
    RandBrightnessContrastd,
    RandResizedCrop,
    RandResizedCropd,
    ResizedCrop,
    TwoViewAugment,
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
    "TwoViewAugment",
    "TwoViewAugmentd",
    "TwoViewParameters",
    "TwoViewRecipe",
    "ViewParameters",
]
