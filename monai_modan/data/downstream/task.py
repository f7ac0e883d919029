"""The binary task datalist: one JSON format for every downstream data set, its writer and its validating loader.

Layout written by :func:`write_task_datalist`::

    {
      "format": "monai-modan/task/1",
      "task": "breast_us", "positive": "malignant",   # label 1 means `positive`, label 0 everything else kept
      "source": "busi", "root": "/data/Dataset_BUSI_with_GT", "options": {...},   # provenance (optional)
      "counts": {"0": 568, "1": 210, "groups": 778},
      "training": [{"image": "/abs/path.png" | "/abs/file.npz#train_images/12", "label": 0 | 1,
                    "group": "case or image id", ...extra fields such as "class", "tirads", "source_split"}],
      "notes": ["..."],                                 # decisions a reader of the results must know
      "excluded": [{"image": "/abs/path", "reason": "..."}]
    }

``group`` is what cross-validation keeps together (all slices of one exam, all images of one case); it defaults to
the image itself. Every item lives under ``"training"``: the evaluation protocol draws its own grouped folds, so
``monai.data.load_decathlon_datalist(path)`` reads the file as is -- unless the items carry the data set's own
partition: ``"fold": f`` (the item's test fold, ``0..k-1``) and optionally ``"split": "train" | "val"`` (the data
set's validation part), each on every item or on none, which the protocol then uses instead of drawing its own
(:mod:`monai_modan.evaluation.folds`).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...utils.defaults import TASK_SPLITS
from ...utils.io import atomic_write_json, read_text_file

__all__ = [
    "PARTITION_KEYS",
    "TASK_FORMAT",
    "DownstreamError",
    "TaskDatalistError",
    "TaskDatalist",
    "parse_binary_label",
    "validate_items",
    "write_task_datalist",
    "load_task_datalist",
]

TASK_FORMAT = "monai-modan/task/1"
_RESERVED = ("format", "task", "positive", "training", "notes", "excluded", "counts")
PARTITION_KEYS = ("fold", "split")  # the data set's own partition, on every item or on none
_TRUE = {"1", "yes", "y", "true", "t", "positive", "pos"}
_FALSE = {"0", "no", "n", "false", "f", "negative", "neg"}


class DownstreamError(ValueError):
    """A downstream data set cannot be converted; the message names the file (and row) and the cause."""


class TaskDatalistError(DownstreamError):
    """A task datalist is missing, malformed, or unusable for a binary task (e.g. only one class)."""


@dataclass
class TaskDatalist:
    """What a converter produced (and wrote to ``path``).

    Attributes:
        items: ``[{"image": str, "label": 0 | 1, "group": str, ...}]``.
        task, positive: task name and what label 1 means.
        notes: decisions and caveats, written into the JSON.
        excluded: ``[{"image": str, "reason": str}]`` -- images (or files) left out, with the cause.
        path: the JSON written, if any.
    """

    items: list[dict[str, Any]]
    task: str
    positive: str
    notes: list[str] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    path: Path | None = None

    @property
    def counts(self) -> dict[int, int]:
        """``{0: negatives, 1: positives}``."""
        c = Counter(int(it["label"]) for it in self.items)
        return {0: c.get(0, 0), 1: c.get(1, 0)}

    @property
    def groups(self) -> set[str]:
        return {str(it["group"]) for it in self.items}


def parse_binary_label(value: Any, where: str) -> int:
    """``0``/``1`` (int, or text such as ``"1"``, ``"yes"``, ``"false"``) -> int; else :class:`TaskDatalistError`."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return int(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 0
    raise TaskDatalistError(f"{where}: label {value!r} is not binary (expected 0/1, yes/no or true/false)")


class _ReferenceChecker:
    """Does an image path, or an ``file.npz#<array>/<index>`` reference, point to something that exists?"""

    def __init__(self) -> None:
        self._archives: dict[str, dict[str, int] | str] = {}

    def problem(self, image: str) -> str | None:
        """``None`` when the image exists, else the cause."""
        file, sep, member = image.rpartition("#")
        if not (sep and file.lower().endswith(".npz")):
            return None if os.path.isfile(image) else "file not found"
        lengths = self._lengths(file)
        if isinstance(lengths, str):
            return lengths
        key, _, index = member.rpartition("/")
        if key not in lengths and f"{key}_images" in lengths:  # the reader accepts "#train/12" for train_images
            key = f"{key}_images"
        if key not in lengths:
            return f"no array {key!r} in {file} (it holds {', '.join(sorted(lengths))})"
        if not index.isdigit() or int(index) >= lengths[key]:
            return f"index {index!r} out of range for {key!r} ({lengths[key]} items)"
        return None

    def _lengths(self, file: str) -> dict[str, int] | str:
        """``{array: first dimension}`` of an archive from the ``.npy`` headers only, or the cause it is unreadable."""
        if file not in self._archives:
            try:
                lengths = {}
                with zipfile.ZipFile(file) as archive:
                    for name in archive.namelist():
                        if name.endswith(".npy"):
                            with archive.open(name) as fp:
                                version = np.lib.format.read_magic(fp)
                                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                        else np.lib.format.read_array_header_2_0)
                                shape, _, _ = read(fp)
                            lengths[name[:-4]] = shape[0] if shape else 0
                self._archives[file] = lengths
            except FileNotFoundError:
                self._archives[file] = "file not found"
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                self._archives[file] = f"unreadable .npz archive ({e})"
        return self._archives[file]


