"""The two-view (SimCLR-style) augmentation recipe: one frozen description of the views, their defaults and their
validation, taken by the MONAI transforms (:mod:`monai_modan.transforms.two_view`, per image on the CPU) and by the
batched device twin (:mod:`monai_modan.transforms.batched`).

Each of the ``num_views`` views of a grey image ``[C, H, W]`` (the project reader gives ``C = 1``, float32 in
[0, 1]) is, in this order (the SimCLR recipe the ModAn paper uses, with torchvision's algorithms):

1. random resized crop: area fraction ``U[scale]``, aspect ratio (width / height) log-uniform in ``ratio``, up to
   :data:`MAX_CROP_ATTEMPTS` attempts, then a central crop clamped to the ratio range
   (``RandomResizedCrop.get_params``); the crop is resized to ``image_size`` bilinearly, antialiased when
   downsampling (``antialias``);
2. horizontal flip (the last axis) with probability ``flip_prob``;
3. with probability ``jitter_prob``: brightness (multiply by ``b ~ U[1 - s, 1 + s]``) and contrast (blend with the
   image mean: ``c * x + (1 - c) * mean(x)``, ``c ~ U[1 - s, 1 + s]``), ``s = jitter_strength``, in random order
   (50/50 per view), each step clamped to [0, 1];
4. clamp to [0, 1].

Decisions for grey images:

- ColorJitter's saturation and hue act on colour and do not exist for one channel: only brightness and contrast.
- The two are applied in random order, as torchvision's ColorJitter does with its random permutation; each step is
  clamped, as torchvision's ``_blend`` does.
- Contrast blends with the mean over all channels and pixels; torchvision uses the luminance mean for RGB, which is
  the same thing for one channel.
- RandomGrayscale (p = 0.2 in the recipe) is dropped: on a 1-channel image torchvision returns a copy, so it is the
  identity and keeping it would only consume random numbers.

``image_size`` is the output side of each view, the name used project-wide (bundle configs, engines, benchmarks).
It is not the reader's ``spatial_size`` (:class:`~monai_modan.data.readers.LoadGrayscaleImage`, MONAI's name for a
loader's resize target): views are cropped from the loaded image and resized to ``image_size``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from monai.utils import deprecated_arg

from monai_modan import __version__

from ..utils.defaults import IMAGE_SIZE

__all__ = [
    "MAX_CROP_ATTEMPTS",
    "CropBox",
    "TwoViewRecipe",
    "central_crop_box",
]

MAX_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop: rejection sampling, then a central crop

_Init = TypeVar("_Init", bound=Callable[..., Any])


def deprecated_size_argument(init: _Init) -> _Init:
    """``size=``, the old name of ``image_size``, still works for one release: MONAI's ``deprecated_arg`` passes it on
    as ``image_size`` with a ``FutureWarning`` (a ``DeprecatedError`` from version 0.2.0). Giving both is a
    ``TypeError`` (MONAI's decorator would silently drop ``size``)."""
    warned = deprecated_arg(
        name="size",
        since="0.1.0",
        removed="0.2.0",
        new_name="image_size",
        version_val=__version__,
        msg_suffix="Write `image_size=` (the output side of each view, the project-wide name).",
    )(init)
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "size" in kwargs and "image_size" in signature.bind_partial(*args, **kwargs).arguments:
            raise TypeError(f"{init.__qualname__}: give image_size only; size is its deprecated name")
        return warned(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class CropBox(NamedTuple):
    """A crop in pixels of a ``[C, H, W]`` image: rows ``top : top + height``, columns ``left : left + width``."""

    top: int
    left: int
    height: int
    width: int


# ---------------------------------------------------------------------------------------------------------------
# validation: the recipe and the single-step transforms use these, so every check and message exists once


def check_pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """An output size as ``(height, width)`` of positive ints (pixels); an int means a square."""
    pair = (value, value) if isinstance(value, int) else _tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def check_crop_ranges(
    scale: Sequence[float], ratio: Sequence[float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Validate ``scale`` (area fractions, ``0 < low <= high <= 1``), ``ratio`` (width / height, ``0 < low <= high``).
    """
    scale_, ratio_ = _float_tuple(scale), _float_tuple(ratio)
    if len(scale_) != 2 or not 0.0 < scale_[0] <= scale_[1] <= 1.0:
        raise ValueError(f"scale must be (low, high) area fractions with 0 < low <= high <= 1, got {scale!r}")
    if len(ratio_) != 2 or not 0.0 < ratio_[0] <= ratio_[1]:
        raise ValueError(f"ratio must be (low, high) aspect ratios with 0 < low <= high, got {ratio!r}")
    return scale_, ratio_  # type: ignore[return-value]


def check_probability(name: str, value: float) -> float:
    """A probability in [0, 1] as a float."""
    if not 0.0 <= _as_float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def jitter_factor_range(strength: float) -> tuple[float, float]:
    """Brightness/contrast factors are ``U[1 - strength, 1 + strength]``; ``strength`` must lie in [0, 1]."""
    if not 0.0 <= _as_float(strength) <= 1.0:
        raise ValueError(f"jitter_strength must be in [0, 1], got {strength!r}")
    return 1.0 - float(strength), 1.0 + float(strength)


def _as_float(value: Any) -> float:
    """``float(value)`` for a real number (not a bool); NaN (which fails every range check) for anything else."""
    if isinstance(value, (bool, str)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _tuple(values: Any) -> tuple[Any, ...]:
    """An iterable (not a string) as a tuple; ``()`` (which fails every length check) for anything else."""
    if isinstance(values, str):
        return ()
    try:
        return tuple(values)
    except TypeError:
        return ()


def _float_tuple(values: Any) -> tuple[float, ...]:
    """An iterable of real numbers as floats; ``()`` (which fails every length check) for anything else."""
    floats = tuple(_as_float(v) for v in _tuple(values))
    return () if any(math.isnan(f) for f in floats) else floats


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


# ---------------------------------------------------------------------------------------------------------------
# the recipe


@dataclass(frozen=True)
class TwoViewRecipe:
    """The two-view augmentation recipe (the module docstring gives the steps): validated once, at construction.

    Fields are normalised in ``__post_init__`` (``image_size`` to an ``(height, width)`` pair of ints, ranges to
    float pairs, probabilities to floats); invalid values raise ``ValueError`` naming the field. Use
    :func:`dataclasses.replace` (or :meth:`build`) to derive a variant; it is validated again.

    Args:
        image_size: output (height, width) of each view in pixels; an int means a square. Default 64.
        num_views: views per image, V (2 for SimCLR / SupCon). Default 2.
        scale: crop area range, as fractions of the image area, ``0 < low <= high <= 1``. Default (0.2, 1.0).
        ratio: crop aspect ratio (width / height) range, sampled log-uniformly, ``0 < low <= high``.
            Default (3/4, 4/3).
        flip_prob: probability of a horizontal (last-axis) flip. Default 0.5.
        jitter_strength: ``s`` in [0, 1]; brightness and contrast factors are ``U[1 - s, 1 + s]``. Default 0.4.
        jitter_prob: probability of applying the brightness/contrast jitter. Default 0.8.
        antialias: antialias when a crop is downsampled. Default True.
    """

    image_size: int | tuple[int, int] = IMAGE_SIZE
    num_views: int = 2
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_strength: float = 0.4
    jitter_prob: float = 0.8
    antialias: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.num_views, bool) or not isinstance(self.num_views, int) or self.num_views < 1:
            raise ValueError(f"num_views must be a positive int, got {self.num_views!r}")
        if not isinstance(self.antialias, bool):
            raise ValueError(f"antialias must be True or False, got {self.antialias!r}")
        scale, ratio = check_crop_ranges(self.scale, self.ratio)
        jitter_factor_range(self.jitter_strength)  # validates
        normalised = {
            "image_size": check_pair("image_size", self.image_size),
            "scale": scale,
            "ratio": ratio,
            "flip_prob": check_probability("flip_prob", self.flip_prob),
            "jitter_strength": float(self.jitter_strength),
            "jitter_prob": check_probability("jitter_prob", self.jitter_prob),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)  # frozen: the one place the fields are set

    @property
    def factor_range(self) -> tuple[float, float]:
        """``(1 - jitter_strength, 1 + jitter_strength)``: the range of the brightness and contrast factors."""
        return 1.0 - self.jitter_strength, 1.0 + self.jitter_strength

    @classmethod
    def build(cls, recipe: TwoViewRecipe | None = None, **overrides: object) -> TwoViewRecipe:
        """``recipe`` (default: ``TwoViewRecipe()``) with the fields given in ``overrides`` replaced; ``None`` values
        are ignored (they mean "the recipe's value"). This is how the transforms turn keyword arguments into a recipe.
        """
        if recipe is None:
            recipe = cls()
        elif not isinstance(recipe, cls):
            raise TypeError(f"recipe must be a {cls.__name__}, got {type(recipe).__name__}")
        changes = {name: value for name, value in overrides.items() if value is not None}
        return dataclasses.replace(recipe, **changes) if changes else recipe
