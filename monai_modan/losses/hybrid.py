"""Hybrid objective: metadata supervision (MulSupCon) plus instance discrimination (NT-Xent) on the same views."""

from __future__ import annotations

import math

import torch
from torch.nn.modules.loss import _Loss

from monai_modan.losses.mulsupcon import MulSupConLoss
from monai_modan.losses.ntxent import NTXentLoss

__all__ = ["HybridContrastiveLoss"]


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r}: must be a finite number >= 0 (the weight of a loss term)")
    return float(value)


class HybridContrastiveLoss(_Loss):
    """
    ``metadata_weight · MulSupCon + instance_weight · NT-Xent`` on the same ``[B, V, D]`` views:

    - the metadata term (:class:`~monai_modan.losses.MulSupConLoss`, the ModAn objective) pulls together images that
      share modality / anatomy, weighted by the Jaccard index of their multi-hot labels;
    - the instance term (:class:`~monai_modan.losses.NTXentLoss`, SimCLR) makes the two views of *one* image closer
      than those of every other image, including images with the same labels -- it keeps what distinguishes one image
      from another, which metadata supervision alone is free to discard (the ModAn paper's Table 5: metadata
      supervision gives the least linearly separable features; its discussion suggests adding instance
      discrimination).

    ``instance_weight`` is the λ of ``MulSupCon + λ · NT-Xent``. Both terms are computed (and, under DDP, gathered
    across ranks) by the component losses themselves, so each equals its own loss exactly: ``instance_weight=0``
    gives exactly MulSupCon and ``metadata_weight=0`` exactly NT-Xent (a zero-weight term is still computed, so every
    parameter of a separate head keeps a (zero) gradient and DDP sees no unused parameter). Both terms run in fp32,
    also under autocast.

    The instance term can see other projections than the metadata term (``instance_features``: a separate projection
    head on the same encoder features); by default both see ``features``.

    After each forward, ``last_diagnostics`` holds detached 0-d tensors (no host sync): the metadata loss's
    (``positives_per_anchor``, ``partial_positive_share``) and the two unweighted terms, ``metadata_loss`` and
    ``instance_loss``.
    """

    def __init__(self, instance_weight: float = 1.0, metadata_weight: float = 1.0,
                 metadata_loss: MulSupConLoss | None = None, instance_loss: NTXentLoss | None = None) -> None:
        """
        Args:
            instance_weight: λ >= 0, the weight of the NT-Xent term.
            metadata_weight: >= 0, the weight of the MulSupCon term (0: pure NT-Xent).
            metadata_loss: the MulSupCon term; ``None``: ``MulSupConLoss()`` (its defaults, T = 0.07, τ = 0.3).
            instance_loss: the NT-Xent term; ``None``: ``NTXentLoss()`` (its default, T = 0.1).

        Raises:
            ValueError: a weight that is negative or not finite, or both weights 0 (nothing to learn).
            TypeError: a component that is not the loss it stands for.
        """
        super().__init__()
        self.instance_weight = _check_weight("instance_weight", instance_weight)
        self.metadata_weight = _check_weight("metadata_weight", metadata_weight)
        if self.instance_weight == 0 and self.metadata_weight == 0:
            raise ValueError("instance_weight=0 and metadata_weight=0: the hybrid loss would be 0; give one of them "
                             "a weight > 0")
        metadata_loss = MulSupConLoss() if metadata_loss is None else metadata_loss
        instance_loss = NTXentLoss() if instance_loss is None else instance_loss
        if not isinstance(metadata_loss, MulSupConLoss):
            raise TypeError(f"metadata_loss must be a MulSupConLoss, got {type(metadata_loss).__name__}")
        if not isinstance(instance_loss, NTXentLoss):
            raise TypeError(f"instance_loss must be an NTXentLoss, got {type(instance_loss).__name__}")
        self.metadata_loss, self.instance_loss = metadata_loss, instance_loss
        self.last_diagnostics: dict[str, torch.Tensor] = {}

    @property
    def check_values(self) -> bool:
        """Whether the terms check their inputs' values (finite features, binary labels; a host sync each)."""
        return self.metadata_loss.check_values or self.instance_loss.check_values

    @check_values.setter
    def check_values(self, value: bool) -> None:
        self.metadata_loss.check_values = self.instance_loss.check_values = bool(value)

    def forward(self, features: torch.Tensor, labels: torch.Tensor,
                instance_features: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            features: ``[B, V, D]`` embeddings of the metadata term (B images, V >= 2 views); normalised inside.
            labels: ``[B, K]`` multi-hot {0, 1} targets of the metadata term.
            instance_features: ``[B, V, D']`` embeddings of the instance term (same B and V); ``None``: ``features``.

        Returns:
            0-d float32 loss.

        Raises:
            ValueError: bad shapes, V < 2, non-finite features, non-binary labels (from the component losses), or
                ``instance_features`` of another batch or view count.
        """
        if instance_features is None:
            instance_features = features
        elif (isinstance(features, torch.Tensor) and isinstance(instance_features, torch.Tensor)
              and (instance_features.ndim != 3 or instance_features.shape[:2] != features.shape[:2])):
            raise ValueError(f"instance_features must be [B, V, D'] with the [B, V] = {list(features.shape[:2])} of "
                             f"features, got {tuple(instance_features.shape)}")
        metadata = self.metadata_loss(features, labels)
        instance = self.instance_loss(instance_features)
        diagnostics = dict(self.metadata_loss.last_diagnostics)
        diagnostics["metadata_loss"], diagnostics["instance_loss"] = metadata.detach(), instance.detach()
        self.last_diagnostics = diagnostics
        return self.metadata_weight * metadata + self.instance_weight * instance
