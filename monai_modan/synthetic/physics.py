"""Tissue classes and the modality physics that turns a phantom's tissue map into a signal, and the signal into the
8-bit display image written to disk.

* CT: piecewise-constant Hounsfield units per tissue, a slight blur (scanner PSF) and low Gaussian noise
  (:func:`ct_signal`, HU).
* MR: tissue signal times a smooth multiplicative bias field (coil sensitivity), then Rician noise -- the magnitude
  of signal plus complex Gaussian noise (:func:`mr_signal`, arbitrary units, ~0..1.5).
* US: echogenicity times fully developed speckle (Rayleigh amplitude of a correlated complex Gaussian field, mean 1),
  acoustic shadows behind bone and air, and a sector (fan) field of view with zero outside
  (:func:`ultrasound_signal`, envelope amplitude; displayed with log compression).

Every image array is ``[H, W]``; a tissue map holds integer :class:`Tissue` values.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from scipy import ndimage

__all__ = [
    "Tissue",
    "PHYSICS",
    "ct_signal",
    "mr_signal",
    "ultrasound_signal",
    "ultrasound_fan_mask",
    "speckle_field",
    "to_display",
]


class Tissue(IntEnum):
    """Tissue classes of a phantom's label map."""

    AIR = 0
    LUNG = 1
    FAT = 2
    MUSCLE = 3
    ORGAN = 4
    FLUID = 5
    VESSEL = 6
    BONE = 7
    MARROW = 8
    GREY_MATTER = 9
    WHITE_MATTER = 10
    CARTILAGE = 11
    LIGAMENT = 12
    DISC = 13
    DEGENERATED_DISC = 14
    LESION = 15
    EDEMA = 16
    CALCIFICATION = 17
    GROUND_GLASS = 18
    GLANDULAR = 19


# tissue: (CT in HU, MR signal in a.u. (PD/T2-like), US echogenicity in [0, 1], US specular fraction in [0, 1])
_PROPERTIES = {
    Tissue.AIR: (-1000.0, 0.00, 0.00, 0.0),
    Tissue.LUNG: (-860.0, 0.03, 0.02, 0.0),
    Tissue.FAT: (-100.0, 0.80, 0.25, 0.0),
    Tissue.MUSCLE: (50.0, 0.30, 0.30, 0.0),
    Tissue.ORGAN: (60.0, 0.45, 0.60, 0.0),
    Tissue.FLUID: (5.0, 0.95, 0.015, 0.0),
    Tissue.VESSEL: (180.0, 0.06, 0.015, 0.0),  # CT with contrast; MR flow void; US anechoic
    Tissue.BONE: (900.0, 0.04, 1.00, 0.8),
    Tissue.MARROW: (250.0, 0.65, 0.50, 0.0),
    Tissue.GREY_MATTER: (40.0, 0.58, 0.50, 0.0),
    Tissue.WHITE_MATTER: (28.0, 0.42, 0.55, 0.0),
    Tissue.CARTILAGE: (90.0, 0.52, 0.08, 0.0),
    Tissue.LIGAMENT: (90.0, 0.07, 0.90, 0.3),
    Tissue.DISC: (80.0, 0.78, 0.40, 0.0),
    Tissue.DEGENERATED_DISC: (80.0, 0.18, 0.50, 0.0),
    Tissue.LESION: (20.0, 0.82, 0.10, 0.0),
    Tissue.EDEMA: (30.0, 0.88, 0.20, 0.0),
    Tissue.CALCIFICATION: (500.0, 0.03, 1.00, 0.8),
    Tissue.GROUND_GLASS: (-450.0, 0.15, 0.10, 0.0),
    Tissue.GLANDULAR: (35.0, 0.50, 0.90, 0.0),
}
_LUT = np.array([_PROPERTIES[t] for t in sorted(Tissue)], dtype=np.float64)  # [n_tissues, 4]
_CT, _MR, _US, _SPECULAR = range(4)
_SHADOWING = np.zeros(len(Tissue), dtype=bool)
_SHADOWING[[Tissue.AIR, Tissue.LUNG, Tissue.BONE]] = True  # reflect (almost) all sound: black shadow behind


