"""The one image loading path of monai-modan: any supported file -> one grey image ``[1, H, W]`` in ``[0, 1]``.

Pretraining, downstream training and evaluation all read pixels through :class:`LoadGrayscaleImage` (or its
dictionary twin :class:`LoadGrayscaleImaged`), so every stage sees an image the same way: one channel, float32,
``0`` = black and ``1`` = white *as the image is displayed*, row 0 at the top, column 0 on the left.

Formats (chosen by suffix, then by content):

* **DICOM** (``.dcm``/``.dicom``/``.ima``, or any file with ``DICM`` at byte 128, or one pydicom parses and finds
  Pixel Data in): decoded by pydicom (every transfer syntax with an installed plugin), then
  :func:`dicom_to_grayscale`: Modality LUT / rescale -> VOI (DICOM VOI LUT or window) -> MONOCHROME1 inversion;
  colour (RGB, YBR, PALETTE COLOR) -> ITU-R BT.601 luma. Unlike MONAI's ``PydicomReader`` the result is *not*
  transposed: it has ``ds.pixel_array``'s (Rows, Columns) orientation.
* **PNG / JPEG / BMP / TIFF / GIF** via Pillow (EXIF orientation applied): scaled by the range of the pixel type
  (8 bit / 255, 16 bit / 65535), *not* min-max, so a dark picture stays dark. Colour -> BT.601 luma.
* **NIfTI** (``.nii``, ``.nii.gz``) via nibabel: a 2-D array is taken as stored (axis 0 = rows). A volume is
  reoriented to RAS+ and one axial slice is shown in radiological convention: anterior at the top, the patient's
  right on the image's left (as if looking up from the feet). Intensities: robust min-max.
* **NRRD / MetaImage** (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd`` with its ``.raw``/``.zraw`` data file) via
  SimpleITK, with the same policy as NIfTI: a 3-D volume is reoriented (``DICOMOrient``, to the nearest axis-aligned
  orientation, no resampling) so that its axes point to the patient's Left, Posterior and Superior (ITK's LPS, with
  array order ``[z, y, x]``); axial slice ``k`` (counted from inferior, as NIfTI's RAS+ ``z``) is then
  ``array[k]`` with rows anterior -> posterior and columns patient right -> left -- the radiological view, so the
  same scan stored as ``.nii.gz`` and ``.nrrd`` displays identically. A 2-D image is taken as stored (rows = ITK's
  ``y`` index, columns = ``x``; direction cosines are not applied, as for 2-D NIfTI); a 4-D image with one time
  point is a volume. Grey intensities: robust min-max; 8/16-bit RGB(A) pixels are scaled by their range -> luma.
  Pixel spacing is not resampled (neither for NIfTI). A bare ``.raw`` is refused: load the ``.mhd`` that names it.
* **NPY** (``.npy``): ``(H, W)``; ``(H, W, 1)`` grey; ``(H, W, 3|4)`` colour; or a stack ``(S, H, W)`` (e.g. MRNet)
  -> one slice. uint8 / 255, bool as 0/1, other real types robust min-max.
* **NPZ member** ``"/path/file.npz#train_images/12"`` (MedMNIST layout): image 12 of array ``train_images``
  (``#train/12`` is accepted for ``train_images``). Members ``(H, W)``, ``(H, W, 1|3|4)`` or ``(D, H, W)`` per item,
  scaled as NPY. Arrays are read lazily, once per (file, key) and process, and kept in an LRU cache.

Stacks (DICOM frames, NIfTI/NRRD/MetaImage axial slices, NPY/NPZ volumes, multi-page TIFF) give one 2-D image,
chosen by :class:`FramePolicy` (``middle`` = index ``n // 2``, ``first``) or an explicit integer index; a single
image is a stack of one, so an explicit index other than ``0``/``-1`` is refused for it (for every format alike).

Robust min-max maps the 0.5th..99.5th percentile (configurable) to 0..1 and clips; when those percentiles meet
(few distinct values, e.g. a binary mask) the plain min..max is used, and a constant image becomes all zeros.

Bad pixels are refused, never shown as a black image: NaN or Inf values after decoding and the Modality LUT /
RescaleSlope/Intercept (DICOM), in an NPY/NPZ array or a float TIFF raise :class:`ImageLoadError`, and so does a
DICOM ``RescaleSlope`` of 0. NIfTI/NRRD/MetaImage volumes may mark voxels outside a mask as NaN (an FSL/SPM
convention): those show as 0 and are left out of the statistics, but a slice that is all NaN, or any Inf, is refused.
Empty files, zero-size arrays, 2-channel or complex pixels, an invalid ``NumberOfFrames`` and truncated DICOM files
(named as truncated, with the file size) are refused too.

Every failure raises :class:`ImageLoadError` (a ``ValueError``) naming the file and the cause; messages never
contain identifying DICOM header values (the patient's name etc.), only, where it is the cause, the offending
image-geometry value (``NumberOfFrames``, ``RescaleSlope`` ...).
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Resize, Transform
from monai.utils.enums import StrEnum
from PIL import Image, ImageOps
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    as_pixel_options,
    convert_color_space,
    get_decoder,
)
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

__all__ = [
    "ImageLoadError",
    "FramePolicy",
    "WindowPolicy",
    "LUMA_WEIGHTS",
    "DEFAULT_FIXED_WINDOW",
    "DEFAULT_PERCENTILES",
    "MIN_INSIDE_WINDOW",
    "robust_minmax",
    "dicom_to_grayscale",
    "load_grayscale",
    "LoadGrayscaleImage",
    "LoadGrayscaleImaged",
    "READER_VERSION",
    "IMAGE_SUFFIXES",
]

# Bump whenever the pixels the reader returns for the same file change (windowing, frame choice, resizing ...): packed
# corpora record it and are re-packed when it differs.
READER_VERSION = 2  # 2: (H, W, 1) arrays are grey images (were misread as stacks); bad pixels are refused

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, the Y of DICOM YBR_FULL
DEFAULT_FIXED_WINDOW = (40.0, 400.0)  # (centre, width) in modality units: the CT soft-tissue window L40/W400 HU
DEFAULT_PERCENTILES = (0.5, 99.5)
MIN_INSIDE_WINDOW = 0.01  # a DICOM window that leaves fewer pixels than this strictly inside it is not used

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_IMAGE_IOS = {".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO", ".mha": "MetaImageIO", ".mhd": "MetaImageIO"}
ITK_SUFFIXES = tuple(ITK_IMAGE_IOS)
METAIMAGE_DATA_SUFFIXES = (".raw", ".zraw")  # the pixel file of a .mhd header: not an image on its own
# every suffix load_grayscale reads as an image (DICOM files may also have none, or any other)
IMAGE_SUFFIXES = DICOM_SUFFIXES + PILLOW_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES + (".npy",)


class ImageLoadError(ValueError):
    """An image could not be loaded; the message names the file (or NPZ reference) and the cause."""


class FramePolicy(StrEnum):
    """Which 2-D image to take from a stack (DICOM frames, NIfTI axial slices, NPY/NPZ volumes, TIFF pages)."""

    MIDDLE = "middle"  # index n // 2: the centre of a volume, the most representative slice
    FIRST = "first"


class WindowPolicy(StrEnum):
    """How a monochrome DICOM frame's modality values (e.g. HU) become ``[0, 1]``.

    - ``dicom_or_minmax``: the file's own VOI -- VOI LUT Sequence, else the first Window Center/Width (also from
      enhanced multi-frame functional groups) -- i.e. what a viewer shows first. Without one, or when it is
      unusable (invalid attributes, or fewer than ``MIN_INSIDE_WINDOW`` = 1 % of the pixels fall strictly inside
      it: the header's window does not fit the pixel data, e.g. a saturated white frame), robust min-max.
      CT without a window therefore shows its whole range rather than an assumed soft-tissue window, which would
      blank lung and bone in a mixed corpus.
    - ``minmax``: always robust min-max of the modality values (ignores DICOM windows).
    - ``fixed``: one linear window ``fixed_window = (centre, width)`` for every file (meant for CT-only corpora,
      in HU; default L40/W400 soft tissue).

    Colour images (RGB, YBR, PALETTE COLOR) are display-ready and always scaled by their bit depth.
    """

    DICOM_OR_MINMAX = "dicom_or_minmax"
    MINMAX = "minmax"
    FIXED = "fixed"


def robust_minmax(values: np.ndarray, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Map ``values`` (any shape) to float32 in ``[0, 1]``: the given percentiles go to 0 and 1, then clip.

    Non-finite values (NaN in masked NIfTI volumes) become 0 and are left out of the statistics. When the
    percentiles coincide the plain min..max is used; a constant image becomes all zeros.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape, np.float32)
    valid = v[finite]
    lo, hi = np.percentile(valid, percentiles)
    if hi <= lo:  # few distinct values (binary masks, thumbnails): the percentiles collapse
        lo, hi = valid.min(), valid.max()
    if hi <= lo:
        return np.zeros(v.shape, np.float32)
    out = np.where(finite, (v - lo) / (hi - lo), 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3+]`` colour in ``[0, 1]`` -> BT.601 luma ``[...]`` (alpha, if any, is ignored)."""
    return np.asarray(rgb[..., :3], np.float64) @ np.asarray(LUMA_WEIGHTS)


def _frame_index(n: int, frame: FramePolicy | str | int) -> int:
    """Index into a stack of ``n`` images; a negative integer counts from the end. Raises ``ValueError``."""
    if isinstance(frame, (int, np.integer)) and not isinstance(frame, bool):
        index = int(frame) + n if frame < 0 else int(frame)
        if not 0 <= index < n:
            raise ValueError(f"frame index {int(frame)} out of range for {n} frame(s)")
        return index
    policy = FramePolicy(frame)
    return n // 2 if policy == FramePolicy.MIDDLE else 0


def _single_image(frame: FramePolicy | str | int) -> None:
    """A single image is a stack of one: an explicit frame index must be 0 or -1 (``ValueError``), as for DICOM."""
    if isinstance(frame, (int, np.integer)) and not isinstance(frame, bool):
        _frame_index(1, frame)


def _nonfinite(values: np.ndarray) -> str | None:
    """``"3 of 64 pixel values are NaN"`` when ``values`` holds NaN/Inf, else ``None``."""
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.inexact):
        return None
    bad = np.count_nonzero(~np.isfinite(v))
    if not bad:
        return None
    kinds = "/".join(k for k, test in (("NaN", np.isnan), ("Inf", np.isinf)) if test(v).any())
    return f"{bad} of {v.size} pixel values are {kinds}"


