"""Two-view (SimCLR-style) augmentation for contrastive pretraining, as MONAI array and dictionary transforms.

The recipe -- the steps of a view, their defaults, their validation and the decisions for grey images -- is
:class:`~monai_modan.transforms.recipe.TwoViewRecipe`. :class:`TwoViewAugment` (array, ``[C, H, W]`` ->
``[V, C, *image_size]``) and its dictionary twin :class:`TwoViewAugmentd` apply it per image on the CPU, built from
the single-step transforms here (:class:`RandResizedCrop`, MONAI ``RandFlip``, :class:`RandBrightnessContrast`) on
one random stream, so ``set_random_state`` fixes every view of every call. Implementation choices:

- Resizing is ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)``, the call torchvision's
  RandomResizedCrop makes on tensors. MONAI's ``Resize(anti_aliasing=True)`` is not used: its Gaussian prefilter
  zero-pads, which darkens the border of a uniform image by 8-10 % (monai 1.6.1).
- Outputs are plain ``torch.Tensor``: a view's geometry is not the source's affine, so no MetaTensor is carried, and
  the transforms are not invertible (contrastive views are never mapped back).

The device-resident batched twin with the same recipe and distributions is :class:`monai_modan.transforms.batched.
BatchedTwoViewAugment`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import (
    MapTransform,
    RandFlip,
    Randomizable,
    RandomizableTransform,
    ScaleIntensity,
    ScaleIntensityFixedMean,
    Transform,
)
from monai.utils import TransformBackends, convert_to_tensor

from monai_modan.transforms.recipe import (
    MAX_CROP_ATTEMPTS,
    CropBox,
    TwoViewRecipe,
    central_crop_box,
    check_crop_ranges,
    check_pair,
    check_probability,
    deprecated_size_argument,
    jitter_factor_range,
)

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
    "TwoViewAugment",
    "TwoViewAugmentd",
    "central_crop_box",
]


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
    """Crop a box from a channel-first 2D image ``[C, H, W]`` and resize it -> ``[C, *image_size]``.

    Bilinear, ``align_corners=False``, antialiased when downsampling (``antialias=True``): torch's
    ``F.interpolate``, as torchvision's RandomResizedCrop calls it.

    Args:
        image_size: output (height, width) in pixels; an int means a square.
        antialias: antialias when downsampling.
        size: deprecated name of ``image_size`` (FutureWarning; removed in 0.2.0).
    """

    backend = [TransformBackends.TORCH]

    @deprecated_size_argument
    def __init__(
        self, image_size: int | Sequence[int], antialias: bool = TwoViewRecipe.antialias, size: Any = None
    ) -> None:
        self.image_size = check_pair("image_size", image_size)
        self.antialias = antialias

    def __call__(self, img: NdarrayOrTensor, box: CropBox) -> torch.Tensor:
        img_t = as_unit_image(img)
        height, width = img_t.shape[1:]
        top, left, crop_h, crop_w = box
        inside = 0 <= top and 0 <= left and crop_h > 0 and crop_w > 0
        if not (inside and top + crop_h <= height and left + crop_w <= width):
            raise ValueError(f"crop box {tuple(box)} does not fit an image of spatial shape {(height, width)}")
        crop = img_t[:, top : top + crop_h, left : left + crop_w]
        if (crop_h, crop_w) == self.image_size:
            return crop.clone()
        return F.interpolate(
            crop[None], size=self.image_size, mode="bilinear", align_corners=False, antialias=self.antialias
        )[0]


class RandResizedCrop(RandomizableTransform):
    """Random resized crop of a channel-first 2D image ``[C, H, W]`` -> ``[C, *image_size]`` (torchvision's
    algorithm). Defaults are :class:`~monai_modan.transforms.recipe.TwoViewRecipe`'s.

    Args:
        image_size: output (height, width) in pixels; an int means a square.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio width / height, sampled log-uniformly.
        antialias: antialias when downsampling (see :class:`ResizedCrop`).
        size: deprecated name of ``image_size`` (FutureWarning; removed in 0.2.0).

    After :meth:`randomize` the sampled box is ``self.box`` (:class:`CropBox`, source pixels).
    """

    backend = ResizedCrop.backend

    @deprecated_size_argument
    def __init__(
        self,
        image_size: int | Sequence[int],
        scale: Sequence[float] = TwoViewRecipe.scale,
        ratio: Sequence[float] = TwoViewRecipe.ratio,
        antialias: bool = TwoViewRecipe.antialias,
        size: Any = None,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.scale, self.ratio = check_crop_ranges(scale, ratio)
        self.resized_crop = ResizedCrop(image_size, antialias)
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

    Factors are ``U[1 - strength, 1 + strength]`` (``strength = 0.4``: ``U[0.6, 1.4]``). Defaults are
    :class:`~monai_modan.transforms.recipe.TwoViewRecipe`'s. After :meth:`randomize`: ``self.applied``,
    ``self.brightness``, ``self.contrast`` (both 1 when not applied), ``self.brightness_first``.
    """

    backend = BrightnessContrast.backend

    def __init__(
        self, strength: float = TwoViewRecipe.jitter_strength, prob: float = TwoViewRecipe.jitter_prob
    ) -> None:
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