def validate_items(items: Iterable[Mapping[str, Any]], source: str, *, base_dir: str | Path | None = None,
                   check_images: bool = True, positive: str = "positive") -> list[dict[str, Any]]:
    """Check and normalise datalist items; return new dicts ``{"image": abs, "label": 0|1, "group": str, ...}``.

    Args:
        items: mappings with ``image`` and ``label`` (``group`` optional, defaults to the image).
        source: what the items came from (a file name), used in messages.
        base_dir: relative image paths are taken relative to this folder (the datalist's folder).
        check_images: require every image (or NPZ member) to exist.
        positive: the name of label 1, for messages.

    Raises:
        TaskDatalistError: no items, an item that is not a mapping or lacks image/label, a non-binary label, a
            ``group`` that is not a text or integer id, an image listed twice, a missing image (names the row, its
            image and the file), a ``fold`` that is not an integer >= 0, a ``split`` other than ``train``/``val``,
            ``fold`` or ``split`` on some items only (names the first item without it), or only one class.
    """
    checker = _ReferenceChecker() if check_images else None
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row, item in enumerate(items):
        where = f"{source}: item {row}"
        if not isinstance(item, Mapping):
            raise TaskDatalistError(f"{where} is not a mapping {{'image': ..., 'label': 0 | 1}}: "
                                    f"{type(item).__name__} {_brief(item)}")
        if "image" not in item:
            raise TaskDatalistError(f"{where} has no 'image' (keys: {sorted(map(str, item))})")
        image = item["image"]
        image = os.fspath(image) if isinstance(image, os.PathLike) else image
        if not isinstance(image, str) or not image.strip():
            raise TaskDatalistError(f"{where}: 'image' must be a non-empty path, got {item['image']!r}")
        if "label" not in item:
            raise TaskDatalistError(f"{where} ({image}) has no 'label' (keys: {sorted(map(str, item))})")
        if base_dir is not None and not os.path.isabs(image):
            image = os.path.join(base_dir, image)
        image = os.path.abspath(image) if "#" not in image else _abs_reference(image)
        label = parse_binary_label(item["label"], f"{where} ({image})")
        if image in seen:
            raise TaskDatalistError(f"{where}: image {image} is listed twice (also item {seen[image]}); "
                                    "a repeated image would leak between folds")
        seen[image] = row
        if checker is not None and (problem := checker.problem(image)):
            raise TaskDatalistError(f"{where}: image {image}: {problem}")
        group = item.get("group")
        if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int, np.integer))):
            raise TaskDatalistError(f"{where} ({image}): 'group' must be a text or integer id, got {_brief(group)}")
        fold = item.get("fold")
        if fold is not None and (isinstance(fold, (bool, np.bool_)) or not isinstance(fold, (int, np.integer))
                                 or int(fold) < 0):
            raise TaskDatalistError(f"{where} ({image}): 'fold' must be an integer >= 0 (the item's test fold, "
                                    f"0..k-1), got {_brief(fold)}")
        split = item.get("split")
        if split is not None and split not in TASK_SPLITS:
            raise TaskDatalistError(f"{where} ({image}): 'split' must be one of {list(TASK_SPLITS)}, got "
                                    f"{_brief(split)}")
        entry = dict(item)
        entry.update(image=image, label=label, group=str(group) if group not in (None, "") else image)
        if fold is not None:
            entry["fold"] = int(fold)
        out.append(entry)
    if not out:
        raise TaskDatalistError(f"{source}: no items")
    for key in PARTITION_KEYS:
        has = [it.get(key) is not None for it in out]
        if any(has) and not all(has):
            first = has.index(False)
            raise TaskDatalistError(f"{source}: item {first} ({out[first]['image']}) has no {key!r} while {sum(has)} "
                                    f"of the {len(out)} items do: give every item a {key}, or none")
    counts = Counter(it["label"] for it in out)
    if len(counts) < 2:
        (label, n), = counts.items()
        name = positive if label == 1 else f"not {positive}"
        raise TaskDatalistError(f"{source}: only one class (all {n} items have label {label} = {name}); "
                                "a binary task needs both labels 0 and 1")
    return out


