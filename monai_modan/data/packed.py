"""Packed corpus: every image of a datalist split decoded once, stored as one memory-mapped uint8 array.

The plain pretraining path decodes every file again in every epoch (PNG/DICOM decode, windowing, resize). The fast
path (:class:`~monai_modan.engines.fast_pretrain.FastPretrainer`) instead keeps the whole corpus on the device as
uint8 -- miniRIN at 224 px is 0.81 GB -- and augments there. :func:`pack_datalist` prepares that array once.

Layout of ``out_dir`` (``pack_datalist`` writes every file to a temporary name and renames it; ``index.json`` is
removed first and written last, so a pack interrupted half-way has no index and is refused by
:meth:`PackedCorpus.open`)::

    images.u8         raw uint8 [N, 1, S, S], C order, no header (np.memmap; shape and dtype are in index.json)
    labels.npy        uint8 [N, K] multi-hot, in the datalist's label space
    class_index.npy   int64 [N] fine class per image (only when every packed item has a ``class_index``)
    index.json        format, shape, dtype, image_size, split, image paths (row order), label space, classes,
                      source datalist (path, sha256, size), skipped files with reasons, reader settings

Pixels go through the one project reader, :class:`~monai_modan.data.readers.LoadGrayscaleImage` (display
orientation, DICOM windowing, MONAI ``Resize`` to ``S x S``: ``area`` when shrinking, bilinear when growing), then
``round(255 * x)``. The quantisation error is at most 1/510 of the intensity range, below the 8-bit precision of the
PNG sources. Images that fail to decode are skipped and listed in the index with the reader's reason; the pack goes
on. Image paths are used as the datalist gives them, exactly as the plain path's ``Dataset`` does.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..labels.vocabulary import LabelSpace
from ..utils.io import atomic_path, atomic_write_json, file_sha256
from .datalist import load_datalist
from .readers import READER_VERSION, ImageLoadError, LoadGrayscaleImage

__all__ = ["PackedCorpus", "PackedCorpusError", "pack_datalist", "open_or_pack", "datalist_fingerprint", "check_images",
           "FORMAT"]

FORMAT = "monai-modan/packed/1"
INDEX_NAME = "index.json"
IMAGES_NAME = "images.u8"
LABELS_NAME = "labels.npy"
CLASS_INDEX_NAME = "class_index.npy"
logger = logging.getLogger(__name__)
_MIN_PER_WORKER = 32  # a process pool costs more than it saves on fewer images than this per worker
_CHUNK = 16
_COPY_ROWS_BYTES = 256 * 2**20  # host -> device copies in pieces of at most this many bytes


class PackedCorpusError(ValueError):
    """A pack cannot be written (empty split, nothing decodable, bad labels) or read (missing, incomplete,
    inconsistent files); the message names the file and the cause."""


def datalist_fingerprint(path: str | Path) -> dict[str, Any]:
    """``{"path", "sha256", "bytes"}`` of a datalist file: what a pack was made from."""
    path = Path(path)
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "bytes": path.stat().st_size}


# ------------------------------------------------------------------------------------------------------- decoding
@functools.lru_cache(maxsize=4)
def _loader(image_size: int):
    return LoadGrayscaleImage(spatial_size=image_size)


def _decode(path: str, image_size: int) -> tuple[bytes | None, str]:
    """One image -> ``S * S`` uint8 bytes, or ``(None, reason)``; never raises for a bad file."""
    try:
        image = _loader(image_size)(path)
    except ImageLoadError as e:  # names the file and the cause, never a header value
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - one bad file is counted, never fatal
        return None, f"{path}: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    pixels = np.rint(np.asarray(image, dtype=np.float32) * 255.0).clip(0, 255).astype(np.uint8)
    if pixels.shape != (1, image_size, image_size):
        return None, f"{path}: the reader returned shape {pixels.shape}, expected (1, {image_size}, {image_size})"
    return pixels.tobytes(), ""


def _init_worker() -> None:
    # as torch's DataLoader workers: one intra-op thread per process (and no OpenMP pool inherited through fork)
    torch.set_num_threads(1)


def _decode_chunk(paths: Sequence[str], image_size: int) -> list[tuple[bytes | None, str]]:
    return [_decode(path, image_size) for path in paths]


def _decode_alone(path: str, image_size: int) -> tuple[bytes | None, str]:
    """One image in a process of its own: a decoder that kills its process (a codec's segfault, the OOM killer)
    costs this file only."""
    with ProcessPoolExecutor(max_workers=1, initializer=_init_worker) as solo:
        try:
            return solo.submit(_decode_chunk, [path], image_size).result()[0]
        except BrokenProcessPool:
            return None, f"{path}: the decoder crashed (its process died while reading this file)"


def _decoded_chunks(chunks: Sequence[Sequence[str]], image_size: int, workers: int) -> Iterator[list]:
    """Each chunk's decoded images, in order, from ``workers`` processes with a bounded number of chunks in flight.
    When a worker dies, the chunk being collected is decoded file by file in processes of their own, a new pool
    takes over, and the chunks that were in flight are submitted again."""
    def start() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, initializer=_init_worker)

    pool, in_flight, following = start(), deque(), 0
    try:
        while following < len(chunks) or in_flight:
            while following < len(chunks) and len(in_flight) < 4 * workers:
                in_flight.append((following, pool.submit(_decode_chunk, chunks[following], image_size)))
                following += 1
            index, future = in_flight.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                results = [_decode_alone(path, image_size) for path in chunks[index]]
                pool = start()
                in_flight = deque((i, pool.submit(_decode_chunk, chunks[i], image_size)) for i, _ in in_flight)
            yield results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_all(paths: Sequence[str], image_size: int, workers: int, progress: bool,
                desc: str = "packing images") -> Iterator[tuple[bytes | None, str]]:
    """Decoded images in input order, ``workers <= 1`` in this process (see :func:`_decoded_chunks`)."""
    with tqdm(total=len(paths), disable=not progress, desc=desc, unit="img") as bar:
        if workers <= 1:
            for path in paths:
                out = _decode(path, image_size)
                bar.update()
                yield out
            return
        chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
        for results in _decoded_chunks(chunks, image_size, workers):
            bar.update(len(results))
            yield from results


# ------------------------------------------------------------------------------------------------ checking only
CHECK_FORMAT = "monai-modan/image-check/1"


def _file_identity(path: str) -> list[int] | None:
    """``[size, mtime_ns, ctime_ns]`` of a file (``None`` when it cannot be stat'ed): a rewritten file is
    checked again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def check_images(paths: Sequence[str], image_size: int, *, cache: str | Path | None = None,
                 workers: int | None = None, progress: bool = False) -> dict[str, str]:
    """Decode every image once through the project reader (the decoding pool of :func:`pack_datalist`, which
    survives a decoder that kills its process) and return ``{path: reason}`` for the ones that fail.

    Nothing is stored but the verdicts: ``cache`` (a JSON file) remembers them per file identity (size, mtime,
    ctime), reader version and ``image_size``, so a second run over an unchanged corpus decodes nothing again.

    Args:
        paths: image paths (or ``file.npz#key/index`` references) as a datalist gives them.
        image_size: side ``S`` in pixels the reader resizes to (what training will load).
        cache: verdict cache, written atomically; ``None`` = no cache.
        workers: decoding processes (``None``: as :func:`pack_datalist`).
    """
    reader = {"version": READER_VERSION, "image_size": int(image_size)}
    known: dict[str, Any] = {}
    if cache is not None and Path(cache).is_file():
        try:
            stored = json.loads(Path(cache).read_text(encoding="utf-8"))
            if stored.get("format") == CHECK_FORMAT and stored.get("reader") == reader:
                known = dict(stored.get("files", {}))
        except (OSError, ValueError, AttributeError):
            logger.warning("image check cache %s is unreadable; checking every image again", cache)
    identities = {p: _file_identity(p.split("#", 1)[0]) for p in dict.fromkeys(os.fspath(p) for p in paths)}
    verdicts = {p: known[p][1] for p, ident in identities.items()
                if ident is not None and isinstance(known.get(p), list) and known[p][0] == ident}
    todo = [p for p in identities if p not in verdicts]
    if workers is None:
        workers = min(os.cpu_count() or 1, len(todo) // _MIN_PER_WORKER)
    for path, (pixels, reason) in zip(todo, _decode_all(todo, int(image_size), workers, progress,
                                                        desc="checking images")):
        verdicts[path] = "" if pixels is not None else reason
    if cache is not None and todo:
        files = {p: [identities[p], verdicts[p]] for p in identities if identities[p] is not None}
        atomic_write_json(cache, {"format": CHECK_FORMAT, "reader": reader, "files": files})
    return {p: reason for p, reason in verdicts.items() if reason}


# -------------------------------------------------------------------------------------------------------- packing
def pack_datalist(
    datalist_path: str | Path,
    out_dir: str | Path,
    image_size: int,
    split: str = "training",
    workers: int | None = None,
    *,
    progress: bool = False,
) -> PackedCorpus:
    """Decode every image of ``split`` once at ``image_size`` and write the pack (see the module docstring).

    Args:
        datalist_path: a monai-modan datalist (:func:`~monai_modan.data.datalist.load_datalist`).
        out_dir: output folder (created); only the pack's own file names in it are replaced.
        image_size: side ``S`` in pixels of the stored square images.
        split: datalist split to pack.
        workers: decoding processes; ``None`` = ``os.cpu_count()`` but no more than one per 32 images; ``0`` or
            ``1`` = in this process.
        progress: show a progress bar (counts only).

    Returns:
        the new pack, opened read-only.

    Raises:
        PackedCorpusError: empty split, a label that is not multi-hot, or no image of the split decodes.
        DatalistError: the datalist cannot be read.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise PackedCorpusError(f"image_size must be a positive int (pixels), got {image_size!r}")
    if workers is not None and workers < 0:
        raise PackedCorpusError(f"workers must be >= 0 (0 or 1 = in this process), got {workers}")
    image_size = int(image_size)
    try:
        before = datalist_fingerprint(datalist_path)["sha256"]
    except OSError:
        before = None  # load_datalist says what is wrong with the file
    data = load_datalist(datalist_path)
    fingerprint = datalist_fingerprint(datalist_path)
    if fingerprint["sha256"] != before:  # rewritten while being read: the pack would carry the wrong hash
        raise PackedCorpusError(f"{datalist_path} changed while it was being read (is an indexer still writing "
                                "it?); pack it again once it is complete")
    items = data.items(split)
    if not items:
        raise PackedCorpusError(f"{datalist_path}: split {split!r} is empty or absent; nothing to pack")
    labels = _label_matrix(items, data.space.width, datalist_path, split)
    paths = [os.fspath(item["image"]) for item in items]
    if workers is None:
        workers = min(os.cpu_count() or 1, len(paths) // _MIN_PER_WORKER)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INDEX_NAME).unlink(missing_ok=True)  # the members change below: no index means "incomplete pack"
    for stale in out_dir.glob(f".{IMAGES_NAME}.*.tmp"):  # left by a packer that was killed (SIGKILL, preemption)
        stale.unlink(missing_ok=True)
    kept: list[int] = []
    skipped: list[dict[str, str]] = []
    with atomic_path(out_dir / IMAGES_NAME) as tmp, open(tmp, "wb") as f:
        for i, (pixels, reason) in enumerate(_decode_all(paths, image_size, workers, progress)):
            if pixels is None:
                skipped.append({"image": paths[i], "reason": reason})
                continue
            f.write(pixels)
            kept.append(i)
        if not kept:
            examples = "; ".join(s["reason"] for s in skipped[:3])
            raise PackedCorpusError(f"{datalist_path}: none of the {len(paths)} images of split {split!r} could be "
                                    f"decoded (e.g. {examples})")

    with atomic_path(out_dir / LABELS_NAME, suffix=".npy") as tmp:
        np.save(tmp, labels[kept])
    class_index = _class_indices(items, kept, len(data.classes), datalist_path, split)
    if class_index is not None:
        with atomic_path(out_dir / CLASS_INDEX_NAME, suffix=".npy") as tmp:
            np.save(tmp, class_index)
    else:
        (out_dir / CLASS_INDEX_NAME).unlink(missing_ok=True)

    index = {
        "format": FORMAT,
        "images": IMAGES_NAME,
        "shape": [len(kept), 1, image_size, image_size],
        "dtype": "uint8",
        "image_size": image_size,
        "split": split,
        "paths": [paths[i] for i in kept],
        "label_space": data.space.to_dict(),
        "classes": list(data.classes),
        "has_class_index": class_index is not None,
        "source_datalist": fingerprint,
        "skipped": skipped,
        "reader": _reader_description(image_size),
    }
    atomic_write_json(out_dir / INDEX_NAME, index, indent=1)
    if skipped:
        _warn_skipped(out_dir, skipped, len(paths), "were left out")
    return PackedCorpus.open(out_dir)


def _warn_skipped(out_dir: Path, skipped: Sequence[dict[str, str]], total: int, what: str) -> None:
    """Say how many images a pack lacks and why (the full list is in its ``index.json``)."""
    reasons = "; ".join(s["reason"] for s in skipped[:3])  # each reason names its file
    logger.warning("pack %s: %d of %d images could not be decoded and %s (e.g. %s); every one is listed under "
                   "'skipped' in %s", out_dir, len(skipped), total, what, reasons, Path(out_dir) / INDEX_NAME)


def _reader_description(image_size: int) -> dict[str, Any]:
    """How the pixels were made: a pack made by another reader version is stale even for the same datalist."""
    return {"class": "monai_modan.data.readers.LoadGrayscaleImage", "version": READER_VERSION,
            "spatial_size": int(image_size), "frame": "middle", "window": "dicom_or_minmax",
            "quantisation": "round(255 * x)"}


def open_or_pack(datalist_path: str | Path, out_dir: str | Path, image_size: int, split: str = "training",
                 workers: int | None = None, *, progress: bool = False) -> PackedCorpus:
    """The pack in ``out_dir`` when it was made from this very datalist file (same SHA-256), split, ``image_size``
    and reader version; otherwise :func:`pack_datalist` (re)writes it. What a training run calls, so that the decode
    cost is paid once per corpus and size, not once per run."""
    try:
        pack = PackedCorpus.open(out_dir)
    except PackedCorpusError:
        pack = None  # absent, interrupted or damaged: pack again
    if (pack is not None and pack.is_current(datalist_path) and pack.image_size == int(image_size)
            and pack.index.get("split") == split and pack.index.get("reader") == _reader_description(image_size)):
        skipped = pack.index.get("skipped") or []
        if skipped:
            _warn_skipped(pack.root, skipped, len(pack) + len(skipped),
                          "are left out of this reused pack (delete it to try them again)")
        return pack
    del pack  # unmap the old images before they are replaced (Windows cannot replace a mapped file)
    return pack_datalist(datalist_path, out_dir, image_size, split, workers, progress=progress)


def _label_matrix(items: Sequence[dict], width: int, datalist_path: str | Path, split: str) -> np.ndarray:
    labels = np.asarray([item["label"] for item in items], dtype=np.float64).reshape(len(items), width)
    bad = np.flatnonzero(((labels != 0) & (labels != 1)).any(axis=1))
    if bad.size:
        i = int(bad[0])
        raise PackedCorpusError(f"{datalist_path}: {split}[{i}] ({items[i]['image']}) has a label that is not "
                                f"multi-hot (every entry 0 or 1): {items[i]['label']}")
    return labels.astype(np.uint8)


def _class_indices(items: Sequence[dict], kept: Sequence[int], num_classes: int, datalist_path: str | Path,
                   split: str) -> np.ndarray | None:
    """Fine class of each kept item, or ``None`` unless the datalist has classes and every kept item carries a valid
    index (a warning names the first that does not: the pack then serves the contrastive methods only)."""
    if not num_classes:
        return None
    for i in kept:
        item = items[i]
        value = item.get("class_index")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < num_classes:
            logger.warning("%s: %s item %s (%s) has class_index %r, not an integer in [0, %d): the pack gets no fine "
                           "classes, so supervised pretraining cannot use it", datalist_path, split, i,
                           item.get("image"), value, num_classes)
            return None
    return np.asarray([items[i]["class_index"] for i in kept], dtype=np.int64)


# -------------------------------------------------------------------------------------------------------- reading
@dataclass
class PackedCorpus:
    """A pack opened read-only (:meth:`open`), or one rank's share of it (:meth:`shard`).

    Attributes:
        root: the pack folder.
        images: ``[N, 1, S, S]`` uint8, a read-only ``np.memmap`` (or a strided view of one for a shard).
        labels: ``[N, K]`` uint8 multi-hot.
        class_index: ``[N]`` int64 fine classes, or ``None``.
        paths: source image of each row.
        space: the label space of ``labels``.
        classes: fine class names (``class_index`` indexes this list).
        index: the parsed ``index.json`` (source datalist fingerprint, skipped files, reader settings ...).
        rows: positions of these rows in the full pack (``arange(N)`` unless sharded).
    """

    root: Path
    images: np.ndarray
    labels: np.ndarray
    class_index: np.ndarray | None
    paths: list[str]
    space: LabelSpace
    classes: list[str] = field(default_factory=list)
    index: dict[str, Any] = field(default_factory=dict)
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def skipped(self) -> list[dict[str, str]]:
        return list(self.index.get("skipped", []))

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.index.get("source_datalist", {}))

    def is_current(self, datalist_path: str | Path) -> bool:
        """True when ``datalist_path`` is byte-identical to the datalist this pack was made from."""
        try:
            return datalist_fingerprint(datalist_path)["sha256"] == self.fingerprint.get("sha256")
        except OSError:
            return False

    @classmethod
    def open(cls, out_dir: str | Path) -> PackedCorpus:
        """Map a pack written by :func:`pack_datalist` read-only; checks that its files agree with the index.

        Raises:
            PackedCorpusError: no index (never packed, or interrupted), another format, or member files whose size
                or shape disagree with the index.
        """
        root = Path(out_dir)
        index_path = root / INDEX_NAME
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PackedCorpusError(f"{index_path} not found: {root} is not a complete pack (run pack_datalist / "
                                    "`python -m monai_modan pack` again)") from None
        except (OSError, ValueError) as e:
            raise PackedCorpusError(f"{index_path} cannot be read: {e}") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise PackedCorpusError(f"{index_path}: not a {FORMAT} index")
        try:
            shape = tuple(int(s) for s in index["shape"])
            space = LabelSpace.from_dict(index["label_space"])
            paths = list(index["paths"])
        except (KeyError, TypeError, ValueError) as e:
            raise PackedCorpusError(f"{index_path}: malformed index ({type(e).__name__}: {e})") from None
        if len(shape) != 4 or shape[1] != 1 or shape[2] != shape[3] or index.get("dtype") != "uint8":
            raise PackedCorpusError(
                f"{index_path}: expected uint8 images [N, 1, S, S], got {index.get('dtype')} {shape}")
        images_path = root / index.get("images", IMAGES_NAME)
        expected = int(np.prod(shape))
        actual = images_path.stat().st_size if images_path.is_file() else -1
        if actual != expected:
            raise PackedCorpusError(f"{images_path}: {actual} bytes, the index expects {expected} ({shape}); the pack "
                                    "is damaged or was replaced -- pack again")
        images = np.memmap(images_path, dtype=np.uint8, mode="r", shape=shape)
        labels = _load_member(root / LABELS_NAME, (shape[0], space.width), np.uint8)
        class_index = (_load_member(root / CLASS_INDEX_NAME, (shape[0],), np.int64)
                       if index.get("has_class_index") else None)
        if len(paths) != shape[0]:
            raise PackedCorpusError(f"{index_path}: {len(paths)} paths for {shape[0]} images")
        return cls(root=root, images=images, labels=labels, class_index=class_index, paths=paths, space=space,
                   classes=list(index.get("classes") or []), index=index, rows=np.arange(shape[0]))

    def shard(self, rank: int, world_size: int) -> PackedCorpus:
        """Rank ``rank``'s share for data-parallel training: rows ``rank, rank + W, rank + 2W, ...`` (strided).

        Every rank gets exactly ``N // W`` rows (the last ``N mod W`` rows of the pack are left out, at most
        ``W - 1`` images), so all ranks run the same number of steps, which DDP's collectives need. Strided rather
        than contiguous because a pack follows the datalist's order (sorted by class or folder): contiguous blocks
        would give each rank -- and its BatchNorm statistics -- a different class mix. Deterministic: the same
        ``(N, rank, W)`` always selects the same rows; the shards of all ranks are disjoint.
        """
        if isinstance(world_size, bool) or int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        rank, world_size = int(rank), int(world_size)
        n = len(self) // world_size
        if n == 0:
            raise ValueError(f"{self.root}: {len(self)} images cannot be shared by {world_size} ranks")
        take = slice(rank, rank + n * world_size, world_size)
        return replace(
            self,
            images=self.images[take],
            labels=self.labels[take],
            class_index=None if self.class_index is None else self.class_index[take],
            paths=self.paths[take],
            rows=(self.rows if self.rows is not None else np.arange(len(self)))[take],
        )

    def to_device(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The images as one uint8 tensor ``[N, 1, S, S]`` on ``device``, copied in pieces of <= 256 MiB (the
        whole corpus never has to fit twice in host memory)."""
        out = torch.empty(self.images.shape, dtype=torch.uint8, device=device)
        rows = max(1, _COPY_ROWS_BYTES // max(1, int(np.prod(self.images.shape[1:]))))
        for start in range(0, len(self), rows):
            piece = np.array(self.images[start:start + rows], copy=True)  # a writable, contiguous copy of the rows
            out[start:start + rows].copy_(torch.from_numpy(piece))
        return out

    def targets_to_device(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(labels [N, K] uint8, class_index [N] int64 or None)`` on ``device``."""
        labels = torch.from_numpy(np.array(self.labels, copy=True)).to(device)
        if self.class_index is None:
            return labels, None
        return labels, torch.from_numpy(np.array(self.class_index, copy=True)).to(device)


def _load_member(path: Path, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PackedCorpusError(f"{path} cannot be read: {e}") from None
    if arr.shape != shape or arr.dtype != dtype:
        raise PackedCorpusError(f"{path}: expected {np.dtype(dtype).name} {shape}, got {arr.dtype} {arr.shape}; the "
                                "pack is inconsistent -- pack again")
    return arr
