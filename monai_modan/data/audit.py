"""Duplicate, near-duplicate, blank-image and leakage audit of datalists.

What is compared is what the pipeline trains on: every image is decoded by the project's one reader,
:func:`~monai_modan.data.readers.load_grayscale` (float ``[H, W]`` in ``[0, 1]``, as displayed), so every format the
project reads can be audited. **A 3-D volume** (NIfTI/NRRD/MetaImage volume, DICOM multi-frame, ``(D, H, W)`` NPY/NPZ
item) **is audited through its middle axial slice** -- the reader's default :class:`~monai_modan.data.readers.
FramePolicy` ``middle``, which is the one slice pretraining, fine-tuning and evaluation read from it. Two volumes
whose middle slices are the same picture are duplicates *for this pipeline* (its model never sees another slice),
and a volume whose middle slice is blank is a blank training image.

Per image the audit keeps a :class:`Fingerprint`:

- **exact key**: BLAKE2b of the decoded pixels quantised to 16 bits, with the shape. Equal keys = the same picture,
  whatever the file format, bytes or compression (a PNG and its lossless TIFF copy are exact duplicates).
- **perceptual hash**: ``imagehash.phash`` (64 bits: the signs of the 8 x 8 lowest DCT frequencies of a 32 x 32
  grey version against their median) of the image as 8-bit grey.
- **thumbnail**: 32 x 32 area-averaged, 8 bits, for the confirmation test below and the contact sheet.
- native size and the pixel standard deviation (blank / constant images).

A pair is a **near duplicate** when its pHash Hamming distance is at most ``max_distance`` *and* the aligned
correlation of the thumbnails (the largest Pearson correlation of their overlap over integer shifts of up to
``max_shift`` thumbnail pixels) is at least ``min_correlation``. The pHash alone is not enough on medical images:
images of one modality share their layout (every chest X-ray, every fundus disk), and at MedMNIST's 28 px unrelated
pairs of one data set fall within 8 bits of each other at a rate of ~1e-3 (docs/audit.md, measured); the
correlation test removes most of them. Both thresholds, and what they find and miss on real images, are measured
in docs/audit.md. Blank or constant images (pixel sd below ``blank_std``) are reported and left out of the
duplicate search (every blank image looks like every other).

The search never compares pairs in a Python loop: exact duplicates are grouped by key; near-duplicate candidates
come from XOR + popcount of the packed 64-bit hashes in numpy blocks (threads over row blocks), then only the
candidates are correlated, in vectorised chunks.

Fingerprints are cached beside each datalist (``<stem>.audit-cache.npz``), keyed by the **content** of what was
decoded: the SHA-256 of the file's bytes (a MetaImage ``.mhd`` with its data file), or for an
``file.npz#<array>/<i>`` item of the array item's bytes, dtype and shape; a file whose size and modification time
are unchanged is not even read again. A file copied elsewhere keeps its fingerprint; the cache is dropped when the
reader or the hash changes (:data:`READER_VERSION`, :data:`HASH_VERSION`).

Entry points: :func:`audit` (the library function), :func:`write_audit_report` (markdown + JSON + PNG contact sheet),
:func:`write_cleaned_datalists` (``--drop``), and :func:`find_leaks` (pretraining corpus against one task; what the
experiment runner calls).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as _package_version
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import torch
from monai.utils.enums import StrEnum
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..utils.defaults import (
    AUDIT_BLANK_STD,
    AUDIT_MAX_DISTANCE,
    AUDIT_MAX_SHIFT,
    AUDIT_MIN_CORRELATION,
    AUDIT_MIN_SIZE,
)
from ..utils.io import atomic_path, atomic_write_json, atomic_write_text, hash_file, read_text_file
from .datalist import DatalistError, load_datalist
from .downstream.task import TASK_FORMAT, load_task_datalist, write_task_datalist
from .readers import READER_VERSION, ImageLoadError, load_grayscale
from .records import SPLITS

__all__ = ["AUDIT_FORMAT", "HASH_VERSION", "AuditError", "AuditSettings", "Role", "Fingerprint", "Pair",
           "AuditedDatalist", "AuditReport", "fingerprint_image", "content_key", "hamming_pairs",
           "aligned_correlation", "audit", "find_leaks", "write_audit_report", "write_cleaned_datalists"]

logger = logging.getLogger(__name__)

AUDIT_FORMAT = "monai-modan/audit/1"
HASH_VERSION = 1  # bump when a fingerprint of the same pixels changes (hash, thumbnail, quantisation)
THUMB = 32  # thumbnail side (px) of the confirmation test
SHEET_SIDE = 96  # side (px) of one image on the contact sheet
_CHUNK = 128  # images per decoding job
_BLOCK_ROWS, _BLOCK_COLS = 128, 4096  # popcount tile: 512 K pairs, 4 MiB of XOR words (stays in cache: 4.6x
# faster than 512 x 32768 tiles, measured)
_LISTED_PAIRS = 2000  # pairs per section written to the JSON report (the counts are always complete)


class AuditError(ValueError):
    """An audit cannot run (a bad setting, an unreadable datalist); the message names the value or file."""


class Role(StrEnum):
    """What a datalist is in an audit: the pretraining corpus, or an evaluation task compared with it."""

    PRETRAINING = "pretraining"
    TASK = "task"


@dataclass(frozen=True)
class AuditSettings:
    """Thresholds of the audit (measured in docs/audit.md).

    Attributes:
        max_distance: largest pHash Hamming distance (of 64 bits) of a near-duplicate candidate.
        min_correlation: smallest aligned thumbnail correlation that confirms a candidate (``-1`` keeps every
            candidate: pHash alone).
        max_shift: largest shift (thumbnail pixels of 32, each way) searched when aligning two thumbnails.
        min_size: an image whose shorter side is below this many pixels is reported as too small.
        blank_std: an image whose pixel standard deviation (on the ``[0, 1]`` scale) is below this is blank.
    """

    max_distance: int = AUDIT_MAX_DISTANCE
    min_correlation: float = AUDIT_MIN_CORRELATION
    max_shift: int = AUDIT_MAX_SHIFT
    min_size: int = AUDIT_MIN_SIZE
    blank_std: float = AUDIT_BLANK_STD

    def __post_init__(self) -> None:
        def whole(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise AuditError(f"{name} must be an integer in [{low}, {high}], got {value!r}")

        whole("max_distance", 0, 64)
        whole("max_shift", 0, THUMB // 4)
        whole("min_size", 1, 1 << 20)
        for name, low, high in (("min_correlation", -1.0, 1.0), ("blank_std", 0.0, 0.5)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise AuditError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")


# ---------------------------------------------------------------------------------------------------- fingerprints


@dataclass
class Fingerprint:
    """What the audit keeps of one decoded image (see the module docstring)."""

    exact: bytes  # 16-byte BLAKE2b of the 16-bit quantised pixels and the shape
    phash: int  # 64-bit perceptual hash, bit 63 = first DCT sign
    thumb: np.ndarray  # [THUMB, THUMB] uint8
    height: int
    width: int
    std: float  # pixel standard deviation on the [0, 1] scale


def fingerprint_image(image: np.ndarray) -> Fingerprint:
    """The :class:`Fingerprint` of a decoded image (float ``[H, W]`` in ``[0, 1]``, e.g. from ``load_grayscale``)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    quantised = np.rint(np.clip(image, 0.0, 1.0) * 65535.0).astype("<u2")
    exact = hashlib.blake2b(f"{quantised.shape}|".encode(), digest_size=16)
    exact.update(quantised.tobytes())
    grey = Image.fromarray(np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8))
    bits = np.packbits(imagehash.phash(grey).hash.reshape(-1))
    thumb = np.asarray(Image.fromarray(image, mode="F").resize((THUMB, THUMB), Image.Resampling.BOX))
    return Fingerprint(exact=exact.digest(), phash=int.from_bytes(bits.tobytes(), "big"),
                       thumb=np.rint(np.clip(thumb, 0.0, 1.0) * 255.0).astype(np.uint8),
                       height=int(image.shape[0]), width=int(image.shape[1]), std=float(image.std(dtype=np.float64)))


