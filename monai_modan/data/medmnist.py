"""MedMNIST ``.npz`` archives -> one :class:`~monai_modan.data.records.ImageRecord` per image.

A MedMNIST file (Yang et al., *Sci Data* 10:41, 2023) holds ``{train,val,test}_images`` (uint8; ``[N, H, W]``,
``[N, H, W, 3]`` or ``[N, D, H, W]``) and ``{train,val,test}_labels`` (``[N, 1]``, or ``[N, K]`` multi-label). The whole
file is one modality and one anatomy, so the labels come from a per-file mapping keyed by the file stem: the known
MedMNIST flags below, extended or overridden by the caller's ``modality_anatomy``. Images are not copied: each record
points into the archive as ``"/abs/path/breastmnist.npz#train_images/12"`` (the reader resolves this form), and
only the array headers are read while indexing (float image arrays, which the official uint8 files are not, are
also scanned once for NaN/Inf pixels).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..labels.vocabulary import LabelSpace
from .records import ImageRecord, IndexResult, SkippedFile

__all__ = ["MedMNISTError", "MEDMNIST_MODALITY_ANATOMY", "MEDMNIST_SPLITS", "index_medmnist", "medmnist_reference"]

# MedMNIST split name -> datalist split
MEDMNIST_SPLITS = {"train": "training", "val": "validation", "test": "test"}

# MedMNIST flag -> (modality, anatomy) in the default vocabulary. Size variants (``_64``, ``_128``, ``_224``) share
# their flag's entry.
MEDMNIST_MODALITY_ANATOMY: dict[str, tuple[str, str]] = {
    "chestmnist": ("XR", "chest"),  # NIH ChestX-ray14, 14 labels (multi-label)
    "pneumoniamnist": ("XR", "chest"),  # paediatric CXR (Kermany 2018); 0 normal, 1 pneumonia
    "breastmnist": ("US", "breast"),  # BUSI; 0 = malignant, 1 = normal + benign
    "retinamnist": ("OP", "eye"),  # fundus photographs (DeepDRiD); ordinal DR grade 0-4
    "octmnist": ("OP", "eye"),  # retinal OCT; DICOM modality OPT, which the vocabulary maps to OP
    "organamnist": ("CT", "abdomen"),  # axial CT slices (LiTS)
    "organcmnist": ("CT", "abdomen"),  # coronal
    "organsmnist": ("CT", "abdomen"),  # sagittal
    "organmnist3d": ("CT", "abdomen"),
    "nodulemnist3d": ("CT", "chest"),  # LIDC-IDRI nodule crops
    "fracturemnist3d": ("CT", "chest"),  # RibFrac rib fracture crops
    "adrenalmnist3d": ("CT", "abdomen"),  # binary shape MASKS of the adrenal gland, not CT intensities
    "vesselmnist3d": ("MR", "head"),  # vessel shapes reconstructed from brain MRA (IntrA)
}
# Known flags whose modality the default vocabulary has no class for: the user must decide.
_NOT_RADIOLOGY = {
    "pathmnist": "colon histopathology",
    "dermamnist": "dermatoscopy",
    "bloodmnist": "blood-cell microscopy",
    "tissuemnist": "kidney-cortex microscopy",
    "synapsemnist3d": "electron microscopy",
}
_NOTES = {
    "breastmnist": "breastmnist: task_label 0 = malignant, 1 = normal or benign (MedMNIST merges normal into benign); "
                   "for 'malignant = positive' use 1 - task_label",
    "adrenalmnist3d": "adrenalmnist3d: images are binary shape masks (0/255) of the adrenal gland derived from CT, "
                      "not CT intensities",
    "vesselmnist3d": "vesselmnist3d: images are binary vessel shapes reconstructed from MRA, not MR intensities",
    "chestmnist": "chestmnist: task_label is a list of 14 binary findings (multi-label)",
}
_SIZE_SUFFIX = re.compile(r"_(?:28|64|128|224)$")


class MedMNISTError(ValueError):
    """A MedMNIST file cannot be indexed; the message names the file and the cause."""


def medmnist_reference(path: str | Path, split: str, index: int) -> str:
    """The image reference stored in a record: ``"/abs/path/x.npz#<split>_images/<index>"``."""
    return f"{Path(path).resolve()}#{split}_images/{int(index)}"


def _flag(stem: str) -> str:
    return _SIZE_SUFFIX.sub("", stem.lower())


def _files(paths_or_dir: str | Path | Iterable[str | Path]) -> tuple[list[Path], Path]:
    """Expand a folder (its ``*.npz``, sorted), one file, or several files; also return the index root."""
    if isinstance(paths_or_dir, (str, Path)):
        p = Path(paths_or_dir)
        if p.is_dir():
            files = sorted(p.glob("*.npz"))
            if not files:
                raise MedMNISTError(f"{p}: folder holds no .npz files")
            return files, p.resolve()
        return [p], p.resolve().parent
    files = [Path(p) for p in paths_or_dir]
    if not files:
        raise MedMNISTError("no MedMNIST files given")
    parents = {f.resolve().parent for f in files}
    return files, parents.pop() if len(parents) == 1 else Path("/")


def _labels_for(stem: str, path: Path, space: LabelSpace, user: Mapping[str, tuple[str, str]]) -> tuple[dict, dict]:
    """``(labels, label_sources)`` of every image of one file."""
    flag = _flag(stem)
    key = next((k for k in (stem, stem.lower(), flag) if k in user), None)
    if key is not None:
        pair, source = user[key], f"mapping:{key}"
    elif flag in MEDMNIST_MODALITY_ANATOMY:
        pair, source = MEDMNIST_MODALITY_ANATOMY[flag], f"medmnist:{flag}"
    else:
        what = f" is {_NOT_RADIOLOGY[flag]}, which the default vocabulary has no modality for; it" if flag in _NOT_RADIOLOGY else ""
        raise MedMNISTError(
            f"{path}: dataset {stem!r}{what} has no modality/anatomy mapping; pass "
            f"modality_anatomy={{{stem!r}: (<modality>, <anatomy>)}} (known flags: {sorted(MEDMNIST_MODALITY_ANATOMY)})")
    labels: dict[str, str | None] = {g: None for g in space.names}
    sources: dict[str, str | None] = {g: None for g in space.names}
    for group, value in zip(("modality", "anatomy"), pair):
        if group not in space:
            continue
        canonical = space[group].canonical(value)
        if canonical is None:
            raise MedMNISTError(f"{path}: {group} {value!r} of dataset {stem!r} ({source}) is not a class or synonym "
                                f"of the label space's {group} group {space[group].classes}")
        labels[group], sources[group] = canonical, source
    return labels, sources


def _check_mapping(user: Mapping[str, tuple[str, str]], space: LabelSpace) -> None:
    """Validate the caller's mapping up front: every entry a (modality, anatomy) pair the label space knows."""
    for key, pair in user.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise MedMNISTError(f"modality_anatomy[{key!r}] must be a (modality, anatomy) pair, got {pair!r}")
        for group, value in zip(("modality", "anatomy"), pair):
            if group in space and space[group].canonical(value) is None:
                raise MedMNISTError(f"modality_anatomy[{key!r}]: {group} {value!r} is not a class or synonym of the "
                                    f"label space's {group} group {space[group].classes}")


