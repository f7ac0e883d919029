"""Deterministic synthetic corpora: a miniRIN-like pretraining corpus and binary downstream tasks.

Nothing here is patient data. Images are drawn from anatomical *phantoms* -- a map of tissue classes (air, fat,
muscle, bone, fluid, lesion ...) painted from simple vectorised shapes -- and a modality *physics* turns the tissue
map into a signal:

* CT: piecewise-constant Hounsfield units per tissue, a slight blur (scanner PSF) and low Gaussian noise
  (:func:`ct_signal`, HU).
* MR: tissue signal times a smooth multiplicative bias field (coil sensitivity), then Rician noise -- the magnitude
  of signal plus complex Gaussian noise (:func:`mr_signal`, arbitrary units, ~0..1.5).
* US: echogenicity times fully developed speckle (Rayleigh amplitude of a correlated complex Gaussian field, mean 1),
  acoustic shadows behind bone and air, and a sector (fan) field of view with zero outside
  (:func:`ultrasound_signal`, envelope amplitude; displayed with log compression).

:func:`generate_pretraining_corpus` writes the same classes in two layouts: the real RadImageNet tree
(``radiology_ai/CT/{abd,lung}/<class>``, ``radiology_ai/MR/<anatomy>/<class>``, ``radiology_ai/US/<class>`` -- US is
flat -- plus ``RadiologyAI_{train,val,test}.csv``) and a PACS-like DICOM export written with pydicom (studies,
series, instances; anatomy sometimes only in free text or nowhere; non-image SR/KO objects and a README to skip).
:func:`generate_downstream_task` writes small binary tasks whose label lives in fine local detail (a torn ligament,
a spiculated or lobulated margin, microcalcifications) while global intensity statistics do not separate the
classes.

Everything is deterministic: each image has its own ``numpy.random.SeedSequence`` entropy (seed, layout, class,
index), so the same arguments give byte-identical files regardless of generation order.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils.enums import StrEnum
from PIL import Image
from scipy import ndimage

from ..utils.io import atomic_path, atomic_write_json, atomic_write_text

__all__ = [
    "Tissue",
    "SyntheticClass",
    "RADIMAGENET_CLASSES",
    "SyntheticCorpus",
    "SyntheticCorpusError",
    "SyntheticTask",
    "generate_pretraining_corpus",
    "ensure_pretraining_corpus",
    "generate_downstream_task",
    "render_phantom",
    "phantom_tissue_map",
    "render_task_image",
    "ct_signal",
    "mr_signal",
    "ultrasound_signal",
    "ultrasound_fan_mask",
    "to_display",
    "speckle_field",
    "LAYOUTS",
    "MANIFEST_NAME",
]

MANIFEST_NAME = "manifest.json"
GENERATOR = "monai_modan.data.synthetic"
FORMAT_VERSION = 1
LAYOUTS = ("radimagenet", "dicom")
_LAYOUT_DIRS = {"radimagenet": "radimagenet", "dicom": "dicom_export"}
_MIN_SIZE = 32


class SyntheticCorpusError(ValueError):
    """Bad generator arguments, or an output folder that holds data this generator did not write."""


# ---------------------------------------------------------------------------------------------------------------
# tissues and physics
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# phantoms: shapes painted onto a tissue map in normalised coordinates (x right, y down, both in [-1, 1])
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Canvas:
    x: np.ndarray
    y: np.ndarray
    tissue: np.ndarray

    @property
    def pixel(self) -> float:
        return 2.0 / self.tissue.shape[0]

    def paint(self, mask: np.ndarray, tissue: Tissue) -> np.ndarray:
        self.tissue[mask] = tissue
        return mask


def _canvas(size: int, rng: np.random.Generator) -> _Canvas:
    """Air-filled pixel-centre grid with a random similarity transform (pose variation of the anatomy)."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    angle, scale, shift = rng.uniform(-0.1, 0.1), 1 + rng.uniform(-0.06, 0.06), rng.uniform(-0.05, 0.05, 2)
    xr, yr = _rotate(x - shift[0], y - shift[1], angle)
    return _Canvas(xr / scale, yr / scale, np.full((size, size), Tissue.AIR, dtype=np.int64))


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, -s * x + c * y


def _ellipse(cv: _Canvas, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0, p: float = 2.0) -> np.ndarray:
    """Ellipse (``p=2``) or superellipse (``p>2``: rounded rectangle) with semi-axes ``ax``, ``ay``."""
    xr, yr = _rotate(cv.x - cx, cv.y - cy, angle)
    return np.abs(xr / ax) ** p + np.abs(yr / ay) ** p <= 1


