"""Masked reconstruction loss of SparK (Tian et al., "Designing BERT for convolutional networks: sparse and
hierarchical masked modeling", ICLR 2023), on patches of a ``[B, C, H, W]`` image.

Shapes: ``B`` images, ``C`` channels (1 here), ``H x W`` pixels, cut into ``h x w`` square patches of ``p x p``
pixels (``H = h p``, ``W = w p``); ``L = h w`` patches per image, ``N = C p^2`` values per patch. The patch grid is
the mask's grid: ``active [B, 1, h, w]`` is True where a patch was visible to the encoder, False where it was masked.
"""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["MaskedReconstructionLoss", "patchify", "unpatchify", "patch_statistics", "PATCH_NORM_EPS"]

PATCH_NORM_EPS = 1e-6  # added to each patch's variance before the square root (SparK, MAE)


def _patch_size(images: torch.Tensor, grid: tuple[int, int]) -> int:
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    (height, width), (h, w) = images.shape[-2:], grid
    if h < 1 or w < 1 or height % h or width % w or height // h != width // w:
        raise ValueError(f"a {h}x{w} patch grid does not cut an image of {height}x{width} pixels into equal square "
                         "patches")
    return height // h


def patchify(images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, L, N]``: the ``h x w`` patches of each image (row-major, ``L = h w``), each flattened
    to ``N = C p^2`` values (pixel-major, channel last)."""
    p = _patch_size(images, grid)
    b, c = images.shape[:2]
    h, w = grid
    return images.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * c)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], channels: int = 1) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, L, N]`` -> ``[B, C, H, W]`` with ``C = channels``."""
    h, w = grid
    if patches.ndim != 3 or patches.shape[1] != h * w or patches.shape[2] % channels:
        raise ValueError(f"patches must be [B, {h * w}, C*p*p] for a {h}x{w} grid, got {tuple(patches.shape)}")
    p = int(round((patches.shape[2] // channels) ** 0.5))
    if p * p * channels != patches.shape[2]:
        raise ValueError(f"{patches.shape[2]} values per patch are not {channels} channel(s) of a square patch")
    b = patches.shape[0]
    return patches.reshape(b, h, w, p, p, channels).permute(0, 5, 1, 3, 2, 4).reshape(b, channels, h * p, w * p)


def patch_statistics(patches: torch.Tensor, eps: float = PATCH_NORM_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and ``sqrt(var + eps)`` of ``[B, L, N]`` patches, each ``[B, L, 1]`` (unbiased variance,
    ``torch.var``'s default, as SparK and MAE compute it). ``(patches - mean) / std`` is the loss's target."""
    if patches.shape[-1] < 2:
        raise ValueError(f"a patch needs at least 2 values for a variance, got patches {tuple(patches.shape)}")
    var, mean = torch.var_mean(patches, dim=-1, keepdim=True)
    return mean, (var + eps).sqrt()


class MaskedReconstructionLoss(_Loss):
    """
    SparK's reconstruction loss: mean squared error to per-patch normalised pixels, on masked patches only.

        Tian, K., et al. "Designing BERT for convolutional networks: sparse and hierarchical masked modeling."
        ICLR 2023.

    For each patch of the target image, ``t = (x - mean) / sqrt(var + 1e-6)`` with the mean and (unbiased) variance
    of that patch's pixels; a patch's error is ``mean over its N values of (prediction - t)^2``; the loss is the mean
    of the errors of the **masked** patches (``active == False``) over the whole batch. What the prediction does on
    visible patches never enters the loss. Computed in fp32, also under autocast. Only shapes are checked (no value
    is read back to the host, so the loss suits the sync-free fast path).
    """

    def __init__(self, eps: float = PATCH_NORM_EPS) -> None:
        """
        Args:
            eps: added to each patch's variance before the square root (``> 0``).

        Raises:
            ValueError: ``eps <= 0``.
        """
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """
        Args:
            prediction: ``[B, C, H, W]`` the decoder's output, in per-patch normalised units.
            target: ``[B, C, H, W]`` the unmasked input images (any intensity unit; normalised per patch here).
            active: ``[B, 1, h, w]`` bool, True where a patch was visible; ``H / h = W / w = p`` pixels per side.

        Returns:
            0-d float32 loss (0 when no patch is masked).

        Raises:
            ValueError: mismatched shapes, a grid that does not cut the images into equal square patches, or a
                non-bool ``active``.
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        if active.dtype != torch.bool or active.ndim != 4 or active.shape[:2] != (target.shape[0], 1):
            raise ValueError(f"active must be a bool mask [B={target.shape[0]}, 1, h, w], got {active.dtype} "
                             f"{tuple(active.shape)}")
        grid = tuple(active.shape[-2:])
        with torch.autocast(device_type=target.device.type, enabled=False):
            pred = patchify(prediction.float(), grid)
            tgt = patchify(target.float(), grid)
            mean, std = patch_statistics(tgt, self.eps)
            error = (pred - (tgt - mean) / std).square().mean(dim=-1)  # [B, L]
            masked = (~active).reshape(error.shape).to(error.dtype)
            return (error * masked).sum() / masked.sum().clamp_min(1.0)
