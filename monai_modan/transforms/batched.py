"""Device-resident, batched two-view augmentation: the recipe (:class:`~monai_modan.transforms.recipe.TwoViewRecipe`)
and distributions of :class:`~monai_modan.transforms.two_view.TwoViewAugment`, computed for a whole batch at once on
the batch's device.

Every parameter is drawn per sample and per view with torch ops on the device (no Python loop over samples, no host
sync): the crop's rejection sampling draws all 10 candidates of every view at once and keeps the first that fits
(torchvision's central-crop fallback where none does); crop, resize and flip of all ``B * V`` views are one
``F.affine_grid`` + ``F.grid_sample`` (bilinear, ``align_corners=False``; the flip is a negative x scale of the
affine); brightness/contrast are evaluated in both orders and selected per view.

Antialiasing (be aware): ``grid_sample`` reads 2x2 source pixels per output pixel, so a crop downsampled by a factor
``f > ~2`` skips source pixels and aliases (moire on fine texture; noise and speckle look sharper than in the
per-image path, whose torchvision resize averages over the whole footprint). It matters only when crops are larger
than ``image_size``: pretraining at the source resolution (224 px images, ``image_size=224``) never downsamples (a
crop is at most the image), while 224 px images at ``image_size=64`` downsample by up to 3.5x. With
``antialias=True`` (default) each view's source is first blurred with a separable Gaussian whose width follows that
view's downsampling factor ``f`` (crop size / ``image_size``, per axis): ``sigma^2 = (f^2 - 1) / 6``, so that blur +
bilinear tent have the variance ``f^2 / 6`` of the triangle filter that ``F.interpolate(antialias=True)``
(torchvision, the per-image path) uses; ``sigma = 0`` when ``f <= 1``. (The skimage / MONAI ``Resize`` rule
``sigma = (f - 1) / 2`` blurs less: on white noise at ``f`` 1.5-3 it left 30 % more standard deviation than the
per-image path; this rule is within 3 %.) It is one grouped convolution per axis over the ``B * V`` copies, skipped
statically when no crop can be downsampled; it costs a float copy ``[B * V, C, H, W]`` and ``2 * (2r + 1)``
multiply-adds per source pixel, ``r = ceil(4 sigma_max)``.
Outputs agree with the per-image path to interpolation accuracy when no view is downsampled (the interpolation is
the same except in the outermost half pixel of an upsampled crop, which ``grid_sample`` reads from beyond the crop;
through the contrast jitter, which scales about the image mean, that border difference reaches every pixel at the
1e-3 level), and closely, not exactly, when downsampling (a Gaussian is not a triangle; borders replicate instead
of renormalising).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from monai_modan.transforms.recipe import (
    MAX_CROP_ATTEMPTS,
    TwoViewRecipe,
    central_crop_box,
    deprecated_size_argument,
)
from monai_modan.utils.device import same_device

__all__ = ["TwoViewParameters", "BatchedTwoViewAugment"]

_GAUSSIAN_TRUNCATE = 4.0  # kernel radius in sigmas, as MONAI's GaussianFilter


class TwoViewParameters(NamedTuple):
    """Per-sample, per-view parameters for ``B`` samples and ``V`` views, all on one device.

    - ``crop_box`` ``[B, V, 4]`` int64: top, left, height, width in source pixels;
    - ``flip``, ``jitter``, ``brightness_first`` ``[B, V]`` bool;
    - ``brightness``, ``contrast`` ``[B, V]`` float32 factors, 1 where ``jitter`` is False.
    """

    crop_box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    brightness_first: torch.Tensor


class BatchedTwoViewAugment(nn.Module):
    """Batched two-view augmentation ``[B, C, H, W]`` -> ``[B, V, C, *image_size]`` float32 in [0, 1], on the input's
    device, ``V = num_views``, ``image_size`` in pixels.

    Inputs are uint8 (scaled by 1/255) or float in [0, 1] (not checked: that would need a host sync; outputs are
    clamped). Randomness comes from ``generator`` (a ``torch.Generator`` on the images' device, or an int seed);
    the same seed on the same device type gives the same views, CPU and CUDA streams differ.

    Args:
        image_size, num_views, scale, ratio, flip_prob, jitter_strength, jitter_prob, antialias: the fields of
            :class:`~monai_modan.transforms.recipe.TwoViewRecipe` (its defaults and validation, shared with
            :class:`~monai_modan.transforms.two_view.TwoViewAugment`); ``None`` keeps ``recipe``'s value.
        recipe: the recipe to start from (default ``TwoViewRecipe()``); the keyword arguments above override it.
        size: deprecated name of ``image_size`` (FutureWarning; removed in 0.2.0).
    """

    @deprecated_size_argument
    def __init__(
        self,
        image_size: int | Sequence[int] | None = None,
        num_views: int | None = None,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] | None = None,
        flip_prob: float | None = None,
        jitter_strength: float | None = None,
        jitter_prob: float | None = None,
        antialias: bool | None = None,
        recipe: TwoViewRecipe | None = None,
        size: Any = None,
    ) -> None:
        super().__init__()
        self.recipe = TwoViewRecipe.build(
            recipe, image_size=image_size, num_views=num_views, scale=scale, ratio=ratio, flip_prob=flip_prob,
            jitter_strength=jitter_strength, jitter_prob=jitter_prob, antialias=antialias,
        )

    @property
    def num_views(self) -> int:
        return self.recipe.num_views

    @property
    def image_size(self) -> tuple[int, int]:
        """Output (height, width) of each view, pixels."""
        return self.recipe.image_size  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return repr(self.recipe)

    @torch.no_grad()
    def sample_parameters(
        self,
        batch: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> TwoViewParameters:
        """Draw the parameters of ``batch`` samples x ``num_views`` views for ``height`` x ``width`` sources, on the
        generator's device (else ``device``, else CPU; without a generator, from torch's default stream)."""
        if generator is not None:
            if device is not None and not same_device(generator.device, torch.device(device)):
                raise ValueError(f"generator is on {generator.device} but device={device} was asked for")
            device = generator.device
        device = torch.device(device if device is not None else "cpu")
        shape = (batch, self.num_views)

        def uniform(*extra: int) -> torch.Tensor:
            return torch.rand(shape + extra, generator=generator, device=device)

        # torchvision's rejection loop, vectorised: all candidates at once, the first one that fits wins
        recipe = self.recipe
        scale, ratio = recipe.scale, recipe.ratio
        area = float(height * width)
        log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
        target_area = area * (scale[0] + (scale[1] - scale[0]) * uniform(MAX_CROP_ATTEMPTS))
        aspect = torch.exp(log_low + (log_high - log_low) * uniform(MAX_CROP_ATTEMPTS))
        crop_w = torch.sqrt(target_area * aspect).round()
        crop_h = torch.sqrt(target_area / aspect).round()
        fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
        first = fits.to(torch.uint8).argmax(dim=-1, keepdim=True)  # index of the first True (0 when none)
        found = fits.any(dim=-1)
        fallback = central_crop_box(height, width, ratio)
        crop_h = torch.where(found, crop_h.gather(-1, first).squeeze(-1), float(fallback.height))
        crop_w = torch.where(found, crop_w.gather(-1, first).squeeze(-1), float(fallback.width))
        # offsets uniform over the integers 0 .. H - h (torch.randint's distribution); the clamp guards rounding
        top = torch.minimum((uniform() * (height - crop_h + 1)).floor(), height - crop_h)
        left = torch.minimum((uniform() * (width - crop_w + 1)).floor(), width - crop_w)
        top = torch.where(found, top, float(fallback.top))
        left = torch.where(found, left, float(fallback.left))
        crop_box = torch.stack([top, left, crop_h, crop_w], dim=-1).long()

        flip = uniform() < recipe.flip_prob
        jitter = uniform() < recipe.jitter_prob
        low, high = recipe.factor_range
        brightness = torch.where(jitter, low + (high - low) * uniform(), 1.0)
        contrast = torch.where(jitter, low + (high - low) * uniform(), 1.0)
        brightness_first = (uniform() < 0.5) | ~jitter
        return TwoViewParameters(crop_box, flip, jitter, brightness, contrast, brightness_first)

    def forward(self, images: torch.Tensor, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """``images`` ``[B, C, H, W]`` uint8 or float in [0, 1] -> views ``[B, V, C, *image_size]`` float32."""
        images = self._check_images(images)
        if isinstance(generator, int):
            generator = torch.Generator(device=images.device).manual_seed(generator)
        elif generator is not None and not same_device(generator.device, images.device):
            raise ValueError(f"generator is on {generator.device}, images on {images.device}: put them together")
        batch, _, height, width = images.shape
        params = self.sample_parameters(batch, height, width, generator, images.device)
        return self.apply(images, params)

    def apply(self, images: torch.Tensor, params: TwoViewParameters) -> torch.Tensor:
        """Augment ``images`` ``[B, C, H, W]`` with given parameters (``crop_box`` ``[B, V, 4]`` etc., on the images'
        device; boxes are trusted to fit) -> ``[B, V, C, *image_size]`` float32 in [0, 1]."""
        images = self._check_images(images)
        batch, channels, height, width = images.shape
        if params.crop_box.ndim != 3 or params.crop_box.shape[0] != batch or params.crop_box.shape[2] != 4:
            raise ValueError(f"crop_box must be [B={batch}, V, 4], got {tuple(params.crop_box.shape)}")
        views = params.crop_box.shape[1]
        out_h, out_w = self.image_size

        # crop box -> affine in normalised coordinates (align_corners=False: -1 and 1 are the outer pixel edges)
        top, left, crop_h, crop_w = params.crop_box.to(torch.float32).unbind(-1)
        sign = 1.0 - 2.0 * params.flip.to(torch.float32)
        zero = torch.zeros_like(top)
        theta = torch.stack(
            [
                torch.stack([sign * crop_w / width, zero, (2 * left + crop_w) / width - 1], dim=-1),
                torch.stack([zero, crop_h / height, (2 * top + crop_h) / height - 1], dim=-1),
            ],
            dim=-2,
        ).reshape(batch * views, 2, 3)
        source = images.unsqueeze(1).expand(batch, views, channels, height, width)
        source = source.reshape(batch * views, channels, height, width)
        if self.recipe.antialias and (height > out_h or width > out_w):  # static: some crop may be downsampled
            source = _gaussian_blur_per_image(
                source,
                _antialias_sigma(crop_h / out_h).reshape(-1),
                _antialias_sigma(crop_w / out_w).reshape(-1),
                max_sigma_y=_antialias_sigma(height / out_h),  # a crop is at most the whole image
                max_sigma_x=_antialias_sigma(width / out_w),
            )
        grid = F.affine_grid(theta, [batch * views, channels, out_h, out_w], align_corners=False)
        out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = out.reshape(batch, views, channels, out_h, out_w)
        return _brightness_contrast(out, params).clamp_(0.0, 1.0)

    @staticmethod
    def _check_images(images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"images must be a tensor [B, C, H, W], got {getattr(images, 'shape', type(images))}")
        if images.dtype == torch.uint8:
            return images.float() / 255.0
        if not images.is_floating_point():
            raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
        return images.float()


def _antialias_sigma(factor):
    """Gaussian sigma (pixels) for a downsampling ``factor``: prefilter + bilinear tent (variance 1/6) together have
    the variance ``factor^2 / 6`` of ``F.interpolate``'s antialiasing triangle filter; 0 when not downsampling."""
    if isinstance(factor, torch.Tensor):
        return ((factor**2 - 1) / 6).clamp(min=0).sqrt()
    return math.sqrt(max(0.0, (factor**2 - 1) / 6))


