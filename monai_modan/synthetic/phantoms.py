"""Anatomical phantoms: a map of tissue classes painted from simple vectorised shapes, then imaged.

Coordinates are normalised: x right, y down, both in ``[-1, 1]`` across the image; every shape is a boolean
``[size, size]`` mask painted onto the canvas' :class:`~monai_modan.synthetic.physics.Tissue` map. Each phantom draws
its anatomy from a ``geo`` random stream and only what depends on its finding from a separate ``detail`` stream, so
the same seeds with and without the finding differ only there. :func:`render_phantom` runs a tissue map through the
modality physics of :mod:`monai_modan.synthetic.physics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .physics import PHYSICS, Tissue

__all__ = ["PhantomFn", "phantom_tissue_map", "render_phantom"]


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
    if modality not in PHYSICS:
        raise ValueError(f"unknown modality {modality!r}; synthetic modalities: {sorted(PHYSICS)}")
    tissue = phantom_tissue_map(phantom, finding, size, entropy, image_entropy)
    signal = PHYSICS[modality](tissue, np.random.default_rng(list(image_entropy or entropy) + [8]))
    return signal * gain if gain is not None else signal