def _npz_member(reference: str) -> tuple[str, str, int] | None:
    """``(file, array, index)`` of a ``file.npz#<array>/<i>`` reference (``#train/3`` names ``train_images``
    only at reading time), else ``None``."""
    file, sep, member = reference.rpartition("#")
    if not (sep and file.lower().endswith(".npz")):
        return None
    key, _, index = member.rpartition("/")
    return (file, key, int(index)) if key and index.isdigit() else None


def _metaimage_data_file(path: Path) -> Path | None:
    """The data file a ``.mhd`` header names (``ElementDataFile = x.raw``), when it is a separate file."""
    if path.suffix.lower() != ".mhd":
        return None
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", text, re.MULTILINE)
    if not match or match.group(1).upper() in ("LOCAL", "LIST") or match.group(1).startswith("%"):
        return None
    return path.parent / match.group(1)


def content_key(reference: str, arrays: dict[tuple[str, str], np.ndarray] | None = None) -> bytes:
    """SHA-256 (32 bytes) of what an image reference decodes from: the file's bytes (a ``.mhd`` with its data
    file), or an NPZ item's bytes, dtype and shape. ``arrays`` caches NPZ arrays across calls.

    Raises:
        OSError: the file cannot be read; KeyError / IndexError: no such NPZ array or item.
    """
    digest = hashlib.sha256()
    member = _npz_member(reference)
    if member is not None:
        file, key, index = member
        arrays = {} if arrays is None else arrays
        if (file, key) not in arrays:
            with np.load(file, allow_pickle=False) as archive:
                name = key if key in archive.files or f"{key}_images" not in archive.files else f"{key}_images"
                arrays[(file, key)] = archive[name]
        item = np.ascontiguousarray(arrays[(file, key)][index])
        digest.update(f"npz|{item.dtype.str}|{item.shape}|".encode())
        digest.update(item.tobytes())
        return digest.digest()
    paths = [Path(reference)]
    data_file = _metaimage_data_file(paths[0])
    if data_file is not None and data_file.is_file():
        paths.append(data_file)
    for path in paths:
        hash_file(path, digest)
    return digest.digest()


def _file_of(reference: str) -> str:
    member = _npz_member(reference)
    return member[0] if member else reference


def _stat(reference: str) -> tuple[int, int] | None:
    try:
        st = os.stat(_file_of(reference))
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _byte_rows(values: Sequence[bytes], width: int) -> np.ndarray:
    return np.frombuffer(b"".join(values), np.uint8).reshape(len(values), width)