def _check_real_pixels(arr: np.ndarray) -> None:
    """Refuse what cannot become a grey image: no pixels, or a pixel type that is not a real number. ``ValueError``."""
    if arr.size == 0:
        raise ValueError(f"empty image (shape {tuple(arr.shape)}, no pixels)")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_):
        raise ValueError(f"pixel type {arr.dtype} is not a real number (expected bool, integer or float pixels)")


# ------------------------------------------------------------------------------------------------------ DICOM


PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _dicom_name(ds: Any) -> str:
    filename = getattr(ds, "filename", None)
    return str(filename) if isinstance(filename, (str, os.PathLike)) else "<DICOM dataset>"


def _why_no_pixels(ds: Any) -> str:
    """``"(not an image)"``, or -- for an image header (Rows/Columns, an image SOP class): a copy or writer that
    stopped at an element boundary -- the hint that the file may be truncated, with its size."""
    sop = ds.get("SOPClassUID")
    sop_name = UID(str(sop)).name if sop else ""
    if "Rows" in ds and "Columns" in ds:
        why = "although its header has Rows and Columns"
    elif "Image Storage" in sop_name:
        why = f"although it is a {sop_name} object"
    elif not sop:  # every DICOM object has one (type 1): the header stops early
        why = "and no SOP Class UID either, an incomplete header"
    else:
        return "(not an image)"
    filename = getattr(ds, "filename", None)
    size = ""
    if isinstance(filename, (str, os.PathLike)) and os.path.isfile(filename):
        size = f", {os.path.getsize(filename)} bytes"
    return f"{why} (truncated before its Pixel Data?{size})"


