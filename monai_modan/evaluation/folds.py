"""Fixed cross-validation folds for downstream evaluation: made once, saved, reused by every method and init.

The protocol (after the ModAn paper): a task's images are partitioned once into ``k`` stratified test folds
(grouped by patient/case when the data have groups). For fold ``f`` the other ``k - 1`` folds form the training
part, from which a stratified, grouped validation part is held out for model selection; the label-fraction
experiments draw a stratified subset of the remaining training part. Every method, initialisation and repeat
reads the same saved :class:`FoldPlan`, so their AUCs are paired fold by fold and repeat by repeat.

Why save the partition rather than re-derive it from the seed: sklearn's splitters are deterministic for a seed,
but their algorithms may change between versions; a saved plan plus a fingerprint of the data is the only way to
prove that two runs used the same folds.

**Imported folds.** A task whose datalist items carry ``fold`` (``0..k-1``, on every item or on none) keeps the data
set's own partition (e.g. DDTI's published fold CSVs): :func:`make_imported_folds` takes it as it is, after checking
that every test fold holds both classes and that no group straddles two folds. Items may also carry ``split``
(``"train"`` or ``"val"``, on every item or none): the validation part of fold ``f`` is then the ``val`` items outside
test fold ``f`` -- the data set's own, the same in every repeat -- instead of one drawn by :meth:`FoldPlan.split`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from ..utils.defaults import TASK_SPLITS
from ..utils.io import atomic_write_json

__all__ = [
    "FoldPlan",
    "FoldPlanError",
    "FoldPlanMismatchError",
    "IMPORTED",
    "IMPORTED_VALIDATION_METHOD",
    "SPLIT_VALUES",
    "VALIDATION_SPLIT_METHOD",
    "data_fingerprint",
    "items_fingerprint",
    "make_folds",
    "make_imported_folds",
    "load_or_make_folds",
    "nested_subsets",
    "subsample_training",
]

FORMAT = "monai-modan/fold-plan/1"

VALIDATION_SPLIT_METHOD = (
    "validation = one fold of StratifiedGroupKFold(n_splits=round(1 / val_fraction), shuffle=True) over the "
    "training part's groups when the task has groups (its size is 1 / n_splits of the groups, e.g. 20 % for the "
    "default val_fraction = 0.2), otherwise a stratified train_test_split(test_size=val_fraction)"
)
IMPORTED_VALIDATION_METHOD = (
    "validation = the items the task datalist marks split: val that lie outside the test fold (the data set's own "
    "validation part, not drawn; val_fraction is not used)"
)
IMPORTED = "imported"  # FoldPlan.method of a plan taken from the items' own ``fold`` values
SPLIT_VALUES = TASK_SPLITS  # the values of an item's ``split`` (utils.defaults: the data layer checks them too)


class FoldPlanError(ValueError):
    """The data cannot be partitioned as asked (one class, too few samples or groups), or a plan file is invalid."""


class FoldPlanMismatchError(FoldPlanError):
    """A saved fold plan was made for other data (or other settings) than the data it is asked to split."""


def _as_labels(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise FoldPlanError(f"labels must be a 1-D sequence of 0/1, got shape {tuple(y.shape)}")
    if y.size == 0:
        raise FoldPlanError("labels are empty: nothing to split")
    try:
        yi = y.astype(np.int64)
    except (TypeError, ValueError):
        raise FoldPlanError(f"labels must be 0/1, found values {sorted(set(y.tolist()))[:10]}") from None
    if not np.array_equal(yi, y) or not np.isin(yi, (0, 1)).all():
        raise FoldPlanError(f"labels must be 0/1, found values {sorted(set(y.tolist()))[:10]}")
    return yi


def _as_group_codes(groups: Sequence[Hashable] | np.ndarray | None, n: int) -> np.ndarray | None:
    """``[N]`` int64 codes of the groups in order of first appearance (raw group ids never leave this module)."""
    if groups is None:
        return None
    raw = list(groups)
    if len(raw) != n:
        raise FoldPlanError(f"groups has {len(raw)} entries for {n} labels")
    missing = [i for i, g in enumerate(raw) if g is None or (isinstance(g, str) and not g)]
    if missing:
        raise FoldPlanError(f"{len(missing)} samples have no group (first at index {missing[0]}): give every sample "
                            "a group, or none")
    codes: dict[Hashable, int] = {}
    return np.asarray([codes.setdefault(str(g), len(codes)) for g in raw], dtype=np.int64)


def data_fingerprint(ids: Sequence[Any], labels: Sequence[Any], groups: Sequence[Any] | None = None,
                     folds: Sequence[int] | None = None, splits: Sequence[str] | None = None) -> str:
    """SHA-256 of the ordered image ids, labels and groups (and the items' own ``fold`` and ``split`` values when
    they carry them): fold indices are positions, so order matters. Without folds and splits the payload is that of
    the plans saved before they existed, so those plans keep their fingerprint."""
    data: dict[str, Any] = {"ids": [str(i) for i in ids], "labels": [int(v) for v in labels],
                            "groups": None if groups is None else [str(g) for g in groups]}
    if folds is not None:
        data["folds"] = [int(f) for f in folds]
    if splits is not None:
        data["splits"] = [str(v) for v in splits]
    payload = json.dumps(data, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _units_per_class(y: np.ndarray, g: np.ndarray | None) -> dict[int, int]:
    """Per class, the number of groups holding it (or of samples when ungrouped)."""
    if g is None:
        return {c: int((y == c).sum()) for c in (0, 1)}
    return {c: int(np.unique(g[y == c]).size) for c in (0, 1)}


def _assert_no_leakage(parts: Mapping[str, np.ndarray], groups: np.ndarray | None) -> None:
    """Raise ``AssertionError`` (also under ``python -O``) if two parts share a sample or a group."""
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(parts[a], parts[b])
            if shared.size:
                raise AssertionError(f"split leakage: {shared.size} samples are in both {a} and {b}")
            if groups is not None:
                shared_g = np.intersect1d(groups[parts[a]], groups[parts[b]])
                if shared_g.size:
                    raise AssertionError(f"split leakage: {shared_g.size} groups are in both {a} and {b}")


@dataclass
class FoldPlan:
    """A fixed stratified (grouped) k-fold partition of one task's samples.

    Attributes:
        test_folds: per fold, the sorted ``[n_f]`` int64 indices of its test samples; every sample is in exactly
            one test fold.
        labels: ``[N]`` int64 0/1 labels the plan was stratified on.
        groups: ``[N]`` int64 group codes (first-appearance order of the raw group ids, which are not stored) or
            ``None``.
        fingerprint: :func:`data_fingerprint` of the image ids, labels and raw groups (and imported folds and
            splits).
        seed: ``random_state`` of the splitter (and the default seed of the drawn validation parts).
        method: ``"StratifiedGroupKFold"``, ``"StratifiedKFold"`` or :data:`IMPORTED` (the items' own folds).
        validation: sorted ``[n_val]`` int64 indices of the items the data set marks ``split: val``, or ``None``
            (the validation part is drawn, see :meth:`split`).
    """

    test_folds: list[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray | None
    fingerprint: str
    seed: int
    method: str
    validation: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = _as_labels(self.labels)
        n = self.labels.size
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64)
            if self.groups.shape != (n,):
                raise FoldPlanError(f"fold plan has {self.groups.size} group codes for {n} labels")
        self.test_folds = [np.sort(np.asarray(f, dtype=np.int64)) for f in self.test_folds]
        everything = np.concatenate(self.test_folds) if self.test_folds else np.zeros(0, np.int64)
        if len(self.test_folds) < 2 or everything.size != n or not np.array_equal(np.sort(everything), np.arange(n)):
            raise FoldPlanError(f"fold plan is not a partition: {len(self.test_folds)} folds hold {everything.size} "
                                f"indices for {n} samples (each sample must be in exactly one test fold)")
        _assert_no_leakage({f"test fold {i}": f for i, f in enumerate(self.test_folds)}, self.groups)
        if self.validation is not None:
            self.validation = np.unique(np.asarray(self.validation, dtype=np.int64))
            if self.validation.size and (self.validation[0] < 0 or self.validation[-1] >= n):
                raise FoldPlanError(f"fold plan's validation indices are out of range for {n} samples")

    @property
    def imported(self) -> bool:
        """Whether the test folds are the data set's own (the items' ``fold``), not drawn."""
        return self.method == IMPORTED

    @property
    def n_folds(self) -> int:
        return len(self.test_folds)

    @property
    def n_samples(self) -> int:
        return int(self.labels.size)

    def _check_fold(self, fold: int) -> int:
        if not 0 <= int(fold) < self.n_folds:
            raise FoldPlanError(f"fold {fold} does not exist: the plan has folds 0..{self.n_folds - 1}")
        return int(fold)

    def train_test(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """``(train_idx, test_idx)`` of ``fold``: the training part is every other fold."""
        test = self.test_folds[self._check_fold(fold)]
        return np.setdiff1d(np.arange(self.n_samples), test), test

    def split(self, fold: int, val_fraction: float = 0.2,
              seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(train_idx, val_idx, test_idx)`` of ``fold``, sorted int64 indices, no sample or group in two parts.

        The validation part is held out of the training part (the other folds), stratified by label and grouped
        (see :data:`VALIDATION_SPLIT_METHOD`); with groups its size is ``1 / round(1 / val_fraction)`` of the
        training part's groups. ``val_fraction = 0`` gives an empty validation part. Deterministic for a
        ``seed`` (default: the plan's seed; pass the repeat's seed to vary validation across repeats). A plan
        with the data set's own ``validation`` items uses those that lie in the training part instead (neither
        ``val_fraction`` nor ``seed`` is used; :data:`IMPORTED_VALIDATION_METHOD`).

        Raises:
            FoldPlanError: the validation or the remaining training part would miss a class.
        """
        fold = self._check_fold(fold)
        if not 0.0 <= float(val_fraction) < 1.0:
            raise FoldPlanError(f"val_fraction must be in [0, 1), got {val_fraction}")
        seed = self.seed if seed is None else int(seed)
        rest, test = self.train_test(fold)
        if self.validation is not None:
            val = np.intersect1d(rest, self.validation)
            train = np.setdiff1d(rest, val)
            self._check_classes(fold, train, val, "the data set's split: val items outside the test fold")
        elif val_fraction == 0:
            train, val = rest, np.zeros(0, np.int64)
        else:
            train, val = self._hold_out(fold, rest, float(val_fraction), seed)
        _assert_no_leakage({"train": train, "validation": val, "test": test}, self.groups)
        return train, val, test

    def _hold_out(self, fold: int, rest: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        y = self.labels[rest]
        units = _units_per_class(y, None if self.groups is None else self.groups[rest])
        unit = "samples" if self.groups is None else "groups"
        if self.groups is None:
            try:
                train, val = train_test_split(rest, test_size=val_fraction, stratify=y, random_state=seed)
            except ValueError as e:
                raise FoldPlanError(f"cannot hold out a stratified validation part of fold {fold} (training part: "
                                    f"class 0 has {units[0]} {unit}, class 1 has {units[1]}): {e}") from None
        else:
            n_splits = max(2, round(1.0 / val_fraction))
            n_groups = int(np.unique(self.groups[rest]).size)
            if n_groups < n_splits:
                raise FoldPlanError(f"cannot hold out 1/{n_splits} of the groups of fold {fold} for validation: its "
                                    f"training part has only {n_groups} groups")
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            with warnings.catch_warnings():  # "least populated class" warning: checked below with a clear message
                warnings.simplefilter("ignore", UserWarning)
                keep, hold = next(splitter.split(rest, y, self.groups[rest]))
            train, val = rest[keep], rest[hold]
        train, val = np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)
        for name, part in (("validation", val), ("training", train)):
            present = set(np.unique(self.labels[part]).tolist())
            if present != {0, 1}:
                missing = ({0, 1} - present).pop()
                raise FoldPlanError(f"the {name} part of fold {fold} has no sample of class {missing} (the training "
                                    f"part holds class {missing} in {units[missing]} {unit}); lower val_fraction "
                                    "or use fewer folds")
        return train, val

    def _check_classes(self, fold: int, train: np.ndarray, val: np.ndarray, what: str) -> None:
        for name, part in (("validation", val), ("training", train)):
            present = set(np.unique(self.labels[part]).tolist())
            if present != {0, 1}:
                missing = ({0, 1} - present).pop()
                raise FoldPlanError(f"the {name} part of fold {fold} ({what}: {part.size} items) has no sample of "
                                    f"class {missing}; mark items of both classes split: val outside every fold")

    def subsample(self, train_idx: Sequence[int] | np.ndarray, fraction: float, seed: int | None = None) -> np.ndarray:
        """:func:`subsample_training` with the plan's labels and groups (default seed: the plan's)."""
        return subsample_training(train_idx, self.labels, self.groups, fraction, self.seed if seed is None else seed)

    def subsample_nested(self, train_idx: Sequence[int] | np.ndarray, fractions: Sequence[float],
                         seed: int | None = None) -> dict[float, np.ndarray]:
        """:func:`nested_subsets` with the plan's labels and groups (default seed: the plan's)."""
        return nested_subsets(train_idx, self.labels, self.groups, fractions, self.seed if seed is None else seed)

    # -- persistence ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT, "method": self.method, "seed": self.seed, "n_folds": self.n_folds,
               "n_samples": self.n_samples, "fingerprint": self.fingerprint, "labels": self.labels.tolist(),
               "groups": None if self.groups is None else self.groups.tolist(),
               "test_folds": [f.tolist() for f in self.test_folds]}
        if self.validation is not None:  # absent from the plans of drawn validation parts (and older plans)
            out["validation"] = self.validation.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "fold plan") -> FoldPlan:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise FoldPlanError(f"{source} is not a fold plan (format {found!r}, expected {FORMAT!r})")
        try:
            return cls(test_folds=[np.asarray(f, dtype=np.int64) for f in data["test_folds"]],
                       labels=np.asarray(data["labels"]), groups=data["groups"], fingerprint=str(data["fingerprint"]),
                       seed=int(data["seed"]), method=str(data["method"]),
                       validation=None if data.get("validation") is None else np.asarray(data["validation"]))
        except KeyError as e:
            raise FoldPlanError(f"{source} lacks the key {e.args[0]!r}") from None

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON, atomically."""
        return atomic_write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | Path) -> FoldPlan:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FoldPlanError(f"fold plan {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FoldPlanError(f"cannot read fold plan {path}: {e}") from None
        return cls.from_dict(data, source=str(path))


def make_folds(labels: Sequence[int] | np.ndarray, groups: Sequence[Hashable] | np.ndarray | None = None,
               n_folds: int = 5, seed: int = 0, *, ids: Sequence[Any] | None = None,
               splits: Sequence[str] | None = None) -> FoldPlan:
    """Partition ``N`` samples into ``n_folds`` stratified test folds.

    ``StratifiedGroupKFold(shuffle=True, random_state=seed)`` when ``groups`` are given (no group is split;
    class proportions are balanced over samples, so with equal group sizes each fold holds its share of each
    class's groups within one), else ``StratifiedKFold`` (each fold holds its share of each class within one
    sample).

    Args:
        labels: ``[N]`` 0/1 labels.
        groups: ``[N]`` group ids (patient, case, exam) or ``None``.
        n_folds: number of test folds, >= 2.
        seed: splitter ``random_state``.
        ids: ``[N]`` image ids for the fingerprint (default: positions ``0..N-1``).
        splits: ``[N]`` ``"train"``/``"val"``: the data set's own validation part (see :meth:`FoldPlan.split`), or
            ``None`` (drawn per fold).

    Raises:
        FoldPlanError: labels not 0/1, one class only, a class with fewer samples (groups) than folds, or a bad
            ``splits`` value.
    """
    y = _as_labels(labels)
    g = _as_group_codes(groups, y.size)
    if int(n_folds) < 2:
        raise FoldPlanError(f"n_folds must be >= 2, got {n_folds}")
    n_folds = int(n_folds)
    counts = np.bincount(y, minlength=2)
    if (counts == 0).any():
        present = int(np.argmax(counts))
        raise FoldPlanError(f"labels contain one class only (class {present}, {counts[present]} samples): folds "
                            "cannot be stratified and AUC is undefined")
    unit = "samples" if g is None else "groups"
    for c, k in _units_per_class(y, g).items():
        if k < n_folds:
            raise FoldPlanError(f"folds too small to stratify: class {c} has {k} {unit} for {n_folds} folds")
    if g is None:
        splitter: Any = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(seed))
        folds = [test for _, test in splitter.split(np.zeros(y.size), y)]
    else:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=int(seed))
        folds = [test for _, test in splitter.split(np.zeros(y.size), y, g)]
    for i, test in enumerate(folds):
        if np.unique(y[test]).size < 2:
            raise FoldPlanError(f"test fold {i} of {n_folds} holds only class {y[test][0]} ({test.size} samples): "
                                f"the groups are too few or too unequal to stratify; use fewer folds")
    ids = _ids(ids, y.size)
    split_values, validation = _as_splits(splits, y.size)
    raw_groups = None if groups is None else [str(v) for v in groups]
    return FoldPlan(test_folds=folds, labels=y, groups=g,
                    fingerprint=data_fingerprint(ids, y, raw_groups, splits=split_values), seed=int(seed),
                    method=type(splitter).__name__, validation=validation)


def _ids(ids: Sequence[Any] | None, n: int) -> list[str]:
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise FoldPlanError(f"ids has {len(ids)} entries for {n} labels")
    return ids


def _as_splits(splits: Sequence[str] | None, n: int) -> tuple[list[str] | None, np.ndarray | None]:
    """``(split values, indices of the val items)`` of ``[N]`` ``"train"``/``"val"`` values, or ``(None, None)``."""
    if splits is None:
        return None, None
    values = [str(v) for v in splits]
    if len(values) != n:
        raise FoldPlanError(f"splits has {len(values)} entries for {n} labels")
    bad = [i for i, v in enumerate(values) if v not in SPLIT_VALUES]
    if bad:
        raise FoldPlanError(f"item {bad[0]}: split {values[bad[0]]!r} is not one of {list(SPLIT_VALUES)}")
    return values, np.flatnonzero(np.asarray(values) == "val").astype(np.int64)


def make_imported_folds(labels: Sequence[int] | np.ndarray, folds: Sequence[int] | np.ndarray,
                        groups: Sequence[Hashable] | np.ndarray | None = None, *, seed: int = 0,
                        ids: Sequence[Any] | None = None, splits: Sequence[str] | None = None) -> FoldPlan:
    """The plan of a partition the data set gives: item ``i`` is in test fold ``folds[i]``.

    Args:
        labels: ``[N]`` 0/1 labels.
        folds: ``[N]`` test fold of each item, integers ``0..k-1`` (every value used, ``k >= 2``).
        groups: ``[N]`` group ids, or ``None``; a group must lie in one fold.
        seed: the plan's seed (the default seed of drawn validation parts; no fold is drawn).
        ids: ``[N]`` image ids for the fingerprint and the messages (default: positions).
        splits: ``[N]`` ``"train"``/``"val"`` (the data set's validation part), or ``None``.

    Raises:
        FoldPlanError: a fold value that is not an integer in ``0..k-1``, fewer than two folds, a test fold without
            one of the classes, or a group in two folds (names the folds and two of the group's items).
    """
    y = _as_labels(labels)
    ids = _ids(ids, y.size)
    raw = list(folds)
    if len(raw) != y.size:
        raise FoldPlanError(f"folds has {len(raw)} entries for {y.size} labels")
    for i, f in enumerate(raw):
        if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, np.integer)) or int(f) < 0:
            raise FoldPlanError(f"item {i} ({ids[i]}): fold {f!r} is not an integer >= 0 (folds are numbered 0..k-1)")
    f_arr = np.asarray(raw, dtype=np.int64)
    values = sorted(set(f_arr.tolist()))
    k = len(values)
    if k < 2:
        raise FoldPlanError(f"every item is in fold {values[0]}: imported folds need at least 2 distinct fold values")
    if values != list(range(k)):
        raise FoldPlanError(f"fold values {values} are not 0..{k - 1}: number the {k} imported folds from 0 without "
                            "gaps")
    test_folds = [np.flatnonzero(f_arr == f) for f in range(k)]
    for f, test in enumerate(test_folds):
        present = np.unique(y[test])
        if present.size < 2:
            raise FoldPlanError(f"imported fold {f} holds only class {int(present[0])} ({test.size} items, e.g. "
                                f"{ids[test[0]]}): every test fold needs both classes (AUC is undefined otherwise); "
                                "fix the fold values")
    g = _as_group_codes(groups, y.size)
    if g is not None:
        for code in np.unique(g):
            members = np.flatnonzero(g == code)
            spread = np.unique(f_arr[members])
            if spread.size > 1:
                a = members[f_arr[members] == spread[0]][0]
                b = members[f_arr[members] == spread[1]][0]
                raise FoldPlanError(f"items {a} ({ids[a]}) and {b} ({ids[b]}) share a group but are in imported "
                                    f"folds {spread[0]} and {spread[1]}: a group (patient / case) must lie in one fold")
    split_values, validation = _as_splits(splits, y.size)
    raw_groups = None if groups is None else [str(v) for v in groups]
    return FoldPlan(test_folds=test_folds, labels=y, groups=g,
                    fingerprint=data_fingerprint(ids, y, raw_groups, folds=f_arr.tolist(), splits=split_values),
                    seed=int(seed), method=IMPORTED, validation=validation)


def _all_or_none(items: Sequence[Mapping[str, Any]], key: str, image_key: str) -> bool:
    """Whether every item carries ``key`` (``False``: none does); some but not all is an error naming the first
    item without it."""
    has = [key in it and it[key] not in (None, "") for it in items]
    if any(has) and not all(has):
        first = has.index(False)
        raise FoldPlanError(f"datalist item {first} ({items[first][image_key]}) has no {key!r} while {sum(has)} of "
                            f"the {len(items)} items do: give every item a {key}, or none")
    return all(has)


def _items_arrays(items: Sequence[Mapping[str, Any]], label_key: str, group_key: str,
                  image_key: str) -> tuple[list[str], np.ndarray, list[str] | None]:
    if not items:
        raise FoldPlanError("the datalist has no items to split")
    ids, labels = [], []
    for i, it in enumerate(items):
        if image_key not in it or label_key not in it:
            raise FoldPlanError(f"datalist item {i} lacks {image_key!r} or {label_key!r}: {sorted(it)}")
        label = it[label_key]
        if isinstance(label, (list, tuple)) and len(label) == 1:
            label = label[0]
        if isinstance(label, (list, tuple)) or label not in (0, 1):
            raise FoldPlanError(f"datalist item {i} ({it[image_key]}): {label_key!r} must be 0 or 1, got {label!r}")
        ids.append(str(it[image_key]))
        labels.append(int(label))
    groups = [str(it[group_key]) for it in items] if _all_or_none(items, group_key, image_key) else None
    return ids, np.asarray(labels, dtype=np.int64), groups


def load_or_make_folds(path: str | Path, items: Sequence[Mapping[str, Any]], n_folds: int = 5, seed: int = 0, *,
                       label_key: str = "label", group_key: str = "group", image_key: str = "image",
                       fold_key: str = "fold", split_key: str = "split") -> FoldPlan:
    """The task's fold plan: loaded from ``path`` if it exists, else made from ``items`` and saved there.

    ``items`` are datalist entries ``{"image": ..., "label": 0|1, "group": ..., "fold": f, "split": s}`` (``group``,
    ``fold`` and ``split`` optional, each on every item or on none); their order defines the indices. Items with
    ``fold`` keep the data set's folds (:func:`make_imported_folds`; ``n_folds`` must be their number), others get
    drawn ones (:func:`make_folds`); ``split`` gives the data set's validation part.

    Raises:
        FoldPlanError: ``fold``/``split`` on some items only, bad fold values (see :func:`make_imported_folds`), or
            ``n_folds`` differs from the number of imported folds.
        FoldPlanMismatchError: the saved plan was made for other items (fingerprint of image ids, labels, groups,
            imported folds and splits differs), drawn where the items now carry folds (or the reverse), or with
            another ``n_folds``/``seed``; it is never silently replaced.
    """
    ids, labels, groups = _items_arrays(items, label_key, group_key, image_key)
    folds = [it[fold_key] for it in items] if _all_or_none(items, fold_key, image_key) else None
    splits = [it[split_key] for it in items] if _all_or_none(items, split_key, image_key) else None
    try:
        _as_splits(splits, len(ids))
    except FoldPlanError as e:
        raise FoldPlanError(f"datalist {e}") from None
    if folds is not None:
        plan = make_imported_folds(labels, folds, groups, seed=seed, ids=ids, splits=splits)
        if plan.n_folds != int(n_folds):
            raise FoldPlanError(f"the items carry {plan.n_folds} imported folds (fold 0..{plan.n_folds - 1}) but "
                                f"{n_folds} folds were asked for: set folds to {plan.n_folds}")
    path = Path(path)
    if path.exists():
        plan = FoldPlan.load(path)
        if plan.imported != (folds is not None):
            now = "carry their own folds ('fold')" if folds is not None else "carry no 'fold'"
            raise FoldPlanMismatchError(
                f"fold plan {path} holds {'imported' if plan.imported else 'drawn'} folds ({plan.method}) but the "
                f"items now {now}: use another out_dir, or delete the plan to make new folds")
        fingerprint = items_fingerprint(items, label_key=label_key, group_key=group_key, image_key=image_key,
                                        fold_key=fold_key, split_key=split_key)
        if plan.fingerprint != fingerprint:
            raise FoldPlanMismatchError(
                f"fold plan {path} was made for other data ({plan.n_samples} samples, fingerprint "
                f"{plan.fingerprint[:12]}...) than the {len(ids)} items given (fingerprint {fingerprint[:12]}...): "
                "pass the datalist it was made from, or delete the plan to make new folds")
        if plan.n_folds != int(n_folds) or plan.seed != int(seed):
            raise FoldPlanMismatchError(
                f"fold plan {path} has {plan.n_folds} folds with seed {plan.seed}, asked for {n_folds} folds with "
                f"seed {seed}: pass the saved settings, or delete the plan to make new folds")
        return plan
    if folds is None:
        plan = make_folds(labels, groups, n_folds=n_folds, seed=seed, ids=ids, splits=splits)
    plan.save(path)
    return plan


def items_fingerprint(items: Sequence[Mapping[str, Any]], *, label_key: str = "label", group_key: str = "group",
                      image_key: str = "image", fold_key: str = "fold", split_key: str = "split") -> str:
    """The :func:`data_fingerprint` a plan made from ``items`` carries (and :func:`load_or_make_folds` checks)."""
    ids, labels, groups = _items_arrays(items, label_key, group_key, image_key)
    folds = [int(it[fold_key]) for it in items] if _all_or_none(items, fold_key, image_key) else None
    splits = [str(it[split_key]) for it in items] if _all_or_none(items, split_key, image_key) else None
    return data_fingerprint(ids, labels, groups, folds=folds, splits=splits)


def subsample_training(train_idx: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray,
                       groups: Sequence[Hashable] | np.ndarray | None, fraction: float, seed: int = 0) -> np.ndarray:
    """A stratified subset of the training part for label-fraction experiments (100/50/25/10 %).

    Per class, ``max(1, round(fraction * n))`` of its ``n`` units are kept, where units are groups (a group
    counts for its majority label, ties to class 1) or, without groups, samples; all samples of a kept group are
    kept. Subsets are nested: for one seed, the 10 % subset lies inside the 25 % one, and so on.

    Args:
        train_idx: indices (into ``labels``/``groups``) of the training part.
        labels: ``[N]`` 0/1 labels of the whole task.
        groups: ``[N]`` group ids of the whole task, or ``None``.
        fraction: in ``(0, 1]``.
        seed: drawing seed.

    Returns:
        sorted int64 indices, a subset of ``train_idx`` holding every class present in it.
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise FoldPlanError(f"label fraction must be in (0, 1], got {fraction}")
    idx = np.unique(np.asarray(train_idx, dtype=np.int64))
    y_all = _as_labels(labels)
    if idx.size == 0:
        raise FoldPlanError("the training part is empty")
    if idx.min() < 0 or idx.max() >= y_all.size:
        raise FoldPlanError(f"training indices out of range for {y_all.size} labels")
    if float(fraction) == 1.0:
        return idx
    y = y_all[idx]
    g = _as_group_codes(groups, y_all.size)
    unit_of = idx if g is None else g[idx]  # unit id of each training sample
    units = np.unique(unit_of)
    # a unit's stratum: its majority label (ties -> 1), i.e. the label itself when ungrouped or for pure groups
    pos = np.bincount(np.searchsorted(units, unit_of), weights=y, minlength=units.size)
    size = np.bincount(np.searchsorted(units, unit_of), minlength=units.size)
    stratum = (2 * pos >= size).astype(np.int64)
    keep = []
    for c in (0, 1):
        members = units[stratum == c]
        if members.size:
            order = np.random.default_rng([int(seed), c]).permutation(members)  # fixed order -> nested subsets
            keep.append(order[: max(1, int(np.floor(fraction * members.size + 0.5)))])
    chosen = idx[np.isin(unit_of, np.concatenate(keep))]
    missing = set(np.unique(y).tolist()) - set(np.unique(y_all[chosen]).tolist())
    if missing:  # a class that lives only in groups dominated by the other class
        c = missing.pop()
        raise FoldPlanError(f"the label fraction {float(fraction):g} subset of the training part has no sample of "
                            f"class {c}: the class lives only in groups whose majority label is {1 - c}")
    return chosen


def nested_subsets(train_idx: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray,
                   groups: Sequence[Hashable] | np.ndarray | None, fractions: Sequence[float],
                   seed: int = 0) -> dict[float, np.ndarray]:
    """:func:`subsample_training` of one training part for every fraction, checked to be nested.

    Every fraction's subset is drawn with the same ``seed``, so per class the units are taken from the front of one
    fixed random order: the subset of a smaller fraction is a prefix of (inside) every larger one, each is what a
    single-fraction call gives, and every subset holds both classes. The nesting is checked on every call (an
    ``AssertionError``, also under ``python -O``).

    Returns:
        fraction -> sorted int64 indices, for each of ``fractions``.
    """
    subsets = {float(f): subsample_training(train_idx, labels, groups, f, seed) for f in fractions}
    ordered = sorted(subsets)
    for small, large in zip(ordered, ordered[1:]):
        outside = np.setdiff1d(subsets[small], subsets[large])
        if outside.size:
            raise AssertionError(f"label-fraction subsets are not nested: {outside.size} samples of the {small:g} "
                                 f"subset are not in the {large:g} subset")
    return subsets