class _FingerprintCache:
    """``content key -> Fingerprint`` and ``reference -> (size, mtime_ns, content key)``, in one ``.npz`` file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.prints: dict[bytes, Fingerprint] = {}
        self.memo: dict[str, tuple[int, int, bytes]] = {}
        self.changed = False
        if path is not None and path.is_file():
            try:
                self._load(path)
            except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
                logger.warning("audit cache %s unreadable (%s): rebuilding it", path, e)
                self.prints, self.memo = {}, {}

    @staticmethod
    def meta() -> dict[str, Any]:
        return {"format": "monai-modan/audit-cache/1", "hash_version": HASH_VERSION, "reader_version": READER_VERSION,
                "imagehash": _package_version("imagehash"), "thumb": THUMB}

    def _load(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(z["meta"].tobytes().decode()) != self.meta():
                logger.info("audit cache %s is from another reader or hash version: rebuilding it", path)
                return
            keys, exact, phash, thumbs = z["keys"], z["exact"], z["phash"], z["thumb"]
            shapes, stds = z["shape"], z["std"]
            for i in range(len(keys)):
                self.prints[keys[i].tobytes()] = Fingerprint(exact[i].tobytes(), int(phash[i]), thumbs[i],
                                                             int(shapes[i, 0]), int(shapes[i, 1]), float(stds[i]))
            refs = json.loads(z["memo_refs"].tobytes().decode())
            memo_keys = z["memo_key"]
            for k, (ref, size, mtime) in enumerate(zip(refs, z["memo_size"].tolist(), z["memo_mtime"].tolist())):
                self.memo[ref] = (size, mtime, memo_keys[k].tobytes())

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        keys = list(self.prints)
        prints = [self.prints[k] for k in keys]
        refs = list(self.memo)
        arrays = {
            "meta": np.frombuffer(json.dumps(self.meta()).encode(), np.uint8),
            # raw bytes as uint8 rows: numpy's "S" type would drop trailing zero bytes of a digest
            "keys": _byte_rows(keys, 32),
            "exact": _byte_rows([p.exact for p in prints], 16),
            "phash": np.array([p.phash for p in prints], dtype=np.uint64),
            "thumb": np.stack([p.thumb for p in prints]) if prints else np.zeros((0, THUMB, THUMB), np.uint8),
            "shape": np.array([(p.height, p.width) for p in prints], dtype=np.int64).reshape(-1, 2),
            "std": np.array([p.std for p in prints], dtype=np.float64),
            "memo_refs": np.frombuffer(json.dumps(refs).encode(), np.uint8),
            "memo_size": np.array([self.memo[r][0] for r in refs], dtype=np.int64),
            "memo_mtime": np.array([self.memo[r][1] for r in refs], dtype=np.int64),
            "memo_key": _byte_rows([self.memo[r][2] for r in refs], 32),
        }
        try:
            with atomic_path(self.path, suffix=".tmp") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)
        except OSError as e:  # the cache only saves time: a read-only data folder must not stop the audit
            logger.warning("audit cache not written (%s); the next audit decodes every image again", e)


def _fingerprint_reference(reference: str) -> Fingerprint | str:
    """The fingerprint of one image, or the reason it cannot be read (never raises for a bad file)."""
    try:
        return fingerprint_image(load_grayscale(reference))
    except ImageLoadError as e:  # names the file and the cause, never a header value
        return str(e)
    except Exception as e:  # noqa: BLE001 - one bad file is counted, never fatal
        return f"{reference}: {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _fingerprint_chunk(references: Sequence[str]) -> list[Fingerprint | str]:
    return [_fingerprint_reference(r) for r in references]


def _init_worker() -> None:
    torch.set_num_threads(1)  # as DataLoader workers: one intra-op thread per process


def _fingerprints(references: Sequence[str], workers: int, progress: bool) -> Iterator[Fingerprint | str]:
    """Fingerprints in input order: in this process for ``workers <= 1`` or few images, else ``workers``
    processes; a chunk whose worker died is redone image by image here, naming the images as crashed if that
    fails too."""
    with tqdm(total=len(references), disable=not progress, desc="audit: decoding", unit="img") as bar:
        if workers <= 1 or len(references) <= _CHUNK:
            for r in references:
                yield _fingerprint_reference(r)
                bar.update()
            return
        chunks = [references[i:i + _CHUNK] for i in range(0, len(references), _CHUNK)]
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            futures = [pool.submit(_fingerprint_chunk, c) for c in chunks]
            for chunk, future in zip(chunks, futures):
                try:
                    results = future.result()
                except BrokenProcessPool:
                    results = [f"{r}: the decoder crashed (its process died while reading this chunk)" for r in chunk]
                bar.update(len(chunk))
                yield from results


# ------------------------------------------------------------------------------------------------------- datalists


@dataclass
class AuditedDatalist:
    """One datalist of an audit and the rows it contributes (``offset`` .. ``offset + len(images)``)."""

    name: str
    path: Path
    role: Role
    kind: str  # "pretraining datalist" | "task datalist"
    images: list[str]  # resolved references, one per audited item
    where: list[tuple[str, int]]  # (split, index in that split) of each audited item
    labels: list[Any]  # the item's label (int for a task, tuple for a pretraining datalist)
    offset: int = 0
    splits: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def rows(self) -> range:
        return range(self.offset, self.offset + len(self.images))


def _resolve(image: str, base: Path) -> str:
    member = _npz_member(image)
    file = member[0] if member else image
    if os.path.isabs(file):
        return image
    resolved = os.path.abspath(base / file)
    return f"{resolved}#{image.rpartition('#')[2]}" if member else resolved


def _read_datalist(path: Path, role: Role, splits: Sequence[str] | None) -> AuditedDatalist:
    """Items of a pretraining datalist (``splits``; default every split) or of a task datalist (every item)."""
    try:
        text = read_text_file(path, "datalist", AuditError)
        fmt = json.loads(text).get("format") if text.lstrip().startswith("{") else None
    except json.JSONDecodeError as e:
        raise AuditError(f"{path} is not valid JSON ({e})") from None
    images, where, labels = [], [], []
    try:
        if fmt == TASK_FORMAT or fmt is None and role == Role.TASK:
            items, _ = load_task_datalist(path, check_images=False)  # a missing image is counted, not fatal
            kind, used = "task datalist", ("training",)
            for i, item in enumerate(items):
                images.append(item["image"])
                where.append(("training", i))
                labels.append(int(item["label"]))
        else:
            data = load_datalist(path)
            kind = "pretraining datalist"
            used = tuple(splits) if splits else tuple(s for s in SPLITS if s in data.splits)
            unknown = [s for s in used if s not in SPLITS]
            if unknown:
                raise AuditError(f"{path}: unknown split(s) {unknown}; a datalist has {', '.join(SPLITS)}")
            for split in used:
                for i, item in enumerate(data.items(split)):
                    images.append(_resolve(item["image"], path.parent.absolute()))
                    where.append((split, i))
                    labels.append(tuple(item["label"]))
    except (DatalistError, ValueError) as e:
        if isinstance(e, AuditError):
            raise
        raise AuditError(str(e)) from None
    return AuditedDatalist(name=path.stem, path=path, role=role, kind=kind, images=images, where=where,
                           labels=labels, splits=used)


# ----------------------------------------------------------------------------------------------------------- search


def _popcount(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 of ``x`` into the uint8 array ``out``."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x, out=out)
    table = np.array([bin(i).count("1") for i in range(256)], np.uint8)  # numpy 1.x
    out[...] = table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)
    return out


def hamming_pairs(a: np.ndarray, b: np.ndarray | None, max_distance: int,
                  threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of 64-bit hashes within ``max_distance`` bits: ``(i, j, distance)`` int64 arrays.

    ``b is None``: pairs within ``a`` with ``i < j``; else ``i`` indexes ``a`` and ``j`` indexes ``b``. Exact (no
    pair is skipped): XOR + popcount over cache-sized tiles of ``[128, 4096]`` pairs written into reused buffers,
    ``threads`` row blocks at once (numpy releases the GIL). Cost: ``len(a) * len(b)`` popcounts, no Python loop
    over pairs.
    """
    a = np.ascontiguousarray(a, dtype=np.uint64)
    within = b is None
    b = a if within else np.ascontiguousarray(b, dtype=np.uint64)
    rows_n, cols_n = _BLOCK_ROWS, _BLOCK_COLS
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))

    def block(i0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = a[i0:i0 + rows_n, None]
        xor = np.empty((rows_n, cols_n), np.uint64)
        count = np.empty((rows_n, cols_n), np.uint8)
        hit = np.empty((rows_n, cols_n), bool)
        found_i, found_j, found_d = [], [], []
        for j0 in range(i0 if within else 0, len(b), cols_n):
            cols = b[None, j0:j0 + cols_n]
            r, c = rows.shape[0], cols.shape[1]
            d = _popcount(np.bitwise_xor(rows, cols, out=xor[:r, :c]), out=count[:r, :c])
            h = np.less_equal(d, max_distance, out=hit[:r, :c])
            if within and j0 == i0:  # the diagonal tile: keep j > i
                h &= np.arange(c)[None, :] > np.arange(r)[:, None]
            if h.any():
                ii, jj = np.nonzero(h)
                found_i.append(ii + i0)
                found_j.append(jj + j0)
                found_d.append(d[ii, jj].astype(np.int64))
        if not found_i:
            return empty
        return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)

    starts = range(0, len(a), rows_n)
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(block, starts))
    else:
        parts = [block(i0) for i0 in starts]
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return empty
    return tuple(np.concatenate([p[k] for p in parts]).astype(np.int64) for k in range(3))  # type: ignore[return-value]


