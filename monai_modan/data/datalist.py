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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..labels.vocabulary import LabelSpace
from ..utils.io import atomic_write_json, atomic_write_text
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
                   report: bool = True) -> Path:
    """Write the datalist JSON (atomically) and, beside it, ``<stem>.report.md`` and ``<stem>.report.json``."""
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
        atomic_write_text(f"{stem}.report.md", format_report(result, space))
        atomic_write_json(f"{stem}.report.json", report_dict(result, space))
    return out


def load_datalist(path: str | Path) -> Datalist:
    """Read and validate a datalist written by :func:`write_datalist` (or any decathlon JSON with ``label``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatalistError(f"cannot read datalist {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise DatalistError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or "training" not in data:
        raise DatalistError(f"{path}: not a datalist (no 'training' list); create one with `python -m monai_modan index`")
    if "label_space" not in data:
        raise DatalistError(f"{path}: no 'label_space'; it was not written by monai-modan, re-index the data")
    space = LabelSpace.from_dict(data["label_space"])
    splits = {s: list(data.get(s) or []) for s in SPLITS if s in data}
    for split, items in splits.items():
        for i, item in enumerate(items):
            if "image" not in item or "label" not in item:
                raise DatalistError(f"{path}: {split}[{i}] lacks 'image' or 'label'")
            if len(item["label"]) != space.width:
                raise DatalistError(
                    f"{path}: {split}[{i}] has a label of width {len(item['label'])}, but its label space has width "
                    f"{space.width} ({space!r}); the file was edited or mixes label spaces -- re-index"
                )
    return Datalist(path=path, space=space, splits=splits, classes=list(data.get("classes") or []),
                    source=str(data.get("source", "")))


# report ----------------------------------------------------------------------------------------------------------
def report_dict(result: IndexResult, space: LabelSpace) -> dict[str, Any]:
    """Machine-readable report: counts, label sources, unmapped values, skipped files by reason."""
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
    }


def format_report(result: IndexResult, space: LabelSpace, max_rows: int = 40) -> str:
    """Markdown report a person reads after indexing."""
    rep = report_dict(result, space)
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