def _capsule(cv: _Canvas, p0: Sequence[float], p1: Sequence[float], half_width: float) -> np.ndarray:
    """Band of half-width ``half_width`` around the segment ``p0``-``p1`` (round caps)."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((cv.x - x0) * dx + (cv.y - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(cv.x - x0 - t * dx, cv.y - y0 - t * dy) <= half_width


def _polar(cv: _Canvas, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    return np.hypot(cv.x - cx, cv.y - cy), np.arctan2(cv.y - cy, cv.x - cx)


def _bone(cv: _Canvas, mask_fn: Callable[[float], np.ndarray], cortex: float) -> np.ndarray:
    """Cortical shell (``cortex`` thick) filled with marrow; ``mask_fn(grow)`` draws the bone grown by ``grow``."""
    outer = cv.paint(mask_fn(cortex), Tissue.BONE)
    cv.paint(mask_fn(0.0), Tissue.MARROW)
    return outer


_THETA = np.linspace(0, 2 * np.pi, 720, endpoint=False)


def _margin_profile(rng: np.random.Generator | None, area: float, aspect: float, *, lobulation: float = 0.0,
                    spicules: int = 0) -> np.ndarray:
    """Radius ``r(theta)`` of a lesion (720 angles) with exactly the given area (normalised units squared).

    Starts from an ellipse of axis ratio ``aspect``; ``lobulation`` adds low-frequency bumps, ``spicules`` narrow
    radial spikes. The profile is rescaled so that ``pi * mean(r^2) == area``: an irregular lesion is not larger.
    """
    r = 1 / np.sqrt(np.cos(_THETA) ** 2 + (np.sin(_THETA) / aspect) ** 2)
    shape = np.ones_like(_THETA)
    if lobulation and rng is not None:
        for k in rng.choice(np.arange(3, 8), 2, replace=False):
            shape += lobulation * rng.uniform(0.6, 1.0) * np.cos(k * _THETA + rng.uniform(0, 2 * np.pi))
    if spicules and rng is not None:
        for centre in rng.uniform(0, 2 * np.pi, spicules):
            d = np.angle(np.exp(1j * (_THETA - centre)))
            shape += rng.uniform(0.45, 0.75) * np.exp(-((d / 0.07) ** 2))
    r = r * np.maximum(shape, 0.3)
    return r * np.sqrt(area / (np.pi * np.mean(r**2)))


def _lesion(cv: _Canvas, cx: float, cy: float, angle: float, profile: np.ndarray, match_area: bool = False) -> np.ndarray:
    """Rasterise a margin profile. ``match_area`` rescales it until the *pixel* count equals the profile's area
    (thin spicules lose area when rasterised; the lesion's area must not tell its margin)."""
    radius, theta = _polar(cv, cx, cy)
    r = np.interp(theta - angle, _THETA, profile, period=2 * np.pi)
    mask = radius <= r
    if match_area:
        target = np.pi * np.mean(profile**2) / cv.pixel**2
        for _ in range(4):
            r = r * np.sqrt(target / max(mask.sum(), 1))
            mask = radius <= r
    return mask


# Each phantom paints one anatomy. ``geo`` draws the anatomy (shared by both labels of a downstream pair), ``detail``
# draws only what depends on the finding, so that the same seeds with and without the finding differ only there.
PhantomFn = Callable[[_Canvas, np.random.Generator, np.random.Generator, "str | None"], None]


def _chest_ct(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    s = geo.uniform(0.92, 1.04)
    cv.paint(_ellipse(cv, 0, 0.05, 0.92 * s, 0.66 * s), Tissue.FAT)
    cv.paint(_ellipse(cv, 0, 0.05, 0.85 * s, 0.59 * s), Tissue.MUSCLE)
    lung_w, lung_h = geo.uniform(0.26, 0.31) * s, geo.uniform(0.40, 0.47) * s
    lungs = []
    for side in (-1, 1):
        lungs.append((side * 0.41 * s, -0.01, side * 0.12))
        cv.paint(_ellipse(cv, side * 0.41 * s, -0.01, lung_w, lung_h, side * 0.12), Tissue.LUNG)
    cv.paint(_ellipse(cv, 0.06 * s, 0.1, 0.19 * s, 0.23 * s, 0.4), Tissue.ORGAN)  # heart
    cv.paint(_ellipse(cv, 0.1 * s, 0.33 * s, 0.06 * s, 0.06 * s), Tissue.VESSEL)  # descending aorta
    _bone(cv, lambda g: _ellipse(cv, 0, 0.5 * s, 0.1 * s + g, 0.08 * s + g), 0.03)  # vertebral body
    for a in np.linspace(-2.7, 2.7, 10):  # ribs in the chest wall
        _bone(cv, lambda g: _ellipse(cv, 0.86 * s * np.sin(a), 0.05 + 0.6 * s * -np.cos(a), 0.025 + g, 0.035 + g),
              0.012)
    lung = cv.tissue == Tissue.LUNG
    if finding == "airspace":  # patchy ground glass with a consolidated core in one lung
        cx, cy, _ = lungs[detail.integers(2)]
        cx, cy = cx + detail.uniform(-0.08, 0.08), cy + detail.uniform(-0.2, 0.2)
        area, angle = np.pi * detail.uniform(0.14, 0.2) ** 2, detail.uniform(0, np.pi)
        cv.paint(_lesion(cv, cx, cy, angle, _margin_profile(detail, area, 0.7, lobulation=0.25)) & lung,
                 Tissue.GROUND_GLASS)
        cv.paint(_lesion(cv, cx, cy, angle, _margin_profile(detail, area / 4, 0.7, lobulation=0.2)) & lung,
                 Tissue.MUSCLE)
    elif finding == "reticular":  # subpleural reticulation: a random network of thin soft-tissue lines
        field = ndimage.gaussian_filter(detail.standard_normal(cv.tissue.shape), 2.0, mode="wrap")
        net = np.abs(field) < 0.18 * field.std()
        periphery = np.zeros_like(lung)
        for cx, cy, angle in lungs:
            xr, yr = _rotate(cv.x - cx, cv.y - cy, angle)
            periphery |= np.hypot(xr / lung_w, yr / lung_h) > 0.6
        cv.paint(lung & periphery & net, Tissue.MUSCLE)


def _abdomen(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    s = geo.uniform(0.92, 1.04)
    cv.paint(_ellipse(cv, 0, 0.05, 0.92 * s, 0.68 * s), Tissue.FAT)
    cv.paint(_ellipse(cv, 0, 0.05, 0.86 * s, 0.62 * s), Tissue.MUSCLE)
    cv.paint(_ellipse(cv, 0, 0.05, 0.80 * s, 0.56 * s), Tissue.FAT)  # visceral fat
    for _ in range(5):  # bowel loops: fluid or gas
        bx, by = geo.uniform(-0.3, 0.45) * s, geo.uniform(-0.05, 0.3) * s
        cv.paint(_ellipse(cv, bx, by, geo.uniform(0.05, 0.09), geo.uniform(0.04, 0.07), geo.uniform(0, np.pi)),
                 Tissue.AIR if geo.random() < 0.4 else Tissue.FLUID)
    liver = (-0.36 * s, -0.12 * s, 0.36 * s * geo.uniform(0.9, 1.1), 0.30 * s, 0.35)
    cv.paint(_ellipse(cv, *liver), Tissue.ORGAN)
    cv.paint(_ellipse(cv, 0.55 * s, -0.12 * s, 0.14 * s, 0.2 * s, -0.4), Tissue.ORGAN)  # spleen
    for side in (-1, 1):
        cv.paint(_ellipse(cv, side * 0.38 * s, 0.28 * s, 0.1 * s, 0.15 * s, side * 0.4), Tissue.ORGAN)  # kidney
        cv.paint(_ellipse(cv, side * 0.38 * s, 0.28 * s, 0.035 * s, 0.07 * s, side * 0.4), Tissue.FAT)  # sinus
        cv.paint(_ellipse(cv, side * 0.2 * s, 0.42 * s, 0.08 * s, 0.1 * s), Tissue.MUSCLE)  # psoas
    cv.paint(_ellipse(cv, 0.08 * s, 0.26 * s, 0.055 * s, 0.055 * s), Tissue.VESSEL)  # aorta
    cv.paint(_ellipse(cv, -0.1 * s, 0.22 * s, 0.065 * s, 0.045 * s), Tissue.VESSEL)  # IVC
    _bone(cv, lambda g: _ellipse(cv, 0, 0.45 * s, 0.11 * s + g, 0.09 * s + g), 0.03)
    if finding == "liver_lesion":
        cx, cy, ax, ay, angle = liver
        r, t = detail.uniform(0, 0.45), detail.uniform(0, 2 * np.pi)
        lx, ly = cx + r * ax * np.cos(t), cy + r * ay * np.sin(t)
        profile = _margin_profile(detail, np.pi * detail.uniform(0.07, 0.12) ** 2, detail.uniform(0.75, 1.0))
        cv.paint(_lesion(cv, lx, ly, detail.uniform(0, np.pi), profile) & _ellipse(cv, *liver), Tissue.LESION)


def _brain(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    s = geo.uniform(0.92, 1.04)
    ax, ay = 0.74 * s, 0.88 * s
    for grow, tissue in ((0.0, Tissue.FAT), (0.05, Tissue.BONE), (0.1, Tissue.FLUID), (0.13, Tissue.GREY_MATTER)):
        cv.paint(_ellipse(cv, 0, 0, ax - grow, ay - grow), tissue)
    cv.paint(_ellipse(cv, 0, 0.02, ax - 0.3, ay - 0.33), Tissue.WHITE_MATTER)
    for side in (-1, 1):
        cv.paint(_ellipse(cv, side * 0.09 * s, -0.05, 0.05 * s, 0.2 * s * geo.uniform(0.9, 1.1), side * 0.25), Tissue.FLUID)
    cv.paint((np.abs(cv.x) < 0.015) & ~_ellipse(cv, 0, 0.02, ax - 0.3, ay - 0.33) & _ellipse(cv, 0, 0, ax - 0.13, ay - 0.13),
             Tissue.FLUID)  # interhemispheric fissure
    if finding == "infarct":  # cortical-subcortical wedge of restricted diffusion / T2 hyperintensity
        centre = detail.choice([-1, 1]) * detail.uniform(0.5, 2.6)
        rho = np.hypot(cv.x / (ax - 0.13), cv.y / (ay - 0.13))
        wedge = np.abs(np.angle(np.exp(1j * (np.arctan2(cv.y, cv.x) - centre)))) < detail.uniform(0.2, 0.35)
        brain = np.isin(cv.tissue, (Tissue.GREY_MATTER, Tissue.WHITE_MATTER))
        cv.paint(brain & wedge & (rho > detail.uniform(0.4, 0.55)), Tissue.EDEMA)


def _knee(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    """Midline sagittal knee: femur above, tibia below, patella and patellar tendon in front, and the dark ACL band
    crossing the fat-filled intercondylar region from the posterior femur to the anterior tibia."""
    s = geo.uniform(0.92, 1.04)
    cv.paint(_ellipse(cv, 0, 0, 0.74 * s, 1.25, p=3), Tissue.FAT)
    cv.paint(_ellipse(cv, 0, 0, 0.66 * s, 1.25, p=3), Tissue.MUSCLE)
    joint = geo.uniform(0.0, 0.08)
    fy, fr = joint - 0.44 * s, 0.3 * s  # femoral condyle centre and radius
    ty = joint + 0.12 * s  # tibial plateau
    cv.paint(_ellipse(cv, -0.04 * s, joint, 0.3 * s, 0.12 * s), Tissue.FAT)  # intercondylar / Hoffa fat
    cv.paint(_ellipse(cv, 0.0, fy, fr + 0.07 * s, fr + 0.07 * s) & (cv.y > fy), Tissue.CARTILAGE)
    _bone(cv, lambda g: _ellipse(cv, 0.0, fy, fr + g, fr + g) | _capsule(cv, (-0.04, -1.4), (0.0, fy), 0.22 * s + g), 0.035 * s)
    cv.paint((cv.y > ty - 0.05 * s) & (cv.y < ty) & (np.abs(cv.x) < 0.33 * s), Tissue.CARTILAGE)
    _bone(cv, lambda g: _ellipse(cv, 0.0, ty + 0.16 * s, 0.36 * s + g, 0.16 * s + g, p=4)
          | _capsule(cv, (0.0, ty + 0.2 * s), (0.02, 1.4), 0.2 * s + g), 0.035 * s)
    _bone(cv, lambda g: _ellipse(cv, 0.5 * s, joint - 0.5 * s, 0.08 * s + g, 0.17 * s + g, -0.2), 0.025 * s)  # patella
    cv.paint(_capsule(cv, (0.53 * s, joint - 0.33 * s), (0.4 * s, ty + 0.22 * s), 0.03 * s), Tissue.LIGAMENT)
    cv.paint(_ellipse(cv, 0.32 * s, joint - 0.72 * s, 0.08 * s, 0.05 * s), Tissue.FLUID)  # suprapatellar fluid
    # ACL: posterior femur -> anterior tibia. A tear is a gap; the band is lengthened by the gap so that the amount
    # of dark ligament (a global statistic) is the same with and without the tear.
    p0 = np.array([-0.22 * s + geo.uniform(-0.03, 0.03), joint - 0.1 * s])
    p1 = np.array([0.1 * s + geo.uniform(-0.03, 0.03), ty + 0.02 * s])
    half_width = geo.uniform(0.03, 0.04) * s
    if finding == "acl_tear":
        u = (p1 - p0) / np.linalg.norm(p1 - p0)
        gap = detail.uniform(0.09, 0.12) * s
        end = p1 + gap * u
        start = detail.uniform(0.3, 0.6) * np.linalg.norm(end - p0)
        cv.paint(_capsule(cv, p0, p0 + (start - half_width) * u, half_width), Tissue.LIGAMENT)
        cv.paint(_capsule(cv, p0 + (start + gap + half_width) * u, end, half_width), Tissue.LIGAMENT)
    else:
        cv.paint(_capsule(cv, p0, p1, half_width), Tissue.LIGAMENT)
    if finding == "chondral_defect":  # full-thickness femoral cartilage defect filled with fluid, subchondral edema
        a = detail.uniform(0.3, np.pi - 0.3)
        radius, theta = _polar(cv, 0.0, fy)
        notch = (np.abs(theta - a) < detail.uniform(0.12, 0.2)) & (radius > fr - 0.02) & (radius <= fr + 0.08 * s)
        cv.paint(notch, Tissue.FLUID)
        cv.paint(_ellipse(cv, fr * 0.8 * np.cos(a), fy + fr * 0.8 * np.sin(a), 0.07 * s, 0.05 * s, a), Tissue.EDEMA)


def _ankle(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    """Sagittal ankle/foot with tibia, talus, calcaneus, metatarsals and the Achilles tendon."""
    s = geo.uniform(0.92, 1.04)
    leg = lambda g: _ellipse(cv, -0.1, -0.55, 0.36 * s + g, 0.7 + g, p=3)  # noqa: E731
    foot = lambda g: _ellipse(cv, 0.15, 0.5, 0.82 + g, 0.26 * s + g, p=3)  # noqa: E731
    cv.paint(leg(0) | foot(0), Tissue.FAT)
    cv.paint(leg(-0.06) | foot(-0.06), Tissue.MUSCLE)
    cv.paint(_ellipse(cv, -0.3 * s, -0.1, 0.1 * s, 0.3 * s), Tissue.FAT)  # Kager's fat pad
    _bone(cv, lambda g: _capsule(cv, (-0.05, -1.3), (-0.05, -0.02), 0.15 * s + g), 0.03 * s)  # tibia
    _bone(cv, lambda g: _ellipse(cv, -0.02, 0.17, 0.2 * s + g, 0.14 * s + g), 0.03 * s)  # talus
    _bone(cv, lambda g: _ellipse(cv, -0.32, 0.46, 0.27 * s + g, 0.16 * s + g, 0.15), 0.03 * s)  # calcaneus
    _bone(cv, lambda g: _capsule(cv, (0.2, 0.3), (0.85, 0.55), 0.07 * s + g), 0.02 * s)  # midfoot / metatarsal
    cv.paint(_capsule(cv, (-0.3, 0.65), (0.7, 0.72), 0.02), Tissue.LIGAMENT)  # plantar fascia
    top, bottom = np.array([-0.42 * s, -1.2]), np.array([-0.5 * s, 0.32])
    cv.paint(_capsule(cv, top, bottom, 0.035 * s), Tissue.LIGAMENT)  # Achilles tendon
    if finding == "tendinopathy":  # fusiform thickening with intrasubstance signal
        c = detail.uniform(0.35, 0.6)
        a, b = top + (c - 0.15) * (bottom - top), top + (c + 0.15) * (bottom - top)
        cv.paint(_capsule(cv, a, b, detail.uniform(0.07, 0.09) * s), Tissue.LIGAMENT)
        cv.paint(_capsule(cv, a + 0.02 * (b - a), b - 0.02 * (b - a), 0.02 * s), Tissue.EDEMA)


def _hip(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    """Coronal hip: acetabular roof, femoral head with cartilage, neck, trochanter, shaft; dark labrum at the rim."""
    s = geo.uniform(0.92, 1.04)
    cv.paint(_ellipse(cv, 0, 0.1, 0.95, 1.2), Tissue.FAT)
    cv.paint(_ellipse(cv, 0, 0.1, 0.88, 1.14), Tissue.MUSCLE)
    hx, hy, hr = 0.02, -0.12, 0.22 * s
    _bone(cv, lambda g: _ellipse(cv, hx - 0.2, hy - 0.42 * s, 0.55 * s + g, 0.3 * s + g, 0.3), 0.03 * s)  # ilium
    cv.paint(_ellipse(cv, hx, hy, hr + 0.06 * s, hr + 0.06 * s) & (cv.y < hy + 0.05), Tissue.CARTILAGE)
    _bone(cv, lambda g: _ellipse(cv, hx, hy, hr + g, hr + g) | _capsule(cv, (hx, hy), (0.38 * s, 0.25), 0.12 * s + g)
          | _ellipse(cv, 0.45 * s, 0.18, 0.13 * s + g, 0.13 * s + g)
          | _capsule(cv, (0.38 * s, 0.25), (0.42 * s, 1.3), 0.14 * s + g), 0.03 * s)
    lx, ly = hx + 0.26 * s, hy - 0.19 * s
    cv.paint(_ellipse(cv, lx, ly, 0.07 * s, 0.04 * s, -0.6), Tissue.LIGAMENT)  # labrum
    if finding == "labral_tear":  # fluid cleft through the labrum and a paralabral cyst
        a = -0.6 + np.pi / 2 + detail.uniform(-0.3, 0.3)
        d = 0.06 * s * np.array([np.cos(a), np.sin(a)])
        cv.paint(_capsule(cv, (lx - d[0], ly - d[1]), (lx + d[0], ly + d[1]), 0.014), Tissue.FLUID)
        cv.paint(_ellipse(cv, lx + 0.1 * s, ly - detail.uniform(0.02, 0.08) * s, 0.05 * s, 0.04 * s), Tissue.FLUID)


def _shoulder(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    """Coronal shoulder: humeral head under the acromion, supraspinatus tendon as a dark arc over the head."""
    s = geo.uniform(0.92, 1.04)
    cv.paint(_ellipse(cv, 0.05, 0.2, 0.95, 1.05), Tissue.FAT)
    cv.paint(_ellipse(cv, 0.05, 0.2, 0.88, 0.98), Tissue.MUSCLE)
    hx, hy, hr = 0.1, 0.08, 0.27 * s
    radius, theta = _polar(cv, hx, hy)
    arc = (theta > -2.5) & (theta < -0.6)  # the upper-lateral part of the head (y points down)
    cv.paint(arc & (radius < hr + 0.12 * s), Tissue.FAT)  # subacromial-subdeltoid fat stripe
    tendon = cv.paint(arc & (radius < hr + 0.09 * s), Tissue.LIGAMENT)
    _bone(cv, lambda g: _ellipse(cv, hx, hy, hr + g, hr + g) | _capsule(cv, (hx + 0.08, hy), (0.25, 1.3), 0.16 * s + g),
          0.03 * s)
    _bone(cv, lambda g: _ellipse(cv, -0.3 * s, hy, 0.09 * s + g, 0.22 * s + g, p=3)
          | _capsule(cv, (-0.35 * s, hy), (-0.95, hy + 0.15), 0.1 * s + g), 0.025 * s)  # glenoid, scapular neck
    _bone(cv, lambda g: _capsule(cv, (-0.4 * s, hy - 0.5 * s), (0.5 * s, hy - 0.48 * s), 0.06 * s + g), 0.02 * s)
    tendon &= cv.tissue == Tissue.LIGAMENT
    if finding == "calcific_tendinosis":  # calcium deposit in a swollen tendon with reactive bursal fluid
        a, rr = detail.uniform(-2.2, -0.9), hr + 0.07 * s
        cx, cy = hx + rr * np.cos(a), hy + rr * np.sin(a)
        cv.paint(_ellipse(cv, cx, cy, 0.1 * s, 0.065 * s, a + np.pi / 2), Tissue.EDEMA)
        cv.paint(_ellipse(cv, cx, cy, 0.055 * s, 0.035 * s, a + np.pi / 2), Tissue.CALCIFICATION)
    elif finding == "cuff_tear":  # full-thickness gap in the tendon filled with fluid
        a = detail.uniform(-2.0, -1.0)
        cv.paint(tendon & (np.abs(theta - a) < detail.uniform(0.15, 0.25)), Tissue.FLUID)


def _spine(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    """Sagittal lumbar spine: a vertical chain of vertebrae and discs, CSF-filled canal, spinous processes."""
    s = geo.uniform(0.92, 1.04)
    cv.tissue[:] = Tissue.MUSCLE
    cv.paint(cv.x > 0.78, Tissue.FAT)
    cv.paint(cv.x < -0.55, Tissue.FAT)
    centre = lambda y: -0.2 + 0.07 * np.cos(1.3 * y)  # noqa: E731  lordosis
    cv.paint(np.abs(cv.x - centre(cv.y) - 0.34 * s) < 0.07 * s, Tissue.FLUID)  # canal
    cv.paint(np.abs(cv.x - centre(cv.y) - 0.34 * s) < 0.015 * s, Tissue.WHITE_MATTER)  # cauda equina
    pitch = 0.42 * s
    y0 = -0.84 + geo.uniform(-0.1, 0.1)
    discs = []
    for k in range(6):
        yk = y0 + k * pitch
        _bone(cv, lambda g: _ellipse(cv, centre(yk), yk, 0.2 * s + g, 0.14 * s + g, p=4), 0.02)
        _bone(cv, lambda g: _ellipse(cv, centre(yk) + 0.62 * s, yk + 0.04, 0.15 * s + g, 0.07 * s + g, 0.3), 0.02)
        yd = yk + pitch / 2
        discs.append((centre(yd), yd))
        cv.paint(_ellipse(cv, centre(yd), yd, 0.19 * s, 0.045 * s, p=3), Tissue.DISC)
    if finding == "disc_herniation":  # one desiccated disc bulging posteriorly into the canal
        dx, dy = discs[detail.integers(1, 4)]
        cv.paint(_ellipse(cv, dx, dy, 0.19 * s, 0.045 * s, p=3), Tissue.DEGENERATED_DISC)
        cv.paint(_ellipse(cv, dx + 0.2 * s, dy + detail.uniform(-0.02, 0.02), detail.uniform(0.06, 0.09) * s, 0.05 * s),
                 Tissue.DEGENERATED_DISC)


def _superficial_layers(cv: _Canvas, fat_to: float) -> None:
    """Ultrasound near field: skin line and subcutaneous fat (the probe sits at the top)."""
    cv.paint(cv.y < fat_to, Tissue.FAT)
    cv.paint(cv.y < -0.7, Tissue.GLANDULAR)  # skin
    cv.paint(cv.y < -0.74, Tissue.FAT)


def _thyroid_us(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    """Transverse neck: butterfly thyroid lobes joined by the isthmus, trachea (air, shadow), carotids."""
    s = geo.uniform(0.92, 1.04)
    cv.tissue[:] = Tissue.MUSCLE
    _superficial_layers(cv, -0.6)
    lobes = [(side * 0.36 * s, 0.0, 0.3 * s * geo.uniform(0.9, 1.1), 0.22 * s, side * 0.2) for side in (-1, 1)]
    for lobe in lobes:
        cv.paint(_ellipse(cv, *lobe), Tissue.ORGAN)
    cv.paint(_ellipse(cv, 0, -0.22, 0.2 * s, 0.07 * s), Tissue.ORGAN)  # isthmus
    cv.paint(_ellipse(cv, 0, 0.17, 0.18 * s, 0.18 * s), Tissue.BONE)  # tracheal ring (bright, shadows)
    cv.paint(_ellipse(cv, 0, 0.17, 0.13 * s, 0.13 * s), Tissue.AIR)
    for side in (-1, 1):
        cv.paint(_ellipse(cv, side * 0.8 * s, 0.12, 0.1 * s, 0.1 * s), Tissue.VESSEL)  # carotid
        cv.paint(_ellipse(cv, side * 0.86 * s, -0.12, 0.09 * s, 0.05 * s), Tissue.VESSEL)  # jugular
    if finding in ("nodule", "suspicious_nodule"):
        # the nodule's place and size are anatomy (``geo``), its margin and content are the finding (``detail``)
        cx, cy, ax, ay, _ = lobes[geo.integers(2)]
        nx, ny = cx + geo.uniform(-0.3, 0.3) * ax, cy + geo.uniform(-0.2, 0.2) * ay
        area, aspect, angle = np.pi * (geo.uniform(0.12, 0.16) * s) ** 2, geo.uniform(0.65, 0.9), geo.uniform(-0.4, 0.4)
        if finding == "suspicious_nodule":  # irregular lobulated margin + punctate microcalcifications
            nodule = _lesion(cv, nx, ny, angle, _margin_profile(detail, area, aspect, lobulation=0.22), match_area=True)
            cv.paint(nodule, Tissue.LESION)
            inner = ndimage.binary_erosion(nodule, iterations=2)
            candidates = np.flatnonzero(inner if inner.any() else nodule)
            for i in detail.choice(candidates, min(len(candidates), int(detail.integers(4, 7))), replace=False):
                cv.tissue.flat[i] = Tissue.CALCIFICATION
        else:
            cv.paint(_lesion(cv, nx, ny, angle, _margin_profile(None, area, aspect), match_area=True), Tissue.LESION)


def _liver_background(cv: _Canvas, geo: np.random.Generator, s: float) -> None:
    cv.tissue[:] = Tissue.ORGAN
    _superficial_layers(cv, -0.62)
    cv.paint((cv.y > -0.62) & (cv.y < -0.5), Tissue.MUSCLE)
    for _ in range(4):  # portal/hepatic veins: anechoic tubes, portal ones with echogenic walls
        p0 = geo.uniform([-0.6, -0.3], [0.6, 0.6])
        p1 = p0 + geo.uniform(0.1, 0.35) * np.array([np.cos(a := geo.uniform(0, np.pi)), np.sin(a)])
        w = geo.uniform(0.03, 0.06) * s
        if geo.random() < 0.5:
            cv.paint(_capsule(cv, p0, p1, w + 0.02), Tissue.GLANDULAR)
        cv.paint(_capsule(cv, p0, p1, w), Tissue.VESSEL)
    radius, _ = _polar(cv, 0.0, -1.7)
    cv.paint(np.abs(radius - 2.55 * s) < 0.03, Tissue.GLANDULAR)  # diaphragm


def _liver_us(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    _liver_background(cv, geo, geo.uniform(0.92, 1.04))


def _gallbladder_us(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    s = geo.uniform(0.92, 1.04)
    _liver_background(cv, geo, s)
    gb = (geo.uniform(-0.2, 0.2), geo.uniform(0.0, 0.3), 0.36 * s, 0.17 * s, geo.uniform(0.2, 0.6))
    cv.paint(_ellipse(cv, gb[0], gb[1], gb[2] + 0.025, gb[3] + 0.025, gb[4]), Tissue.GLANDULAR)  # wall
    cv.paint(_ellipse(cv, *gb), Tissue.FLUID)  # bile: anechoic


def _kidney_us(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    s = geo.uniform(0.92, 1.04)
    _liver_background(cv, geo, s)
    k = (geo.uniform(-0.1, 0.1), geo.uniform(0.15, 0.3), 0.5 * s, 0.25 * s, geo.uniform(0.1, 0.35))
    cv.paint(_ellipse(cv, k[0], k[1], k[2] + 0.06, k[3] + 0.06, k[4]), Tissue.FAT)  # perirenal fat
    cv.paint(_ellipse(cv, *k), Tissue.MUSCLE)  # cortex: hypoechoic relative to liver
    for a in np.linspace(0, 2 * np.pi, 7, endpoint=False):  # medullary pyramids
        px, py = _rotate(np.array(0.62 * k[2] * np.cos(a)), np.array(0.55 * k[3] * np.sin(a)), -k[4])
        cv.paint(_ellipse(cv, k[0] + px, k[1] + py, 0.06 * s, 0.05 * s), Tissue.LESION)  # hypoechoic, lesion-like
    cv.paint(_ellipse(cv, k[0], k[1], 0.3 * s, 0.08 * s, k[4]), Tissue.GLANDULAR)  # echogenic sinus


def _ovary_us(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    s = geo.uniform(0.92, 1.04)
    cv.tissue[:] = Tissue.MUSCLE
    cv.paint(_ellipse(cv, -0.1, 0.6, 0.5, 0.2), Tissue.FAT)
    o = (geo.uniform(-0.15, 0.15), geo.uniform(0.0, 0.25), 0.42 * s, 0.3 * s, geo.uniform(-0.3, 0.3))
    cv.paint(_ellipse(cv, *o), Tissue.ORGAN)
    for _ in range(int(geo.integers(5, 10))):  # follicles
        r, a = np.sqrt(geo.random()) * 0.7, geo.uniform(0, 2 * np.pi)
        fx, fy = _rotate(np.array(r * o[2] * np.cos(a)), np.array(r * o[3] * np.sin(a)), -o[4])
        rad = geo.uniform(0.04, 0.09) * s
        cv.paint(_ellipse(cv, o[0] + fx, o[1] + fy, rad, rad * geo.uniform(0.8, 1.0)), Tissue.FLUID)


def _uterus_us(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    s = geo.uniform(0.92, 1.04)
    cv.tissue[:] = Tissue.FAT
    _superficial_layers(cv, -0.6)
    cv.paint(_ellipse(cv, 0, -0.32, 0.55 * s, 0.2 * s), Tissue.FLUID)  # full bladder (acoustic window)
    u = (geo.uniform(-0.1, 0.1), 0.28 + geo.uniform(-0.05, 0.05), 0.6 * s, 0.3 * s, geo.uniform(-0.25, 0.05))
    cv.paint(_ellipse(cv, *u), Tissue.MUSCLE)  # myometrium
    cv.paint(_ellipse(cv, u[0], u[1], 0.4 * s, 0.055 * s * geo.uniform(0.8, 1.4), u[4]), Tissue.GLANDULAR)  # endometrium


def _breast_us(cv: _Canvas, geo: np.random.Generator, detail: np.random.Generator, finding: str | None) -> None:
    """Breast: skin, subcutaneous fat, fibroglandular layer with fat lobules, pectoralis, rib (shadow), and a
    hypoechoic mass whose size/place is anatomy (``geo``) and whose margin is the finding (``detail``)."""
    s = geo.uniform(0.92, 1.04)
    cv.tissue[:] = Tissue.FAT
    wave = geo.uniform(0.02, 0.06) * np.sin(geo.uniform(2, 4) * cv.x + geo.uniform(0, 2 * np.pi))
    cv.paint((cv.y > -0.4 + wave) & (cv.y < 0.45 + wave), Tissue.GLANDULAR)
    for _ in range(6):  # fat lobules inside the gland
        cv.paint(_ellipse(cv, geo.uniform(-0.8, 0.8), geo.uniform(-0.3, 0.4), geo.uniform(0.06, 0.12),
                          geo.uniform(0.04, 0.07), geo.uniform(-0.3, 0.3)), Tissue.FAT)
    _superficial_layers(cv, -0.62)
    cv.paint(cv.y > 0.62 + wave, Tissue.MUSCLE)
    cv.paint(_ellipse(cv, geo.uniform(-0.5, 0.5), 0.95, 0.16, 0.07), Tissue.BONE)  # rib
    if finding is None:
        return
    cx, cy = geo.uniform(-0.3, 0.3), geo.uniform(-0.1, 0.15)
    area, aspect, angle = np.pi * (geo.uniform(0.15, 0.2) * s) ** 2, geo.uniform(0.55, 0.8), geo.uniform(-0.3, 0.3)
    if finding == "spiculated_mass":  # irregular, angular margin with radiating spicules
        profile = _margin_profile(detail, area, aspect, lobulation=0.12, spicules=int(detail.integers(7, 11)))
    else:  # circumscribed oval mass
        profile = _margin_profile(None, area, aspect)
    cv.paint(_lesion(cv, cx, cy, angle, profile, match_area=True), Tissue.LESION)


_PHANTOMS: dict[str, PhantomFn] = {
    "chest_ct": _chest_ct,
    "abdomen": _abdomen,
    "brain": _brain,
    "knee": _knee,
    "ankle": _ankle,
    "hip": _hip,
    "shoulder": _shoulder,
    "spine": _spine,
    "thyroid_us": _thyroid_us,
    "liver_us": _liver_us,
    "gallbladder_us": _gallbladder_us,
    "kidney_us": _kidney_us,
    "ovary_us": _ovary_us,
    "uterus_us": _uterus_us,
    "breast_us": _breast_us,
}
_PHYSICS = {"CT": ct_signal, "MR": mr_signal, "US": ultrasound_signal}


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


def phantom_tissue_map(phantom: str, finding: str | None, size: int, entropy: Sequence[int],
                       image_entropy: Sequence[int] | None = None) -> np.ndarray:
    """The ``[size, size]`` int64 :class:`Tissue` map of one phantom (the ground truth behind an image).

    Args:
        phantom: one of the phantom names (``"knee"``, ``"chest_ct"``, ``"thyroid_us"`` ...).
        finding: the phantom's finding name, or ``None`` for normal anatomy.
        size: side length in pixels.
        entropy: seeds the anatomy (``geo``) and the finding (``detail``) streams.
        image_entropy: seeds the pose jitter; defaults to ``entropy``. Several images of one case share ``entropy``
            and differ in ``image_entropy``.
    """
    if phantom not in _PHANTOMS:
        raise ValueError(f"unknown phantom {phantom!r}; known: {sorted(_PHANTOMS)}")
    geo, detail = (np.random.default_rng(s) for s in np.random.SeedSequence(list(entropy)).spawn(2))
    cv = _canvas(size, np.random.default_rng(list(image_entropy or entropy) + [7]))
    _PHANTOMS[phantom](cv, geo, detail, finding)
    return cv.tissue


def render_phantom(phantom: str, modality: str, finding: str | None, size: int, entropy: Sequence[int],
                   image_entropy: Sequence[int] | None = None, gain: float | None = None) -> np.ndarray:
    """Physical-unit image of one phantom (no display mapping): :func:`phantom_tissue_map` through the physics of
    ``modality`` (``"CT"``, ``"MR"`` or ``"US"``); the noise is seeded by ``image_entropy`` (default ``entropy``).

    Args:
        gain: optional global intensity factor (signal units), for acquisition-to-acquisition variation.

    Returns:
        ``[size, size]`` float64 in HU (CT), a.u. (MR) or envelope amplitude (US).
    """
    if modality not in _PHYSICS:
        raise ValueError(f"unknown modality {modality!r}; synthetic modalities: {sorted(_PHYSICS)}")
    tissue = phantom_tissue_map(phantom, finding, size, entropy, image_entropy)
    signal = _PHYSICS[modality](tissue, np.random.default_rng(list(image_entropy or entropy) + [8]))
    return signal * gain if gain is not None else signal


# ---------------------------------------------------------------------------------------------------------------
# the pretraining corpus
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticClass:
    """One RadImageNet-like class.

    Args:
        modality: RadImageNet modality folder (``CT``, ``MR``, ``US``).
        region: RadImageNet anatomy folder (``lung``, ``mriabd`` ...); ``None`` for US, whose classes sit directly
            under ``US/``.
        folder: class folder, spelled as RadImageNet spells it (``Airspace_opacity``, ``ca++_tendinosis``, trailing
            ``_``).
        anatomy: canonical anatomy of the default vocabulary (ground truth for tests of the indexers).
        phantom: phantom drawn for it.
        finding: the visible variation that defines the class inside its anatomy (``None`` = normal).
    """

    modality: str
    region: str | None
    folder: str
    anatomy: str
    phantom: str
    finding: str | None = None

    @property
    def id(self) -> str:
        """Folder path below ``radiology_ai/``: ``"MR/knee/acl_pathology"``, ``"US/gb"``."""
        return "/".join(p for p in (self.modality, self.region, self.folder) if p)

    @property
    def label_text(self) -> str:
        """The CSV label as the RadImageNet split files write it: ``"knee-chondral abnormality"``, ``"US-gb"``."""
        name = self.folder.strip("_").replace("_", " ")
        return f"{self.region or self.modality}-{name}"


RADIMAGENET_CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass("CT", "abd", "liver_lesion", "abdomen", "abdomen", "liver_lesion"),
    SyntheticClass("CT", "abd", "normal", "abdomen", "abdomen"),
    SyntheticClass("CT", "lung", "Airspace_opacity", "chest", "chest_ct", "airspace"),
    SyntheticClass("CT", "lung", "interstitial_lung_disease", "chest", "chest_ct", "reticular"),
    SyntheticClass("CT", "lung", "normal", "chest", "chest_ct"),
    SyntheticClass("MR", "af", "achilles_pathology_", "ankle_foot", "ankle", "tendinopathy"),
    SyntheticClass("MR", "af", "normal", "ankle_foot", "ankle"),
    SyntheticClass("MR", "brain", "acute_infarct", "head", "brain", "infarct"),
    SyntheticClass("MR", "brain", "normal", "head", "brain"),
    SyntheticClass("MR", "hip", "labral_pathology", "hip", "hip", "labral_tear"),
    SyntheticClass("MR", "hip", "normal", "hip", "hip"),
    SyntheticClass("MR", "knee", "acl_pathology", "knee", "knee", "acl_tear"),
    SyntheticClass("MR", "knee", "chondral_abnormality", "knee", "knee", "chondral_defect"),
    SyntheticClass("MR", "knee", "normal", "knee", "knee"),
    SyntheticClass("MR", "mriabd", "liver_lesion", "abdomen", "abdomen", "liver_lesion"),
    SyntheticClass("MR", "mriabd", "normal", "abdomen", "abdomen"),
    SyntheticClass("MR", "shoulder", "ca++_tendinosis", "shoulder", "shoulder", "calcific_tendinosis"),
    SyntheticClass("MR", "shoulder", "supraspinatus_pathology", "shoulder", "shoulder", "cuff_tear"),
    SyntheticClass("MR", "spine", "disc_pathology", "spine", "spine", "disc_herniation"),
    SyntheticClass("MR", "spine", "normal", "spine", "spine"),
    SyntheticClass("US", None, "gb", "abdomen", "gallbladder_us"),
    SyntheticClass("US", None, "kidney", "abdomen", "kidney_us"),
    SyntheticClass("US", None, "liver", "abdomen", "liver_us"),
    SyntheticClass("US", None, "ovary", "pelvis", "ovary_us"),
    SyntheticClass("US", None, "thyroid", "thyroid", "thyroid_us"),
    SyntheticClass("US", None, "thyroid_nodule", "thyroid", "thyroid_us", "nodule"),
    SyntheticClass("US", None, "uterus", "pelvis", "uterus_us"),
)

_CT_WINDOWS = {"chest_ct": (-600.0, 1500.0), "abdomen": (40.0, 400.0)}
_PNG_PREFIX = {"CT": "ctn", "MR": "mrn", "US": "usn"}
_SPLIT_FRACTIONS = (("val", 0.10), ("test", 0.15))  # the rest is train (RadImageNet: 75/10/15)

# DICOM text per phantom: (BodyPartExamined, anatomy words of a free-text description, image plane)
_DICOM_ANATOMY = {
    "chest_ct": ("CHEST", "CHEST", "axial"),
    "abdomen": ("ABDOMEN", "ABDOMEN PELVIS", "axial"),
    "brain": ("HEAD", "BRAIN", "axial"),
    "knee": ("KNEE", "KNEE LT", "sagittal"),
    "ankle": ("ANKLE", "ANKLE RT", "sagittal"),
    "hip": ("HIP", "HIP LT", "coronal"),
    "shoulder": ("SHOULDER", "SHOULDER RT", "coronal"),
    "spine": ("LSPINE", "LUMBAR SPINE", "sagittal"),
    "thyroid_us": ("THYROID", "THYROID", None),
    "liver_us": ("ABDOMEN", "ABDOMEN COMPLETE", None),
    "gallbladder_us": ("GALLBLADDER", "RUQ GALLBLADDER", None),
    "kidney_us": ("KIDNEY", "RENAL", None),
    "ovary_us": ("PELVIS", "PELVIS TRANSVAGINAL", None),
    "uterus_us": ("PELVIS", "PELVIS", None),
    "breast_us": ("BREAST", "BREAST LT", None),
}
_DICOM_PROCEDURE = {"CT": ("CT", "W/O CONTRAST", "AX 5MM", "ROUTINE"),
                    "MR": ("MRI", "W/O", "SAG PD FS", "T2 FSE"),
                    "US": ("US", "", "TRANSVERSE", "GENERAL")}
_ORIENTATION = {"axial": [1, 0, 0, 0, 1, 0], "sagittal": [0, 1, 0, 0, 0, -1], "coronal": [1, 0, 0, 0, 0, -1]}
_MANUFACTURERS = ("GE MEDICAL SYSTEMS", "SIEMENS", "Philips Medical Systems", "TOSHIBA")
# How a study tells its anatomy, cycled over studies: the tag that carries it, or None (anatomy unknowable).
_LABEL_MODES = ("BodyPartExamined", "StudyDescription", "BodyPartExamined", "SeriesDescription", None,
                "BodyPartExamined", "ProtocolName", None)
_IMAGES_PER_STUDY = 4
_SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4", "US": "1.2.840.10008.5.1.4.1.1.6.1",
              "SR": "1.2.840.10008.5.1.4.1.1.88.11", "KO": "1.2.840.10008.5.1.4.1.1.88.59"}


@dataclass
class SyntheticCorpus:
    """What :func:`generate_pretraining_corpus` wrote.

    Attributes:
        root: ``out_dir``.
        radimagenet_root: folder holding ``radiology_ai/`` and ``RadiologyAI_{train,val,test}.csv`` (or ``None``).
        dicom_root: the DICOM export folder (or ``None``).
        manifest_path: ``root/manifest.json`` (arguments, classes, per-file DICOM ground truth).
        classes: class ids (``"MR/knee/acl_pathology"``) in class-index order.
        counts: ``{"png": n, "dicom_images": n, "dicom_non_image": n, "other_files": n}``.
    """

    root: Path
    radimagenet_root: Path | None
    dicom_root: Path | None
    manifest_path: Path
    seed: int
    image_size: int
    images_per_class: int
    classes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    @classmethod
    def from_manifest(cls, path: str | Path) -> SyntheticCorpus:
        path = Path(path)
        m = _read_manifest(path.parent, path.name)
        if m is None or not m.get("complete"):
            raise SyntheticCorpusError(f"{path} is not the manifest of a complete corpus written by {GENERATOR}")
        root = path.parent
        return cls(
            root=root,
            radimagenet_root=root / m["radimagenet"]["root"] if m.get("radimagenet") else None,
            dicom_root=root / m["dicom"]["root"] if m.get("dicom") else None,
            manifest_path=path,
            seed=m["args"]["seed"],
            image_size=m["args"]["image_size"],
            images_per_class=m["args"]["images_per_class"],
            classes=[c["id"] for c in m["classes"]],
            counts=dict(m["counts"]),
        )


def _read_manifest(out_dir: Path, name: str = MANIFEST_NAME) -> dict[str, Any] | None:
    """Our manifest in ``out_dir``, or ``None`` when absent / not ours / unreadable."""
    try:
        m = json.loads((out_dir / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("generator") == GENERATOR else None


def _check_args(images_per_class: int, image_size: int, seed: int, layouts: Sequence[str]) -> tuple[str, ...]:
    if int(images_per_class) < 1:
        raise SyntheticCorpusError(f"images_per_class must be >= 1, got {images_per_class}")
    if int(image_size) < _MIN_SIZE:
        raise SyntheticCorpusError(f"image_size must be >= {_MIN_SIZE} pixels, got {image_size}")
    if int(seed) < 0:
        raise SyntheticCorpusError(f"seed must be a non-negative integer, got {seed}")
    if isinstance(layouts, str):
        layouts = (layouts,)
    unknown = set(layouts) - set(LAYOUTS)
    if unknown or not layouts:
        raise SyntheticCorpusError(f"layouts must be a non-empty subset of {LAYOUTS}, got {tuple(layouts)}")
    return tuple(lay for lay in LAYOUTS if lay in layouts)


def _args(images_per_class: int, image_size: int, seed: int, layouts: tuple[str, ...]) -> dict[str, Any]:
    return {"images_per_class": int(images_per_class), "image_size": int(image_size), "seed": int(seed),
            "layouts": list(layouts)}


def _save_png(path: Path, pixels: np.ndarray) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def _split_sizes(n: int) -> dict[str, int]:
    sizes = {name: (max(1, round(frac * n)) if n >= 3 else 0) for name, frac in _SPLIT_FRACTIONS}
    return {"train": n - sum(sizes.values()), **sizes}


def _write_radimagenet(root: Path, args: dict[str, Any], tick: Callable[[], None]) -> dict[str, Any]:
    """``root/radiology_ai/...`` PNGs and ``root/RadiologyAI_{train,val,test}.csv``."""
    n, size, seed = args["images_per_class"], args["image_size"], args["seed"]
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    counters = dict.fromkeys(_PNG_PREFIX, 0)
    for ci, cls in enumerate(RADIMAGENET_CLASSES):
        order = np.random.default_rng([seed, 1, ci]).permutation(n)  # which images go to which split
        split_of = np.empty(n, dtype=object)
        start = 0
        for split, k in _split_sizes(n).items():
            split_of[order[start:start + k]] = split
            start += k
        for i in range(n):
            counters[cls.modality] += 1
            rel = f"radiology_ai/{cls.id}/{_PNG_PREFIX[cls.modality]}{counters[cls.modality]:06d}.png"
            entropy = [seed, 1, ci, i]
            gain = float(np.random.default_rng(entropy + [3]).uniform(0.8, 1.25)) if cls.modality == "US" else None
            signal = render_phantom(cls.phantom, cls.modality, cls.finding, size, entropy, gain=gain)
            _save_png(root / rel, to_display(cls.modality, signal, window=_CT_WINDOWS.get(cls.phantom)))
            rows[split_of[i]].append((rel, cls.label_text))
            tick()
    for split, items in rows.items():
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["filename", "label"])
        writer.writerows(items)
        atomic_write_text(root / f"RadiologyAI_{split}.csv", buf.getvalue())
    return {"root": root.name, "n_images": sum(len(v) for v in rows.values()),
            "splits": {k: len(v) for k, v in rows.items()}}


def _free_text(cls: SyntheticClass, mode: str | None) -> dict[str, str]:
    """Study/series/protocol text; the anatomy words appear only in the tag named by ``mode``."""
    prefix, suffix, series, protocol = _DICOM_PROCEDURE[cls.modality]
    words = _DICOM_ANATOMY[cls.phantom][1]
    text = {"StudyDescription": " ".join(p for p in (prefix, suffix) if p),
            "SeriesDescription": series, "ProtocolName": protocol}
    if mode == "BodyPartExamined" or mode == "StudyDescription":
        text["StudyDescription"] = " ".join(p for p in (prefix, words, suffix) if p)
    elif mode == "SeriesDescription":
        text["SeriesDescription"] = f"{words} {series}"
    elif mode == "ProtocolName":
        text["ProtocolName"] = f"{words} {protocol}"
    return text


def _dicom_base(study: dict[str, Any], modality: str, sop_class: str, sop_uid: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.Modality = modality
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "InstitutionName",
                "ReferringPhysicianName", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "Manufacturer"):
        setattr(ds, key, study[key])
    return ds


def _save_dicom(path: Path, ds) -> None:
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _write_dicom(root: Path, args: dict[str, Any], tick: Callable[[], None]) -> dict[str, Any]:
    """``root/<study uid>/<series>/<n>[.dcm]``: a PACS-like export of the same classes, plus SR/KO objects and a
    README to skip. Returns the manifest section, with per-file ground truth."""
    from pydicom.uid import generate_uid

    n, size, seed = args["images_per_class"], args["image_size"], args["seed"]
    uid = lambda *parts: generate_uid(entropy_srcs=[GENERATOR, str(seed), *map(str, parts)])  # noqa: E731
    files: list[dict[str, Any]] = []
    non_image: list[dict[str, Any]] = []
    phi: set[str] = set()
    study_index = 0
    for ci, cls in enumerate(RADIMAGENET_CLASSES):
        body_part, _, plane = _DICOM_ANATOMY[cls.phantom]
        for first in range(0, n, _IMAGES_PER_STUDY):
            study_index += 1
            p = study_index
            mode = _LABEL_MODES[(study_index - 1) % len(_LABEL_MODES)]
            study = {"PatientName": f"SYNTH^PATIENT{p:04d}", "PatientID": f"SYN{p:04d}",
                     "PatientBirthDate": f"19{40 + p % 50:02d}0{1 + p % 9}15", "PatientSex": "MF"[p % 2],
                     "AccessionNumber": f"SYNACC{p:06d}", "InstitutionName": "SYNTHETIC GENERAL HOSPITAL",
                     "ReferringPhysicianName": "SYNTH^REFERRER", "StudyInstanceUID": uid("study", p),
                     "StudyDate": f"2024{1 + p % 12:02d}{1 + p % 28:02d}", "StudyTime": "120000",
                     "StudyID": f"{p}", "Manufacturer": _MANUFACTURERS[p % len(_MANUFACTURERS)]}
            phi.update(str(study[k]) for k in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                                               "InstitutionName", "ReferringPhysicianName"))
            text = _free_text(cls, mode)
            series_uid = uid("series", p, 1)
            study_dir = root / study["StudyInstanceUID"] / "SE001"
            for i in range(first, min(first + _IMAGES_PER_STUDY, n)):
                instance = i - first + 1
                entropy = [seed, 2, ci, i]
                gain = float(np.random.default_rng(entropy + [3]).uniform(0.8, 1.25)) if cls.modality == "US" else None
                signal = render_phantom(cls.phantom, cls.modality, cls.finding, size, entropy, gain=gain)
                sop_uid = uid("image", p, 1, instance)
                ds = _dicom_base(study, cls.modality, _SOP_CLASS[cls.modality], sop_uid)
                ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 1, instance
                ds.FrameOfReferenceUID = uid("for", p)
                for key, value in text.items():
                    setattr(ds, key, value)
                if mode == "BodyPartExamined":
                    ds.BodyPartExamined = body_part
                ds.PixelSpacing = [f"{240 / size:.4f}"] * 2
                if cls.modality == "US":
                    ds.set_pixel_data(to_display("US", signal), "MONOCHROME2", 8, generate_instance_uid=False)
                else:
                    ds.SliceThickness = "3"
                    ds.ImageOrientationPatient = _ORIENTATION[plane]
                    ds.ImagePositionPatient = [-120, -120, 3.0 * instance]
                    if cls.modality == "CT":
                        stored = np.clip(np.round(signal + 1024), 0, 4095).astype(np.uint16)
                        ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
                        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
                        ds.KVP = "120"
                        centre, width = _CT_WINDOWS[cls.phantom]
                        ds.WindowCenter, ds.WindowWidth = f"{centre:g}", f"{width:g}"
                    else:
                        stored = np.clip(np.round(signal * 2000), 0, 4095).astype(np.uint16)
                        ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
                        ds.MagneticFieldStrength = "1.5"
                        if p % 2:  # some MR series carry a display window, others not
                            ds.WindowCenter, ds.WindowWidth = "1000", "2000"
                name = f"{instance}.dcm" if p % 2 else f"{instance}"
                path = study_dir / name
                _save_dicom(path, ds)
                files.append({"path": path.relative_to(root.parent).as_posix(), "class": cls.id,
                              "modality": cls.modality, "anatomy_truth": cls.anatomy,
                              "anatomy_expected": cls.anatomy if mode else None, "anatomy_tag": mode})
                tick()
            if first == 0 and ci in (0, len(RADIMAGENET_CLASSES) // 2):  # one SR, one KO
                kind = "SR" if not non_image else "KO"
                ds = _dicom_base(study, kind, _SOP_CLASS[kind], uid("doc", p, kind))
                ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = uid("series", p, 900), 900, 1
                ds.StudyDescription = text["StudyDescription"]
                _fill_document(ds, kind)
                path = root / study["StudyInstanceUID"] / "SE900" / "1.dcm"
                _save_dicom(path, ds)
                non_image.append({"path": path.relative_to(root.parent).as_posix(), "kind": kind})
    readme = root / "README.txt"
    atomic_write_text(readme, "Synthetic PACS-like DICOM export written by monai-modan for tests and demos.\n"
                              "No patient data: every name and identifier is fake (SYNTH^..., SYN...).\n")
    return {"root": root.name, "n_images": len(files), "files": files, "non_image": non_image,
            "other_files": [readme.relative_to(root.parent).as_posix()], "identifying_values": sorted(phi)}


def _fill_document(ds, kind: str) -> None:
    """Minimal Basic Text SR / Key Object Selection content (no pixel data)."""
    from pydicom.dataset import Dataset

    def code(value: str, scheme: str, meaning: str) -> Dataset:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
        return c

    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    if kind == "SR":
        ds.ConceptNameCodeSequence = [code("11528-7", "LN", "Radiology Report")]
        item.ConceptNameCodeSequence = [code("121071", "DCM", "Finding")]
        item.TextValue = "Synthetic report. No acute abnormality."
    else:
        ds.ConceptNameCodeSequence = [code("113000", "DCM", "Of Interest")]
        item.ConceptNameCodeSequence = [code("113012", "DCM", "Key Object Description")]
        item.TextValue = "Synthetic key images."
    ds.ContentSequence = [item]


def _prepare_out_dir(out_dir: Path, layouts: tuple[str, ...]) -> None:
    """Remove what an earlier run of this generator wrote; refuse to touch foreign data."""
    previous = _read_manifest(out_dir)
    if previous is None and (out_dir / MANIFEST_NAME).exists():
        raise SyntheticCorpusError(f"{out_dir / MANIFEST_NAME} exists and was not written by this generator; choose "
                                   "an empty out_dir")
    owned = {previous[sec]["root"] for sec in ("radimagenet", "dicom") if previous and previous.get(sec)}
    if previous and not previous.get("complete", True):  # an interrupted run owns every layout folder
        owned |= set(_LAYOUT_DIRS.values())
    for layout, name in _LAYOUT_DIRS.items():
        folder = out_dir / name
        if name in owned and folder.exists():
            shutil.rmtree(folder)
        elif layout in layouts and folder.exists() and any(folder.iterdir()):
            raise SyntheticCorpusError(
                f"{folder} already exists and was not written by this generator (no matching {MANIFEST_NAME} in "
                f"{out_dir}); choose an empty out_dir so no foreign data is overwritten")


def generate_pretraining_corpus(out_dir: str | Path, *, images_per_class: int = 8, image_size: int = 64, seed: int = 0,
                                layouts: Sequence[str] = LAYOUTS, progress: bool = True) -> SyntheticCorpus:
    """Write a miniRIN-like synthetic corpus (always regenerates; see :func:`ensure_pretraining_corpus`).

    Layouts:
        ``"radimagenet"``: ``out_dir/radimagenet/radiology_ai/{CT,MR}/<anatomy>/<class>/*.png`` and
        ``radiology_ai/US/<class>/*.png`` (8-bit grayscale, ``image_size`` square) plus
        ``out_dir/radimagenet/RadiologyAI_{train,val,test}.csv`` (``filename,label``; 75/10/15 % per class).
        ``"dicom"``: ``out_dir/dicom_export/<StudyInstanceUID>/SE001/<n>`` (``.dcm`` on every other study), one
        synthetic patient per study of up to four images; CT uint16 with RescaleIntercept -1024 (HU), MR uint16,
        US uint8. The anatomy is in BodyPartExamined, only in one free-text tag, or nowhere (cycled over studies;
        per-file ground truth is in the manifest). Also one Basic Text SR, one Key Object Selection document
        and a ``README.txt``.

    Args:
        out_dir: output folder (created). Folders of a layout that exist but were not written by this generator are
            never overwritten.
        images_per_class: images per class and layout.
        image_size: side length in pixels (>= 32).
        seed: master seed; the same arguments give byte-identical files.
        layouts: subset of :data:`LAYOUTS`.
        progress: show a tqdm progress bar.

    Returns:
        :class:`SyntheticCorpus`; ``out_dir/manifest.json`` is written last, atomically.
    """
    layouts = _check_args(images_per_class, image_size, seed, layouts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = _args(images_per_class, image_size, seed, layouts)
    _prepare_out_dir(out_dir, layouts)
    manifest: dict[str, Any] = {"generator": GENERATOR, "format_version": FORMAT_VERSION, "complete": False,
                                "args": args}
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)  # claims the folders before writing into them

    from tqdm.auto import tqdm

    total = len(RADIMAGENET_CLASSES) * images_per_class * len(layouts)
    with tqdm(total=total, desc="synthetic corpus", unit="img", disable=not progress) as bar:
        tick = lambda: bar.update(1)  # noqa: E731
        if "radimagenet" in layouts:
            manifest["radimagenet"] = _write_radimagenet(out_dir / _LAYOUT_DIRS["radimagenet"], args, tick)
        if "dicom" in layouts:
            manifest["dicom"] = _write_dicom(out_dir / _LAYOUT_DIRS["dicom"], args, tick)
    manifest["classes"] = [{"id": c.id, "modality": c.modality, "region": c.region, "folder": c.folder,
                            "anatomy": c.anatomy, "label": c.label_text, "finding": c.finding}
                           for c in RADIMAGENET_CLASSES]
    dicom = manifest.get("dicom") or {}
    manifest["counts"] = {"png": (manifest.get("radimagenet") or {}).get("n_images", 0),
                          "dicom_images": dicom.get("n_images", 0),
                          "dicom_non_image": len(dicom.get("non_image", [])),
                          "other_files": len(dicom.get("other_files", []))}
    manifest["complete"] = True
    atomic_write_json(out_dir / MANIFEST_NAME, manifest, indent=1)
    return SyntheticCorpus.from_manifest(out_dir / MANIFEST_NAME)


def _corpus_intact(out_dir: Path, m: dict[str, Any]) -> bool:
    """The files a complete manifest lists still exist (counted, not hashed)."""
    if m.get("radimagenet"):
        root = out_dir / m["radimagenet"]["root"]
        if sum(1 for _ in root.glob("radiology_ai/**/*.png")) != m["radimagenet"]["n_images"]:
            return False
        if not all((root / f"RadiologyAI_{s}.csv").is_file() for s in ("train", "val", "test")):
            return False
    if m.get("dicom"):
        listed = [f["path"] for f in m["dicom"]["files"]] + [f["path"] for f in m["dicom"]["non_image"]]
        if not all((out_dir / p).is_file() for p in listed):
            return False
    return True


def ensure_pretraining_corpus(out_dir: str | Path, *, images_per_class: int = 8, image_size: int = 64, seed: int = 0,
                              layouts: Sequence[str] = LAYOUTS, progress: bool = True) -> SyntheticCorpus:
    """Return the corpus in ``out_dir``, generating it only if absent, incomplete or made with other arguments."""
    layouts = _check_args(images_per_class, image_size, seed, layouts)
    out_dir = Path(out_dir)
    m = _read_manifest(out_dir)
    if (m is not None and m.get("complete") and m.get("format_version") == FORMAT_VERSION
            and m.get("args") == _args(images_per_class, image_size, seed, layouts) and _corpus_intact(out_dir, m)):
        return SyntheticCorpus.from_manifest(out_dir / MANIFEST_NAME)
    return generate_pretraining_corpus(out_dir, images_per_class=images_per_class, image_size=image_size, seed=seed,
                                       layouts=layouts, progress=progress)


# ---------------------------------------------------------------------------------------------------------------
# downstream tasks
# ---------------------------------------------------------------------------------------------------------------
class SyntheticTask(StrEnum):
    """Binary synthetic downstream tasks whose label lives in fine local detail."""

    KNEE_ACL = "knee_acl"  # knee MR: positive = ACL band with a discontinuity (tear)
    BREAST_US = "breast_us"  # breast US: positive = spiculated/irregular mass margin (vs circumscribed oval)
    THYROID_US = "thyroid_us"  # thyroid US: positive = lobulated margin + microcalcifications (vs smooth nodule)


@dataclass(frozen=True)
class _TaskSpec:
    modality: str
    anatomy: str
    phantom: str
    negative: str | None
    positive: str
    description: str


_TASKS = {
    SyntheticTask.KNEE_ACL: _TaskSpec("MR", "knee", "knee", None, "acl_tear",
                                      "sagittal knee MR; 1 = ACL band interrupted by a gap, 0 = intact band"),
    SyntheticTask.BREAST_US: _TaskSpec("US", "breast", "breast_us", "oval_mass", "spiculated_mass",
                                       "breast US mass; 1 = spiculated/irregular margin, 0 = circumscribed oval"),
    SyntheticTask.THYROID_US: _TaskSpec("US", "thyroid", "thyroid_us", "nodule", "suspicious_nodule",
                                        "thyroid US nodule; 1 = lobulated margin with microcalcifications, "
                                        "0 = smooth solid nodule"),
}
_TASK_IDS = {t: i for i, t in enumerate(SyntheticTask)}


def render_task_image(task: SyntheticTask | str, label: int, image_size: int, case_entropy: Sequence[int],
                      image_entropy: Sequence[int]) -> np.ndarray:
    """One 8-bit image of a downstream task.

    The anatomy, lesion size and position, pose, acquisition gain and noise are drawn from the entropies only, the
    finding's detail from its own stream: for the same entropies, ``label=0`` and ``label=1`` differ only where the
    finding is (the torn ACL segment, the lesion margin).

    Returns:
        ``[image_size, image_size]`` uint8.
    """
    task = SyntheticTask(task)
    spec = _TASKS[task]
    # acquisition settings vary from image to image: overall gain and (US) the display dynamic range
    settings = np.random.default_rng(list(image_entropy) + [3])
    gain, dynamic_range = float(settings.uniform(0.75, 1.3)), float(settings.uniform(32.0, 50.0))
    signal = render_phantom(spec.phantom, spec.modality, spec.positive if label else spec.negative, image_size,
                            case_entropy, image_entropy, gain=gain)
    return to_display(spec.modality, signal, dynamic_range_db=dynamic_range)


def generate_downstream_task(task: SyntheticTask | str, out_dir: str | Path, *, n_images: int = 120,
                             image_size: int = 64, seed: int = 0, positive_fraction: float = 0.4,
                             images_per_case: int = 4) -> Path:
    """Write a synthetic binary task and its datalist.

    Images are grouped in cases (one synthetic patient / lesion seen ``images_per_case`` times with another pose
    and noise), all images of a case share its label, so splits must be grouped by ``group``. Exactly
    ``round(positive_fraction * n_images)`` images are positive. Lesion area, intensity and acquisition gain are
    drawn independently of the label, so global statistics do not separate the classes.

    Layout: ``out_dir/<task>/images/case0001_1.png`` ... and ``out_dir/<task>/datalist.json``::

        {"task": "knee_acl", "modality": "MR", "anatomy": "knee", "description": ..., "seed": 0, ...,
         "training": [{"image": "/abs/.../case0001_1.png", "label": 1, "group": "case0001"}, ...]}

    Returns:
        Path of the datalist JSON.
    """
    task = SyntheticTask(task)
    spec = _TASKS[task]
    if int(n_images) < 2 or int(images_per_case) < 1:
        raise SyntheticCorpusError(f"need n_images >= 2 and images_per_case >= 1, got {n_images}, {images_per_case}")
    if int(image_size) < _MIN_SIZE:
        raise SyntheticCorpusError(f"image_size must be >= {_MIN_SIZE} pixels, got {image_size}")
    n_pos = round(float(positive_fraction) * n_images)
    if not 0 < n_pos < n_images:
        raise SyntheticCorpusError(
            f"positive_fraction={positive_fraction} gives {n_pos} positives of {n_images}; both classes are needed")
    # cases of images_per_case images (the last one of each class may be smaller); shuffle so labels interleave
    sizes = [(label, min(images_per_case, count - start)) for label, count in ((1, n_pos), (0, n_images - n_pos))
             for start in range(0, count, images_per_case)]
    sizes = [sizes[i] for i in np.random.default_rng([seed, 10, _TASK_IDS[task]]).permutation(len(sizes))]
    task_dir = Path(out_dir) / task.value
    image_dir = task_dir / "images"
    items, written = [], set()
    for c, (label, k) in enumerate(sizes, start=1):
        group = f"case{c:04d}"
        for j in range(1, k + 1):
            pixels = render_task_image(task, label, image_size, [seed, 11, _TASK_IDS[task], c],
                                       [seed, 12, _TASK_IDS[task], c, j])
            path = image_dir / f"{group}_{j}.png"
            _save_png(path, pixels)
            written.add(path.name)
            items.append({"image": str(path.resolve()), "label": int(label), "group": group})
    for stale in image_dir.glob("case*_*.png"):  # images of an earlier, larger run
        if stale.name not in written:
            stale.unlink()
    datalist = {"task": task.value, "modality": spec.modality, "anatomy": spec.anatomy,
                "description": spec.description, "generator": GENERATOR, "seed": int(seed),
                "image_size": int(image_size), "n_images": len(items), "n_cases": len(sizes),
                "positive_fraction": n_pos / len(items), "training": items}
    return atomic_write_json(task_dir / "datalist.json", datalist, indent=1)
