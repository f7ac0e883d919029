"""An experiment's output folder: the settings record and the append-only results and predictions logs (resume).

- ``experiment.json`` -- the settings the rows were computed with; a restart with settings of another meaning is
  refused (paths are compared resolved, data and weights by content hash, so a moved or copied folder resumes);
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
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..networks.weights import IMAGENET_PREFIX, InitKind
from ..utils.io import atomic_write_json, atomic_write_text
from .stats import RESULT_FIELDS, AucRow

__all__ = ["ABSENT_MEANS", "FORMAT", "PREDICTION_FIELDS", "ExperimentError", "FoldScores", "Key", "ResultsLog",
           "portable_path", "row_key"]

logger = logging.getLogger(__name__)

FORMAT = "monai-modan/experiment/1"
PREDICTION_FIELDS = ("init", "mode", "task", "label_fraction", "repeat", "fold", "index", "label", "score")
# the name -> value settings of experiment.json: a restart may add names (tasks, inits), not change what they mean.
# "data" (of each task) and "weights" (of each init with a file) are content hashes, compared as such; "tasks" and
# "inits" hold paths (portable_path: absolute, relative to the output folder inside it), compared only for a name
# whose hash the record lacks (a record written before the hashes), and an init's kind (scratch / imagenet /
# checkpoint) always
_GROUPS = ("tasks", "data", "inits", "weights")
_HASH_OF = {"tasks": "data", "inits": "weights"}  # path group -> the group holding its names' content hashes
# the list settings of experiment.json that a restart may extend (a removed value whose rows exist is refused as
# rows outside the configuration); recorded as the sorted union
_UNIONS = ("label_fractions",)
_FRACTION = "label_fraction"  # the column the logs of release 0.1 lack
# what a record written before a setting existed means: its rows were computed with the behaviour of then, so a
# restart must match that value (a setting absent here was added without changing the numbers: any value matches)
ABSENT_MEANS: dict[str, Any] = {"fixed_splits": False}  # validation parts were redrawn in every repeat

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


def portable_path(path: str | Path, root: str | Path) -> str:
    """``path`` as experiment.json records it: absolute and normalised (``..`` and the current folder resolved), and
    relative to ``root`` (the output folder; POSIX separators) when inside it, so that the record still holds when
    the folder is moved or copied, and two spellings of one file (``outputs/x``, ``$PWD/outputs/x``) are one value.
    Symbolic links are kept, not followed: the indexer's pseudonymous links stand for files in folders that may be
    named by a patient's ID (:mod:`~monai_modan.labels.privacy`). A ``file#member`` reference keeps its member."""
    text = os.fspath(path)
    file, sep, member = text.rpartition("#") if "#" in text else (text, "", "")
    absolute = Path(os.path.abspath(os.path.expanduser(file)))
    try:
        file = absolute.relative_to(os.path.abspath(os.path.expanduser(os.fspath(root)))).as_posix()
    except ValueError:
        file = str(absolute)
    return file + sep + member


def _init_kind(value: Any) -> str:
    """The kind of a recorded init value (the spellings of :meth:`~monai_modan.networks.weights.InitSpec.parse`)."""
    text = "" if value is None else str(value).strip()
    if not text or text.lower() == InitKind.SCRATCH:
        return InitKind.SCRATCH.value
    return InitKind.IMAGENET.value if text.lower().startswith(IMAGENET_PREFIX) else InitKind.CHECKPOINT.value


def _same_file(saved: Any, current: Any, out_dir: Path) -> bool:
    """Whether a path of a record written before the content hashes (as it was given then: relative to the current
    folder) names the file the current, portable path does (relative to ``out_dir``)."""
    def strip(value: Any) -> str:
        text = str(value).strip()
        return text[len(IMAGENET_PREFIX):].strip() if text.lower().startswith(IMAGENET_PREFIX) else text

    now = Path(strip(current)).expanduser()
    return os.path.abspath(Path(strip(saved)).expanduser()) == os.path.abspath(now if now.is_absolute()
                                                                               else out_dir / now)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _shown(value: Any) -> str:
    """A recorded value in a refusal line: a content hash by its first 12 digits, anything else as ``repr``, cut
    in the middle beyond 64 characters."""
    if isinstance(value, str) and _SHA256.match(value):
        return value[:12]
    text = repr(value)
    return text if len(text) <= 64 else f"{text[:30]}...{text[-30:]}"


def _setting_diffs(out_dir: Path, saved: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """One line ``key: old -> new`` per setting whose meaning differs between the record and ``settings``."""
    lines: list[str] = []

    def differ(key: str, old: Any, new: Any, note: str = "") -> None:
        lines.append(f"  {key}: {_shown(old)} -> {_shown(new)}{note}")

    for k, v in settings.items():
        if k in _GROUPS or k in _UNIONS:
            continue
        if k not in saved:  # added to the package later: the record means the behaviour of then (ABSENT_MEANS),
            if k in ABSENT_MEANS and ABSENT_MEANS[k] != v:  # or any value when the setting left the numbers alone
                differ(k, ABSENT_MEANS[k], v, " (not in the record, which is older than the setting)")
        elif isinstance(saved[k], Mapping) and isinstance(v, Mapping):  # the recipe: field by field; a field the
            lines += [f"  {k}.{f}: {_shown(saved[k][f])} -> {_shown(v[f])}"  # record lacks was added later
                      for f in v if f in saved[k] and saved[k][f] != v[f]]
        elif saved[k] != v:
            differ(k, saved[k], v)
    for group in _HASH_OF.values():
        old = saved.get(group) or {}
        for name, digest in (settings.get(group) or {}).items():
            if name in old and old[name] != digest:
                differ(f"{group}.{name}", old[name], digest, " (sha256: other contents)")
    for group, hashes in _HASH_OF.items():
        old, old_hashes = saved.get(group) or {}, saved.get(hashes) or {}
        for name, value in (settings.get(group) or {}).items():
            if name not in old:
                continue
            if group == "inits" and _init_kind(old[name]) != _init_kind(value):
                differ(f"{group}.{name}", old[name], value)
            elif (name not in old_hashes and not (group == "inits" and _init_kind(value) == InitKind.SCRATCH)
                  and not _same_file(old[name], value, out_dir)):
                differ(f"{group}.{name}", old[name], value,
                       " (the record, older than content hashes, names the file by path: resume it from where it "
                       "was written once)")
    return lines


def _merged_settings(path: Path, saved: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The record to write to ``path``: ``settings`` with the saved groups' names and the saved fractions merged in;
    settings of another meaning than the saved ones are refused, naming each differing key on a line of its own."""
    record = {"format": FORMAT, **settings}
    if saved is None:
        return record
    diffs = _setting_diffs(path.parent, saved, settings)
    for group in _GROUPS:
        record[group] = {**(saved.get(group) or {}), **(record.get(group) or {})}
    if "label_fractions" in record:
        record["label_fractions"] = sorted({*_saved_fractions(saved), *record["label_fractions"]})
    if diffs:
        raise ExperimentError(f"{path.parent} holds results of other settings; restore them to resume, or use "
                              "another out_dir:\n" + "\n".join(diffs))
    return record


class ResultsLog:
    """The rows and test scores an output folder holds, and the appending of new ones.

    Opening refuses a folder of other settings (``settings``: the result settings, plus the name -> value groups
    ``tasks`` and ``inits`` (:func:`portable_path` paths), ``data`` and ``weights`` (their content hashes), and the
    list ``label_fractions``; compared by meaning, see :data:`_GROUPS`), rows outside ``planned`` (every key of
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
