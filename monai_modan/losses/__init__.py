"""Pretraining losses: contrastive (metadata-supervised MulSupCon, NT-Xent, their hybrid) and SparK's masked
reconstruction."""

from __future__ import annotations

from monai_modan.losses.mulsupcon import (
    MulSupConLoss,
    jaccard_similarity,
    positive_pair_weights,
    weighted_contrastive_loss,
)
from monai_modan.losses.ntxent import NTXentLoss
from monai_modan.losses.hybrid import HybridContrastiveLoss
from monai_modan.losses.spark import MaskedReconstructionLoss, patch_statistics, patchify, unpatchify

__all__ = [
    "HybridContrastiveLoss",
    "MaskedReconstructionLoss",
    "MulSupConLoss",
    "NTXentLoss",
    "jaccard_similarity",
    "patch_statistics",
    "patchify",
    "positive_pair_weights",
    "unpatchify",
    "weighted_contrastive_loss",
]
