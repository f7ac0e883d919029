"""Statistics of the evaluation protocol: fold AUC, repeat means, mean ± sd over repeats, paired Wilcoxon tests.

The unit of analysis is the *repeat*: one repeat trains and tests on every fold of the fixed fold plan, and its
score is the mean of its fold AUCs. An initialisation's result on a (task, mode) is the mean ± sample sd
(``ddof = 1``) of its R repeat scores, and it is compared with the reference initialisation by a two-sided
Wilcoxon signed-rank test over the R repeat scores paired by repeat index (repeat r of every init uses the same
folds and seed). Fold AUCs within a repeat are not independent (they share training data), so they are never
used as samples of the test.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum  # stdlib twin of monai.utils.StrEnum: the statistics need no torch
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon
from sklearn.metrics import roc_auc_score

__all__ = [
    "EvalMode",
    "AucRow",
    "RESULT_FIELDS",
    "RepeatResult",
    "InitSummary",
    "PairedTest",
    "WILCOXON_ZERO_METHOD",
    "ZERO_DIFFERENCE_TOL",
    "fold_auc",
    "repeat_results",
    "paired_wilcoxon",
    "compare_inits",
    "read_results_csv",
]

WILCOXON_ZERO_METHOD = "wilcox"  # Wilcoxon's original convention: pairs with zero difference are dropped
ZERO_DIFFERENCE_TOL = 1e-12  # |difference| at or below this counts as zero (float noise of equal means)


class EvalMode(StrEnum):
    """How a pretrained encoder is evaluated on a task (the ModAn paper's Table 4 and Table 5)."""

    FINE_TUNING = "fine_tuning"  # every layer trained
    LINEAR_PROBING = "linear_probing"  # encoder frozen (BatchNorm in eval mode), only the linear layer trained
    KNN = "knn"
    LOGISTIC = "logistic"  # logistic regression on standardised frozen features (not in the paper)

    @classmethod
    def parse(cls, value: str | EvalMode) -> EvalMode:
        """The mode named by ``value``, case, ``-`` and spaces ignored. The spellings of release 0.1
        (``fine_tune``, ``linear_probe``) are still accepted for one release, with a ``FutureWarning``."""
        text = str(value).strip().lower().replace("-", "_").replace(" ", "_")
        if text in _OLD_MODE_NAMES:
            new = _OLD_MODE_NAMES[text]
            warnings.warn(f"mode {value!r} is deprecated and will be removed in the next release; write {new.value!r}",
                          FutureWarning, stacklevel=2)
            return new
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown evaluation mode {value!r}; known: {[m.value for m in cls]}") from None

    @property
    def trains_network(self) -> bool:
        """Whether the mode trains encoder + linear layer by SGD (fine-tuning, linear probing) rather than fitting
        a classifier on frozen features (logistic, kNN)."""
        return self in (EvalMode.FINE_TUNING, EvalMode.LINEAR_PROBING)


_OLD_MODE_NAMES = {"fine_tune": EvalMode.FINE_TUNING, "finetune": EvalMode.FINE_TUNING,
                   "linear_probe": EvalMode.LINEAR_PROBING}


RESULT_FIELDS = ("init", "mode", "task", "repeat", "fold", "auc")


@dataclass(frozen=True)
class AucRow:
    """The test AUC of one (initialisation, mode, task, repeat, fold) -- one row of ``results.csv``."""

    init: str
    mode: str
    task: str
    repeat: int
    fold: int
    auc: float

    @classmethod
    def coerce(cls, row: AucRow | Mapping[str, Any]) -> AucRow:
        """An :class:`AucRow` from itself or from a mapping with the :data:`RESULT_FIELDS` keys (CSV strings ok)."""
        if isinstance(row, AucRow):
            out = row
        else:
            missing = [k for k in RESULT_FIELDS if k not in row]
            if missing:
                raise ValueError(f"result row {dict(row)} lacks {missing}")
            try:
                out = cls(init=str(row["init"]), mode=str(row["mode"]), task=str(row["task"]),
                          repeat=int(row["repeat"]), fold=int(row["fold"]), auc=float(row["auc"]))
            except (TypeError, ValueError) as e:
                raise ValueError(f"result row {dict(row)}: {e}") from None
        if not (math.isfinite(out.auc) and 0.0 <= out.auc <= 1.0):
            raise ValueError(f"result row {out}: AUC must be a number in [0, 1]")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fold_auc(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """ROC AUC of one test fold (``sklearn.metrics.roc_auc_score``).

    Args:
        y_true: ``[n]`` 0/1 labels.
        y_score: ``[n]`` scores, higher = more likely class 1 (probabilities or logits).

    Raises:
        ValueError: shapes differ, non-finite scores, labels not 0/1, or only one class present (AUC undefined).
    """
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"y_true and y_score must be 1-D of equal length, got {y.shape} and {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"y_score has {int((~np.isfinite(s)).sum())} non-finite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must be 0/1, found {sorted(set(np.asarray(y).tolist()))[:10]}")
    classes = np.unique(y)
    if classes.size < 2:
        label = "no samples" if classes.size == 0 else f"only class {int(classes[0])} ({y.size} samples)"
        raise ValueError(f"AUC is undefined: the test part has {label}")
    return float(roc_auc_score(y.astype(np.int64), s))


@dataclass(frozen=True)
class RepeatResult:
    """One repeat of a (init, mode, task): the mean of its fold AUCs."""

    init: str
    mode: str
    task: str
    repeat: int
    fold_aucs: tuple[float, ...]  # in fold order

    @property
    def mean_auc(self) -> float:
        return float(np.mean(self.fold_aucs))

    @property
    def n_folds(self) -> int:
        return len(self.fold_aucs)


def repeat_results(rows: Iterable[AucRow | Mapping[str, Any]]) -> list[RepeatResult]:
    """Group fold rows into repeats, in order of first appearance.

    Raises:
        ValueError: a duplicated (init, mode, task, repeat, fold), or a repeat whose folds differ from the other
            repeats of the same (mode, task) -- an incomplete run would bias its fold mean.
    """
    folds: dict[tuple[str, str, str, int], dict[int, float]] = {}
    for row in map(AucRow.coerce, rows):
        key = (row.init, row.mode, row.task, row.repeat)
        per_fold = folds.setdefault(key, {})
        if row.fold in per_fold:
            raise ValueError(f"duplicate result for init={row.init!r} mode={row.mode!r} task={row.task!r} "
                             f"repeat={row.repeat} fold={row.fold}")
        per_fold[row.fold] = row.auc
    if not folds:
        raise ValueError("no result rows")
    expected: dict[tuple[str, str], tuple[tuple[int, ...], tuple[str, str, str, int]]] = {}
    for key, per_fold in folds.items():
        got = tuple(sorted(per_fold))
        first = expected.setdefault((key[1], key[2]), (got, key))
        if got != first[0]:
            raise ValueError(f"init={key[0]!r} mode={key[1]!r} task={key[2]!r} repeat {key[3]} has folds {list(got)}, "
                             f"but init={first[1][0]!r} repeat {first[1][3]} has folds {list(first[0])}: every "
                             "repeat must cover the same folds")
    return [RepeatResult(*key, fold_aucs=tuple(per_fold[f] for f in sorted(per_fold)))
            for key, per_fold in folds.items()]


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired Wilcoxon signed-rank test.

    Attributes:
        p_value: two-sided p-value (1.0 when every difference is zero).
        statistic: SciPy's statistic (the smaller of the signed-rank sums), ``nan`` when not computed.
        n_pairs: number of pairs given; ``n_nonzero`` of them entered the test (zero differences are dropped).
        note: why the p-value is special, or ``""``.
    """

    p_value: float
    statistic: float
    n_pairs: int
    n_nonzero: int
    note: str = ""


def paired_wilcoxon(reference: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``other - reference`` over ``[R]`` paired repeat scores.

    ``scipy.stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")``: zero differences
    (``|d| <= 1e-12``) are dropped (Wilcoxon's convention); SciPy then computes the exact null distribution for
    up to 50 pairs without ties, an exhaustive permutation distribution for up to 13 pairs with ties, and the
    normal approximation otherwise. If every difference is zero the two inits are indistinguishable: ``p = 1``
    with a note (SciPy would warn and divide by zero). No test, ``p = nan`` with a note, when it could not mean
    anything: a single pair, or repeats that are copies of one measurement (neither side varies across repeats,
    e.g. a deterministic frozen-feature classifier on the same data in every repeat), where any constant
    difference would otherwise reach the smallest attainable p.

    Raises:
        ValueError: lengths differ, fewer than one pair, or non-finite values.
    """
    ref = np.asarray(reference, dtype=np.float64)
    oth = np.asarray(other, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != oth.shape or ref.size == 0:
        raise ValueError(f"paired test needs two 1-D sequences of equal, non-zero length, got {ref.shape} and "
                         f"{oth.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(oth).all()):
        raise ValueError("paired test got non-finite values")
    d = oth - ref
    d[np.abs(d) <= ZERO_DIFFERENCE_TOL] = 0.0
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return PairedTest(1.0, math.nan, ref.size, 0, note=f"all {ref.size} differences are zero: p set to 1")
    if ref.size < 2:
        return PairedTest(math.nan, math.nan, ref.size, nonzero, note="one repeat: no test")
    if np.ptp(ref) <= ZERO_DIFFERENCE_TOL and np.ptp(oth) <= ZERO_DIFFERENCE_TOL:
        return PairedTest(math.nan, math.nan, ref.size, nonzero,
                          note=f"the {ref.size} repeats are identical on both sides (copies of one measurement, not "
                               "independent samples): no test")
    result = wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD, alternative="two-sided", method="auto")
    note = "" if nonzero == ref.size else f"{ref.size - nonzero} zero differences dropped"
    return PairedTest(float(result.pvalue), float(result.statistic), ref.size, nonzero, note)


@dataclass(frozen=True)
class InitSummary:
    """One cell of the paper's tables: an init's AUC on a (task, mode), with the test against the reference.

    Attributes:
        mean: mean over repeats of the per-repeat fold-mean AUC.
        sd: sample standard deviation (``ddof = 1``) of the same; ``nan`` with a single repeat.
        repeat_means: ``[R]`` per-repeat fold means, in repeat order.
        p_value: two-sided paired Wilcoxon p-value against the reference init, ``None`` for the reference itself,
            ``nan`` where no test is meaningful (see :func:`paired_wilcoxon` and ``note``).
        note: remarks on the test (zero differences).
    """

    mode: str
    task: str
    init: str
    reference: bool
    n_repeats: int
    n_folds: int
    mean: float
    sd: float
    repeat_means: tuple[float, ...]
    repeats: tuple[int, ...]
    p_value: float | None
    note: str = ""


def compare_inits(rows: Iterable[AucRow | Mapping[str, Any]], reference_init: str) -> list[InitSummary]:
    """For every (mode, task) and init: mean, sd over repeats, and p-value vs ``reference_init``.

    Results are ordered by mode, task and init in order of first appearance in ``rows``.

    Raises:
        ValueError: ``reference_init`` is missing for a (mode, task) that has results, or an init's repeats differ
            from the reference's (the test pairs them by repeat index).
    """
    repeats = repeat_results(rows)
    cells: dict[tuple[str, str], dict[str, dict[int, RepeatResult]]] = defaultdict(dict)
    for r in repeats:
        cells[(r.mode, r.task)].setdefault(r.init, {})[r.repeat] = r
    inits = list(dict.fromkeys(r.init for r in repeats))
    if reference_init not in inits:
        raise ValueError(f"reference init {reference_init!r} has no results; inits present: {inits}")
    out: list[InitSummary] = []
    for (mode, task), by_init in cells.items():
        if reference_init not in by_init:
            raise ValueError(f"reference init {reference_init!r} has no results for mode={mode!r} task={task!r} "
                             f"(present: {list(by_init)})")
        ref_repeats = sorted(by_init[reference_init])
        ref_means = np.asarray([by_init[reference_init][k].mean_auc for k in ref_repeats])
        for init, per_repeat in by_init.items():
            ids = sorted(per_repeat)
            means = np.asarray([per_repeat[k].mean_auc for k in ids])
            p_value, note = None, ""
            if init != reference_init:
                if ids != ref_repeats:
                    raise ValueError(f"init {init!r} has repeats {ids} on mode={mode!r} task={task!r}, the reference "
                                     f"{reference_init!r} has {ref_repeats}: the paired test needs the same repeats")
                test = paired_wilcoxon(ref_means, means)
                p_value, note = test.p_value, test.note
            out.append(InitSummary(
                mode=mode, task=task, init=init, reference=init == reference_init, n_repeats=len(ids),
                n_folds=per_repeat[ids[0]].n_folds, mean=float(means.mean()),
                sd=float(means.std(ddof=1)) if len(ids) > 1 else math.nan,
                repeat_means=tuple(float(m) for m in means), repeats=tuple(ids), p_value=p_value, note=note))
    order = {name: i for i, name in enumerate(inits)}
    pos = {key: i for i, key in enumerate(cells)}
    return sorted(out, key=lambda s: (pos[(s.mode, s.task)], order[s.init]))


def read_results_csv(path: str | Path) -> list[AucRow]:
    """The rows of a ``results.csv`` written by :func:`monai_modan.evaluation.report.write_report`."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [AucRow.coerce(row) for row in csv.DictReader(f)]
    except OSError as e:
        raise ValueError(f"cannot read results {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
