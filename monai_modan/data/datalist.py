"""The datalist: MONAI's decathlon JSON plus the label space it was built with, and its human-readable report.

Layout written by :func:`write_datalist`::

    {
      "format": "monai-modan/datalist/1",
      "source": "dicom", "root": "/data/pacs",
      "label_space": {...LabelSpace.to_dict()...},
      "classes": ["CT/abd/normal", ...],          # only for sources with fine classes (supervised-165 baseline)
      "training":   [{"image": "/abs/path", "modality": "CT", "anatomy": "chest", "label": [0, 1, ...],
                      "label_source": {"modality": "Modality", "anatomy": "BodyPartExamined"}, ...}],
      "validation": [...], "test": [...]
    }

``monai.data.load_decathlon_datalist(path, data_list_key="training")`` reads it as is.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..labels.vocabulary import LabelSpace, VocabularyError
from ..utils.io import atomic_write_json, atomic_write_text, read_text_file
from .records import SPLITS, IndexResult

__all__ = ["Datalist", "DatalistError", "write_datalist", "load_datalist", "format_report", "report_dict"]

FORMAT = "monai-modan/datalist/1"


class DatalistError(ValueError):
    """A datalist file is missing, malformed, or inconsistent with its label space."""


@dataclass
class Datalist:
    """A loaded datalist: items per split, the label space they were encoded with, optional fine classes."""

    path: Path
    space: LabelSpace
    splits: dict[str, list[dict[str, Any]]]
    classes: list[str] = field(default_factory=list)
    source: str = ""

    def items(self, split: str = "training") -> list[dict[str, Any]]:
        return self.splits.get(split, [])


def write_datalist(result: IndexResult, space: LabelSpace, out: str | Path, classes: list[str] | None = None,
                   report: bool = True, sources: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Write the datalist JSON (atomically) and, beside it, ``<stem>.report.md`` and ``<stem>.report.json``
    (``sources``: the per-source summaries of a merged corpus, :func:`~monai_modan.data.index.index_sources`)."""
    out = Path(out)
    data: dict[str, Any] = {"format": FORMAT, "source": result.source, "root": result.root,
                            "label_space": space.to_dict()}
    if classes:
        data["classes"] = list(classes)
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for r in result.records:
        by_split.setdefault(r.split, []).append(r.to_item(space))
    data.update({s: items for s, items in by_split.items() if items or s == "training"})
    atomic_write_json(out, data, indent=1)
    if report:
        stem = out.with_suffix("") if out.suffix == ".json" else out
        atomic_write_text(f"{stem}.report.md", format_report(result, space, sources=sources))
        atomic_write_json(f"{stem}.report.json", report_dict(result, space, sources=sources))
    return out


def load_datalist(path: str | Path) -> Datalist:
    """Read and validate a datalist written by :func:`write_datalist` (or any decathlon JSON with ``label``).

    Raises:
        DatalistError: (one line naming the file, and the split, item index and image where there is one) the file
            is unreadable, not UTF-8, not JSON, not a pretraining datalist, or its ``label_space`` is malformed; a
            split is not a list; an item is not a mapping, has no ``image`` path, or a ``label`` that is not a list
            of ``width`` 0/1 numbers with at most one class per group.
    """
    path = Path(path)
    try:
        data = json.loads(read_text_file(path, "datalist", DatalistError))
    except json.JSONDecodeError as e:
        raise DatalistError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or "training" not in data:
        raise DatalistError(f"{path}: not a datalist (no 'training' list); create one with `python -m monai_modan index`")
    if data.get("format", FORMAT) != FORMAT:
        raise DatalistError(f"{path}: format {data['format']!r} is not a pretraining datalist ({FORMAT!r}); a task "
                            "datalist (one binary label per image) is for evaluation, not pretraining")
    if "label_space" not in data:
        raise DatalistError(f"{path}: no 'label_space'; it was not written by monai-modan, re-index the data")
    try:
        space = LabelSpace.from_dict(data["label_space"], source=f"{path}: 'label_space'")
    except VocabularyError as e:
        raise DatalistError(f"{e}; the file was edited or not written by monai-modan -- re-index") from None
    for split in SPLITS:
        if split in data and not isinstance(data[split], list):
            raise DatalistError(f"{path}: {split!r} must be a list of items, got {_kind(data[split])}")
    splits = {s: list(data[s]) for s in SPLITS if s in data}
    for split, items in splits.items():
        _check_items(path, split, items, space)
    classes = data.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise DatalistError(f"{path}: 'classes' must be a list of class names, got {_kind(classes)}")
    return Datalist(path=path, space=space, splits=splits, classes=list(classes), source=str(data.get("source", "")))