def _centred(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails ``[N, S, S]`` minus their own mean, on the ``[-1, 1]`` scale (float32 sums are then exact
    enough; a Pearson correlation does not change)."""
    t = np.asarray(thumbs, np.float64)
    return ((t - t.mean(axis=(1, 2), keepdims=True)) / 255.0).astype(np.float32)


def _window_stats(centred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sums, sums of squares)`` ``[N, 2k+1, 2k+1]`` (float64) of the window each shift ``(dy, dx)`` (at ``[k + dy,
    k + dx]``) keeps of an image in the *first* role: rows ``max(0, -dy) .. S - max(0, dy)``, the same for columns.
    In the second role the window of ``(dy, dx)`` is the first role's window of ``(-dy, -dx)``."""
    x = centred.astype(np.float64)
    n, side = x.shape[0], x.shape[-1]
    sums, squares = np.zeros((n, 2 * k + 1, 2 * k + 1)), np.zeros((n, 2 * k + 1, 2 * k + 1))
    for values, out in ((x, sums), (x * x, squares)):
        ii = np.zeros((n, side + 1, side + 1))
        ii[:, 1:, 1:] = values.cumsum(axis=2).cumsum(axis=1)
        for dy in range(-k, k + 1):
            y0, y1 = max(0, -dy), side - max(0, dy)
            for dx in range(-k, k + 1):
                x0, x1 = max(0, -dx), side - max(0, dx)
                out[:, k + dy, k + dx] = ii[:, y1, x1] - ii[:, y0, x1] - ii[:, y1, x0] + ii[:, y0, x0]
    return sums, squares


def _correlate(first: np.ndarray, second: np.ndarray, stats_first: tuple[np.ndarray, np.ndarray],
               stats_second: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    """:func:`aligned_correlation` of centred thumbnails with their :func:`_window_stats`."""
    p, side = first.shape[0], first.shape[-1]
    if p == 0:
        return np.zeros(0, np.float32)
    with torch.no_grad():  # [P, 2k+1, 2k+1]: sum_ij a[i, j] b[i + dy, j + dx] at [k + dy, k + dx], one group per pair
        padded = torch.nn.functional.pad(torch.from_numpy(np.ascontiguousarray(second)), (k, k, k, k))[None]
        products = torch.nn.functional.conv2d(padded, torch.from_numpy(np.ascontiguousarray(first))[:, None],
                                              groups=p)[0].double().numpy()
    shifts = np.arange(-k, k + 1)
    n = (side - np.abs(shifts))[:, None] * (side - np.abs(shifts))[None, :]  # overlap pixels of each shift
    sa, qa = stats_first
    sb, qb = stats_second[0][:, ::-1, ::-1], stats_second[1][:, ::-1, ::-1]  # second role: the flipped window
    va, vb = np.clip(qa - sa * sa / n, 0, None), np.clip(qb - sb * sb / n, 0, None)
    norm = np.sqrt(va * vb)
    ok = norm > 1e-9 * n
    r = np.where(ok, (products - sa * sb / n) / np.where(ok, norm, 1.0), -1.0)
    return np.clip(r.reshape(p, -1).max(axis=1), -1.0, 1.0).astype(np.float32)


def aligned_correlation(first: np.ndarray, second: np.ndarray, max_shift: int) -> np.ndarray:
    """``[P]`` largest Pearson correlation of two stacks of thumbnails ``[P, S, S]`` over integer shifts ``(dy,
    dx)`` with ``|dy|, |dx| <= max_shift``, each on the overlapping part; ``-1`` where an overlap is constant.

    The products of every shift come from one grouped ``conv2d`` (pair ``p`` = channel ``p``, the second stack
    zero-padded by ``max_shift``) on thumbnails centred and scaled to ``[-1, 1]``; window sums and sums of squares
    from float64 integral images (computed once per image when called through :func:`audit`).
    """
    a, b = _centred(first), _centred(second)
    return _correlate(a, b, _window_stats(a, max_shift), _window_stats(b, max_shift), max_shift)


@dataclass
class Pair:
    """Two audited images (rows of the audit) that are the same picture (``exact``) or near duplicates."""

    a: int
    b: int
    exact: bool
    distance: int  # pHash Hamming distance
    correlation: float  # aligned thumbnail correlation (1.0 for an exact pair)
    same_content: bool = False  # the files (NPZ items) are byte-identical, not only their decoded pictures


# ----------------------------------------------------------------------------------------------------------- report


@dataclass
class AuditReport:
    """The audit's findings; rows index :attr:`images` (the concatenation of every datalist's images)."""

    settings: AuditSettings
    datalists: list[AuditedDatalist]
    fingerprints: list[Fingerprint | None]  # None: unreadable
    unreadable: dict[int, str]  # row -> reason
    blank: dict[int, float]  # row -> pixel sd (blank or constant)
    too_small: dict[int, tuple[int, int]]  # row -> (height, width)
    within: dict[str, list[Pair]]  # datalist name -> pairs inside it
    leaks: dict[str, list[Pair]]  # task name -> (pretraining row, task row) pairs
    timing: dict[str, float] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)

    @property
    def images(self) -> list[str]:
        return [image for d in self.datalists for image in d.images]

    def datalist_of(self, row: int) -> AuditedDatalist:
        return next(d for d in self.datalists if row in d.rows)

    def label(self, row: int) -> Any:
        d = self.datalist_of(row)
        return d.labels[row - d.offset]

    def leaked_rows(self, task: str) -> list[int]:
        """Rows of ``task`` whose image is also (exactly or nearly) in the pretraining corpus."""
        return sorted({p.b for p in self.leaks.get(task, [])})

    def describe(self, row: int) -> dict[str, Any]:
        d = self.datalist_of(row)
        split, index = d.where[row - d.offset]
        return {"datalist": d.name, "split": split, "index": index, "image": d.images[row - d.offset]}

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per datalist: images, unreadable, blank, too small, exact / near pairs and images in them,
        conflicting-label pairs, and for a task the images also seen in pretraining."""
        out = {}
        for d in self.datalists:
            pairs = self.within.get(d.name, [])
            counts = {
                "images": len(d), "unreadable": sum(r in self.unreadable for r in d.rows),
                "blank_or_constant": sum(r in self.blank for r in d.rows),
                "too_small": sum(r in self.too_small for r in d.rows),
                "exact_pairs": sum(p.exact for p in pairs),
                "exact_pairs_same_file_content": sum(p.same_content for p in pairs),
                "near_pairs": sum(not p.exact for p in pairs),
                "images_in_exact_pairs": len({r for p in pairs if p.exact for r in (p.a, p.b)}),
                "images_in_near_pairs": len({r for p in pairs if not p.exact for r in (p.a, p.b)}),
                "conflicting_label_pairs": sum(self.label(p.a) != self.label(p.b) for p in pairs),
            }
            if d.role == Role.TASK and any(x.role == Role.PRETRAINING for x in self.datalists):
                leaks = self.leaks.get(d.name, [])
                counts["seen_in_pretraining"] = len(self.leaked_rows(d.name))
                counts["seen_in_pretraining_exact"] = len({p.b for p in leaks if p.exact})
            out[d.name] = counts
        return out

    def to_dict(self, max_pairs: int = _LISTED_PAIRS) -> dict[str, Any]:
        def pair(p: Pair) -> dict[str, Any]:
            return {"a": self.describe(p.a), "b": self.describe(p.b), "kind": "exact" if p.exact else "near",
                    "same_file_content": p.same_content, "phash_distance": p.distance,
                    "correlation": round(p.correlation, 4),
                    "same_label": self.label(p.a) == self.label(p.b)}

        def listed(pairs: list[Pair]) -> dict[str, Any]:
            ordered = sorted(pairs, key=lambda p: (not p.exact, p.distance, -p.correlation))
            return {"count": len(pairs), "listed": min(len(pairs), max_pairs),
                    "pairs": [pair(p) for p in ordered[:max_pairs]]}

        return {
            "format": AUDIT_FORMAT,
            "settings": asdict(self.settings),
            "policy": {"reader": f"monai_modan.data.readers.load_grayscale (READER_VERSION {READER_VERSION})",
                       "volumes": "the middle axial slice (FramePolicy.middle), the slice every stage trains on",
                       "exact": "BLAKE2b of the decoded pixels quantised to 16 bits, with the shape",
                       "near": f"imagehash {_package_version('imagehash')} phash (64 bits) Hamming distance <= "
                               f"max_distance and aligned correlation of {THUMB} px thumbnails (shifts up to "
                               "max_shift px) >= min_correlation",
                       "blank": "pixel sd < blank_std (on [0, 1]); blank images are left out of the duplicate search"},
            "datalists": [{"name": d.name, "path": str(d.path), "role": d.role.value, "kind": d.kind,
                           "splits": list(d.splits), "images": len(d)} for d in self.datalists],
            "summary": self.summary(),
            "unreadable": [{**self.describe(r), "reason": why} for r, why in sorted(self.unreadable.items())],
            "blank_or_constant": [{**self.describe(r), "std": round(s, 6)} for r, s in sorted(self.blank.items())],
            "too_small": [{**self.describe(r), "height": hw[0], "width": hw[1]}
                          for r, hw in sorted(self.too_small.items())],
            "within": {name: listed(pairs) for name, pairs in self.within.items()},
            "leakage": {name: {"seen_in_pretraining": len(self.leaked_rows(name)), **listed(pairs)}
                        for name, pairs in self.leaks.items()},
            "timing_seconds": {k: round(v, 3) for k, v in self.timing.items()},
            "cache": dict(self.cache),
        }


# ------------------------------------------------------------------------------------------------------------ audit


def _unique_names(datalists: list[AuditedDatalist]) -> None:
    seen: dict[str, int] = defaultdict(int)
    for d in datalists:
        seen[d.name] += 1
        if seen[d.name] > 1:
            d.name = f"{d.name}-{seen[d.name]}"


def _fingerprint_datalist(d: AuditedDatalist, use_cache: bool, workers: int, progress: bool,
                          counts: dict[str, int]) -> tuple[list[Fingerprint | str], list[bytes | None]]:
    """Every image's fingerprint (or the reason it is unreadable) and content key, from the datalist's cache where
    it can."""
    cache = _FingerprintCache(d.path.with_name(d.path.stem + ".audit-cache.npz") if use_cache else None)
    out: list[Fingerprint | str | None] = [None] * len(d)
    keys: list[bytes | None] = [None] * len(d)
    arrays: dict[tuple[str, str], np.ndarray] = {}
    todo: list[int] = []
    for i, ref in enumerate(d.images):
        stat = _stat(ref)
        if stat is None:
            out[i] = f"{_file_of(ref)}: file not found"
            continue
        memo = cache.memo.get(ref)
        key = memo[2] if memo is not None and memo[:2] == stat else None
        if key is None:
            try:
                key = content_key(ref, arrays)
            except (OSError, KeyError, IndexError, ValueError) as e:
                out[i] = f"{ref}: cannot read: {e}"
                continue
            cache.memo[ref] = (*stat, key)
            cache.changed = True
        keys[i] = key
        if key in cache.prints:
            out[i] = cache.prints[key]
            counts["cached"] += 1
        else:
            todo.append(i)
    arrays.clear()
    first_of: dict[bytes, int] = {}
    unique = [i for i in todo if first_of.setdefault(keys[i], i) == i]  # identical files decode once
    for i, result in zip(unique, _fingerprints([d.images[i] for i in unique], workers, progress)):
        out[i] = result
        if isinstance(result, Fingerprint):
            cache.prints[keys[i]] = result
            cache.changed = True
    for i in todo:
        out[i] = out[first_of[keys[i]]]
    counts["decoded"] += len(unique)
    cache.save()
    return out, keys  # type: ignore[return-value]


@dataclass
class _Table:
    """The fingerprints of every audited row as arrays (rows that are unreadable hold zeros)."""

    phash: np.ndarray  # [N] uint64
    exact: np.ndarray  # [N, 2] uint64 (the 16-byte key)
    thumb: np.ndarray  # [N, THUMB, THUMB] uint8
    content: list[bytes | None]  # content keys (file / NPZ item bytes)

    @classmethod
    def of(cls, prints: Sequence[Fingerprint | None], content: Sequence[bytes | None]) -> _Table:
        n = len(prints)
        table = cls(np.zeros(n, np.uint64), np.zeros((n, 2), np.uint64), np.zeros((n, THUMB, THUMB), np.uint8),
                    list(content))
        for r, p in enumerate(prints):
            if p is not None:
                table.phash[r] = p.phash
                table.exact[r] = np.frombuffer(p.exact, np.uint64)
                table.thumb[r] = p.thumb
        return table


def _pairs(table: _Table, rows_a: np.ndarray, rows_b: np.ndarray | None, settings: AuditSettings,
           threads: int) -> list[Pair]:
    """Exact and near-duplicate pairs among ``rows_a`` (``rows_b is None``) or between ``rows_a`` and ``rows_b``
    (then ``Pair.a`` is from ``rows_a``)."""
    pairs: list[Pair] = []
    by_key: dict[bytes, list[int]] = defaultdict(list)  # exact: grouped by key
    for r in rows_a.tolist():
        by_key[table.exact[r].tobytes()].append(r)
    same = table.content
    if rows_b is None:
        for members in by_key.values():
            pairs += [Pair(x, y, True, 0, 1.0, same[x] == same[y]) for k, x in enumerate(members)
                      for y in members[k + 1:]]
    else:
        for r in rows_b.tolist():
            pairs += [Pair(m, r, True, 0, 1.0, same[m] == same[r]) for m in by_key.get(table.exact[r].tobytes(), ())]
    # near: pHash candidates that are not exact pairs, confirmed by the aligned thumbnail correlation
    i, j, dist = hamming_pairs(table.phash[rows_a], None if rows_b is None else table.phash[rows_b],
                               settings.max_distance, threads=threads)
    ra, rb = rows_a[i], (rows_a if rows_b is None else rows_b)[j]
    keep = (table.exact[ra] != table.exact[rb]).any(axis=1)
    ra, rb, dist = ra[keep], rb[keep], dist[keep]
    rows = np.unique(np.concatenate([ra, rb]))  # window statistics once per image, not per pair
    position = np.full(len(table.phash), -1, np.int64)
    position[rows] = np.arange(len(rows))
    centred = _centred(table.thumb[rows])
    sums, squares = _window_stats(centred, settings.max_shift)
    step = 1024
    for start in range(0, len(ra), step):
        pa, pb = position[ra[start:start + step]], position[rb[start:start + step]]
        corr = _correlate(centred[pa], centred[pb], (sums[pa], squares[pa]), (sums[pb], squares[pb]),
                          settings.max_shift)
        hit = corr >= settings.min_correlation
        pairs += [Pair(int(x), int(y), False, int(d), float(c)) for x, y, d, c in
                  zip(ra[start:start + step][hit], rb[start:start + step][hit], dist[start:start + step][hit],
                      corr[hit])]
    return pairs


def audit(pretraining: str | Path | None, tasks: Sequence[str | Path] = (),
          settings: AuditSettings | None = None, *, pretrain_splits: Sequence[str] | None = ("training",),
          within: bool = True, cache: bool = True, workers: int | None = None, progress: bool = False) -> AuditReport:
    """Audit a pretraining corpus and tasks: unreadable, blank/constant and too-small images; exact and near
    duplicates inside each datalist (``within``); and every task image also found in the pretraining corpus.

    Args:
        pretraining: the pretraining datalist (``None``: tasks only). A *task* datalist given here is audited as a
            task (the audit then has no pretraining corpus).
        tasks: task datalists (or any datalist: every split of it is audited).
        settings: thresholds (:class:`AuditSettings`).
        pretrain_splits: the pretraining datalist's splits to audit (default: ``training``, what pretraining
            reads; ``None``: every split).
        within: also search duplicates inside each datalist (the leakage search alone is much cheaper on a large
            corpus).
        cache: read and write the fingerprint cache beside each datalist.
        workers: decoding processes (default: the CPUs this process may use).
        progress: show progress bars.

    Raises:
        AuditError: a bad setting, or a datalist that is missing, not JSON or malformed (naming the file). An
            unreadable *image* is not an error: it is counted and named in the report.
    """
    settings = settings or AuditSettings()
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise AuditError(f"workers must be an integer >= 0, got {workers!r}")
    if pretraining is None and not tasks:
        raise AuditError("nothing to audit: give a pretraining datalist and/or task datalists")
    started = time.perf_counter()
    datalists: list[AuditedDatalist] = []
    if pretraining is not None:
        datalists.append(_read_datalist(Path(pretraining), Role.PRETRAINING, pretrain_splits))
        if datalists[0].kind == "task datalist":
            datalists[0].role = Role.TASK
    datalists += [_read_datalist(Path(t), Role.TASK, None) for t in tasks]
    _unique_names(datalists)
    offset = 0
    for d in datalists:
        d.offset, offset = offset, offset + len(d)
    timing = {"read_datalists": time.perf_counter() - started}

    counts = {"cached": 0, "decoded": 0}
    t0 = time.perf_counter()
    results: list[Fingerprint | str] = []
    keys: list[bytes | None] = []
    for d in datalists:
        found, content = _fingerprint_datalist(d, cache, workers, progress, counts)
        results += found
        keys += content
    timing["fingerprints"] = time.perf_counter() - t0

    prints: list[Fingerprint | None] = [r if isinstance(r, Fingerprint) else None for r in results]
    unreadable = {row: r for row, r in enumerate(results) if not isinstance(r, Fingerprint)}
    blank = {row: p.std for row, p in enumerate(prints) if p is not None and p.std < settings.blank_std}
    too_small = {row: (p.height, p.width) for row, p in enumerate(prints)
                 if p is not None and min(p.height, p.width) < settings.min_size}
    usable = np.array([p is not None and row not in blank for row, p in enumerate(prints)], dtype=bool)

    table = _Table.of(prints, keys)
    t0 = time.perf_counter()
    threads = max(1, workers)
    within_pairs: dict[str, list[Pair]] = {}
    if within:
        for d in datalists:
            rows = np.array([r for r in d.rows if usable[r]], dtype=np.int64)
            within_pairs[d.name] = _pairs(table, rows, None, settings, threads)
    timing["within_search"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    leaks: dict[str, list[Pair]] = {}
    corpus = next((d for d in datalists if d.role == Role.PRETRAINING), None)
    if corpus is not None:
        corpus_rows = np.array([r for r in corpus.rows if usable[r]], dtype=np.int64)
        for d in datalists:
            if d.role == Role.TASK:
                rows = np.array([r for r in d.rows if usable[r]], dtype=np.int64)
                leaks[d.name] = _pairs(table, corpus_rows, rows, settings, threads)
    timing["leakage_search"] = time.perf_counter() - t0
    timing["total"] = time.perf_counter() - started
    return AuditReport(settings=settings, datalists=datalists, fingerprints=prints, unreadable=unreadable,
                       blank=blank, too_small=too_small, within=within_pairs, leaks=leaks, timing=timing,
                       cache=counts)


def find_leaks(pretraining: str | Path, task: str | Path, settings: AuditSettings | None = None, *,
               workers: int | None = None, progress: bool = False) -> AuditReport:
    """The leakage part alone: which images of ``task`` are also (exactly or nearly) in the pretraining corpus
    (its ``training`` split). ``report.leaked_rows(name)`` lists them; fingerprints are cached as for
    :func:`audit`."""
    return audit(pretraining, [task], settings, within=False, workers=workers, progress=progress)


# ---------------------------------------------------------------------------------------------------------- writing


def _display(report: AuditReport, row: int, side: int) -> np.ndarray:
    """An image of the report as ``[side, side]`` uint8 (decoded again: the thumbnails are only 32 px)."""
    try:
        image = load_grayscale(report.images[row])
        image = np.asarray(Image.fromarray(image, mode="F").resize((side, side), Image.Resampling.BOX))
        return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    except Exception:  # noqa: BLE001 - the file changed since the audit: show its thumbnail
        thumb = report.fingerprints[row].thumb if report.fingerprints[row] is not None else np.zeros((THUMB, THUMB))
        return np.asarray(Image.fromarray(np.asarray(thumb, np.uint8)).resize((side, side), Image.Resampling.NEAREST))


def _sheet_pairs(report: AuditReport, limit: int) -> list[tuple[str, Pair]]:
    """The pairs shown on the contact sheet: leaks first, then conflicting labels, exact, near."""
    chosen: list[tuple[str, Pair]] = []
    for name, pairs in report.leaks.items():
        chosen += [(f"LEAK into {name}", p) for p in sorted(pairs, key=lambda p: (not p.exact, p.distance))]
    rest = []
    for name, pairs in report.within.items():
        rest += [(name, p) for p in pairs]
    rest.sort(key=lambda np_: (report.label(np_[1].a) == report.label(np_[1].b), not np_[1].exact, np_[1].distance))
    return (chosen + rest)[:limit]


def write_contact_sheet(report: AuditReport, path: str | Path, limit: int = 48, columns: int = 4) -> Path | None:
    """A PNG of the pairs found, two images side by side with a caption (kind, distance, correlation, rows);
    ``None`` (nothing written) when no pair was found."""
    pairs = _sheet_pairs(report, limit)
    if not pairs:
        return None
    s, caption, gap = SHEET_SIDE, 36, 8
    cell_w, cell_h = 2 * s + 2 + gap, s + caption + gap
    rows = (len(pairs) + columns - 1) // columns
    sheet = Image.new("L", (columns * cell_w + gap, rows * cell_h + gap), 0)
    draw = ImageDraw.Draw(sheet)
    for k, (where, p) in enumerate(pairs):
        x, y = gap + (k % columns) * cell_w, gap + (k // columns) * cell_h
        sheet.paste(Image.fromarray(_display(report, p.a, s)), (x, y))
        sheet.paste(Image.fromarray(_display(report, p.b, s)), (x + s + 2, y))
        a, b = report.describe(p.a), report.describe(p.b)
        kind = ("exact" + (" (same file)" if p.same_content else "")) if p.exact else \
            f"near d{p.distance} r{p.correlation:.3f}"
        conflict = "" if report.label(p.a) == report.label(p.b) else " LABELS DIFFER"
        draw.text((x, y + s + 1), f"{kind}{conflict}"[:34], fill=255)
        draw.text((x, y + s + 12), where[:34], fill=200)
        draw.text((x, y + s + 23), f"{a['split'][:5]}[{a['index']}] | {b['split'][:5]}[{b['index']}]"[:34], fill=200)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return path


def _markdown(report: AuditReport, sheet: Path | None, cleaned: Mapping[str, Path], max_rows: int = 30) -> str:
    s = report.settings
    summary = report.summary()
    lines = ["# Audit: duplicates, blank images and leakage", "",
             f"Thresholds: near duplicate = pHash distance <= {s.max_distance} of 64 bits and aligned correlation of "
             f"{THUMB} px thumbnails >= {s.min_correlation:g} (shifts up to {s.max_shift} px); blank = pixel sd < "
             f"{s.blank_std:g}; too small = shorter side < {s.min_size} px. Volumes: their middle axial slice (the "
             "slice every stage trains on). Blank images are left out of the duplicate search.", "",
             "| datalist | role | images | unreadable | blank/constant | too small | exact pairs (images) | "
             "near pairs (images) | pairs with different labels | seen in pretraining (exact) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d in report.datalists:
        c = summary[d.name]
        seen = (f"**{c['seen_in_pretraining']}** ({c['seen_in_pretraining_exact']})" if "seen_in_pretraining" in c
                else "--")
        lines.append(f"| {d.name} | {d.role.value} ({', '.join(d.splits)}) | {c['images']} | {c['unreadable']} | "
                     f"{c['blank_or_constant']} | {c['too_small']} | {c['exact_pairs']} ({c['images_in_exact_pairs']}) "
                     f"| {c['near_pairs']} ({c['images_in_near_pairs']}) | {c['conflicting_label_pairs']} | {seen} |")
    if not report.within:
        lines += ["", "Duplicates inside each datalist were not searched (leakage only)."]
    if sheet is not None:
        lines += ["", f"Contact sheet of the pairs found (leaks first): [{sheet.name}]({sheet.name})"]

    def pair_line(p: Pair) -> str:
        a, b = report.describe(p.a), report.describe(p.b)
        kind = ("exact (same file content)" if p.same_content else "exact (same decoded pixels)") if p.exact else \
            f"near (d = {p.distance}, r = {p.correlation:.3f})"
        labels = "" if report.label(p.a) == report.label(p.b) else \
            f" -- **labels differ**: {report.label(p.a)} vs {report.label(p.b)}"
        return f"- {kind}: `{a['image']}` ({a['datalist']} {a['split']}[{a['index']}]) ~ `{b['image']}` " \
               f"({b['datalist']} {b['split']}[{b['index']}]){labels}"

    for name, pairs in report.leaks.items():
        lines += ["", f"## Leakage: {name} images also in the pretraining corpus", "",
                  f"{len(report.leaked_rows(name))} of {summary[name]['images']} images of {name} are also in the "
                  f"pretraining corpus ({len(pairs)} pairs)."]
        lines += [pair_line(p) for p in sorted(pairs, key=lambda p: (not p.exact, p.distance))[:max_rows]]
        if len(pairs) > max_rows:
            lines.append(f"- ... {len(pairs) - max_rows} more in audit.json")
    for name, pairs in report.within.items():
        if pairs:
            ordered = sorted(pairs, key=lambda p: (report.label(p.a) == report.label(p.b), not p.exact, p.distance))
            lines += ["", f"## Duplicates inside {name}", ""] + [pair_line(p) for p in ordered[:max_rows]]
            if len(pairs) > max_rows:
                lines.append(f"- ... {len(pairs) - max_rows} more in audit.json")
    for title, rows, why in (("Unreadable images", report.unreadable, lambda r: report.unreadable[r]),
                             ("Blank or constant images", report.blank, lambda r: f"pixel sd {report.blank[r]:.4f}"),
                             ("Images below the minimum size", report.too_small,
                              lambda r: "{} x {} px".format(*report.too_small[r]))):
        if rows:
            lines += ["", f"## {title}", ""]
            for r in sorted(rows)[:max_rows]:
                d = report.describe(r)
                lines.append(f"- `{d['image']}` ({d['datalist']} {d['split']}[{d['index']}]): {why(r)}")
            if len(rows) > max_rows:
                lines.append(f"- ... {len(rows) - max_rows} more in audit.json")
    if cleaned:
        lines += ["", "## Cleaned datalists (--drop)", ""] + [f"- {name}: `{path}`" for name, path in cleaned.items()]
    t = report.timing
    lines += ["", f"Time: {t.get('total', 0):.1f} s (fingerprints {t.get('fingerprints', 0):.1f} s: "
                  f"{report.cache.get('decoded', 0)} decoded, {report.cache.get('cached', 0)} from the cache; "
                  f"duplicate search {t.get('within_search', 0):.1f} s, leakage search "
                  f"{t.get('leakage_search', 0):.1f} s)."]
    return "\n".join(lines) + "\n"


def write_audit_report(report: AuditReport, out_dir: str | Path, cleaned: Mapping[str, Path] | None = None,
                       ) -> dict[str, Path]:
    """Write ``audit.md``, ``audit.json`` and (when pairs were found) ``audit_pairs.png`` into ``out_dir``, each
    atomically; returns file name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sheet = write_contact_sheet(report, out / "audit_pairs.png")
    if sheet is not None:
        written["audit_pairs.png"] = sheet
    data = report.to_dict()
    if cleaned:
        data["cleaned"] = {name: str(path) for name, path in cleaned.items()}
    written["audit.json"] = atomic_write_json(out / "audit.json", data, indent=1)
    written["audit.md"] = atomic_write_text(out / "audit.md", _markdown(report, sheet, cleaned or {}))
    return written