def _array_header(archive: zipfile.ZipFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``key`` from its ``.npy`` header only (no decompression of the data)."""
    try:
        with archive.open(f"{key}.npy") as fp:
            version = np.lib.format.read_magic(fp)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fp)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise MedMNISTError(f"{path}: array {key!r} is not a readable .npy member ({e})") from None
    return shape, dtype


def _check_images(path: Path, split: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """What no reader can show, from the ``.npy`` header alone: a non-real pixel type, 2 channels, no pixels."""
    name = f"{path}: {split}_images"
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_):
        raise MedMNISTError(f"{name} has pixel type {dtype}; expected integer, float or bool pixels")
    if len(shape) == 4 and shape[-1] == 2:
        raise MedMNISTError(f"{name} has shape {shape}: 2 channels per image; expected [N, H, W, 1|3|4] or [N, D, H, W]")
    if 0 in shape[1:]:
        raise MedMNISTError(f"{name} has shape {shape}: images without pixels")


def _nonfinite_images(npz: Any, split: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Indices of the images with NaN/Inf pixels; only float arrays (not the official uint8) are read for it."""
    if not np.issubdtype(dtype, np.floating) or not shape[0]:
        return np.zeros(0, np.int64)
    images = npz[f"{split}_images"]
    return np.flatnonzero(~np.isfinite(images.reshape(shape[0], -1)).all(axis=1))


def _read(path: Path, splits: Sequence[str]) -> dict[str, tuple[tuple[int, ...], np.ndarray, np.ndarray]]:
    """``{split: (image array shape, labels [N, K] int64, indices of images with NaN/Inf pixels)}``, validated."""
    if not path.is_file():
        raise MedMNISTError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise MedMNISTError(f"{path}: not an .npz archive (MedMNIST files are numpy .npz zip archives)")
    out = {}
    try:
        with zipfile.ZipFile(path) as archive, np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [f"{s}_{kind}" for s in splits for kind in ("images", "labels") if f"{s}_{kind}" not in keys]
            if missing:
                raise MedMNISTError(f"{path}: missing array(s) {missing}; the file holds {sorted(keys)} "
                                    "(a MedMNIST file has {train,val,test}_images and _labels)")
            for split in splits:
                shape, dtype = _array_header(archive, f"{split}_images", path)
                if len(shape) not in (3, 4):
                    raise MedMNISTError(f"{path}: {split}_images has shape {shape}; expected [N, H, W], [N, H, W, C] "
                                        "or [N, D, H, W]")
                _check_images(path, split, tuple(shape), dtype)
                labels = npz[f"{split}_labels"]
                if labels.ndim == 1:
                    labels = labels[:, None]
                if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
                    raise MedMNISTError(f"{path}: {split}_labels has shape {labels.shape} and dtype {labels.dtype}; "
                                        "expected integer labels [N] or [N, K]")
                if labels.shape[0] != shape[0]:
                    raise MedMNISTError(f"{path}: {split}_images has {shape[0]} images but {split}_labels has "
                                        f"{labels.shape[0]} labels")
                out[split] = (tuple(shape), labels.astype(np.int64), _nonfinite_images(npz, split, shape, dtype))
    except (OSError, zipfile.BadZipFile) as e:
        raise MedMNISTError(f"{path}: cannot read the archive ({e})") from None
    except ValueError as e:
        if isinstance(e, MedMNISTError):
            raise
        raise MedMNISTError(f"{path}: not a valid MedMNIST .npz ({e})") from None
    return out


def index_medmnist(paths_or_dir: str | Path | Iterable[str | Path], space: LabelSpace, *,
                   modality_anatomy: Mapping[str, tuple[str, str]] | None = None,
                   splits: Sequence[str] = ("train", "val", "test"), strict: bool = True) -> IndexResult:
    """Index MedMNIST archives: one record per image, labelled from the file's (modality, anatomy).

    Args:
        paths_or_dir: a folder (its ``*.npz`` files), one ``.npz`` file, or several.
        space: label space; ``modality`` and ``anatomy`` values are canonicalised through it (other groups stay
            unknown).
        modality_anatomy: ``{file stem or MedMNIST flag: (modality, anatomy)}``, added to and overriding the known
            flags (:data:`MEDMNIST_MODALITY_ANATOMY`; e.g. ``breastmnist`` -> US/breast, ``pneumoniamnist`` ->
            XR/chest, ``retinamnist`` -> OP/eye, ``adrenalmnist3d`` and ``adrenalmnist3d_64`` -> CT/abdomen -- note
            that AdrenalMNIST3D holds binary shape *masks*, not CT intensities). Values may be synonyms (``"MRI"``).
        splits: MedMNIST splits to index; ``train``/``val``/``test`` become the datalist splits
            ``training``/``validation``/``test``.
        strict: raise on the first bad file (default); if ``False`` a bad file is recorded in ``skipped`` and the
            others are indexed, and so is each image of a float archive with NaN/Inf pixels (reason
            ``"non-finite pixels"``, path = the image reference).

    Returns:
        :class:`IndexResult` (``source="medmnist"``). Each record's ``image`` is ``"<abs path>#<split>_images/<i>"``;
        ``extra`` is ``{"source": "medmnist", "dataset": <stem>, "task_label": <the file's own label>}`` where
        ``task_label`` is an ``int`` (a list of ints for multi-label files such as chestmnist). For breastmnist
        ``task_label`` 0 = malignant, 1 = normal or benign.

    Raises:
        MedMNISTError: (``strict``) a file is missing, not an ``.npz``, lacks a split's arrays, has images and labels
            of different lengths, images with a non-real pixel type, 2 channels or no pixels, images with NaN/Inf
            pixels (float archives are read for this), or has a stem with no mapping (the message says how to pass
            one).
    """
    unknown = [s for s in splits if s not in MEDMNIST_SPLITS]
    if unknown or not splits:
        raise MedMNISTError(f"splits must be a non-empty subset of {list(MEDMNIST_SPLITS)}, got {list(splits)}")
    files, root = _files(paths_or_dir)
    user = dict(modality_anatomy or {})
    _check_mapping(user, space)
    result = IndexResult(source="medmnist", root=str(root))
    notes = set()
    for path in files:
        stem = path.stem
        try:
            labels, sources = _labels_for(stem, path, space, user)
            arrays = _read(path, splits)
            bad = {split: b for split, (_, _, b) in arrays.items() if len(b)}
            if bad and strict:
                split, b = next(iter(bad.items()))
                raise MedMNISTError(f"{path}: {split}_images: {len(b)} of {arrays[split][0][0]} images have NaN/Inf "
                                    f"pixel values (first indices {b[:5].tolist()}); pass strict=False to skip them")
        except MedMNISTError as e:
            if strict:
                raise
            result.skipped.append(SkippedFile(str(path), "medmnist", str(e)))
            continue
        for split, (shape, task_labels, nonfinite) in arrays.items():
            multi = task_labels.shape[1] > 1
            skip = set(nonfinite.tolist())
            for i in range(shape[0]):
                if i in skip:
                    result.skipped.append(SkippedFile(medmnist_reference(path, split, i), "non-finite pixels",
                                                      "NaN/Inf pixel values"))
                    continue
                task_label = task_labels[i].tolist() if multi else int(task_labels[i, 0])
                result.records.append(ImageRecord(
                    image=medmnist_reference(path, split, i), labels=dict(labels), label_sources=dict(sources),
                    split=MEDMNIST_SPLITS[split],
                    extra={"source": "medmnist", "dataset": stem, "task_label": task_label}))
        note = _NOTES.get(_flag(stem))
        if note and note not in notes:
            notes.add(note)
            result.notes.append(note)
    return result
