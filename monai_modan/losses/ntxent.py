"""NT-Xent (SimCLR) loss on the ``[B, V, D]`` view convention of :class:`MulSupConLoss`."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from monai_modan.utils.distributed import gather_with_grad, is_distributed
from monai_modan.losses.mulsupcon import (
    _check_values,
    check_features,
    positive_pair_weights,
    weighted_contrastive_loss,
)

__all__ = ["NTXentLoss"]


class NTXentLoss(_Loss):
    """
    Normalised-temperature cross-entropy (NT-Xent) loss of SimCLR:

        Chen, T., et al. "A simple framework for contrastive learning of visual representations." ICML 2020.

    The self-supervised baseline of the ModAn pretraining: the positives of an anchor are the *other views of the
    same image* only, the denominator holds every other view of the batch:
    ``l_a = -(1/(V-1)) Σ_{p: same image, p≠a} (s_ap - log Σ_{k≠a} exp s_ak)``, ``s = z·zᵀ / T`` on L2-normalised
    ``z``, mean over all ``B·V`` anchors. For V = 2 this is ``monai.losses.ContrastiveLoss`` on the two views; it
    equals :class:`MulSupConLoss` with all-distinct labels and ``threshold=1``.

    Computed in fp32 also under autocast. ``last_diagnostics`` as in :class:`MulSupConLoss`. Distributed gathering
    as in :class:`MulSupConLoss`: every rank computes the loss over all global anchors (identical value on every
    rank), and DDP's gradient averaging gives exactly the single-process gradient.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True, check_values: bool = True) -> None:
        """
        Args:
            temperature: softmax temperature ``T > 0``.
            gather_distributed: gather the global batch across ranks when torch.distributed is initialised.

        Raises:
            ValueError: when ``temperature <= 0``.
        """
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed
        self.check_values = check_values  # see MulSupConLoss: off on the sync-free fast path
        self.last_diagnostics: dict[str, torch.Tensor] = {}

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            features: ``[B, V, D]`` float embeddings (B images, V >= 2 views each); normalised inside.
            labels: ignored (accepted so that both losses can be called alike).

        Returns:
            0-d float32 loss.

        Raises:
            ValueError: bad shape, V < 2, non-finite features.
        """
        _, views, _ = check_features(features)
        if views < 2:
            raise ValueError(
                f"NT-Xent needs at least 2 views per image (its only positives), got features {tuple(features.shape)}"
            )
        if self.check_values:
            _check_values(features, None)
        with torch.autocast(device_type=features.device.type, enabled=False):
            features = features.float()
            if self.gather_distributed and is_distributed():
                features = gather_with_grad(features)
            batch, views = features.shape[:2]
            # distinct images never reach the threshold of 1: positives are the other views of each image
            same_image_only = torch.zeros((batch, batch), device=features.device)
            weights = positive_pair_weights(same_image_only, views, threshold=1.0)
            loss, self.last_diagnostics = weighted_contrastive_loss(features, weights, self.temperature)
        return loss