def _dropped(report: AuditReport) -> dict[int, str]:
    """Row -> reason, for every image ``--drop`` removes (see :func:`write_cleaned_datalists`)."""
    reasons: dict[int, str] = {}
    for r, why in report.unreadable.items():
        reasons[r] = f"unreadable: {why}"
    for r, sd in report.blank.items():
        reasons.setdefault(r, "constant image" if sd == 0 else f"blank image (pixel sd {sd:.4f})")
    for r, (h, w) in report.too_small.items():
        reasons.setdefault(r, f"too small ({h} x {w} px < {report.settings.min_size} px)")
    for name, pairs in report.leaks.items():
        for p in pairs:
            other = report.describe(p.a)
            reasons.setdefault(p.b, f"also in the pretraining corpus ({'exact' if p.exact else 'near'} duplicate of "
                                    f"{other['image']})")
    for name, pairs in report.within.items():
        partners: dict[int, list[Pair]] = defaultdict(list)
        for p in pairs:
            partners[max(p.a, p.b)].append(p)
        conflicting = {r for p in pairs if report.label(p.a) != report.label(p.b) for r in (p.a, p.b)}
        for r in sorted(conflicting):
            reasons.setdefault(r, "duplicate with a different label (every copy dropped)")
        for r in sorted(partners):  # keep the first copy of every set, unless it was dropped itself
            for p in partners[r]:
                first = min(p.a, p.b)
                if first not in reasons:
                    reasons.setdefault(r, f"{'exact' if p.exact else 'near'} duplicate of {report.images[first]} "
                                          "(the first copy is kept)")
                    break
    return reasons