class TwoViewAugment(Randomizable, Transform):
    """``num_views`` independently augmented views of an image: ``[C, H, W]`` -> ``[V, C, *image_size]``.

    Per view: random resized crop, horizontal flip, brightness/contrast jitter, clamp to [0, 1], as described by
    :class:`~monai_modan.transforms.recipe.TwoViewRecipe`. Input: float in [0, 1] or uint8 (scaled by 1/255); output:
    a plain float32 tensor in [0, 1], ``V = num_views``, ``image_size`` in pixels. The crop, flip and jitter share
    this transform's random stream, so ``set_random_state`` fixes every view of every call; the parameters of the
    last :meth:`randomize` are ``self.last_parameters`` (a list of ``V`` :class:`ViewParameters`).

    Args:
        num_views, image_size, scale, ratio, flip_prob, jitter_strength, jitter_prob, antialias: the fields of
            :class:`~monai_modan.transforms.recipe.TwoViewRecipe`; ``None`` keeps ``recipe``'s value (its defaults:
            2 views of 64 x 64, scale (0.2, 1), ratio (3/4, 4/3), flip 0.5, jitter strength 0.4 with p = 0.8).
        recipe: the recipe to start from (default ``TwoViewRecipe()``); the keyword arguments above override it.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        num_views: int | None = None,
        image_size: int | Sequence[int] | None = None,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] | None = None,
        flip_prob: float | None = None,
        jitter_strength: float | None = None,
        jitter_prob: float | None = None,
        antialias: bool | None = None,
        recipe: TwoViewRecipe | None = None,
    ) -> None:
        self.recipe = TwoViewRecipe.build(
            recipe, num_views=num_views, image_size=image_size, scale=scale, ratio=ratio, flip_prob=flip_prob,
            jitter_strength=jitter_strength, jitter_prob=jitter_prob, antialias=antialias,
        )
        r = self.recipe
        self.cropper = RandResizedCrop(r.image_size, r.scale, r.ratio, r.antialias)
        self.flipper = RandFlip(prob=r.flip_prob, spatial_axis=1)  # W of (H, W)
        self.jitter = RandBrightnessContrast(r.jitter_strength, r.jitter_prob)
        self.last_parameters: list[ViewParameters] = []
        self._share_random_state()

    @property
    def num_views(self) -> int:
        return self.recipe.num_views

    @property
    def image_size(self) -> tuple[int, int]:
        """Output (height, width) of each view, pixels."""
        return self.recipe.image_size  # type: ignore[return-value]

    def _share_random_state(self) -> None:
        for transform in (self.cropper, self.flipper, self.jitter):
            transform.set_random_state(state=self.R)  # one stream: a seed fixes every view of every call

    def set_random_state(self, seed: int | None = None, state: Any = None) -> TwoViewAugment:
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
        """One view of ``img`` ``[C, H, W]`` with given parameters -> ``[C, *image_size]`` float32 in [0, 1]."""
        view = self.cropper.resized_crop(img, params.crop_box)
        if params.flip:
            view = convert_to_tensor(self.flipper.flipper(view), track_meta=False)
        if params.jitter:
            view = self.jitter.adjuster(view, params.brightness, params.contrast, params.brightness_first)
        return view.clamp(0.0, 1.0)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        """``img`` ``[C, H, W]`` -> ``[V, C, *image_size]``; ``randomize=False`` reuses ``self.last_parameters``."""
        img_t = as_unit_image(img)
        if randomize:
            self.randomize(img_t.shape[1:])
        if not self.last_parameters:
            raise RuntimeError("TwoViewAugment: call randomize() before applying with randomize=False")
        return torch.stack([self.augment_view(img_t, params) for params in self.last_parameters])


# ---------------------------------------------------------------------------------------------------------------
# dictionary transforms


class RandResizedCropd(Randomizable, MapTransform):
    """Dictionary-based :class:`RandResizedCrop`: one box, sampled from the first key's shape, for every key.
    ``size`` is the deprecated name of ``image_size`` (FutureWarning; removed in 0.2.0)."""

    backend = RandResizedCrop.backend

    @deprecated_size_argument
    def __init__(
        self,
        keys: KeysCollection,
        image_size: int | Sequence[int],
        scale: Sequence[float] = TwoViewRecipe.scale,
        ratio: Sequence[float] = TwoViewRecipe.ratio,
        antialias: bool = TwoViewRecipe.antialias,
        allow_missing_keys: bool = False,
        size: Any = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cropper = RandResizedCrop(image_size, scale, ratio, antialias)
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
        self,
        keys: KeysCollection,
        strength: float = TwoViewRecipe.jitter_strength,
        prob: float = TwoViewRecipe.jitter_prob,
        allow_missing_keys: bool = False,
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
    """Dictionary-based :class:`TwoViewAugment`: ``d[key]`` ``[C, H, W]`` -> ``[V, C, *image_size]`` views.

    MONAI's default collate then gives ``[B, V, C, *image_size]``. Several keys share each view's parameters (sampled
    from the first key's shape). ``set_random_state`` makes it deterministic; the parameters of the last call are
    ``self.last_parameters`` (a list of ``num_views`` :class:`ViewParameters`).

    Args:
        keys: keys of the images to augment.
        num_views, image_size, scale, ratio, flip_prob, jitter_strength, jitter_prob, antialias, recipe: as for
            :class:`TwoViewAugment` (the fields of :class:`~monai_modan.transforms.recipe.TwoViewRecipe`; ``None``
            keeps the recipe's value).
        allow_missing_keys: don't raise if a key is missing.
        size: deprecated name of ``image_size`` (FutureWarning; removed in 0.2.0).
    """

    backend = TwoViewAugment.backend

    @deprecated_size_argument
    def __init__(
        self,
        keys: KeysCollection = "image",
        num_views: int | None = None,
        image_size: int | Sequence[int] | None = None,
        scale: Sequence[float] | None = None,
        ratio: Sequence[float] | None = None,
        flip_prob: float | None = None,
        jitter_strength: float | None = None,
        jitter_prob: float | None = None,
        antialias: bool | None = None,
        allow_missing_keys: bool = False,
        recipe: TwoViewRecipe | None = None,
        size: Any = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.augment = TwoViewAugment(
            num_views, image_size, scale, ratio, flip_prob, jitter_strength, jitter_prob, antialias, recipe
        )
        self.augment.set_random_state(state=self.R)

    @property
    def recipe(self) -> TwoViewRecipe:
        return self.augment.recipe

    @property
    def num_views(self) -> int:
        return self.augment.num_views

    @property
    def last_parameters(self) -> list[ViewParameters]:
        return self.augment.last_parameters

    def set_random_state(self, seed: int | None = None, state: Any = None) -> TwoViewAugmentd:
        super().set_random_state(seed, state)
        self.augment.set_random_state(state=self.R)  # one random stream
        return self

    def randomize(self, data: Sequence[int]) -> None:
        """Sample ``self.last_parameters`` for an image of spatial shape ``data = (H, W)``."""
        self.augment.randomize(data)

    def augment_view(self, img: NdarrayOrTensor, params: ViewParameters) -> torch.Tensor:
        """:meth:`TwoViewAugment.augment_view`."""
        return self.augment.augment_view(img, params)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        first_key = self.first_key(d)
        if first_key == ():
            return d
        self.randomize(as_unit_image(d[first_key]).shape[1:])
        for key in self.key_iterator(d):
            d[key] = self.augment(d[key], randomize=False)
        return d
