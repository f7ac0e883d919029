"""ModAn-MulSupCon: a Jaccard-weighted multi-label supervised contrastive loss.

The pieces are public so that other losses (NT-Xent) and diagnostics can reuse them:

- :func:`jaccard_similarity` -- image-by-image Jaccard index of multi-hot label sets (matrix products, no loops);
- :func:`positive_pair_weights` -- expands image weights to the view-by-view weight matrix of the positives;
- :func:`weighted_contrastive_loss` -- the loss for given positive weights, plus its diagnostics.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.nn.modules.loss import _Loss

from monai_modan.utils.distributed import gather_no_grad, gather_with_grad, is_distributed

__all__ = [
    "MulSupConLoss",
    "jaccard_similarity",
    "positive_pair_weights",
    "weighted_contrastive_loss",
    "check_features",
    "check_multi_hot",
]

# Jaccard indices are ratios of small integers, so two distinct values differ by far more than this; the slack
# only makes ``w >= threshold`` inclusive despite fp32 rounding of ``threshold`` (e.g. ``threshold=1/3``).
THRESHOLD_SLACK = 1e-6


def check_features(features: torch.Tensor) -> tuple[int, int, int]:
    """Validate the shape of ``features`` (``[B, V, D]``) and return ``(B, V, D)``. Values are checked elsewhere."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor of shape [B, V, D], got {type(features).__name__}")
    if features.ndim != 3:
        raise ValueError(f"features must have shape [B, V, D] (batch, views, embedding), got {tuple(features.shape)}")
    batch, views, dim = features.shape
    if views < 1:
        raise ValueError(f"features must hold at least one view per image (V >= 1), got shape {tuple(features.shape)}")
    if dim < 1:
        raise ValueError(f"features must have an embedding size D >= 1, got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got dtype {features.dtype}")
    return batch, views, dim