def _brief(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _abs_reference(reference: str) -> str:
    file, _, member = reference.rpartition("#")
    return f"{os.path.abspath(file)}#{member}"


def write_task_datalist(items: Iterable[Mapping[str, Any]], out_path: str | Path, *, task: str, positive: str,
                        notes: Sequence[str] = (), excluded: Sequence[Mapping[str, str]] = (),
                        check_images: bool = True, **provenance: Any) -> Path:
    """Validate ``items`` (see :func:`validate_items`) and write the task datalist JSON atomically.

    Args:
        items: ``[{"image", "label", "group"?, ...extra}]``; relative images are taken relative to ``out_path``'s
            folder.
        out_path: the JSON file to write.
        task: task name (e.g. ``"knee_acl"``); positive: what label 1 means (e.g. ``"malignant"``).
        notes: caveats and decisions; excluded: ``[{"image", "reason"}]``.
        check_images: require every image to exist.
        provenance: further top-level keys (``source``, ``root``, ``options`` ...), JSON-serialisable.

    Returns:
        ``out_path``.

    Raises:
        TaskDatalistError: see :func:`validate_items`; or a provenance key clashes with the format's own keys.
    """
    out_path = Path(out_path)
    clash = [k for k in provenance if k in _RESERVED]
    if clash:
        raise TaskDatalistError(f"provenance keys {clash} clash with the task datalist's own keys {_RESERVED}")
    valid = validate_items(items, str(out_path), base_dir=out_path.parent.absolute(), check_images=check_images,
                           positive=positive)
    counts = Counter(it["label"] for it in valid)
    data: dict[str, Any] = {"format": TASK_FORMAT, "task": str(task), "positive": str(positive), **provenance,
                            "counts": {"0": counts[0], "1": counts[1], "groups": len({it["group"] for it in valid})},
                            "training": valid, "notes": [str(n) for n in notes],
                            "excluded": [{"image": str(e["image"]), "reason": str(e["reason"])} for e in excluded]}
    return atomic_write_json(out_path, data, indent=1)


def load_task_datalist(path: str | Path, *, check_images: bool = True,
                       data_list_key: str = "training") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read and validate a task datalist.

    Accepts files written by :func:`write_task_datalist` and plain MONAI decathlon JSONs whose items carry a binary
    ``label`` (e.g. the synthetic tasks' ``datalist.json``). Relative image paths are resolved against the JSON's
    folder, as :func:`monai.data.load_decathlon_datalist` does.

    Returns:
        ``(items, meta)``: items as :func:`validate_items` returns them (``group`` filled in); ``meta`` holds every
        other top-level key, with ``task``, ``positive`` (default ``"positive"``), ``notes`` and ``excluded``
        always present.

    Raises:
        TaskDatalistError: unreadable, not UTF-8 or invalid JSON, an unknown ``format``, no ``data_list_key`` list,
            ``task``/``positive`` not text, ``notes`` not a list of texts, ``excluded`` not a list of
            ``{"image", "reason"}``, or any item problem (see :func:`validate_items`).
    """
    path = Path(path)
    try:
        data = json.loads(read_text_file(path, "task datalist", TaskDatalistError))
    except json.JSONDecodeError as e:
        raise TaskDatalistError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get(data_list_key), list):
        got = (f"the top level is a {type(data).__name__}" if not isinstance(data, dict)
               else f"{data_list_key!r} is missing" if data_list_key not in data
               else f"{data_list_key!r} is a {type(data[data_list_key]).__name__}")
        raise TaskDatalistError(f"{path}: not a datalist (no {data_list_key!r} list of items: {got})")
    fmt = data.get("format")
    if fmt is not None and fmt != TASK_FORMAT:
        raise TaskDatalistError(f"{path}: format {fmt!r} is not a task datalist ({TASK_FORMAT!r}); a pretraining "
                                "datalist has multi-hot labels, not one binary label")
    for key in ("task", "positive"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            raise TaskDatalistError(f"{path}: {key!r} must be a non-empty text, got {_brief(data[key])}")
    if "notes" in data and (not isinstance(data["notes"], list) or not all(isinstance(n, str) for n in data["notes"])):
        raise TaskDatalistError(f"{path}: 'notes' must be a list of texts, got {_brief(data['notes'])}")
    excluded = data.get("excluded", [])
    if not isinstance(excluded, list):
        raise TaskDatalistError(f"{path}: 'excluded' must be a list of {{'image', 'reason'}}, got {_brief(excluded)}")
    for i, entry in enumerate(excluded):
        if not isinstance(entry, Mapping) or not {"image", "reason"} <= set(entry):
            raise TaskDatalistError(f"{path}: excluded[{i}] must be a mapping with 'image' and 'reason', "
                                    f"got {_brief(entry)}")
    meta = {k: v for k, v in data.items() if k != data_list_key}
    meta.setdefault("task", path.stem)
    meta.setdefault("positive", "positive")
    meta.setdefault("notes", [])
    meta.setdefault("excluded", [])
    items = validate_items(data[data_list_key], str(path), base_dir=path.parent.absolute(),
                           check_images=check_images, positive=str(meta["positive"]))
    return items, meta
