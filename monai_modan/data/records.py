"""The index's vocabulary: one labelled image, one skipped file, and the result of indexing a folder.

Every indexer (DICOM export, RadImageNet tree, MedMNIST, synthetic) returns an :class:`IndexResult`; the datalist
writer and the report consume only this, so sources can be mixed in one corpus.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels.vocabulary import LabelSpace

__all__ = ["ImageRecord", "SkippedFile", "IndexResult", "SPLITS"]

SPLITS = ("training", "validation", "test")  # datalist keys, MONAI decathlon style


@dataclass
class ImageRecord:
    """One usable image.

    Args:
        image: absolute path of the file (or ``"file.npz#train_images/12"`` for an image inside an archive).
        labels: group -> canonical class, or ``None`` when unknown.
        label_sources: group -> what produced the label, e.g. ``"BodyPartExamined"``, ``"StudyDescription"``,
            ``"AnatomicRegionSequence"``, ``"path:MR/knee"``; ``None`` when unknown.
        split: one of :data:`SPLITS`.
        extra: further datalist fields (``class``, ``class_index``, ``frames``, ``source`` ...). Never put
            patient-identifying values here.
    """

    image: str
    labels: dict[str, str | None]
    label_sources: dict[str, str | None] = field(default_factory=dict)
    split: str = "training"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_item(self, space: LabelSpace) -> dict[str, Any]:
        """Datalist entry: ``{"image", <group>: class, "label": [K] multi-hot, "label_source": {...}, **extra}``."""
        item: dict[str, Any] = {"image": self.image}
        for g in space.names:
            item[g] = self.labels.get(g)
        item["label"] = space.encode({g: self.labels.get(g) for g in space.names}).astype(int).tolist()
        item["label_source"] = {g: self.label_sources.get(g) for g in space.names}
        item.update(self.extra)
        return item


@dataclass
class SkippedFile:
    """A file that was not indexed. ``reason`` is a short category (counted in the report), ``detail`` the cause."""

    path: str
    reason: str
    detail: str = ""


@dataclass
class IndexResult:
    """What an indexer found.

    ``unmapped[(group, tag)]`` counts values that were present but matched no class, e.g.
    ``unmapped[("anatomy", "BodyPartExamined")]["EXTREMITY"] == 3`` -- the list a user copies into a vocabulary YAML.
    """

    source: str
    root: str
    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    unmapped: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    notes: list[str] = field(default_factory=list)

    def count_unmapped(self, group: str, tag: str, value: str) -> None:
        self.unmapped[(group, tag)][value] += 1

    def extend(self, other: IndexResult) -> IndexResult:
        """Merge another result into this one (mixing sources in one corpus)."""
        self.records.extend(other.records)
        self.skipped.extend(other.skipped)
        for key, counter in other.unmapped.items():
            self.unmapped[key].update(counter)
        self.notes.extend(other.notes)
        if other.source != self.source and other.source not in self.source.split("+"):
            self.source = f"{self.source}+{other.source}"
        return self

    def label_counts(self, space: LabelSpace, rows: str = "modality", cols: str = "anatomy") -> dict[str, Counter]:
        """``{row class or "unknown": Counter(col class or "unknown")}`` over the records."""
        table: dict[str, Counter] = defaultdict(Counter)
        for r in self.records:
            table[r.labels.get(rows) or "unknown"][r.labels.get(cols) or "unknown"] += 1
        return table

    def label_matrix(self, space: LabelSpace) -> np.ndarray:
        """``[N, K]`` float32 multi-hot targets of all records."""
        if not self.records:
            return np.zeros((0, space.width), dtype=np.float32)
        return np.stack([space.encode({g: r.labels.get(g) for g in space.names}) for r in self.records])
