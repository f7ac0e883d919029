"""Statistics of the evaluation protocol: fold AUC, repeat means, mean ± sd over repeats, paired Wilcoxon tests.

The unit of analysis is the *repeat*: one repeat trains and tests on every fold of the fixed fold plan, and its
score is the mean of its fold AUCs. An initialisation's result on a (task, mode, label fraction) is the mean ± sample sd
(``ddof = 1``) of its R repeat scores, and it is compared with the reference initialisation by a Wilcoxon
signed-rank test over the R repeat scores paired by repeat index (repeat r of every init uses the same folds and
seed): two-sided by default, or one-sided (:class:`Alternative`; ``greater`` = the reference is better, the form of
the ModAn paper's p-values). Fold AUCs within a repeat are not independent (they share training data), so they are never
used as samples of the test. Every label fraction is analysed on its own: its rows are paired with the reference's
rows of the same fraction.
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
    "Alternative",
    "EvalMode",
    "AucRow",
    "RESULT_FIELDS",
    "RepeatResult",
    "InitSummary",
    "LEGACY_RESULT_FIELDS",
    "PairedTest",
    "WILCOXON_ZERO_METHOD",
    "ZERO_DIFFERENCE_TOL",
    "check_label_fraction",
    "fold_auc",
    "repeat_results",
    "paired_wilcoxon",
    "compare_inits",
    "read_results_csv",
]

WILCOXON_ZERO_METHOD = "wilcox"  # Wilcoxon's original convention: pairs with zero difference are dropped
ZERO_DIFFERENCE_TOL = 1e-12  # |difference| at or below this counts as zero (float noise of equal means)


class Alternative(StrEnum):
    """The alternative hypothesis of the paired Wilcoxon test, on the differences ``reference - other`` of the repeat
    scores (``scipy.stats.wilcoxon``'s own ``alternative`` values).

    ``two-sided`` (default): the two inits differ. ``greater``: the reference is better (the ModAn paper's tests,
    ModAn > baseline, whose p = 1.000 / 0.999 where a baseline beats ModAn are one-sided values). ``less``: the
    other init is better.
    """

    TWO_SIDED = "two-sided"
    GREATER = "greater"
    LESS = "less"

    @classmethod
    def parse(cls, value: str | Alternative) -> Alternative:
        """The alternative named by ``value`` (case and surrounding spaces ignored); anything else raises
        ``ValueError`` naming it and the known values."""
        text = value.strip().lower() if isinstance(value, str) else value
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown alternative {value!r}; known: {[a.value for a in cls]} (greater = the "
                             "reference init is better)") from None

    def describe(self) -> str:
        """The hypothesis in words, for the report."""
        return {Alternative.TWO_SIDED: "two-sided (the initialisations differ)",
                Alternative.GREATER: "one-sided, alternative 'greater' (the reference is better)",
                Alternative.LESS: "one-sided, alternative 'less' (the other initialisation is better)"}[self]

    def smallest_p(self, n_pairs: int) -> float:
        """The smallest p the exact test reaches with ``n_pairs`` non-zero differences: ``2 / 2^R`` two-sided,
        ``1 / 2^R`` one-sided."""
        return (2.0 if self == Alternative.TWO_SIDED else 1.0) / 2.0 ** int(n_pairs)


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


RESULT_FIELDS = ("init", "mode", "task", "label_fraction", "repeat", "fold", "auc")
# results.csv of release 0.1 had no label_fraction column: read as one fraction (AucRow.coerce: 1.0 unless told)
LEGACY_RESULT_FIELDS = tuple(f for f in RESULT_FIELDS if f != "label_fraction")


def check_label_fraction(value: Any, what: str = "label fraction") -> float:
    """``value`` as a float in ``(0, 1]``; anything else (a bool, a string, nan, 0, 1.5) raises ``ValueError``
    naming ``what`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} {value!r} is not a number; give a fraction in (0, 1], e.g. 0.25")
    if not (math.isfinite(float(value)) and 0.0 < float(value) <= 1.0):
        raise ValueError(f"{what} {value!r} is outside (0, 1]: give the share of the training part, e.g. 0.25")
    return float(value)


@dataclass(frozen=True)
class AucRow:
    """The test AUC of one (initialisation, mode, task, label fraction, repeat, fold) -- one row of ``results.csv``.

    ``label_fraction`` is the share of each training part the row was trained on (1.0 = all; last, with a default,
    so that rows of the single-fraction protocol can be written as before).
    """

    init: str
    mode: str
    task: str
    repeat: int
    fold: int
    auc: float
    label_fraction: float = 1.0

    @classmethod
    def coerce(cls, row: AucRow | Mapping[str, Any], label_fraction: float = 1.0) -> AucRow:
        """An :class:`AucRow` from itself or from a mapping with the :data:`RESULT_FIELDS` keys (CSV strings ok).

        A mapping without ``label_fraction`` (a ``results.csv`` written before label fractions were recorded) gets
        ``label_fraction``.
        """
        if isinstance(row, AucRow):
            out = row
        else:
            missing = [k for k in LEGACY_RESULT_FIELDS if k not in row]
            if missing:
                raise ValueError(f"result row {dict(row)} lacks {missing}")
            try:
                fraction = row.get("label_fraction", label_fraction)
                fraction = float(fraction) if isinstance(fraction, str) else fraction
                out = cls(init=str(row["init"]), mode=str(row["mode"]), task=str(row["task"]),
                          repeat=int(row["repeat"]), fold=int(row["fold"]), auc=float(row["auc"]),
                          label_fraction=check_label_fraction(fraction))
            except (TypeError, ValueError) as e:
                raise ValueError(f"result row {dict(row)}: {e}") from None
        if not (math.isfinite(out.auc) and 0.0 <= out.auc <= 1.0):
            raise ValueError(f"result row {out}: AUC must be a number in [0, 1]")
        try:
            check_label_fraction(out.label_fraction)
        except ValueError as e:
            raise ValueError(f"result row {out}: {e}") from None
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
    """One repeat of a (init, mode, task, label fraction): the mean of its fold AUCs."""

    init: str
    mode: str
    task: str
    repeat: int
    fold_aucs: tuple[float, ...]  # in fold order
    label_fraction: float = 1.0

    @property
    def mean_auc(self) -> float:
        return float(np.mean(self.fold_aucs))

    @property
    def n_folds(self) -> int:
        return len(self.fold_aucs)


def repeat_results(rows: Iterable[AucRow | Mapping[str, Any]]) -> list[RepeatResult]:
    """Group fold rows into repeats, in order of first appearance.

    Raises:
        ValueError: a duplicated (init, mode, task, label fraction, repeat, fold), or a repeat whose folds differ
            from the other repeats of the same (mode, task, label fraction) -- an incomplete run would bias its fold
            mean.
    """
    folds: dict[tuple[str, str, str, float, int], dict[int, float]] = {}
    for row in map(AucRow.coerce, rows):
        key = (row.init, row.mode, row.task, row.label_fraction, row.repeat)
        per_fold = folds.setdefault(key, {})
        if row.fold in per_fold:
            raise ValueError(f"duplicate result for init={row.init!r} mode={row.mode!r} task={row.task!r} "
                             f"label_fraction={row.label_fraction:g} repeat={row.repeat} fold={row.fold}")
        per_fold[row.fold] = row.auc
    if not folds:
        raise ValueError("no result rows")
    expected: dict[tuple[str, str, float], tuple[tuple[int, ...], tuple[str, str, str, float, int]]] = {}
    for key, per_fold in folds.items():
        got = tuple(sorted(per_fold))
        first = expected.setdefault((key[1], key[2], key[3]), (got, key))
        if got != first[0]:
            raise ValueError(f"init={key[0]!r} mode={key[1]!r} task={key[2]!r} label_fraction={key[3]:g} repeat "
                             f"{key[4]} has folds {list(got)}, but init={first[1][0]!r} repeat {first[1][4]} has "
                             f"folds {list(first[0])}: every repeat must cover the same folds")
    return [RepeatResult(init, mode, task, repeat, fold_aucs=tuple(per_fold[f] for f in sorted(per_fold)),
                         label_fraction=fraction)
            for (init, mode, task, fraction, repeat), per_fold in folds.items()]


@dataclass(frozen=True)
class PairedTest:
    """A paired Wilcoxon signed-rank test.

    Attributes:
        p_value: the p-value under ``alternative`` (1.0 when every difference is zero).
        statistic: SciPy's statistic (two-sided: the smaller of the signed-rank sums; one-sided: the sum of the
            ranks of the positive differences ``reference - other``), ``nan`` when not computed.
        n_pairs: number of pairs given; ``n_nonzero`` of them entered the test (zero differences are dropped).
        note: why the p-value is special, or ``""``.
    """

    p_value: float
    statistic: float
    n_pairs: int
    n_nonzero: int
    note: str = ""
    alternative: str = Alternative.TWO_SIDED.value


def paired_wilcoxon(reference: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray,
                    alternative: Alternative | str = Alternative.TWO_SIDED) -> PairedTest:
    """Wilcoxon signed-rank test of the differences ``d = reference - other`` over ``[R]`` paired repeat scores.

    ``alternative`` (:class:`Alternative`): ``two-sided`` (default), ``greater`` (H1: the reference is better, the
    median of ``d`` is > 0) or ``less``. The two-sided p does not depend on the sign convention.

    ``scipy.stats.wilcoxon(d, zero_method="wilcox", alternative=alternative, method="auto")``: zero differences
    (``|d| <= 1e-12``) are dropped (Wilcoxon's convention); SciPy then computes the exact null distribution for
    up to 50 pairs without ties, an exhaustive permutation distribution for up to 13 pairs with ties, and the
    normal approximation otherwise. If every difference is zero the two inits are indistinguishable: ``p = 1``
    with a note (SciPy would warn and divide by zero). No test, ``p = nan`` with a note, when it could not mean
    anything: a single pair, or repeats that are copies of one measurement (neither side varies across repeats,
    e.g. a deterministic frozen-feature classifier on the same data in every repeat), where any constant
    difference would otherwise reach the smallest attainable p.

    Raises:
        ValueError: lengths differ, fewer than one pair, non-finite values, or an unknown ``alternative``.
    """
    alternative = Alternative.parse(alternative)
    ref = np.asarray(reference, dtype=np.float64)
    oth = np.asarray(other, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != oth.shape or ref.size == 0:
        raise ValueError(f"paired test needs two 1-D sequences of equal, non-zero length, got {ref.shape} and "
                         f"{oth.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(oth).all()):
        raise ValueError("paired test got non-finite values")
    d = ref - oth
    d[np.abs(d) <= ZERO_DIFFERENCE_TOL] = 0.0
    nonzero = int(np.count_nonzero(d))
    kind = alternative.value
    if nonzero == 0:
        return PairedTest(1.0, math.nan, ref.size, 0, note=f"all {ref.size} differences are zero: p set to 1",
                          alternative=kind)
    if ref.size < 2:
        return PairedTest(math.nan, math.nan, ref.size, nonzero, note="one repeat: no test", alternative=kind)
    if np.ptp(ref) <= ZERO_DIFFERENCE_TOL and np.ptp(oth) <= ZERO_DIFFERENCE_TOL:
        return PairedTest(math.nan, math.nan, ref.size, nonzero,
                          note=f"the {ref.size} repeats are identical on both sides (copies of one measurement, not "
                               "independent samples): no test", alternative=kind)
    result = wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD, alternative=kind, method="auto")
    note = "" if nonzero == ref.size else f"{ref.size - nonzero} zero differences dropped"
    return PairedTest(float(result.pvalue), float(result.statistic), ref.size, nonzero, note, alternative=kind)


@dataclass(frozen=True)
class InitSummary:
    """One cell of the paper's tables: an init's AUC on a (task, mode, label fraction), with the test against the
    reference at the same label fraction.

    Attributes:
        mean: mean over repeats of the per-repeat fold-mean AUC.
        sd: sample standard deviation (``ddof = 1``) of the same; ``nan`` with a single repeat.
        repeat_means: ``[R]`` per-repeat fold means, in repeat order.
        p_value: paired Wilcoxon p-value against the reference init (under the ``alternative`` given to
            :func:`compare_inits`), ``None`` for the reference itself,
            ``nan`` where no test is meaningful (see :func:`paired_wilcoxon` and ``note``).
        note: remarks on the test (zero differences).
        label_fraction: the share of each training part the rows were trained on.
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
    label_fraction: float = 1.0


def compare_inits(rows: Iterable[AucRow | Mapping[str, Any]], reference_init: str,
                  alternative: Alternative | str = Alternative.TWO_SIDED) -> list[InitSummary]:
    """For every (mode, task, label fraction) and init: mean, sd over repeats, and p-value vs ``reference_init``
    (paired with the reference's repeats at the same label fraction; :func:`paired_wilcoxon` under
    ``alternative``, ``greater`` = the reference is better).

    Results are ordered by mode, task, label fraction and init in order of first appearance in ``rows``.

    Raises:
        ValueError: ``reference_init`` is missing for a (mode, task, label fraction) that has results, an init's
            repeats differ from the reference's (the test pairs them by repeat index), or an unknown ``alternative``.
    """
    alternative = Alternative.parse(alternative)
    repeats = repeat_results(rows)
    cells: dict[tuple[str, str, float], dict[str, dict[int, RepeatResult]]] = defaultdict(dict)
    for r in repeats:
        cells[(r.mode, r.task, r.label_fraction)].setdefault(r.init, {})[r.repeat] = r
    inits = list(dict.fromkeys(r.init for r in repeats))
    if reference_init not in inits:
        raise ValueError(f"reference init {reference_init!r} has no results; inits present: {inits}")
    out: list[InitSummary] = []
    for (mode, task, fraction), by_init in cells.items():
        where = f"mode={mode!r} task={task!r}" + ("" if len({k[2] for k in cells}) == 1 else
                                                   f" label_fraction={fraction:g}")
        if reference_init not in by_init:
            raise ValueError(f"reference init {reference_init!r} has no results for {where} "
                             f"(present: {list(by_init)})")
        ref_repeats = sorted(by_init[reference_init])
        ref_means = np.asarray([by_init[reference_init][k].mean_auc for k in ref_repeats])
        for init, per_repeat in by_init.items():
            ids = sorted(per_repeat)
            means = np.asarray([per_repeat[k].mean_auc for k in ids])
            p_value, note = None, ""
            if init != reference_init:
                if ids != ref_repeats:
                    raise ValueError(f"init {init!r} has repeats {ids} on {where}, the reference "
                                     f"{reference_init!r} has {ref_repeats}: the paired test needs the same repeats")
                test = paired_wilcoxon(ref_means, means, alternative)
                p_value, note = test.p_value, test.note
            out.append(InitSummary(
                mode=mode, task=task, init=init, reference=init == reference_init, n_repeats=len(ids),
                n_folds=per_repeat[ids[0]].n_folds, mean=float(means.mean()),
                sd=float(means.std(ddof=1)) if len(ids) > 1 else math.nan,
                repeat_means=tuple(float(m) for m in means), repeats=tuple(ids), p_value=p_value, note=note,
                label_fraction=fraction))
    order = {name: i for i, name in enumerate(inits)}
    pos = {key: i for i, key in enumerate(cells)}
    return sorted(out, key=lambda s: (pos[(s.mode, s.task, s.label_fraction)], order[s.init]))


def read_results_csv(path: str | Path, label_fraction: float = 1.0) -> list[AucRow]:
    """The rows of a ``results.csv`` written by :func:`monai_modan.evaluation.report.write_report`.

    A file without the ``label_fraction`` column (written before label fractions were recorded) is read as rows of
    ``label_fraction`` (its experiment's ``experiment.json`` says which; 1.0 unless told).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [AucRow.coerce(row, label_fraction) for row in csv.DictReader(f)]
    except OSError as e:
        raise ValueError(f"cannot read results {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