def _gaussian_blur_per_image(
    images: torch.Tensor, sigma_y: torch.Tensor, sigma_x: torch.Tensor, max_sigma_y: float, max_sigma_x: float
) -> torch.Tensor:
    """Blur each image ``[N, C, H, W]`` with its own separable Gaussian (``sigma_y``, ``sigma_x`` ``[N]``, pixels).

    The kernel is MONAI's "erf" discretisation, normalised, over a radius fixed by the largest possible sigma (so no
    host sync); sigma 0 gives the identity. Borders are replicated.
    """
    n, c, h, w = images.shape
    out = images.reshape(1, n * c, h, w)
    for sigma, max_sigma, dim in ((sigma_y, max_sigma_y, 2), (sigma_x, max_sigma_x, 3)):
        radius = math.ceil(_GAUSSIAN_TRUNCATE * max_sigma)
        if radius == 0:
            continue
        taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
        t = (1.0 / (math.sqrt(2.0) * sigma.clamp(min=1e-3)))[:, None]
        kernel = 0.5 * (torch.erf(t * (taps + 0.5)) - torch.erf(t * (taps - 0.5)))
        kernel = (kernel / kernel.sum(dim=-1, keepdim=True)).repeat_interleave(c, dim=0)
        if dim == 2:
            out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * c)
        else:
            out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * c)
    return out.reshape(n, c, h, w)


def _brightness_contrast(views: torch.Tensor, params: TwoViewParameters) -> torch.Tensor:
    """torchvision's brightness and contrast for grey views ``[B, V, C, h, w]``, each step clamped, both orders
    computed and selected per view (no branch on device values)."""
    brightness = params.brightness[..., None, None, None]
    contrast = params.contrast[..., None, None, None]

    def adjust_brightness(x: torch.Tensor) -> torch.Tensor:
        return (x * brightness).clamp(0.0, 1.0)

    def adjust_contrast(x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        return (contrast * x + (1.0 - contrast) * mean).clamp(0.0, 1.0)

    jittered = torch.where(
        params.brightness_first[..., None, None, None],
        adjust_contrast(adjust_brightness(views)),
        adjust_brightness(adjust_contrast(views)),
    )
    return torch.where(params.jitter[..., None, None, None], jittered, views)