def _kind(value: Any) -> str:
    """``null`` / ``str 'abc...'`` / ``list of 3`` -- a short description of a JSON value for a message."""
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return f"{type(value).__name__} of {len(value)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _is_binary(value: Any) -> bool:
    return type(value) in (int, float, bool) and value in (0, 1)


def _check_items(path: Path, split: str, items: list[Any], space: LabelSpace) -> None:
    """Every item a mapping with a non-empty ``image`` path and a ``label`` of ``space.width`` 0/1 numbers, at most
    one 1 per group (what :meth:`LabelSpace.encode` writes); else :class:`DatalistError` naming the item and cause.

    Fast on million-image lists: whole-list checks first, then each *distinct* label vector once; the loop that
    finds the offending item runs only when a check failed.
    """
    width = space.width

    def first(bad: Any) -> int:
        return next(i for i, it in enumerate(items) if bad(it))

    if not all(type(it) is dict for it in items):
        i = first(lambda it: type(it) is not dict)
        raise DatalistError(f"{path}: {split}[{i}] is not an item {{'image': ..., 'label': [...]}}: got {_kind(items[i])}")
    if not all(type(it.get("image")) is str and it["image"].strip() for it in items):
        i = first(lambda it: not (type(it.get("image")) is str and it["image"].strip()))
        cause = "has no 'image'" if "image" not in items[i] else f"has 'image' = {_kind(items[i]['image'])}, not a path"
        raise DatalistError(f"{path}: {split}[{i}] {cause}")
    labels = [it.get("label") for it in items]
    if not all(type(label) is list and len(label) == width for label in labels):
        i = first(lambda it: not (type(it.get("label")) is list and len(it["label"]) == width))
        label = items[i].get("label")
        got = "no 'label'" if "label" not in items[i] else (
            f"a label of width {len(label)}" if isinstance(label, list) else f"'label' = {_kind(label)}")
        raise DatalistError(
            f"{path}: {split}[{i}] has {got}, but its label space has width {width} ({space!r}; a label is a "
            f"list of 0/1, one per class) -- image {items[i]['image']}; the file was edited or mixes label spaces: "
            "re-index")
    try:
        distinct = set(map(tuple, labels))
    except TypeError:  # an unhashable entry (a nested list or mapping): not 0/1
        distinct = None
    if distinct is None or not all(_is_binary(v) for vector in distinct for v in vector):
        i = first(lambda it: not all(_is_binary(v) for v in it["label"]))
        j, value = next((j, v) for j, v in enumerate(items[i]["label"]) if not _is_binary(v))
        raise DatalistError(f"{path}: {split}[{i}] ({items[i]['image']}): label is not multi-hot: label[{j}] "
                            f"({space.class_names[j]}) is {value!r}, every entry must be 0 or 1")
    for name, sl in space.slices.items():
        if any(sum(vector[sl]) > 1 for vector in distinct):
            i = first(lambda it, sl=sl: sum(it["label"][sl]) > 1)
            on = [c for c, v in zip(space[name].classes, items[i]["label"][sl]) if v == 1]
            raise DatalistError(f"{path}: {split}[{i}] ({items[i]['image']}): label has {len(on)} classes of group "
                                f"{name!r} ({', '.join(on)}); a group holds one class (or none, when unknown)")


