"""Contrastive losses for metadata-supervised pretraining."""

from __future__ import annotations

from monai_modan.losses.mulsupcon import (
    MulSupConLoss,
    jaccard_similarity,
    positive_pair_weights,
    weighted_contrastive_loss,
)
from monai_modan.losses.ntxent import NTXentLoss

__all__ = [
    "MulSupConLoss",
    "NTXentLoss",
    "jaccard_similarity",
    "positive_pair_weights",
    "weighted_contrastive_loss",
]