def check_multi_hot(labels: torch.Tensor, batch: int) -> None:
    """Validate the shape of ``labels`` (``[B, K]``) against the batch size ``B`` of the features."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of shape [B, K], got {type(labels).__name__}")
    if labels.ndim != 2 or labels.shape[0] != batch:
        raise ValueError(
            f"labels must have shape [B, K] = [{batch}, K] (multi-hot, one row per image), got {tuple(labels.shape)}"
        )


def _check_values(features: torch.Tensor, labels: torch.Tensor | None) -> None:
    """Raise on non-finite features or labels outside {0, 1}; one host sync for both checks. Under DDP the flags of
    every rank are combined first, so all ranks raise together (a rank raising alone would leave the others waiting
    in the feature gather until the process-group timeout)."""
    flags = [~torch.isfinite(features).all()]
    if labels is not None:
        flags.append(((labels != 0) & (labels != 1)).any())
    flags = torch.stack(flags).to(torch.int32)
    if is_distributed():
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    bad = flags.tolist()
    if bad[0]:
        raise ValueError("features contain NaN or Inf values (on this or another rank); the contrastive loss needs "
                         "finite embeddings")
    if labels is not None and bad[1]:
        raise ValueError("labels must be multi-hot: every entry 0 or 1 (bool, integer or float)")


def jaccard_similarity(labels: torch.Tensor) -> torch.Tensor:
    """Jaccard index of the active label sets of every pair of images.

    Args:
        labels: ``[B, K]`` multi-hot {0, 1} (bool, integer or float).

    Returns:
        ``[B, B]`` float32 ``|S_i ∩ S_j| / |S_i ∪ S_j|``; 0 where both sets are empty (an unknown label set is not
        evidence of similarity), including the diagonal entries of empty sets.
    """
    active = labels.float()
    intersection = active @ active.T  # integer counts, exact in fp32
    sizes = active.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1.0), torch.zeros_like(intersection))


def positive_pair_weights(image_weights: torch.Tensor, views: int, threshold: float) -> torch.Tensor:
    """View-by-view weights ``w_ap`` of the positive pairs; zero for non-positives and for ``a == p``.

    Anchors are ordered image-major: anchor ``a = b * views + v`` is view ``v`` of image ``b``.

    Args:
        image_weights: ``[B, B]`` similarity in [0, 1] of every pair of *different* images (e.g. Jaccard);
            its diagonal is ignored, since the views of one image always have weight 1.
        views: number of views V per image.
        threshold: pairs with ``w >= threshold`` (inclusive) are positives; ``0 < threshold <= 1``.

    Returns:
        ``[B·V, B·V]`` float32 weights.
    """
    weights = image_weights.float().clone()
    weights.fill_diagonal_(1.0)
    weights = weights.repeat_interleave(views, dim=0).repeat_interleave(views, dim=1)
    positive = weights >= threshold - THRESHOLD_SLACK
    positive.fill_diagonal_(False)
    return torch.where(positive, weights, torch.zeros_like(weights))


def weighted_contrastive_loss(
    features: torch.Tensor, pair_weights: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Multi-positive contrastive loss for given positive weights (computed in the dtype of ``features``).

    ``l_a = -(1/|P(a)|) Σ_{p∈P(a)} w_ap (s_ap - log Σ_{k≠a} exp s_ak)`` with ``s = z·zᵀ / T`` on L2-normalised
    ``z``, ``P(a) = {p : w_ap > 0}``; the loss is the mean of ``l_a`` over the anchors that have a positive (all of
    them when V >= 2). With no positive anywhere it is a differentiable zero.

    Args:
        features: ``[B, V, D]`` embeddings, flattened image-major to ``B·V`` anchors.
        pair_weights: ``[B·V, B·V]`` weights, zero for non-positives and on the diagonal.
        temperature: ``T > 0``.

    Returns:
        ``(loss, diagnostics)``: 0-d loss; detached 0-d tensors ``positives_per_anchor`` (mean ``|P(a)|``) and
        ``partial_positive_share`` (share of positive pairs with ``0 < w < 1``).
    """
    batch, views, dim = features.shape
    z = F.normalize(features.reshape(batch * views, dim), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    # the anchor itself is removed from the denominator by -inf, not subtracted after exp (stable at small T)
    log_denominator = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - log_denominator

    positive = pair_weights > 0
    positives_per_anchor = positive.sum(dim=1)
    per_anchor = -(pair_weights * log_prob).sum(dim=1) / positives_per_anchor.clamp_min(1)
    anchors_with_positives = (positives_per_anchor > 0).sum()
    loss = per_anchor.sum() / anchors_with_positives.clamp_min(1)

    with torch.no_grad():
        partial = (positive & (pair_weights < 1)).sum()
        diagnostics = {
            "positives_per_anchor": positives_per_anchor.float().mean(),
            "partial_positive_share": partial.float() / positive.sum().clamp_min(1).float(),
        }
    return loss, diagnostics


class MulSupConLoss(_Loss):
    """
    Jaccard-weighted multi-label supervised contrastive loss ("ModAn-MulSupCon"), after

        Zaigrajew, V., Zieba, M. "Multi-label supervised contrastive learning" (MulSupCon), 2022, and the ModAn
        paper, which pretrains on metadata targets: modality and anatomy one-hots concatenated into one multi-hot
        vector per image.

    With ``N = B·V`` anchors (image-major: anchor ``a = b·V + v``), L2-normalised embeddings ``z`` and
    ``s = z·zᵀ / T``:

    - ``w_ap`` is the Jaccard index ``|S_a ∩ S_p| / |S_a ∪ S_p|`` of the active label sets of the images of ``a`` and
      ``p``; the views of one image have ``w = 1`` (even with an empty label set); two *different* images whose
      label sets are both empty have ``w = 0`` (unknown is not "the same");
    - positives ``P_τ(a) = {p ≠ a : w_ap ≥ τ}`` (inclusive);
    - ``l_a = -(1/|P_τ(a)|) Σ_{p∈P_τ(a)} w_ap (s_ap - log Σ_{k≠a} exp s_ak)`` -- normalised by the *count* of
      positives, with every other view in the denominator;
    - loss = mean of ``l_a`` over all anchors (each has at least its other views as positives when V >= 2; with
      V = 1 anchors without positives are left out of the mean, and a batch without any positive gives 0).

    Meaning of ``τ = 0.3`` with two one-hot groups (modality ‖ anatomy): identical labels give ``J = 1``; sharing one
    group (e.g. CT chest vs CT abdomen) gives ``J = 1 / (2 + 2 - 1) = 1/3``, a positive of weight 1/3; sharing
    nothing gives 0. ``τ > 1/3`` reduces the loss to SupCon on the exact (modality, anatomy) pair.

    Everything is computed in fp32, also under autocast, through matrix products (no loop over pairs).
    After each forward, ``last_diagnostics`` holds detached 0-d tensors (no host sync): ``positives_per_anchor``
    (mean ``|P_τ(a)|``) and ``partial_positive_share`` (share of positive pairs with ``0 < w < 1``).

    Distributed: with ``gather_distributed`` and an initialised process group of more than one rank, features (with
    gradients) and labels are gathered from all ranks and *every rank computes the loss over all global anchors*, so
    the value is identical on every rank and equals one process on the global batch. The gather's backward sums the
    gradients of all ranks, so each rank's local gradient is ``world_size ×`` the single-process gradient of its rows,
    and DDP's averaging of parameter gradients gives exactly the single-process parameter gradient *of the loss given
    the embeddings*. The network itself is not the single-process one: its BatchNorm layers normalise each rank's
    batch with that rank's statistics (the bundle does not convert them to ``SyncBatchNorm``), as in most
    supervised-contrastive code. Ranks may hold different batch sizes.
    """

    def __init__(self, temperature: float = 0.07, threshold: float = 0.3, gather_distributed: bool = True,
                 check_values: bool = True) -> None:
        """
        Args:
            temperature: softmax temperature ``T > 0`` (the paper uses 0.07).
            threshold: Jaccard threshold ``τ`` in (0, 1]; pairs with ``w ≥ τ`` are positives.
            gather_distributed: gather the global batch across ranks when torch.distributed is initialised.

        Raises:
            ValueError: when ``temperature <= 0`` or ``threshold`` is outside (0, 1].
        """
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.gather_distributed = gather_distributed
        # the finite/binary value checks read a flag back to the host; the device-resident fast path turns them off
        self.check_values = check_values
        self.last_diagnostics: dict[str, torch.Tensor] = {}

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: ``[B, V, D]`` float embeddings (B images, V views each, D features); normalised inside.
            labels: ``[B, K]`` multi-hot {0, 1} targets (bool, integer or float), one row per image.

        Returns:
            0-d float32 loss.

        Raises:
            ValueError: bad shapes, fewer than 2 views in the (global) batch, non-finite features, non-binary labels.
        """
        batch, _, _ = check_features(features)
        check_multi_hot(labels, batch)
        if self.check_values:
            _check_values(features, labels)
        with torch.autocast(device_type=features.device.type, enabled=False):
            features, labels = features.float(), labels.float()
            if self.gather_distributed and is_distributed():
                features, labels = gather_with_grad(features), gather_no_grad(labels)
            _require_two_views(features)
            weights = positive_pair_weights(jaccard_similarity(labels), features.shape[1], self.threshold)
            loss, self.last_diagnostics = weighted_contrastive_loss(features, weights, self.temperature)
        return loss


def _require_two_views(features: torch.Tensor) -> None:
    if features.shape[0] * features.shape[1] < 2:
        raise ValueError(
            f"need at least 2 views in the batch (B·V >= 2) to contrast anything, got features {tuple(features.shape)}"
        )