def ct_signal(tissue: np.ndarray, rng: np.random.Generator, *, noise_hu: float = 8.0, blur_px: float = 0.6) -> np.ndarray:
    """CT image in Hounsfield units.

    Args:
        tissue: ``[H, W]`` integer :class:`Tissue` map.
        rng: source of the noise.
        noise_hu: standard deviation of the additive Gaussian noise (HU).
        blur_px: Gaussian PSF sigma in pixels (partial volume at tissue borders).

    Returns:
        ``[H, W]`` float64 HU.
    """
    hu = ndimage.gaussian_filter(_LUT[tissue, _CT], blur_px, mode="nearest")
    return hu + rng.normal(0.0, noise_hu, hu.shape)


def _bias_field(shape: tuple[int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field ``exp(strength * p(x, y))``: a unit linear ramp in a random direction plus a
    random quadratic term (coil sensitivity falls off with distance, so the field is low-frequency)."""
    y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    phi = rng.uniform(0, 2 * np.pi)
    quad = rng.uniform(-0.5, 0.5, 3)
    log_field = np.cos(phi) * x + np.sin(phi) * y + quad[0] * (x**2 - 1 / 3) + quad[1] * (y**2 - 1 / 3) + quad[2] * x * y
    return np.exp(strength * log_field)


def mr_signal(tissue: np.ndarray, rng: np.random.Generator, *, noise: float = 0.03, bias: float = 0.3,
              blur_px: float = 0.6) -> np.ndarray:
    """Magnitude MR image: ``|s * b + n|`` with ``n`` complex Gaussian (Rician noise), ``b`` a smooth bias field.

    Args:
        tissue: ``[H, W]`` integer :class:`Tissue` map.
        rng: source of the bias field and the noise.
        noise: standard deviation of each of the real and imaginary noise components (signal units).
        bias: strength of the log bias field (0 = none; 0.3 gives roughly a 0.6..1.6 gain range).
        blur_px: Gaussian PSF sigma in pixels.

    Returns:
        ``[H, W]`` float64, non-negative. Where the signal is 0 (air) the values are Rayleigh-distributed with
        scale ``noise``.
    """
    s = ndimage.gaussian_filter(_LUT[tissue, _MR], blur_px, mode="nearest") * _bias_field(tissue.shape, rng, bias)
    n = rng.normal(0.0, noise, (2, *tissue.shape))
    return np.hypot(s + n[0], n[1])


def ultrasound_fan_mask(size: int) -> np.ndarray:
    """``[size, size]`` bool sector field of view of a curvilinear probe (apex above the top edge, 76 degree fan)."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    dy, dx = y + 1.1, x  # apex at (0, -1.1) in normalised coordinates
    r, angle = np.hypot(dx, dy), np.arctan2(dx, dy)
    return (r >= 0.25) & (r <= 2.05) & (np.abs(angle) <= np.deg2rad(38))


def speckle_field(shape: tuple[int, int], rng: np.random.Generator, *, grain_px: float = 0.7, looks: int = 1) -> np.ndarray:
    """Multiplicative ultrasound speckle with mean 1.

    One look is fully developed speckle: the Rayleigh amplitude of a correlated complex Gaussian field. A linear
    filter keeps the field complex Gaussian, so the amplitude stays exactly Rayleigh; its scale follows from the
    filter's energy, which gives an analytic normalisation (no per-image statistics). ``looks`` independent looks
    are averaged, as spatial/frequency compounding does, so the coefficient of variation is
    ``sqrt(4 / pi - 1) / sqrt(looks)`` (0.523 for one look).

    Returns:
        ``[H, W]`` float64, mean 1.
    """
    delta = np.zeros((33, 33))
    delta[16, 16] = 1.0
    sigma = np.sqrt((ndimage.gaussian_filter(delta, grain_px, mode="wrap") ** 2).sum())
    total = np.zeros(shape)
    for _ in range(looks):
        re, im = (ndimage.gaussian_filter(rng.standard_normal(shape), grain_px, mode="wrap") for _ in range(2))
        total += np.hypot(re, im)
    return total / (looks * sigma * np.sqrt(np.pi / 2))


def _acoustic_shadow(tissue: np.ndarray, fan: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: pixels behind (deeper along the same beam than) a shadowing tissue inside the fan."""
    size = tissue.shape[0]
    c = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    depth, angle = np.hypot(x, y + 1.1), np.arctan2(x, y + 1.1)
    beams = np.clip(((angle + 0.7) / 1.4 * size * 1.5).astype(int), 0, int(size * 1.5))
    blocker = _SHADOWING[tissue] & fan
    first = np.full(beams.max() + 1, np.inf)
    np.minimum.at(first, beams[blocker], depth[blocker])
    first = ndimage.minimum_filter1d(first, 3)  # beams are finer than the pixels of a shallow reflector
    return depth > first[beams] + 1.5 * 2 / size  # the reflecting surface itself stays bright


def ultrasound_signal(tissue: np.ndarray, rng: np.random.Generator, *, grain_px: float = 0.7, looks: int = 3,
                      blur_px: float = 0.5) -> np.ndarray:
    """B-mode envelope amplitude: ``echogenicity * speckle`` inside the fan, 0 outside.

    Specular reflectors (bone, calcification, tendon) are only partly speckled; tissue behind air and bone is in
    acoustic shadow.

    Args:
        tissue: ``[H, W]`` (square) integer :class:`Tissue` map.
        rng: source of the speckle.
        grain_px: speckle correlation length (Gaussian sigma, pixels).
        looks: compounded speckle looks (see :func:`speckle_field`).
        blur_px: Gaussian PSF sigma of the echogenicity map, pixels.

    Returns:
        ``[H, W]`` float64 amplitude, mean ~ echogenicity inside the fan, exactly 0 outside.
    """
    fan = ultrasound_fan_mask(tissue.shape[0])
    echo = ndimage.gaussian_filter(_LUT[tissue, _US], blur_px, mode="nearest")
    specular = ndimage.gaussian_filter(_LUT[tissue, _SPECULAR], blur_px, mode="nearest")
    echo = np.where(_acoustic_shadow(tissue, fan), 0.05 * echo, echo)
    speckle = speckle_field(tissue.shape, rng, grain_px=grain_px, looks=looks)
    return np.where(fan, echo * (specular + (1 - specular) * speckle), 0.0)


def to_display(modality: str, signal: np.ndarray, *, window: tuple[float, float] | None = None,
               dynamic_range_db: float = 40.0) -> np.ndarray:
    """Physical signal -> 8-bit display image, as written to the PNGs.

    CT: linear window ``(centre, width)`` in HU (default soft tissue 40/400). MR: scaled so that its 99.5th
    percentile maps to 0.92 of full scale. US: log compression, ``dynamic_range_db`` below amplitude 3; amplitude 0
    (outside the fan) stays 0.

    Returns:
        uint8 array of the input's shape.
    """
    if modality == "CT":
        centre, width = window or (40.0, 400.0)
        v = (signal - (centre - width / 2)) / width
    elif modality == "MR":
        v = signal / max(np.percentile(signal, 99.5), 1e-6) * 0.92
    else:
        v = 1 + 20 * np.log10(np.maximum(signal, 1e-12) / 3.0) / dynamic_range_db
    return np.round(np.clip(v, 0, 1) * 255).astype(np.uint8)


# modality -> signal function ``(tissue [H, W] int, rng) -> [H, W] float64`` (HU, a.u., envelope amplitude)
PHYSICS = {"CT": ct_signal, "MR": mr_signal, "US": ultrasound_signal}
