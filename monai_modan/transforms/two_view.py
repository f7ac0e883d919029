"""Two-view (SimCLR-style) augmentation for contrastive pretraining, as MONAI array and dictionary transforms.

Each view of a grey image ``[C, H, W]`` (the project reader gives ``C = 1``, float32 in [0, 1]) is, in this order
(the SimCLR recipe the ModAn paper uses, with torchvision's algorithms):

1. random resized crop: area fraction ``U[scale]``, aspect ratio (width / height) log-uniform in ``ratio``, up to
   10 attempts, then a central crop clamped to the ratio range (``RandomResizedCrop.get_params``); the crop is resized
   to ``size`` bilinearly, antialiased when downsampling;
2. horizontal flip (the last axis) with probability ``flip_prob``;
3. with probability ``jitter_prob``: brightness (multiply by ``b ~ U[1 - s, 1 + s]``) and contrast (blend with the
   image mean: ``c * x + (1 - c) * mean(x)``, ``c ~ U[1 - s, 1 + s]``), each step clamped to [0, 1];
4. clamp to [0, 1].

Decisions for grey images (document them with the recipe):

- ColorJitter's saturation and hue act on colour and do not exist for one channel: only brightness and contrast.
- The two are applied in random order (50/50 per view), as torchvision's ColorJitter does with its random permutation;
  each step is clamped, as torchvision's ``_blend`` does.
- Contrast blends with the mean over all channels and pixels; torchvision uses the luminance mean for RGB, which is
  the same thing for one channel.
- RandomGrayscale (p = 0.2 in the recipe) is dropped: on a 1-channel image torchvision returns a copy, so it is the
  identity and keeping it would only consume random numbers.
- Resizing is ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)``, the call torchvision's
  RandomResizedCrop makes on tensors. MONAI's ``Resize(anti_aliasing=True)`` is not used: its Gaussian prefilter
  zero-pads, which darkens the border of a uniform image by 8-10 % (monai 1.6.1).
- Outputs are plain ``torch.Tensor``: a view's geometry is not the source's affine, so no MetaTensor is carried, and
  the transforms are not invertible (contrastive views are never mapped back).

The device-resident batched twin with the same distributions is :class:`monai_modan.transforms.batched.
BatchedTwoViewAugment`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import (
    MapTransform,
    Randomizable,
    RandomizableTransform,
    RandFlip,
    ScaleIntensity,
    ScaleIntensityFixedMean,
    Transform,
)
from monai.utils import TransformBackends, convert_to_tensor

__all__ = [
    "MAX_CROP_ATTEMPTS",
    "CropBox",
    "ViewParameters",
    "ResizedCrop",
    "RandResizedCrop",
    "RandResizedCropd",
    "BrightnessContrast",
    "RandBrightnessContrast",
    "RandBrightnessContrastd",
    "TwoViewAugmentd",
    "central_crop_box",
]

MAX_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop: rejection sampling, then a central crop


class CropBox(NamedTuple):
    """A crop in pixels of a ``[C, H, W]`` image: rows ``top : top + height``, columns ``left : left + width``."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class ViewParameters:
    """The random parameters of one view. ``brightness`` and ``contrast`` are 1 (identity) when ``jitter`` is False;
    ``brightness_first`` says which of the two came first."""

    crop_box: CropBox
    flip: bool
    jitter: bool
    brightness: float
    contrast: float
    brightness_first: bool


# ---------------------------------------------------------------------------------------------------------------
# validation shared with the batched implementation