def _number_of_frames(ds: Any, name: str) -> int:
    """``NumberOfFrames`` as a count (absent: 1). ``0`` is read as 1, as pydicom does (real single-frame files write
    it); anything that is not a whole number >= 0 raises :class:`ImageLoadError` naming the value."""
    raw = ds.get("NumberOfFrames")
    text = "" if raw is None else "\\".join(map(str, raw)) if isinstance(raw, MultiValue) else str(raw).strip()
    if not text:
        return 1
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value >= 0 and value == int(value)):
        raise ImageLoadError(f"{name}: invalid NumberOfFrames {text!r} (expected a whole number of frames >= 1)")
    return int(value) or 1


def _frame_view(ds: Any, index: int) -> Any:
    """The attributes that turn stored values of frame ``index`` into display values, in one flat dataset.

    Enhanced multi-frame objects keep rescale and window per frame in functional groups (shared, then per-frame
    overrides), where pydicom's ``apply_modality_lut``/``apply_voi_lut`` do not look.
    """
    view = Dataset()
    view.file_meta = getattr(ds, "file_meta", Dataset())  # endianness for OW lookup tables
    for keyword in (
        "PhotometricInterpretation", "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
        "ModalityLUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
    ):  # fmt: skip
        if keyword in ds:
            view.add(ds[keyword])
    groups = []
    if ds.get("SharedFunctionalGroupsSequence"):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if group.get(sequence):
                for element in group[sequence][0]:
                    view.add(element)
    return view


def _dicom_voi(values: np.ndarray, view: Any) -> np.ndarray | None:
    """The file's VOI (LUT, else first window) scaled to ``[0, 1]``; ``None`` when absent or unusable."""
    try:
        lut_item = view.VOILUTSequence[0] if view.get("VOILUTSequence") else None
        if lut_item is not None and "LUTDescriptor" in lut_item and "LUTData" in lut_item:
            entries, first_mapped, _ = lut_item.LUTDescriptor
            entries = entries or 2**16
            table = apply_voi(np.arange(first_mapped, first_mapped + entries), view).astype(np.float64)
            inputs = np.clip(np.rint(values), first_mapped, first_mapped + entries - 1).astype(np.int64)
            out, lo, hi = apply_voi(inputs, view).astype(np.float64), table.min(), table.max()
        elif "WindowCenter" in view and "WindowWidth" in view:
            out = apply_windowing(values, view)
            with np.errstate(over="ignore"):  # SIGMOID at +-1e30 saturates through exp overflow
                lo, hi = apply_windowing(np.array([-1e30, 1e30]), view)  # outputs below and above the window
        else:
            return None
    except (ValueError, TypeError, IndexError, NotImplementedError, AttributeError):
        return None  # malformed VOI attributes: treat as absent
    if hi == lo:
        return None
    grey = np.clip((out - lo) / (hi - lo), 0.0, 1.0)
    inside = np.count_nonzero((grey > 0.0) & (grey < 1.0)) / grey.size
    return grey if inside >= MIN_INSIDE_WINDOW else None  # else the window misses the data: header/pixel mismatch


def _linear_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.clip((values - (centre - width / 2.0)) / width, 0.0, 1.0)


