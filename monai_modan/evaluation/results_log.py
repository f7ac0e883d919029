"""An experiment's output folder: the settings record and the append-only results and predictions logs (resume).

- ``experiment.json`` -- the settings the rows were computed with; a restart with other settings is refused;
- ``results.csv`` -- one :class:`~monai_modan.evaluation.stats.AucRow` per (init, mode, task, label fraction,
  repeat, fold);
- ``predictions.csv`` -- the test scores of every fine-tuned / probed fold, written before the fold's row.

:class:`ResultsLog` reads both logs back when a run restarts, so that it computes only the rows missing, and appends
each fold (flushed and fsynced) as it finishes, so that an interrupted run keeps its rows.

Logs of release 0.1 have no ``label_fraction`` column: their rows are read as the single ``label_fraction`` their
``experiment.json`` records, and both files are rewritten (atomically) with the column before anything is appended.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..utils.io import atomic_write_json, atomic_write_text
from .stats import RESULT_FIELDS, AucRow

__all__ = ["FORMAT", "PREDICTION_FIELDS", "ExperimentError", "FoldScores", "Key", "ResultsLog", "row_key"]

logger = logging.getLogger(__name__)

FORMAT = "monai-modan/experiment/1"
PREDICTION_FIELDS = ("init", "mode", "task", "label_fraction", "repeat", "fold", "index", "label", "score")
# the name -> value settings of experiment.json: a restart may add names (tasks, inits), not change their values
_GROUPS = ("tasks", "inits", "weights")
# the list settings of experiment.json that a restart may extend (a removed value whose rows exist is refused as
# rows outside the configuration); recorded as the sorted union
_UNIONS = ("label_fractions",)
_FRACTION = "label_fraction"  # the column the logs of release 0.1 lack

Key = tuple[str, str, str, float, int, int]  # (init, mode, task, label_fraction, repeat, fold)


class ExperimentError(ValueError):
    """An experiment cannot run as configured, or its output folder belongs to another configuration."""


class FoldScores(NamedTuple):
    """The test part of one fold: item indices in the task datalist, true labels, scores."""

    index: np.ndarray
    y_true: np.ndarray
    y_score: np.ndarray


def row_key(row: Mapping[str, Any] | AucRow) -> Key:
    """``(init, mode, task, label_fraction, repeat, fold)`` of a result row or a prediction (a CSV dict or an
    :class:`AucRow`)."""
    if isinstance(row, AucRow):
        return (row.init, row.mode, row.task, row.label_fraction, row.repeat, row.fold)
    return (str(row["init"]), str(row["mode"]), str(row["task"]), float(row[_FRACTION]), int(row["repeat"]),
            int(row["fold"]))


class CsvLog:
    """A CSV file appended row by row (flushed and fsynced) and read back on restart.

    A restart after a crash may find a torn last line (no final newline): it is dropped. A file of release 0.1,
    whose header lacks ``label_fraction``, is read with ``legacy_fraction`` in that column (``None``: refused, the
    fraction of its rows being unknown). Either way the file needs :meth:`repair` before anything is appended; the
    caller repairs once it has checked that the folder may be resumed, so that a refused restart changes nothing.
    Any other bad line is an error naming the file and line.
    """

    def __init__(self, path: Path, fieldnames: Sequence[str], legacy_fraction: float | None = None) -> None:
        self.path, self.fieldnames = path, tuple(fieldnames)
        self.rows: list[dict[str, str]] = []
        self.needs_repair = False
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8")
        torn = bool(text) and not text.endswith("\n")
        if torn:
            text = text[: text.rfind("\n") + 1]
            logger.warning("%s: dropped a torn last line (interrupted write)", path)
        reader = csv.DictReader(io.StringIO(text))
        header = tuple(reader.fieldnames or ())
        legacy = bool(text) and header == tuple(f for f in self.fieldnames if f != _FRACTION) != self.fieldnames
        if text and header != self.fieldnames and not legacy:
            raise ExperimentError(f"{path}: header {reader.fieldnames} is not {list(self.fieldnames)}; not a file "
                                  "of this experiment runner")
        if legacy and legacy_fraction is None:
            raise ExperimentError(f"{path} has no {_FRACTION} column (written by release 0.1) and the experiment "
                                  f"record {path.parent / 'experiment.json'} does not say which single label fraction "
                                  "its rows were computed with; use another out_dir")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise ExperimentError(f"{path}: line {reader.line_num} does not have {len(header)} fields")
            if legacy:
                row = {k: repr(float(legacy_fraction)) if k == _FRACTION else row[k] for k in self.fieldnames}
            self.rows.append(row)
        self.needs_repair = torn or legacy
        if legacy:
            logger.info("%s: no %s column (release 0.1): its rows are read as label fraction %g", path, _FRACTION,
                        legacy_fraction)

    def repair(self, rows: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Rewrite the file (atomically) with ``rows`` (default: the rows read) when it had a torn last line or the
        old header, or when ``rows`` are given."""
        if rows is not None or self.needs_repair:
            self.rewrite(self.rows if rows is None else rows)
            self.needs_repair = False

    @staticmethod
    def _text(fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]], header: bool) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def rewrite(self, rows: Sequence[Mapping[str, Any]]) -> None:
        atomic_write_text(self.path, self._text(self.fieldnames, rows, header=True))

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        header = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(self._text(self.fieldnames, rows, header))
            f.flush()
            os.fsync(f.fileno())