# report ----------------------------------------------------------------------------------------------------------
def report_dict(result: IndexResult, space: LabelSpace, sources: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Machine-readable report: counts, label sources, unmapped values, skipped files by reason (and, for a merged
    corpus, ``sources``: one summary per source)."""
    per_source = [dict(summary) for summary in sources]
    sources: dict[str, Counter] = {g: Counter() for g in space.names}
    for r in result.records:
        for g in space.names:
            sources[g][r.label_sources.get(g) or "unknown"] += 1
    skipped: dict[str, list[str]] = {}
    for s in result.skipped:
        skipped.setdefault(s.reason, []).append(_relative(s.path, result.root))
    return {
        "source": result.source,
        "root": result.root,
        "images": len(result.records),
        "skipped": len(result.skipped),
        "splits": dict(Counter(r.split for r in result.records)),
        "modality_x_anatomy": {m: dict(c) for m, c in sorted(result.label_counts(space).items())},
        "label_sources": {g: dict(c.most_common()) for g, c in sources.items()},
        "unmapped": [{"group": g, "tag": t, "value": v, "count": n}
                     for (g, t), c in sorted(result.unmapped.items()) for v, n in c.most_common()],
        "skipped_by_reason": {k: {"count": len(v), "examples": v[:5]} for k, v in sorted(skipped.items(), key=lambda kv: -len(kv[1]))},
        "notes": list(result.notes),
        **({"sources": per_source} if per_source else {}),
    }


def format_report(result: IndexResult, space: LabelSpace, max_rows: int = 40,
                  sources: Sequence[Mapping[str, Any]] = ()) -> str:
    """Markdown report a person reads after indexing."""
    rep = report_dict(result, space, sources)
    lines = [f"# Index report: {result.source}", "", f"- root: `{result.root}`",
             f"- usable images: **{rep['images']}**", f"- skipped files: **{rep['skipped']}**"]
    if rep["splits"]:
        lines.append("- splits: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["splits"].items())))
    lines += ["", "## Images per modality × anatomy", ""]
    table = rep["modality_x_anatomy"]
    cols = sorted({a for row in table.values() for a in row}, key=lambda a: (a == "unknown", a))
    if table:
        lines.append("| modality | " + " | ".join(cols) + " | total |")
        lines.append("|---" * (len(cols) + 2) + "|")
        for m, row in sorted(table.items(), key=lambda kv: (kv[0] == "unknown", kv[0])):
            lines.append(f"| {m} | " + " | ".join(str(row.get(c, "")) for c in cols) + f" | {sum(row.values())} |")
    else:
        lines.append("(no usable images)")
    if sources:
        lines += ["", "## Sources (one corpus, one label space)", "",
                  "| source | type | images | skipped | modality x anatomy | " + " | ".join(
                      f"{g} from" for g in space.names) + " |", "|---" * (5 + len(space.names)) + "|"]
        for src in sources:
            cells = ", ".join(f"{m}/{a} {n}" for m, row in sorted(src["modality_x_anatomy"].items())
                              for a, n in sorted(row.items()))
            origin = [", ".join(f"{k} {v}" for k, v in src["label_sources"].get(g, {}).items()) for g in space.names]
            lines.append(f"| `{src['source']}` | {src['type']} | {src['images']} | {src['skipped']} | {cells} | "
                         + " | ".join(origin) + " |")
    lines += ["", "## Which tag produced each label", ""]
    for g, c in rep["label_sources"].items():
        lines.append(f"- {g}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    lines += ["", "## Unmapped values (add them to a vocabulary YAML: `--vocab my.yaml`, see docs/labels.md)", ""]
    if rep["unmapped"]:
        lines += ["| group | tag | value | count |", "|---|---|---|---|"]
        lines += [f"| {u['group']} | {u['tag']} | {u['value']} | {u['count']} |" for u in rep["unmapped"][:max_rows]]
        if len(rep["unmapped"]) > max_rows:
            lines.append(f"| … | | {len(rep['unmapped']) - max_rows} more in the JSON report | |")
    else:
        lines.append("none")
    lines += ["", "## Skipped files by reason", ""]
    if rep["skipped_by_reason"]:
        for reason, info in rep["skipped_by_reason"].items():
            lines.append(f"- **{reason}**: {info['count']} (e.g. " + ", ".join(f"`{p}`" for p in info["examples"][:3]) + ")")
    else:
        lines.append("none")
    if rep["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in rep["notes"]]
    return "\n".join(lines) + "\n"


def _relative(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