def check_pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(height, width)`` of positive ints; an int means a square."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def check_crop_ranges(
    scale: Sequence[float], ratio: Sequence[float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Validate ``scale`` (area fractions, ``0 < low <= high <= 1``), ``ratio`` (width / height, ``0 < low <= high``).
    """
    scale_, ratio_ = tuple(float(s) for s in scale), tuple(float(r) for r in ratio)
    if len(scale_) != 2 or not 0.0 < scale_[0] <= scale_[1] <= 1.0:
        raise ValueError(f"scale must be (low, high) area fractions with 0 < low <= high <= 1, got {scale!r}")
    if len(ratio_) != 2 or not 0.0 < ratio_[0] <= ratio_[1]:
        raise ValueError(f"ratio must be (low, high) aspect ratios with 0 < low <= high, got {ratio!r}")
    return scale_, ratio_  # type: ignore[return-value]


def check_probability(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def jitter_factor_range(strength: float) -> tuple[float, float]:
    """Brightness/contrast factors are ``U[1 - strength, 1 + strength]``; ``strength`` must lie in [0, 1]."""
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"jitter strength must be in [0, 1], got {strength!r}")
    return 1.0 - float(strength), 1.0 + float(strength)


def central_crop_box(height: int, width: int, ratio: tuple[float, float]) -> CropBox:
    """torchvision's fallback after the failed attempts: the whole image, cut centrally to the nearer end of ``ratio``.
    """
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_h, crop_w = height, int(round(height * ratio[1]))
    else:
        crop_h, crop_w = height, width
    return CropBox((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)


def as_unit_image(img: NdarrayOrTensor) -> torch.Tensor:
    """A channel-first 2D image ``[C, H, W]`` as a plain float32 tensor; uint8 is scaled by 1/255."""
    img_t = convert_to_tensor(img, track_meta=False)
    if img_t.ndim != 3:
        raise ValueError(f"expected a channel-first 2D image [C, H, W], got shape {tuple(img_t.shape)}")
    if img_t.dtype == torch.uint8:
        return img_t.float() / 255.0
    if not img_t.is_floating_point():
        raise ValueError(f"expected a float image in [0, 1] or uint8, got dtype {img_t.dtype}")
    return img_t.float()


# ---------------------------------------------------------------------------------------------------------------
# array transforms


class ResizedCrop(Transform):
    """Crop a box from a channel-first 2D image ``[C, H, W]`` and resize it to ``size`` -> ``[C, *size]``.

    Bilinear, ``align_corners=False``, antialiased when downsampling (``antialias=True``): torch's
    ``F.interpolate``, as torchvision's RandomResizedCrop calls it.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, size: int | Sequence[int], antialias: bool = True) -> None:
        self.size = check_pair("size", size)
        self.antialias = antialias

    def __call__(self, img: NdarrayOrTensor, box: CropBox) -> torch.Tensor:
        img_t = as_unit_image(img)
        height, width = img_t.shape[1:]
        top, left, crop_h, crop_w = box
        inside = 0 <= top and 0 <= left and crop_h > 0 and crop_w > 0
        if not (inside and top + crop_h <= height and left + crop_w <= width):
            raise ValueError(f"crop box {tuple(box)} does not fit an image of spatial shape {(height, width)}")
        crop = img_t[:, top : top + crop_h, left : left + crop_w]
        if (crop_h, crop_w) == self.size:
            return crop.clone()
        return F.interpolate(
            crop[None], size=self.size, mode="bilinear", align_corners=False, antialias=self.antialias
        )[0]


class RandResizedCrop(RandomizableTransform):
    """Random resized crop of a channel-first 2D image ``[C, H, W]`` -> ``[C, *size]`` (torchvision's algorithm).

    Args:
        size: output (height, width) in pixels; an int means a square.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio width / height, sampled log-uniformly.
        antialias: antialias when downsampling (see :class:`ResizedCrop`).

    After :meth:`randomize` the sampled box is ``self.box`` (:class:`CropBox`, source pixels).
    """

    backend = ResizedCrop.backend

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        antialias: bool = True,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.scale, self.ratio = check_crop_ranges(scale, ratio)
        self.resized_crop = ResizedCrop(size, antialias)
        self.box: CropBox | None = None

    def randomize(self, data: Sequence[int]) -> None:
        """Sample ``self.box`` for an image of spatial shape ``data = (H, W)``."""
        height, width = (int(s) for s in data)
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(MAX_CROP_ATTEMPTS):
            target_area = area * self.R.uniform(*self.scale)
            aspect = math.exp(self.R.uniform(*log_ratio))
            crop_w = int(round(math.sqrt(target_area * aspect)))
            crop_h = int(round(math.sqrt(target_area / aspect)))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                top = int(self.R.randint(0, height - crop_h + 1))
                left = int(self.R.randint(0, width - crop_w + 1))
                self.box = CropBox(top, left, crop_h, crop_w)
                return
        self.box = central_crop_box(height, width, self.ratio)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        img_t = as_unit_image(img)
        if randomize:
            self.randomize(img_t.shape[1:])
        if self.box is None:
            raise RuntimeError("RandResizedCrop: call randomize() before applying with randomize=False")
        return self.resized_crop(img_t, self.box)


class BrightnessContrast(Transform):
    """Brightness then contrast (or the reverse) of an image in [0, 1], as torchvision's ColorJitter for grey images.

    Brightness multiplies by ``brightness`` (MONAI ``ScaleIntensity``); contrast blends with the image mean,
    ``contrast * x + (1 - contrast) * mean(x)`` (MONAI ``ScaleIntensityFixedMean``); each step is clamped to [0, 1].
    The mean is over all channels and pixels. Shapes are kept.
    """

    backend = [TransformBackends.TORCH]

    def __call__(
        self, img: NdarrayOrTensor, brightness: float, contrast: float, brightness_first: bool = True
    ) -> torch.Tensor:
        out = as_unit_image(img)
        steps = [ScaleIntensity(minv=None, maxv=None, factor=brightness - 1.0), ScaleIntensityFixedMean(contrast - 1.0)]
        for step in steps if brightness_first else steps[::-1]:
            out = convert_to_tensor(step(out), track_meta=False).clamp(0.0, 1.0)
        return out


class RandBrightnessContrast(RandomizableTransform):
    """With probability ``prob``, brightness and contrast jitter of strength ``strength`` in random order.

    Factors are ``U[1 - strength, 1 + strength]`` (``strength = 0.4``: ``U[0.6, 1.4]``). After :meth:`randomize`:
    ``self.applied``, ``self.brightness``, ``self.contrast`` (both 1 when not applied), ``self.brightness_first``.
    """

    backend = BrightnessContrast.backend

    def __init__(self, strength: float = 0.4, prob: float = 0.8) -> None:
        RandomizableTransform.__init__(self, check_probability("prob", prob))
        self.factor_range = jitter_factor_range(strength)
        self.adjuster = BrightnessContrast()
        self.brightness, self.contrast, self.brightness_first = 1.0, 1.0, True

    @property
    def applied(self) -> bool:
        return bool(self._do_transform)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            self.brightness, self.contrast, self.brightness_first = 1.0, 1.0, True
            return
        self.brightness = float(self.R.uniform(*self.factor_range))
        self.contrast = float(self.R.uniform(*self.factor_range))
        self.brightness_first = bool(self.R.rand() < 0.5)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        img_t = as_unit_image(img)
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img_t
        return self.adjuster(img_t, self.brightness, self.contrast, self.brightness_first)


# ---------------------------------------------------------------------------------------------------------------
# dictionary transforms


class RandResizedCropd(Randomizable, MapTransform):
    """Dictionary-based :class:`RandResizedCrop`: one box, sampled from the first key's shape, for every key."""

    backend = RandResizedCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        antialias: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cropper = RandResizedCrop(size, scale, ratio, antialias)
        self.cropper.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandResizedCropd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(state=self.R)  # one random stream
        return self

    def randomize(self, data: Sequence[int]) -> None:
        self.cropper.randomize(data)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        first_key = self.first_key(d)
        if first_key == ():
            return d
        self.randomize(as_unit_image(d[first_key]).shape[1:])
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key], randomize=False)
        return d