def _read_record(path: Path) -> dict[str, Any] | None:
    """The saved ``experiment.json``, or ``None`` when there is none."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot read {path}: {e}") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ExperimentError(f"{path} is not an experiment record ({FORMAT})")
    return saved


def _saved_fractions(saved: Mapping[str, Any]) -> list[float]:
    """The label fractions a saved record lists: ``label_fractions``, or release 0.1's single ``label_fraction``,
    or none (a record from before label fractions, all of whose rows used the whole training part)."""
    if "label_fractions" in saved:
        return [float(f) for f in saved["label_fractions"] or []]
    return [float(saved["label_fraction"])] if "label_fraction" in saved else [1.0]


def _legacy_fraction(saved: Mapping[str, Any] | None) -> float | None:
    """The fraction of the rows of a log without the ``label_fraction`` column: the single fraction the record
    lists (1.0 without a record, the convention of :func:`~monai_modan.evaluation.stats.read_results_csv`);
    ``None`` when the record lists several."""
    if saved is None:
        return 1.0
    fractions = _saved_fractions(saved)
    return fractions[0] if len(fractions) == 1 else None


def _merged_settings(path: Path, saved: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The record to write to ``path``: ``settings`` with the saved groups' names and the saved fractions merged in;
    other settings than the saved ones are refused."""
    record = {"format": FORMAT, **settings}
    if saved is None:
        return record
    # a setting missing from the record was added to the package later; its rows cannot exist there
    diffs = [f"{k}: {saved.get(k)!r} there, {v!r} now" for k, v in settings.items()
             if k not in _GROUPS and k not in _UNIONS and saved.get(k, v) != v]
    for group in _GROUPS:
        old = saved.get(group) or {}
        diffs += [f"{group}.{name}: {old[name]!r} there, {value!r} now" for name, value in record[group].items()
                  if name in old and old[name] != value]
        record[group] = {**old, **record[group]}
    if "label_fractions" in record:
        record["label_fractions"] = sorted({*_saved_fractions(saved), *record["label_fractions"]})
    if diffs:
        raise ExperimentError(f"{path.parent} holds results of other settings ({'; '.join(diffs)}): use another "
                              "out_dir, or restore the settings to resume")
    return record


class ResultsLog:
    """The rows and test scores an output folder holds, and the appending of new ones.

    Opening refuses a folder of other settings (``settings``: the result settings, plus the name -> value groups
    ``tasks``, ``inits`` and ``weights`` and the list ``label_fractions``), rows outside ``planned`` (every key of
    this configuration) and duplicated rows, without changing a file; then it repairs the logs (a torn last line,
    release 0.1's missing ``label_fraction`` column), drops the scores of a fold whose row was never written, and
    records the settings last (the record of release 0.1 says which fraction its rows are, until the logs carry it).
    """

    def __init__(self, out_dir: Path, settings: Mapping[str, Any], planned: Collection[Key]) -> None:
        self.settings_path = out_dir / "experiment.json"
        saved = _read_record(self.settings_path)
        legacy = _legacy_fraction(saved)
        self.results = CsvLog(out_dir / "results.csv", RESULT_FIELDS, legacy)
        try:
            self.rows = [AucRow.coerce(r) for r in self.results.rows]
        except ValueError as e:
            raise ExperimentError(f"{self.results.path}: {e}") from None
        record = _merged_settings(self.settings_path, saved, settings)
        self._refuse_rows_outside(planned)
        self.done = {row_key(r) for r in self.rows}
        if len(self.done) != len(self.rows):
            raise ExperimentError(f"{self.results.path} holds duplicated rows; remove them to resume")
        self.predictions = CsvLog(out_dir / "predictions.csv", PREDICTION_FIELDS, legacy)
        self.results.repair()
        self.scores = self._read_scores()
        atomic_write_json(self.settings_path, record)
        if self.rows:
            logger.info("resuming in %s: %d result rows already present", out_dir, len(self.rows))

    def _refuse_rows_outside(self, planned: Collection[Key]) -> None:
        extra = [r for r in self.rows if row_key(r) not in planned]
        if extra:
            shown = ", ".join(f"{r.init}/{r.mode}/{r.task}/label fraction {r.label_fraction:g}/repeat {r.repeat}/fold "
                              f"{r.fold}" for r in extra[:3])
            raise ExperimentError(f"{self.results.path} holds {len(extra)} rows outside this configuration (e.g. "
                                  f"{shown}): add their inits, tasks, modes, label fractions or repeats back, or use "
                                  "another out_dir")

    def _read_scores(self) -> dict[Key, list[tuple[int, float]]]:
        """``(label, score)`` pairs per fold; the scores of a fold without a row are removed from the file."""
        kept = [p for p in self.predictions.rows if row_key(p) in self.done]
        self.predictions.repair(kept if len(kept) != len(self.predictions.rows) else None)
        scores: dict[Key, list[tuple[int, float]]] = {}
        for p in kept:
            scores.setdefault(row_key(p), []).append((int(p["label"]), float(p["score"])))
        return scores

    def add(self, row: AucRow, scores: FoldScores | None = None) -> None:
        """Append one fold: its test scores first (a row present implies its scores are present), then its row."""
        key = row_key(row)
        if scores is not None:
            self.predictions.append([
                {"init": row.init, "mode": row.mode, "task": row.task, _FRACTION: repr(float(row.label_fraction)),
                 "repeat": row.repeat, "fold": row.fold, "index": int(i), "label": int(t), "score": repr(float(s))}
                for i, t, s in zip(scores.index, scores.y_true, scores.y_score)])
            self.scores[key] = [(int(t), float(s)) for t, s in zip(scores.y_true, scores.y_score)]
        self.results.append([row.as_dict()])
        self.rows.append(row)
        self.done.add(key)