def write_cleaned_datalists(report: AuditReport) -> dict[str, Path]:
    """``--drop``: beside each datalist with something to drop, ``<stem>.clean.json`` without the images the audit
    flags, each written atomically. Dropped: unreadable, blank/constant and too-small images; of every duplicate
    set inside a datalist all but the first copy (every copy when their labels differ); the task images also in the
    pretraining corpus (the encoder has seen them: they are dropped from the task, the corpus is kept). A task
    datalist lists them under ``excluded`` with the reason; a pretraining datalist under ``excluded`` too (with
    its split). Returns datalist name -> path written."""
    reasons = _dropped(report)
    written: dict[str, Path] = {}
    for d in report.datalists:
        drop = {r - d.offset: why for r, why in reasons.items() if r in d.rows}
        if not drop:
            continue
        out = d.path.with_name(d.path.stem + ".clean.json")
        if d.kind == "task datalist":
            items, meta = load_task_datalist(d.path, check_images=False)
            kept = [it for i, it in enumerate(items) if i not in drop]
            excluded = list(meta.get("excluded", [])) + [{"image": items[i]["image"], "reason": f"audit: {why}"}
                                                         for i, why in sorted(drop.items())]
            notes = list(meta.get("notes", [])) + [f"audit: {len(drop)} image(s) dropped (see excluded)"]
            provenance = {k: v for k, v in meta.items() if k not in ("format", "task", "positive", "training", "notes",
                                                                     "excluded", "counts")}
            try:
                write_task_datalist(kept, out, task=meta["task"], positive=meta["positive"], notes=notes,
                                    excluded=excluded, check_images=False, **provenance)
            except ValueError as e:  # e.g. only one class left
                raise AuditError(f"cleaned {d.path} cannot be written: {e}") from None
        else:
            data = json.loads(read_text_file(d.path, "datalist", AuditError))
            by_split: dict[str, set[int]] = defaultdict(set)
            excluded = list(data.get("excluded", []))
            for i, why in sorted(drop.items()):
                split, index = d.where[i]
                by_split[split].add(index)
                excluded.append({"image": data[split][index]["image"], "split": split, "reason": f"audit: {why}"})
            for split, indices in by_split.items():
                data[split] = [it for k, it in enumerate(data[split]) if k not in indices]
            data["excluded"] = excluded
            atomic_write_json(out, data, indent=1)
        written[d.name] = out
    return written