class RandBrightnessContrastd(Randomizable, MapTransform):
    """Dictionary-based :class:`RandBrightnessContrast`: the same factors for every key."""

    backend = RandBrightnessContrast.backend

    def __init__(
        self, keys: KeysCollection, strength: float = 0.4, prob: float = 0.8, allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.jitter = RandBrightnessContrast(strength, prob)
        self.jitter.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandBrightnessContrastd:
        super().set_random_state(seed, state)
        self.jitter.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self.jitter.randomize()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.jitter(d[key], randomize=False)
        return d


class TwoViewAugmentd(Randomizable, MapTransform):
    """Turn ``d[key]`` ``[C, H, W]`` into ``num_views`` independently augmented views ``[V, C, size, size]``.

    Per view: random resized crop, horizontal flip, brightness/contrast jitter, clamp to [0, 1] (the module
    docstring gives the recipe and its grey-image decisions). MONAI's default collate then gives
    ``[B, V, C, size, size]``. Several keys share each view's parameters (sampled from the first key's shape).
    ``set_random_state`` makes it deterministic; the parameters of the last call are ``self.last_parameters``
    (a list of ``num_views`` :class:`ViewParameters`).

    Args:
        keys: keys of the images to augment.
        num_views: views per image (2 for SimCLR / SupCon).
        size: output (height, width) of each view; an int means a square.
        scale: crop area range, fraction of the image area.
        ratio: crop aspect ratio (width / height) range, sampled log-uniformly.
        flip_prob: probability of a horizontal (last-axis) flip.
        jitter_strength: brightness/contrast factors are ``U[1 - s, 1 + s]``.
        jitter_prob: probability of applying the jitter.
        antialias: antialias when a crop is downsampled.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection = "image",
        num_views: int = 2,
        size: int | Sequence[int] = 64,
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        jitter_strength: float = 0.4,
        jitter_prob: float = 0.8,
        antialias: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be a positive int, got {num_views!r}")
        self.num_views = num_views
        self.cropper = RandResizedCrop(size, scale, ratio, antialias)
        self.flipper = RandFlip(prob=check_probability("flip_prob", flip_prob), spatial_axis=1)  # W of (H, W)
        self.jitter = RandBrightnessContrast(jitter_strength, jitter_prob)
        self.last_parameters: list[ViewParameters] = []
        self._share_random_state()

    def _share_random_state(self) -> None:
        for transform in (self.cropper, self.flipper, self.jitter):
            transform.set_random_state(state=self.R)  # one stream: a seed fixes every view of every call

    def set_random_state(self, seed: int | None = None, state: Any = None) -> TwoViewAugmentd:
        super().set_random_state(seed, state)
        self._share_random_state()
        return self

    def randomize(self, data: Sequence[int]) -> None:
        """Sample ``self.last_parameters`` (``num_views`` views) for an image of spatial shape ``data = (H, W)``."""
        views = []
        for _ in range(self.num_views):
            self.cropper.randomize(data)
            self.flipper.randomize(None)
            self.jitter.randomize()
            views.append(
                ViewParameters(
                    crop_box=self.cropper.box,  # type: ignore[arg-type]
                    flip=bool(self.flipper._do_transform),
                    jitter=self.jitter.applied,
                    brightness=self.jitter.brightness,
                    contrast=self.jitter.contrast,
                    brightness_first=self.jitter.brightness_first,
                )
            )
        self.last_parameters = views

    def augment_view(self, img: NdarrayOrTensor, params: ViewParameters) -> torch.Tensor:
        """One view of ``img`` ``[C, H, W]`` with given parameters -> ``[C, size, size]`` float32 in [0, 1]."""
        view = self.cropper.resized_crop(img, params.crop_box)
        if params.flip:
            view = convert_to_tensor(self.flipper.flipper(view), track_meta=False)
        if params.jitter:
            view = self.jitter.adjuster(view, params.brightness, params.contrast, params.brightness_first)
        return view.clamp(0.0, 1.0)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        first_key = self.first_key(d)
        if first_key == ():
            return d
        self.randomize(as_unit_image(d[first_key]).shape[1:])
        for key in self.key_iterator(d):
            img = as_unit_image(d[key])
            d[key] = torch.stack([self.augment_view(img, params) for params in self.last_parameters])
        return d