def dicom_to_grayscale(
    ds: Any,
    frame: FramePolicy | str | int = FramePolicy.MIDDLE,
    window: WindowPolicy | str = WindowPolicy.DICOM_OR_MINMAX,
    fixed_window: tuple[float, float] = DEFAULT_FIXED_WINDOW,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """One frame of a pydicom ``Dataset`` as displayed: float32 ``[Rows, Columns]`` in ``[0, 1]``.

    Args:
        ds: a dataset with Pixel Data (from ``pydicom.dcmread``).
        frame: :class:`FramePolicy` or a frame index (negative counts from the end) for multi-frame data.
        window: :class:`WindowPolicy` for monochrome data.
        fixed_window: ``(centre, width)`` in modality units (HU for CT), used by ``WindowPolicy.FIXED``.
        percentiles: the robust min-max range.

    Monochrome: Modality LUT / rescale (``apply_modality_lut``) -> VOI, with ``apply_voi_lut``'s precedence (VOI
    LUT Sequence via ``apply_voi``, else the first Window Center/Width via ``apply_windowing``; called separately
    so that the VOI's output range can be probed and mapped to 0..1) or robust min-max, per ``window`` ->
    MONOCHROME1 inverted (``1 - x``) so that bright means what it means on screen. Rescale and window inside
    enhanced multi-frame functional groups are honoured for the chosen frame. Colour: PALETTE COLOR through ``apply_color_lut``,
    YBR_FULL[_422] through ``convert_color_space``, then scaled by the bit depth and reduced to BT.601 luma.
    Row 0 is the first stored row (the top of the displayed image); nothing is transposed.

    Raises:
        ImageLoadError: no pixel data, a bad frame index, an undecodable payload (e.g. a missing codec plugin),
            or an unsupported photometric interpretation.
    """
    name = _dicom_name(ds)
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise ImageLoadError(f"{name}: DICOM object has no Pixel Data {_why_no_pixels(ds)}")
    n_frames = _number_of_frames(ds, name)
    try:
        index = _frame_index(n_frames, frame)
    except ValueError as exc:
        raise ImageLoadError(f"{name}: {exc}") from exc

    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    syntax_name = UID(syntax).name if syntax else "no Transfer Syntax UID"
    try:
        decoder = get_decoder(syntax)
        pixels, meta = decoder.as_array(ds, index=index, validate=True, raw=False, **as_pixel_options(ds))
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError/AttributeError here
        detail = " ".join(str(exc).split())
        raise ImageLoadError(f"{name}: cannot decode pixel data ({syntax_name}): {detail}") from exc

    photometric = str(meta.get("photometric_interpretation") or ds.get("PhotometricInterpretation", "")).strip()
    try:
        return _display_grey(pixels, photometric, ds, _frame_view(ds, index), meta, window, fixed_window, percentiles)
    except ImageLoadError:
        raise
    except Exception as exc:  # malformed Modality LUT / palette attributes
        raise ImageLoadError(f"{name}: cannot convert {photometric} pixel data to grey: {exc}") from exc


def _display_grey(
    pixels: np.ndarray,
    photometric: str,
    ds: Any,
    view: Any,
    meta: Mapping[str, Any],
    window: WindowPolicy | str,
    fixed_window: tuple[float, float],
    percentiles: Sequence[float],
) -> np.ndarray:
    """Decoded pixels of one frame -> float32 ``[Rows, Columns]`` in ``[0, 1]`` (see :func:`dicom_to_grayscale`)."""
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        problem = _nonfinite(pixels)  # Float / Double Float Pixel Data may hold NaN
        if problem:
            raise ImageLoadError(f"{_dicom_name(ds)}: non-finite pixel values ({problem}) in the decoded pixel data")
        rescaled = "ModalityLUTSequence" not in view and "RescaleSlope" in view and "RescaleIntercept" in view
        if rescaled and float(view.RescaleSlope) == 0:
            raise ImageLoadError(f"{_dicom_name(ds)}: RescaleSlope is 0, every pixel would become RescaleIntercept "
                                 "(a blank image)")
        with np.errstate(invalid="ignore", over="ignore"):  # an Inf slope times 0: reported just below
            values = np.asarray(apply_modality_lut(pixels, view), dtype=np.float64)
        problem = _nonfinite(values)
        if problem:
            if "ModalityLUTSequence" in view:
                cause = "after the Modality LUT"
            else:
                cause = (f"after RescaleSlope/Intercept (RescaleSlope {str(view.get('RescaleSlope'))!r}, "
                         f"RescaleIntercept {str(view.get('RescaleIntercept'))!r})")
            raise ImageLoadError(f"{_dicom_name(ds)}: non-finite pixel values (NaN/Inf; {problem}) {cause}")
        policy = WindowPolicy(window)
        grey = None
        if policy == WindowPolicy.DICOM_OR_MINMAX:
            grey = _dicom_voi(values, view)
        elif policy == WindowPolicy.FIXED:
            grey = _linear_window(values, *fixed_window)
        if grey is None:
            grey = robust_minmax(values, percentiles)
        if photometric == "MONOCHROME1":  # after the VOI, as a viewer does: high values display dark
            grey = 1.0 - grey
        return np.asarray(grey, dtype=np.float32)

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        full_scale = float(np.iinfo(rgb.dtype).max)
    elif photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        rgb = pixels if photometric == "RGB" else convert_color_space(pixels, photometric, "RGB")
        full_scale = float(2 ** int(meta.get("bits_stored") or ds.get("BitsStored") or 8) - 1)
    else:
        raise ImageLoadError(f"{_dicom_name(ds)}: unsupported Photometric Interpretation {photometric!r}")
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ImageLoadError(f"{_dicom_name(ds)}: expected one colour frame (rows, columns, 3), got {rgb.shape}")
    return np.clip(_luma(rgb / full_scale), 0.0, 1.0).astype(np.float32)


_UNDEFINED_LENGTH = 0xFFFFFFFF
_DICM_END = 132  # 128-byte preamble + "DICM"


def _dicom_truncation(ds: Any, size: int, preamble: bool) -> str | None:
    """Where a just-read file is cut short, from the element lengths pydicom saw (no pixels are decoded); ``None``
    if it is complete. pydicom itself stops quietly at the end of the file and keeps a short last value."""
    has_pixels = any(keyword in ds for keyword in PIXEL_KEYWORDS)
    meta = getattr(ds, "file_meta", None)
    meta_end = None
    if preamble:
        if size <= _DICM_END or not meta:
            return "the file ends right after the 128-byte preamble and the 'DICM' marker"
        try:
            meta_end = _DICM_END + 12 + int(meta["FileMetaInformationGroupLength"].value)
        except (KeyError, TypeError, ValueError):
            meta_end = 0  # optional in practice; pydicom reads the meta group without it
        if meta_end > size:
            return f"the file ends inside its file meta header, which needs {meta_end} bytes"
        if not len(ds):
            if "TransferSyntaxUID" not in meta:
                return "the file ends inside its file meta header"
            if size == meta_end:
                return "the file ends right after its file meta header (no data set)"
    syntax = meta.get("TransferSyntaxUID") if meta else None
    if not (syntax and UID(syntax).is_deflated):  # a deflated data set's offsets are not file offsets
        end, last = meta_end or None, "the file meta header"
        for element in ds.elements():  # still raw: each knows where its value starts and how long it is
            defined = isinstance(element, RawDataElement) and element.length != _UNDEFINED_LENGTH
            end, last = (element.value_tell + element.length if defined else None), f"element {element.tag}"
            if end is not None and end > size:
                what = "its Pixel Data" if element.tag >> 16 == 0x7FE0 else f"element {element.tag}"
                return f"the file ends inside {what}: {end - size} bytes are missing"
        if not has_pixels and end is not None and end < size:
            # pydicom drops an undefined-length element (encapsulated Pixel Data, a sequence) that the file cuts
            # short, and stops: bytes are left over after the last element it kept
            return (f"the file ends inside an undefined-length element (encapsulated Pixel Data or a sequence) "
                    f"after {last}; {size - end} bytes could not be read")
    if not has_pixels and not preamble and size < _DICM_END:
        return "it holds no Pixel Data"
    return None


def _read_dicom(path: Path, preamble: bool) -> Any:
    """``dcmread`` (``force`` without the ``DICM`` marker); a file cut short raises, named as truncated."""
    try:
        size = path.stat().st_size
        ds = pydicom.dcmread(path, force=not preamble)
    except Exception as exc:
        detail = " ".join(str(exc).split())
        position = re.search(r"No tag to read at file position ([0-9A-Fa-f]+)", detail)
        if preamble and (isinstance(exc, struct.error) or (position and int(position[1], 16) >= size)):
            raise ImageLoadError(f"{path}: truncated DICOM file ({size} bytes): the file ends inside an element "
                                 f"(pydicom: {detail})") from None
        raise ImageLoadError(f"{path}: not a readable DICOM file ({size} bytes): {detail}") from exc
    problem = _dicom_truncation(ds, size, preamble)
    if problem and preamble:
        raise ImageLoadError(f"{path}: truncated DICOM file ({size} bytes): {problem}")
    if problem:
        raise ImageLoadError(f"{path}: not a DICOM file, or a truncated one ({size} bytes, no 'DICM' marker at "
                             f"byte 128; read as a bare data set, {problem})")
    if any(keyword in ds for keyword in PIXEL_KEYWORDS) and not getattr(ds, "file_meta", {}).get("TransferSyntaxUID"):
        # headerless (ACR-NEMA style) file: the encoding pydicom read it with is the transfer syntax
        implicit, little = getattr(ds, "original_encoding", (True, True))
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError as e:
        raise ImageLoadError(f"{path}: cannot read: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------- other formats


def _array_to_grayscale(
    arr: np.ndarray, frame: FramePolicy | str | int, percentiles: Sequence[float]
) -> np.ndarray:
    """An NPY array / NPZ item: ``(H, W)``, ``(H, W, 1)`` grey, ``(H, W, 3|4)`` colour or a stack ``(S, H, W)``
    -> ``[H, W]``. Raises ``ValueError`` for other shapes, no pixels, non-real types and NaN/Inf pixels."""
    arr = np.asarray(arr)
    _check_real_pixels(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:  # (H, W, 1): one grey channel, channel-last
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha? two modalities? not an image this reader can show
        raise ValueError(f"shape {arr.shape} has 2 channels per pixel; expected 1 (grey), 3 (RGB) or 4 (RGBA)")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        _single_image(frame)
        problem = _nonfinite(arr[..., :3])
        if problem:
            raise ValueError(f"non-finite pixel values ({problem})")
        scale = 255.0 if arr.dtype == np.uint8 else None
        rgb = arr / scale if scale else robust_minmax(arr[..., :3], percentiles)
        return np.clip(_luma(rgb), 0.0, 1.0).astype(np.float32)
    if arr.ndim == 3:
        arr = arr[_frame_index(arr.shape[0], frame)]
    elif arr.ndim == 2:
        _single_image(frame)
    if arr.ndim != 2:
        raise ValueError(f"expected an image (H, W), (H, W, 1|3|4) or a stack (S, H, W), got shape {arr.shape}")
    problem = _nonfinite(arr)
    if problem:
        raise ValueError(f"non-finite pixel values ({problem})")
    if arr.dtype == np.uint8:
        return (arr / 255.0).astype(np.float32)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    return robust_minmax(arr, percentiles)


def _load_pillow(path: Path, frame: FramePolicy | str | int, percentiles: Sequence[float]) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.seek(_frame_index(getattr(image, "n_frames", 1), frame))
            image = ImageOps.exif_transpose(image)  # a camera's rotation tag is part of "as displayed"
            image.load()
    except Exception as exc:  # UnidentifiedImageError, OSError (truncated), SyntaxError (broken PNG), bad frame
        raise ImageLoadError(f"{path}: cannot decode image: {exc}") from exc

    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.float32)
    if mode == "L":
        return (np.asarray(image, dtype=np.float32) / 255.0).astype(np.float32)
    if mode.startswith("I;16"):
        return (np.asarray(image).astype(np.float32) / 65535.0).astype(np.float32)
    if mode == "I":  # 32-bit integer; Pillow's mode for some 16-bit files: keep the 16-bit scale when it fits
        values = np.asarray(image, dtype=np.float64)
        if values.min() >= 0 and values.max() <= 65535:
            return (values / 65535.0).astype(np.float32)
        return robust_minmax(values, percentiles)
    if mode == "F":
        values = np.asarray(image)
        problem = _nonfinite(values)
        if problem:
            raise ImageLoadError(f"{path}: non-finite pixel values ({problem})")
        return robust_minmax(values, percentiles)
    if mode in ("LA", "La"):
        return (np.asarray(image.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0  # RGB(A), P, CMYK, YCbCr, ...
    return np.clip(_luma(rgb), 0.0, 1.0).astype(np.float32)


def _load_nifti(path: Path, frame: FramePolicy | str | int, percentiles: Sequence[float]) -> np.ndarray:
    import nibabel as nib

    try:
        image = nib.funcs.squeeze_image(nib.load(path))  # drops trailing singleton axes beyond the third
        if len(image.shape) == 2:
            _single_image(frame)
            plane, where = np.asarray(image.dataobj), "the image"  # a 2-D image, axis 0 = rows, as stored
        elif len(image.shape) == 3:
            canonical = nib.as_closest_canonical(image)  # RAS+: axes point to the Right, Anterior, Superior
            k = _frame_index(canonical.shape[2], frame)
            axial = np.asarray(canonical.dataobj[:, :, k])  # [x (L->R), y (P->A)]
            # radiological display: rows run anterior -> posterior, columns run patient right -> left
            plane, where = axial.T[::-1, ::-1], f"axial slice {k} of {canonical.shape[2]}"
        else:
            raise ValueError(f"expected a 2-D image or a 3-D volume, got shape {image.shape}")
        _check_real_pixels(plane)
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors, ValueError ...
        raise ImageLoadError(f"{path}: cannot read NIfTI: {exc}") from exc
    return _volume_plane(plane, path, where, percentiles)


_METAIMAGE_TYPE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip


def _check_metaimage(path: Path) -> None:
    """What ITK's MetaImage reader reports only as "File cannot be read ... Reason: Success" (its details go to
    stderr): a header that is not MetaImage, a missing data file, and uncompressed data shorter than the header
    says (or than ``CompressedDataSize``). Listed or patterned data files are left to ITK."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields: dict[str, str] = {}
    offset = 0
    for line in head.splitlines(keepends=True):
        offset += len(line)
        key, eq, value = line.decode("latin-1").partition("=")
        if not eq:
            continue  # a blank or comment line
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    if "elementdatafile" not in fields or "dimsize" not in fields:
        raise ImageLoadError(f"{path}: not a MetaImage header (no 'DimSize = ...' and 'ElementDataFile = ...' lines)")
    data_name = fields["elementdatafile"]
    if data_name.upper() == "LIST" or "%" in data_name:
        return
    try:
        if fields.get("compresseddata", "").lower() == "true":
            needed, what = int(fields["compresseddatasize"]), f"CompressedDataSize {fields['compresseddatasize']}"
        else:
            voxels = int(np.prod([int(v) for v in fields["dimsize"].split()]))
            channels = int(fields.get("elementnumberofchannels", "1"))
            needed = voxels * channels * _METAIMAGE_TYPE_BYTES[fields["elementtype"]]
            what = f"DimSize {fields['dimsize']}, {fields['elementtype']}"
    except (KeyError, ValueError):
        return  # an unusual header: ITK will say what it thinks
    if data_name.upper() == "LOCAL":
        data, have = path, path.stat().st_size - offset
    else:
        data = path.parent / data_name
        if not data.is_file():
            raise ImageLoadError(f"{path}: the MetaImage header names the data file {data_name!r}, which does not "
                                 f"exist next to it")
        have = data.stat().st_size - int(fields.get("headersize", "0") or 0)
    if have < needed:
        raise ImageLoadError(f"{path}: truncated MetaImage data: {data.name} holds {max(have, 0)} bytes of pixel data, "
                             f"the header ({what}) needs {needed}")


def _itk_error(exc: Exception) -> str:
    """ITK's multi-line exception text -> its last informative line, without source paths and object addresses."""
    lines = [line.strip() for line in str(exc).splitlines()]
    lines = [re.sub(r"^(?:ITK|itk::|sitk::)\s*ERROR:\s*\w+\(0x[0-9a-f]+\):\s*", "", line) for line in lines]
    useful = [line for line in lines if line and not line.startswith("Exception thrown in SimpleITK")
              and not line.endswith((": trouble", "trouble reading NRRD file", ":")) and "nrrdLoad: trouble" not in line]
    detail = re.sub(r"^\[nrrd\]\s*_?\w+:\s*", "", useful[-1]) if useful else "unknown error"
    if re.search(r"fread got only|expected \d+ bytes but received|data not read completely", detail):
        detail = f"truncated pixel data ({detail})"
    if detail.startswith("Reason:"):  # MetaIO prints its reason to stderr and ITK adds errno's ("Success")
        detail = "corrupt header or pixel data (ITK's MetaImage reader gives no reason here; see its stderr lines)"
    return detail


def _load_itk(path: Path, frame: FramePolicy | str | int, percentiles: Sequence[float]) -> np.ndarray:
    """NRRD / MetaImage via SimpleITK: 2-D as stored, 3-D reoriented to LPS and shown as an axial slice."""
    import SimpleITK as sitk

    suffix = next(s for s in ITK_SUFFIXES if path.name.lower().endswith(s))
    kind = "NRRD" if ITK_IMAGE_IOS[suffix] == "NrrdImageIO" else "MetaImage"
    if kind == "MetaImage":
        _check_metaimage(path)
    try:
        image = sitk.ReadImage(str(path), imageIO=ITK_IMAGE_IOS[suffix])
    except RuntimeError as exc:
        raise ImageLoadError(f"{path}: cannot read {kind}: {_itk_error(exc)}") from None
    size, components = tuple(image.GetSize()), image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 4 and size[3] == 1:  # one time point / channel of a 4-D file: a volume
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
    if image.GetDimension() not in (2, 3):
        raise ImageLoadError(f"{path}: {image.GetDimension()}-D image of size {size}; expected a 2-D image or a 3-D "
                             "volume (a 4-D series needs one volume extracted first)")
    pixel_type = image.GetPixelIDTypeAsString()
    colour = components in (3, 4) and image.GetPixelID() in (sitk.sitkVectorUInt8, sitk.sitkVectorUInt16)
    if components != 1 and not colour:
        raise ImageLoadError(f"{path}: {components} components per pixel ({pixel_type}); expected one grey value "
                             "or 8/16-bit RGB(A) (a vector field or multi-channel image needs one channel picked)")
    try:
        if image.GetDimension() == 2:
            _single_image(frame)
            plane, where = sitk.GetArrayFromImage(image), "the image"  # [y, x]: rows, columns as stored
        else:
            # axes -> Left, Posterior, Superior: the array is [z (I->S), y (A->P), x (R->L)]
            orient = sitk.DICOMOrientImageFilter()
            orient.SetDesiredCoordinateOrientation("LPS")
            orient.SetNumberOfThreads(1)  # a permute/flip; readers run one per DataLoader worker
            image = orient.Execute(image)
            array = sitk.GetArrayViewFromImage(image)
            k = _frame_index(array.shape[0], frame)
            plane, where = np.array(array[k]), f"axial slice {k} of {array.shape[0]}"  # radiological as it stands
        _check_real_pixels(plane)
    except ValueError as exc:  # frame index, pixel type
        raise ImageLoadError(f"{path}: {exc}") from None
    except RuntimeError as exc:  # ITK could not reorient (e.g. degenerate direction cosines)
        raise ImageLoadError(f"{path}: cannot reorient {kind} volume: {_itk_error(exc)}") from None
    if colour:
        full_scale = 255.0 if image.GetPixelID() == sitk.sitkVectorUInt8 else 65535.0
        return np.clip(_luma(plane / full_scale), 0.0, 1.0).astype(np.float32)
    return _volume_plane(plane, path, where, percentiles)


def _volume_plane(plane: np.ndarray, path: Path, where: str, percentiles: Sequence[float]) -> np.ndarray:
    """A NIfTI / ITK slice -> ``[0, 1]``: NaN voxels (masked out) show as 0; Inf, or a slice of only NaN, raise."""
    if np.issubdtype(plane.dtype, np.inexact):
        inf = np.count_nonzero(np.isinf(plane))
        if inf:
            raise ImageLoadError(f"{path}: non-finite pixel values ({inf} of {plane.size} pixel values of {where} "
                                 f"are Inf)")
        if np.isnan(plane).all():
            raise ImageLoadError(f"{path}: all {plane.size} pixel values of {where} are NaN (masked out), nothing to "
                                 "show; choose another frame")
    return robust_minmax(plane, percentiles)


def _load_npy(path: Path, frame: FramePolicy | str | int, percentiles: Sequence[float]) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return _array_to_grayscale(arr, frame, percentiles)
    except Exception as exc:
        raise ImageLoadError(f"{path}: cannot read NPY image: {exc}") from exc


@functools.lru_cache(maxsize=64)
def _npz_keys(path: str, mtime_ns: int) -> tuple[str, ...]:
    with np.load(path, allow_pickle=False) as archive:
        return tuple(archive.files)


@functools.lru_cache(maxsize=64)
def _npz_array(path: str, key: str, mtime_ns: int) -> np.ndarray:
    """One array of an archive, read once per process (``mtime_ns`` invalidates the entry if the file changes)."""
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


def _load_npz_member(reference: str, frame: FramePolicy | str | int, percentiles: Sequence[float]) -> np.ndarray:
    file, _, member = reference.rpartition("#")
    path = Path(file)
    if not path.is_file():
        raise ImageLoadError(f"{reference}: file not found: {path}")
    key, _, item = member.rpartition("/") if "/" in member else (member, "", "")
    if not key:
        raise ImageLoadError(f"{reference}: expected 'file.npz#<array>/<index>', e.g. '#train_images/12'")
    try:
        mtime = path.stat().st_mtime_ns
        keys = _npz_keys(str(path), mtime)
    except Exception as exc:
        raise ImageLoadError(f"{reference}: cannot read NPZ archive: {exc}") from exc
    if key not in keys and f"{key}_images" in keys:  # "#train/12" names MedMNIST's "train_images"
        key = f"{key}_images"
    if key not in keys:
        raise ImageLoadError(f"{reference}: no array {key!r} in the archive (it holds {', '.join(keys)})")
    try:
        arr = _npz_array(str(path), key, mtime)
        if item:
            arr = arr[_frame_index(len(arr), int(item))]
        return _array_to_grayscale(arr, frame, percentiles)
    except Exception as exc:
        raise ImageLoadError(f"{reference}: bad NPZ member {member!r}: {exc}") from exc


def load_grayscale(
    path_or_reference: str | os.PathLike,
    frame: FramePolicy | str | int = FramePolicy.MIDDLE,
    window: WindowPolicy | str = WindowPolicy.DICOM_OR_MINMAX,
    fixed_window: tuple[float, float] = DEFAULT_FIXED_WINDOW,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Load any supported image as displayed: float32 ``[H, W]`` in ``[0, 1]`` at native size.

    Args:
        path_or_reference: a file path, or ``"file.npz#<array>/<index>"``.
        frame: :class:`FramePolicy` or an integer index, for stacks.
        window, fixed_window: DICOM intensity policy (see :class:`WindowPolicy`).
        percentiles: robust min-max range for data without an absolute scale.

    Raises:
        ImageLoadError: missing or empty file, unsupported format, undecodable or truncated content, bad NPZ
            reference or frame, bad pixels (NaN/Inf, none, complex, 2 channels) -- see the module docstring.
    """
    reference = os.fspath(path_or_reference)
    if "#" in reference and reference.rpartition("#")[0].lower().endswith(".npz"):
        return _load_npz_member(reference, frame, percentiles)
    path = Path(reference)
    if not path.is_file():
        raise ImageLoadError(f"{path}: file not found")
    try:
        empty = path.stat().st_size == 0
    except OSError as e:
        raise ImageLoadError(f"{path}: cannot read: {e.strerror or e}") from None
    if empty:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return _load_nifti(path, frame, percentiles)
    if name.endswith(ITK_SUFFIXES):
        return _load_itk(path, frame, percentiles)
    if name.endswith(METAIMAGE_DATA_SUFFIXES):
        raise ImageLoadError(f"{path}: a {path.suffix} file holds the pixels of a MetaImage without its header; load "
                             "the .mhd file that names it")
    if name.endswith(".npy"):
        return _load_npy(path, frame, percentiles)
    if name.endswith(".npz"):
        raise ImageLoadError(f"{path}: an NPZ archive needs a member reference, e.g. '{path}#train_images/0'")
    if name.endswith(PILLOW_SUFFIXES):
        return _load_pillow(path, frame, percentiles)
    preamble = _has_dicom_preamble(path)
    if preamble or name.endswith(DICOM_SUFFIXES) or not path.suffix:
        ds = _read_dicom(path, preamble)
        return dicom_to_grayscale(ds, frame, window, fixed_window, percentiles)
    try:  # unknown suffix: DICOM files often carry none or an arbitrary one (e.g. a UID ending in ".123")
        ds = _read_dicom(path, preamble=False)
    except ImageLoadError:
        ds = None
    if ds is not None and any(keyword in ds for keyword in PIXEL_KEYWORDS):
        return dicom_to_grayscale(ds, frame, window, fixed_window, percentiles)
    raise ImageLoadError(
        f"{path}: unsupported image format {path.suffix!r} (expected DICOM, PNG/JPEG/BMP/TIFF, NIfTI, NRRD, "
        "MetaImage .mha/.mhd, NPY or an NPZ member reference 'file.npz#<array>/<index>')"
    )


# ------------------------------------------------------------------------------------------------ transforms


class LoadGrayscaleImage(Transform):
    """Load one image file as a float32 ``MetaTensor`` ``[1, H, W]`` in ``[0, 1]``, oriented as displayed.

    Args:
        spatial_size: output ``(H, W)`` (an int means square); ``None`` keeps the native size. Resizing uses
            MONAI's :class:`~monai.transforms.Resize`: ``area`` (average over each output pixel's footprint, which
            is itself an anti-aliasing box filter) when no axis grows, else ``bilinear``.
        frame: :class:`FramePolicy` for stacks (DICOM multi-frame, NIfTI/NRRD/MetaImage volume, NPY/NPZ stacks,
            TIFF pages).
        frame_index: an explicit index into the stack (negative counts from the end); overrides ``frame``.
        window: :class:`WindowPolicy` for monochrome DICOM.
        fixed_window: ``(centre, width)`` in modality units for ``WindowPolicy.FIXED`` (default CT L40/W400 HU).
        percentiles: robust min-max percentiles (DICOM without a window, NIfTI/NRRD/MetaImage, non-uint8 arrays).
        anti_aliasing: also Gaussian-smooth before downsampling (MONAI ``Resize(anti_aliasing=True)``). Off by
            default: MONAI's Gaussian pads with zeros, darkening the border rows/columns by ~15-30 %, and ``area``
            already averages every source pixel.

    Meta: ``filename_or_obj`` (the path or NPZ reference) and ``spatial_shape`` (native ``(H, W)``).

    Raises:
        ImageLoadError: see :func:`load_grayscale`.
    """

    def __init__(
        self,
        spatial_size: Sequence[int] | int | None = (64, 64),
        frame: FramePolicy | str = FramePolicy.MIDDLE,
        frame_index: int | None = None,
        window: WindowPolicy | str = WindowPolicy.DICOM_OR_MINMAX,
        fixed_window: Sequence[float] = DEFAULT_FIXED_WINDOW,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        anti_aliasing: bool = False,
    ) -> None:
        if spatial_size is not None:
            spatial_size = (int(spatial_size),) * 2 if isinstance(spatial_size, int) else tuple(map(int, spatial_size))
            if len(spatial_size) != 2 or min(spatial_size) < 1:
                raise ValueError(f"spatial_size must be None, an int or (H, W) >= 1, got {spatial_size}")
        if len(fixed_window) != 2 or not fixed_window[1] > 0:
            raise ValueError(f"fixed_window must be (centre, width > 0), got {fixed_window}")
        if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles}")
        self.spatial_size = spatial_size
        self.frame: FramePolicy | int = FramePolicy(frame) if frame_index is None else int(frame_index)
        self.window = WindowPolicy(window)
        self.fixed_window = (float(fixed_window[0]), float(fixed_window[1]))
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        if spatial_size is not None:
            self._shrink = Resize(spatial_size, mode="area", anti_aliasing=anti_aliasing)
            self._grow = Resize(spatial_size, mode="bilinear", align_corners=False, anti_aliasing=anti_aliasing)

    def __call__(self, path_or_reference: str | os.PathLike) -> MetaTensor:
        image = load_grayscale(path_or_reference, self.frame, self.window, self.fixed_window, self.percentiles)
        meta = {"filename_or_obj": os.fspath(path_or_reference), "spatial_shape": np.asarray(image.shape)}
        out = MetaTensor(torch.from_numpy(np.ascontiguousarray(image)[None]), meta=meta)
        if self.spatial_size is None or tuple(image.shape) == self.spatial_size:
            return out
        grows = any(t > s for t, s in zip(self.spatial_size, image.shape))
        out = (self._grow if grows else self._shrink)(out)
        return out.clamp_(0.0, 1.0)


class LoadGrayscaleImaged(MapTransform):
    """Dictionary twin of :class:`LoadGrayscaleImage`: replaces each path under ``keys`` with its image tensor.

    The path stays available as ``d[key].meta["filename_or_obj"]``. Arguments as for the array transform.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int | None = (64, 64),
        frame: FramePolicy | str = FramePolicy.MIDDLE,
        frame_index: int | None = None,
        window: WindowPolicy | str = WindowPolicy.DICOM_OR_MINMAX,
        fixed_window: Sequence[float] = DEFAULT_FIXED_WINDOW,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        anti_aliasing: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadGrayscaleImage(
            spatial_size, frame, frame_index, window, fixed_window, percentiles, anti_aliasing
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
