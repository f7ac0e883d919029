"""The downstream experiment runner: tasks x initialisations x modes x repeats x folds -> AUC rows -> report.

For every task the fixed fold plan (``out_dir/folds/<task>.json``, made once, reused by every initialisation, mode
and repeat and by every later run) gives the test folds -- drawn, or the data set's own when the task's items carry
``fold``; the validation part inside each training part (grouped, stratified) is drawn once and kept in every repeat
(``fixed_splits``, the ModAn paper's setting; or the data set's own with ``split``), or redrawn per repeat with the
repeat's seed (``fixed_splits=False``); repeat ``r``'s training seed is
:func:`~monai_modan.evaluation.finetune.repeat_seed`, the same for every initialisation, so the AUCs are paired by
(repeat, fold). With several ``label_fractions`` each training part is subsampled once per fraction, nested and with
the split seed, so that a fraction's rows are those a single-fraction run gives. Every split of every task is
planned before anything trains. The task's images are decoded once.

Outputs in ``out_dir`` (the logs and the settings record: :mod:`~monai_modan.evaluation.results_log`):

- ``experiment.json`` -- the settings the rows were computed with, data and weights by content hash (a restart
  with settings of another meaning is refused; another spelling of the folder, or the folder moved or copied,
  resumes);
- ``folds/<task>.json`` -- the fold plans;
- ``results.csv`` -- one row per (init, mode, task, label fraction, repeat, fold), appended (flushed and synced) as
  each fold finishes, so an interrupted run keeps its rows; a restart skips the rows present (resume);
- ``predictions.csv`` -- the test scores of every fine-tuned / probed fold (``index`` = item of the task
  datalist), written before the fold's row, so the ROC curves of a resumed run are complete;
- the report of :func:`~monai_modan.evaluation.report.write_report` (summary tables, box plots, ROC per task and
  mode, UMAP panels of each initialisation's embedding of ``umap_datalist``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import monai
import numpy as np
import scipy
import sklearn
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..data.datalist import load_datalist
from ..data.downstream import load_task_datalist
from ..networks.weights import InitSpec
from ..utils.defaults import CV_FOLDS, CV_REPEATS, EVAL_MODES, EXPERIMENT_WORKERS
from ..utils.device import pick_device
from ..utils.io import file_sha256, read_yaml_file
from .embedding import knn_auc, logistic_auc
from .finetune import Recipe, TaskImages, embed, feature_cache_key, repeat_seed, train_fold
from .folds import (
    IMPORTED_VALIDATION_METHOD,
    VALIDATION_SPLIT_METHOD,
    FoldPlan,
    FoldPlanError,
    FoldPlanMismatchError,
    items_fingerprint,
    load_or_make_folds,
)
from .report import EvaluationProtocol, write_report
from .leakage import check_leakage
from .results_log import PREDICTION_FIELDS, ExperimentError, FoldScores, Key, ResultsLog, portable_path
from .stats import Alternative, AucRow, EvalMode, check_label_fraction

__all__ = ["ExperimentConfig", "ExperimentError", "PREDICTION_FIELDS", "run_experiment", "experiment_from_yaml",
           "resolve_label_fractions", "task_data_hash", "umap_items"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # task names become file names
_MODE_ORDER = (EvalMode.FINE_TUNING, EvalMode.LINEAR_PROBING, EvalMode.LOGISTIC, EvalMode.KNN)
_FROZEN_FEATURE_MODES = (EvalMode.LOGISTIC, EvalMode.KNN)  # classifiers fitted on the frozen features
# settings that change the numbers: a restart in the same out_dir must keep them (the label fraction is a column of
# the rows, like the repeat: a restart may add fractions)
# (``alternative`` is not one: it changes the report's p-values, computed from the rows at the end of every run, not
# the rows)
_RESULT_SETTINGS = ("folds", "fold_seed", "seed", "recipe", "knn_k", "logistic_c", "fixed_splits")
# the item keys besides image, label and group that the rows depend on (task_data_hash)
_DATA_KEYS = ("fold", "split")

Split = tuple[np.ndarray, np.ndarray, np.ndarray]  # (train, val, test) item indices
SplitKey = tuple[float, int, int]  # (label fraction, repeat, fold)
RocData = dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]]  # "<task> <mode>" -> init -> (y_true, y_score)s


@dataclass
class ExperimentConfig:
    """What :func:`run_experiment` evaluates.

    Attributes:
        tasks: task name -> task datalist JSON (:func:`~monai_modan.data.downstream.load_task_datalist`). Names
            are used in file names: letters, digits, ``_.-``.
        inits: init name -> ``None``/``"scratch"``, ``"imagenet:<local torchvision resnet18 file>"`` or a
            monai-modan checkpoint / encoder path (:meth:`~monai_modan.networks.weights.InitSpec.parse`).
        out_dir: output folder (created).
        reference_init: the init every other one is tested against (default: the first).
        modes: ``fine_tuning`` and/or ``linear_probing`` (:class:`~monai_modan.evaluation.stats.EvalMode`; the 0.1 spellings ``fine_tune``/``linear_probe`` are accepted with a deprecation warning).
        repeats: R repeats of the whole cross-validation (10).
        folds: k test folds (5), fold plan seed ``fold_seed`` (0). A task whose items carry ``fold`` keeps those
            folds (their number must equal ``folds``; see :func:`~monai_modan.evaluation.folds.load_or_make_folds`).
        seed: base of the repeat seeds ``repeat_seed(seed, r)``.
        fixed_splits: ``True`` (default, the ModAn paper's setting: "splits unchanged across repeats"): the
            validation part and the label-fraction subsets of each fold are drawn once, with repeat 0's seed, and
            kept in every repeat, so repeats differ by their training seed only. ``False`` (the behaviour before
            this setting existed): every repeat redraws them with its own seed. Items carrying ``split`` fix the
            validation part either way.
        alternative: of the paired Wilcoxon tests against ``reference_init``
            (:class:`~monai_modan.evaluation.stats.Alternative`): ``"two-sided"`` (default), ``"greater"`` (the
            reference is better: the ModAn paper's one-sided tests, with ModAn as reference) or ``"less"``. It
            changes only the report, not the rows, so a folder may be resumed (re-reported) with another.
        recipe: :class:`~monai_modan.evaluation.finetune.Recipe` (or its fields as a mapping).
        label_fraction: share of each training part used (after the validation part is held out), drawn
            stratified and grouped per repeat (:meth:`~monai_modan.evaluation.folds.FoldPlan.subsample`); the
            one-fraction spelling of ``label_fractions`` (after construction: the fraction, or ``None`` with several).
        label_fractions: the fractions of a label-fraction curve, each in ``(0, 1]``, no duplicates (default
            ``(1.0,)``; a bare number is one fraction). Every fraction runs the whole protocol in the same
            ``out_dir``; the subsets are nested per repeat and fold (:func:`~monai_modan.evaluation.folds.nested_subsets`)
            and a fraction's rows equal those of a run of that fraction alone. Run in the order given.
        knn: also evaluate a k-nearest-neighbour classifier (``knn_k`` neighbours, cosine) on each init's frozen
            features, trained on the same training part as the probes.
        logistic: also evaluate an L2 logistic regression (inverse strength ``logistic_c``) on each init's
            standardised frozen features, fitted on the same training part as the probes
            (:func:`~monai_modan.evaluation.embedding.logistic_auc`): a linear evaluation of the features that does
            not depend on a training budget, unlike the paper's linear probe. Not in the ModAn paper.
        umap_datalist: a monai-modan pretraining datalist (items with ``modality``/``anatomy``, e.g. a MedMNIST or
            synthetic index) whose embeddings are drawn as UMAP panels; at most ``umap_max_images`` images,
            taken deterministically (:func:`umap_items`).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"`` ...
        title: heading of the report.
        workers: fine-tuning processes. ``0``/``1``: every fold in this process. ``> 1``: the fine-tuning folds of
            a task run concurrently in a process pool (each worker gets the task's images once, and
            ``cpu cores // workers`` torch threads); linear probes and kNN stay in this process, on the cached
            features. Rows are written in the serial order and every fold's seed depends only on its repeat and
            init, so the results do not depend on ``workers`` beyond float rounding (a worker's torch thread count
            changes the summation order of convolution gradients: scores agree to ~1e-5, AUCs to < 1e-3 as
            tested) and ``workers`` is not one of the settings a resume must keep.
        allow_torchscript: accept TorchScript archives among the inits' weights files. **Loading one runs code from
            the file**; off by default, so such a file is refused up front with a message on how to convert it to a
            state dict (:func:`~monai_modan.networks.export.load_encoder`).
        allow_leakage: evaluate even when task images are also in an init's pretraining corpus (the corpus its
            run's ``config.json`` names; :func:`~monai_modan.evaluation.leakage.check_leakage`, run before anything
            trains). Off by default: such a run is refused, naming the images. The report states the count either way.
    """

    tasks: dict[str, str]
    inits: dict[str, str | None]
    out_dir: str
    reference_init: str | None = None
    modes: tuple[str, ...] = EVAL_MODES
    repeats: int = CV_REPEATS
    folds: int = CV_FOLDS
    fold_seed: int = 0
    seed: int = 0
    fixed_splits: bool = True
    alternative: str = Alternative.TWO_SIDED.value
    recipe: Recipe = field(default_factory=Recipe)
    label_fraction: float | None = None
    label_fractions: tuple[float, ...] | None = None
    knn: bool = False
    knn_k: int = 20
    logistic: bool = False
    logistic_c: float = 1.0
    umap_datalist: str | None = None
    umap_max_images: int = 300
    device: str = "auto"
    title: str = "Downstream evaluation"
    workers: int = EXPERIMENT_WORKERS
    allow_torchscript: bool = False
    allow_leakage: bool = False
    init_specs: dict[str, InitSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, Mapping) or not self.tasks:
            raise ExperimentError(f"tasks: expected a non-empty mapping task name -> task datalist path, got "
                                  f"{self.tasks!r}")
        bad = [name for name in self.tasks if not isinstance(name, str) or not _NAME.match(name)]
        if bad:
            raise ExperimentError(f"tasks: names {bad} are not usable in file names (letters, digits, '_', '.', '-')")
        self.tasks = {name: str(path) for name, path in self.tasks.items()}
        if not isinstance(self.inits, Mapping) or not self.inits:
            raise ExperimentError(f"inits: expected a non-empty mapping init name -> weights, got {self.inits!r}")
        self.inits = {str(name): None if value is None else str(value) for name, value in self.inits.items()}
        if not isinstance(self.allow_torchscript, bool):  # the string "false" must not opt in
            raise ExperimentError(f"allow_torchscript must be true or false, got {self.allow_torchscript!r}")
        if not isinstance(self.allow_leakage, bool):
            raise ExperimentError(f"allow_leakage must be true or false, got {self.allow_leakage!r}")
        self.init_specs = {name: InitSpec.parse(name, value, allow_torchscript=self.allow_torchscript)
                           for name, value in self.inits.items()}
        if self.reference_init is None:
            self.reference_init = next(iter(self.inits))
        if self.reference_init not in self.inits:
            raise ExperimentError(f"reference_init {self.reference_init!r} is not one of the inits; known init names: "
                                  f"{list(self.inits)}")
        modes = [self.modes] if isinstance(self.modes, str) else list(self.modes or [])
        try:
            parsed = [EvalMode.parse(m) for m in modes]
        except ValueError as e:
            raise ExperimentError(f"modes: {e}") from None
        frozen = [m.value for m in parsed if not m.trains_network]
        if frozen:
            raise ExperimentError(f"modes: {frozen} are classifiers on frozen features; turn them on with "
                                  f"{' and '.join(f'{m}: true' for m in frozen)} (modes lists fine_tuning and "
                                  "linear_probing)")
        self.modes = tuple(dict.fromkeys(m.value for m in parsed))
        if not self.modes and not self.knn and not self.logistic:
            raise ExperimentError("modes is empty and knn and logistic are off: nothing to evaluate")
        if isinstance(self.recipe, Mapping):
            self.recipe = Recipe.from_dict(self.recipe)
        elif not isinstance(self.recipe, Recipe):
            raise ExperimentError(f"recipe: expected a mapping of recipe settings, got {self.recipe!r}")
        for name, low in (("repeats", 1), ("folds", 2), ("knn_k", 1), ("umap_max_images", 4), ("workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ExperimentError(f"{name} must be an integer >= {low}, got {value!r}")
            setattr(self, name, int(value))
        for name in ("fold_seed", "seed"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, np.integer)):
                raise ExperimentError(f"{name} must be an integer, got {getattr(self, name)!r}")
        self.label_fractions = resolve_label_fractions(self.label_fraction, self.label_fractions)
        self.label_fraction = self.label_fractions[0] if len(self.label_fractions) == 1 else None
        self.knn, self.logistic = bool(self.knn), bool(self.logistic)
        if not isinstance(self.fixed_splits, (bool, np.bool_)):  # the string "false" must not mean true
            raise ExperimentError(f"fixed_splits must be true or false, got {self.fixed_splits!r}")
        self.fixed_splits = bool(self.fixed_splits)
        try:
            self.alternative = Alternative.parse(self.alternative).value
        except (ValueError, AttributeError) as e:
            raise ExperimentError(f"alternative: {e}") from None
        if isinstance(self.logistic_c, bool) or not isinstance(self.logistic_c, (int, float)) or not (
                math.isfinite(self.logistic_c) and self.logistic_c > 0):
            raise ExperimentError(f"logistic_c must be a number > 0, got {self.logistic_c!r}")
        self.logistic_c = float(self.logistic_c)
        self.out_dir = str(self.out_dir)
        self.umap_datalist = None if self.umap_datalist in (None, "") else str(self.umap_datalist)

    @property
    def eval_modes(self) -> list[str]:
        """The ``mode`` values of the result rows, in report order."""
        return [*self.modes, *(m.value for m in self.frozen_feature_modes)]

    @property
    def frozen_feature_modes(self) -> list[EvalMode]:
        """The classifiers fitted on frozen features (``logistic``, ``knn``) that this experiment evaluates."""
        return [m for m, on in ((EvalMode.LOGISTIC, self.logistic), (EvalMode.KNN, self.knn)) if on]

    @property
    def repeat_seeds(self) -> list[int]:
        return [repeat_seed(self.seed, r) for r in range(self.repeats)]

    def split_seed(self, repeat: int) -> int:
        """The seed that draws repeat ``repeat``'s validation parts and label-fraction subsets: repeat 0's seed in
        every repeat with ``fixed_splits``, else the repeat's own."""
        return repeat_seed(self.seed, 0 if self.fixed_splits else repeat)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> ExperimentConfig:
        """A config from plain values (a bundle's or the CLI's dict); an unknown key raises an error naming it.

        ``base_dir``: relative task, init, ``umap_datalist`` and ``out_dir`` paths are taken relative to it.
        """
        if not isinstance(data, Mapping):
            raise ExperimentError(f"an experiment config must be a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls) if f.init]
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ExperimentError(f"unknown experiment setting(s) {unknown}; known: {known}")
        missing = [k for k in ("tasks", "inits", "out_dir") if k not in data]
        if missing:
            raise ExperimentError(f"experiment config lacks {missing}")
        values = dict(data)
        if base_dir is not None:
            base = Path(base_dir)

            def resolve(p: Any) -> Any:
                return p if p in (None, "") or Path(str(p)).expanduser().is_absolute() else str(base / str(p))

            if isinstance(values["tasks"], Mapping):
                values["tasks"] = {k: resolve(v) for k, v in values["tasks"].items()}
            if isinstance(values["inits"], Mapping):
                values["inits"] = {k: _resolve_init(v, resolve) for k, v in values["inits"].items()}
            values["out_dir"] = resolve(values["out_dir"])
            values["umap_datalist"] = resolve(values.get("umap_datalist"))
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise ExperimentError(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; ``ExperimentConfig.from_dict(c.to_dict())`` equals ``c``."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out["recipe"] = self.recipe.to_dict()
        out["modes"] = list(self.modes)
        out["label_fractions"] = list(self.label_fractions)
        return out


def resolve_label_fractions(single: Any, values: Any) -> tuple[float, ...]:
    """The label fractions of a config (``label_fraction``, ``label_fractions``): ``values`` (a list, or a bare
    number), else ``(single,)``, else ``(1.0,)``; each a number in ``(0, 1]``, none twice, and ``single``, when
    given with ``values``, their only entry. Raises :class:`ExperimentError` naming the value."""
    try:
        one = None if single is None else check_label_fraction(single, "label_fraction")
        if values is None:
            return (1.0 if one is None else one,)
        if isinstance(values, (int, float, np.integer, np.floating)) and not isinstance(values, bool):
            values = [values]
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
            raise ValueError(f"label_fractions must be a list of fractions in (0, 1], got {values!r}")
        fractions = [check_label_fraction(v, "label_fractions: entry") for v in values]
    except ValueError as e:
        raise ExperimentError(str(e)) from None
    if not fractions:
        raise ExperimentError("label_fractions is empty: give at least one fraction in (0, 1], e.g. [1.0]")
    twice = sorted({f for f in fractions if fractions.count(f) > 1})
    if twice:
        raise ExperimentError(f"label_fractions: {', '.join(f'{f:g}' for f in twice)} listed more than once in "
                              f"{list(values)}")
    if one is not None and fractions != [one]:
        raise ExperimentError(f"give label_fraction (one fraction) or label_fractions (a list), not both: "
                              f"label_fraction {single!r}, label_fractions {list(values)}")
    return tuple(fractions)


def _resolve_init(value: Any, resolve: Callable[[Any], Any]) -> Any:
    if value is None or str(value).strip().lower() == "scratch":
        return value
    text = str(value).strip()
    if text.lower().startswith("imagenet:"):
        return "imagenet:" + str(resolve(text[len("imagenet:"):].strip()))
    return resolve(text)


def experiment_from_yaml(path: str | Path) -> ExperimentConfig:
    """Read an :class:`ExperimentConfig` from YAML (or JSON); relative paths are relative to the file's folder."""
    path = Path(path)
    data = read_yaml_file(path, "experiment config", ExperimentError)
    try:
        return ExperimentConfig.from_dict(data, base_dir=path.parent.absolute())
    except ExperimentError as e:
        raise ExperimentError(f"{path}: {e}") from None


# -- UMAP images ----------------------------------------------------------------------------------------------------


def umap_items(items: Sequence[Mapping[str, Any]], max_images: int) -> list[Mapping[str, Any]]:
    """At most ``max_images`` items, taken round-robin over the (modality, anatomy) pairs in order of first
    appearance, so that every pair is shown and a large pair does not crowd out the small ones. Deterministic."""
    by_pair: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for it in items:
        by_pair[(str(it.get("modality") or ""), str(it.get("anatomy") or ""))].append(it)
    queues = [iter(v) for v in by_pair.values()]
    chosen: list[Mapping[str, Any]] = []
    while queues and len(chosen) < max_images:
        alive = []
        for q in queues:
            item = next(q, None)
            if item is not None and len(chosen) < max_images:
                chosen.append(item)
                alive.append(q)
        queues = alive
    return chosen


def _umap_embeddings(config: ExperimentConfig, device: Any, progress: bool) -> dict[str, tuple]:
    data = load_datalist(config.umap_datalist)
    items = umap_items([it for split in data.splits.values() for it in split], config.umap_max_images)
    if len(items) < 4:
        raise ExperimentError(f"umap_datalist {config.umap_datalist} holds {len(items)} images; UMAP needs >= 4")
    images = TaskImages.load(items, config.recipe.image_size, progress=progress)
    modality = [it.get("modality") for it in items]
    anatomy = [it.get("anatomy") for it in items]
    return {name: (embed(images, spec, seed=config.seed, device=device,
                         batch_size=config.recipe.eval_batch_size).cpu().numpy(), modality, anatomy)
            for name, spec in config.init_specs.items()}


# -- concurrent fine-tuning -----------------------------------------------------------------------------------------

_worker_images: TaskImages | None = None  # a pool worker's task images, set once by _init_worker


def _init_worker(images: TaskImages, threads: int, device: str) -> None:
    global _worker_images
    torch.set_num_threads(threads)  # the workers share the cores: no oversubscription
    _worker_images = images.to(device)


def _fine_tune_job(split: Split, spec: InitSpec, recipe: Recipe, seed: int,
                   device: str) -> tuple[float, np.ndarray, np.ndarray]:
    """One fine-tuning fold in a pool worker: ``(auc, y_true, y_score)`` (the model stays behind, it is not
    pickled back)."""
    result = train_fold(_worker_images, None, split, spec, EvalMode.FINE_TUNING, recipe, seed, device)
    return result.auc, result.y_true, result.y_score


def _fine_tune_pool(images: TaskImages, workers: int, device: Any) -> ProcessPoolExecutor:
    """``workers`` processes holding ``images`` (CPU tensor), with ``cores // workers`` torch threads each.

    Linux CPU runs fork: the children share the parent's images copy-on-write and start at once. CUDA cannot be
    used in a forked child, so a GPU run (and any other platform) spawns fresh interpreters, to which the images
    are pickled once per worker.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    method = "fork" if sys.platform.startswith("linux") and torch.device(device).type == "cpu" else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker,
                               initargs=(images, max(1, cores // workers), str(device)))


# -- the run: plan -> execute -> collect -> report ------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One row of ``results.csv`` to compute: an init evaluated in a mode on one label fraction, repeat and fold of
    a task."""

    init: str
    mode: EvalMode
    task: str
    label_fraction: float
    repeat: int
    fold: int

    @property
    def key(self) -> Key:
        return (self.init, self.mode.value, self.task, self.label_fraction, self.repeat, self.fold)

    @property
    def split_key(self) -> SplitKey:
        return (self.label_fraction, self.repeat, self.fold)


@dataclass
class _TaskPlan:
    """A task's items and every split of its protocol, planned before anything trains."""

    items: list[dict[str, Any]]
    splits: dict[SplitKey, Split]
    imported_folds: bool = False  # the test folds are the items' own ``fold`` values
    imported_validation: bool = False  # the validation parts are the items marked ``split: val``

    def train_sizes(self) -> dict[float, float]:
        """label fraction -> training images per fold, mean over repeats and folds."""
        sizes: dict[float, list[int]] = defaultdict(list)
        for (fraction, _, _), (train, _, _) in self.splits.items():
            sizes[fraction].append(len(train))
        return {f: float(np.mean(n)) for f, n in sizes.items()}


@dataclass
class _TaskRun:
    """What the units of one task share: its images (decoded once), its splits and the frozen-feature cache."""

    config: ExperimentConfig
    images: TaskImages
    splits: dict[SplitKey, Split]
    device: torch.device
    features: dict[str, torch.Tensor] = field(default_factory=dict)


def run_experiment(config: ExperimentConfig | Mapping[str, Any], progress: bool = True) -> dict[str, Path]:
    """Run (or resume) the experiment and write its report; returns file name -> path of every file written.

    Order: task -> label fraction -> init -> mode (``modes``, then logistic, kNN) -> repeat -> fold, then UMAP and
    the report. Every init's weights are loaded once up front, and every split of every task (fold plans, validation
    parts, label-fraction subsets) is planned up front, so a missing or wrong file, or a fraction that would leave a
    training part without a class, fails before any training; a task's images are decoded when its first missing
    row is computed, and released after the task. With ``config.workers > 1`` a
    task's fine-tuning folds are all submitted to a process pool at once and their rows written, as they are
    collected, in the same order as a serial run.

    Raises:
        ExperimentError: bad settings, or ``out_dir`` holds results of other settings.
        FoldPlanError, TaskDatalistError, CheckpointError, ImageLoadError: bad data or weights (the message names
            the file).
    """
    if not isinstance(config, ExperimentConfig):
        config = ExperimentConfig.from_dict(config)
    Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    for spec in config.init_specs.values():  # fail now, not after hours of training on the first inits
        spec.build_encoder(config.seed)
    log = ResultsLog(Path(config.out_dir), _settings(config), {u.key for u in _plan(config)})
    plans = {task: _plan_task(config, task) for task in config.tasks}  # every split, before anything trains
    leakage = check_leakage(config.tasks, config.init_specs, allow=config.allow_leakage, progress=progress)
    _execute(config, plans, _plan(config, skip=log.done), log, device, progress)
    embeddings = _umap_embeddings(config, device, progress) if config.umap_datalist else None
    return _report(config, log, device, _collect_roc(config, log), embeddings, plans, leakage)


def _settings(config: ExperimentConfig) -> dict[str, Any]:
    """What ``experiment.json`` records: the settings that change the numbers, the tasks, inits and label fractions
    (the lists a restart may extend), and the content hashes of each task's data and each init's weights.

    Paths are recorded absolute and, inside ``out_dir``, relative to it
    (:func:`~monai_modan.evaluation.results_log.portable_path`), and the data and weights by content, so that a
    restart compares meanings: another spelling of the same folder, or the folder moved or copied, resumes; a
    checkpoint retrained in place, or other images behind the same datalist, is refused."""
    current, out = config.to_dict(), Path(config.out_dir)
    return {**{k: current[k] for k in _RESULT_SETTINGS},
            "tasks": {name: portable_path(path, out) for name, path in config.tasks.items()},
            "data": {name: task_data_hash(load_task_datalist(path)[0]) for name, path in config.tasks.items()},
            "inits": {name: _portable_init(spec, out) for name, spec in config.init_specs.items()},
            "label_fractions": sorted(current["label_fractions"]),
            "weights": {name: file_sha256(spec.path) for name, spec in config.init_specs.items() if spec.path}}


def _portable_init(spec: InitSpec, out: Path) -> str:
    """``spec.value`` with its weights path as :func:`~monai_modan.evaluation.results_log.portable_path`."""
    if spec.path is None:
        return spec.value
    return spec.value[: len(spec.value) - len(str(spec.path))] + portable_path(spec.path, out)


def task_data_hash(items: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of what a task's rows depend on, wherever its files lie: in item order, each image's file contents
    (SHA-256; a ``file#member`` reference: the file's, plus the member), its label, group (an image's own path
    standing as its group counts as its contents) and, where the items carry them, ``fold`` and ``split``.

    ``items``: validated task items (:func:`~monai_modan.data.downstream.load_task_datalist`, absolute images).
    Every distinct file is read once.
    """
    files: dict[str, str] = {}

    def contents(image: str) -> str:
        file, sep, member = image.rpartition("#") if "#" in image else (image, "", "")
        if file not in files:
            files[file] = file_sha256(file)
        return files[file] + sep + member

    view = []
    for it in items:
        image = contents(str(it["image"]))
        entry = {"image": image, "label": int(it["label"]),
                 "group": image if str(it["group"]) == str(it["image"]) else str(it["group"])}
        entry.update({k: it[k] for k in _DATA_KEYS if k in it})
        view.append(entry)
    return hashlib.sha256(json.dumps(view, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _portable_items(items: Sequence[Mapping[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The items with their images (and an image standing as its own group) as
    :func:`~monai_modan.evaluation.results_log.portable_path`: the ids of the fold plan, which moves with
    ``out``."""
    portable = []
    for it in items:
        image = portable_path(it["image"], out)
        portable.append({**it, "image": image, "group": image if str(it["group"]) == str(it["image"]) else it["group"]})
    return portable


def _task_folds(config: ExperimentConfig, task: str, items: Sequence[Mapping[str, Any]]) -> FoldPlan:
    """The task's fold plan, its items named by portable path (:func:`_portable_items`). A plan saved before
    (absolute image paths) is taken when it matches the items as they are, and saved again under the portable
    fingerprint (same folds), so that the folder can be moved from then on."""
    path = _fold_plan_path(config, task)
    portable = _portable_items(items, Path(config.out_dir))
    try:
        return load_or_make_folds(path, portable, n_folds=config.folds, seed=config.fold_seed)
    except FoldPlanMismatchError as e:
        try:  # a plan of an older release: its ids are the absolute image paths
            plan = load_or_make_folds(path, items, n_folds=config.folds, seed=config.fold_seed)
        except FoldPlanError:
            raise e from None
    replace(plan, fingerprint=items_fingerprint(portable)).save(path)
    logger.info("%s: fold plan of an older release re-saved with portable image ids (same folds)", path)
    return plan


def _plan(config: ExperimentConfig, skip: Collection[Key] = ()) -> list[Unit]:
    """Every unit of the experiment in run order, less those whose key is in ``skip`` (the rows present)."""
    modes = [*(EvalMode(m) for m in config.modes), *config.frozen_feature_modes]
    units = (Unit(init, mode, task, fraction, r, f) for task in config.tasks for fraction in config.label_fractions
             for init in config.inits for mode in modes for r in range(config.repeats) for f in range(config.folds))
    return [u for u in units if u.key not in skip]


def _execute(config: ExperimentConfig, plans: Mapping[str, _TaskPlan], todo: Sequence[Unit], log: ResultsLog,
             device: torch.device, progress: bool) -> None:
    """Compute ``todo`` task by task, on the planned splits."""
    total = len(_plan(config))
    with tqdm(total=total, initial=total - len(todo), desc="experiment", unit="fold", disable=not progress) as bar:
        for task in config.tasks:
            _run_task(config, task, plans[task], [u for u in todo if u.task == task], log, device, bar, progress)


def _run_task(config: ExperimentConfig, task: str, plan: _TaskPlan, units: Sequence[Unit], log: ResultsLog,
              device: torch.device, bar: Any, progress: bool) -> None:
    """Compute the ``units`` of ``task`` in order, logging each fold's scores and row as it finishes."""
    if not units:
        return
    host_images = TaskImages.load(plan.items, config.recipe.image_size, progress=progress)
    run = _TaskRun(config, host_images.to(device), plan.splits, device)
    with _pooled_fine_tuning(run, host_images, units) as futures:
        for unit in units:
            bar.set_postfix_str(f"{task} {unit.init} {unit.mode.value} lf{unit.label_fraction:g} r{unit.repeat} "
                                f"f{unit.fold}", refresh=False)
            auc, scores = _evaluate(run, unit, futures.pop(unit, None))
            log.add(AucRow(init=unit.init, mode=unit.mode.value, task=task, repeat=unit.repeat, fold=unit.fold,
                           auc=float(auc), label_fraction=unit.label_fraction), scores)
            bar.update(1)


def _fold_plan_path(config: ExperimentConfig, task: str) -> Path:
    return Path(config.out_dir) / "folds" / f"{task}.json"


def _plan_task(config: ExperimentConfig, task: str) -> _TaskPlan:
    """The task's items, its fold plan (made once, then reused) and the split of every (label fraction, repeat,
    fold); a split that cannot be drawn (a part without a class) is refused naming task, fraction, repeat, fold."""
    items, _ = load_task_datalist(config.tasks[task])
    try:  # a fold error names the task: the message alone says what, not which task
        plan = _task_folds(config, task, items)
    except FoldPlanError as e:
        raise type(e)(f"task {task} ({config.tasks[task]}): {e}") from e
    splits: dict[SplitKey, Split] = {}
    for r in range(config.repeats):
        for f in range(config.folds):
            for fraction, split in _splits(config, task, plan, r, config.split_seed(r), f).items():
                splits[(fraction, r, f)] = split
    return _TaskPlan(items, splits, imported_folds=plan.imported, imported_validation=plan.validation is not None)


def _splits(config: ExperimentConfig, task: str, plan: FoldPlan, repeat: int, seed: int,
            fold: int) -> dict[float, Split]:
    """``(train, val, test)`` of one repeat and fold for every label fraction: one validation part, the rest of the
    training part subsampled per fraction, nested (the same draws as a single-fraction run of each fraction), both
    drawn with ``seed`` (:meth:`ExperimentConfig.split_seed`)."""
    where = f"task {task} ({config.tasks[task]}), repeat {repeat} (split seed {seed}), fold {fold}"
    try:
        train, val, test = plan.split(fold, config.recipe.val_fraction, seed=seed)
    except FoldPlanError as e:
        raise type(e)(f"{where}: {e}") from e
    try:
        subsets = plan.subsample_nested(train, config.label_fractions, seed=seed)
    except FoldPlanError as e:  # the message names the fraction
        raise type(e)(f"{where}: {e}; use a larger label fraction") from e
    return {fraction: (subsets[fraction], val, test) for fraction in config.label_fractions}


def _evaluate(run: _TaskRun, unit: Unit, future: Future | None) -> tuple[float, FoldScores | None]:
    """The test AUC of ``unit`` and, for a trained mode, its test scores (``future``: its pool job, if any)."""
    if unit.mode in _FROZEN_FEATURE_MODES:
        return _frozen_feature_auc(run, unit), None
    try:
        auc, y_true, y_score = future.result() if future is not None else _train(run, unit)
    except ValueError as e:  # name the fold: the message alone says what, not where
        raise ExperimentError(f"task {unit.task} ({run.config.tasks[unit.task]}), init {unit.init}, {unit.mode.value}, "
                              f"label fraction {unit.label_fraction:g}, repeat {unit.repeat}, fold {unit.fold}: {e}"
                              ) from e
    return auc, FoldScores(run.splits[unit.split_key][2], y_true, y_score)


def _train(run: _TaskRun, unit: Unit) -> tuple[float, np.ndarray, np.ndarray]:
    """Fine-tune or linearly probe ``unit`` in this process: ``(auc, y_true, y_score)``."""
    result = train_fold(run.images, None, run.splits[unit.split_key], run.config.init_specs[unit.init],
                        unit.mode, run.config.recipe, repeat_seed(run.config.seed, unit.repeat), run.device,
                        feature_cache=run.features)
    return result.auc, result.y_true, result.y_score


def _frozen_feature_auc(run: _TaskRun, unit: Unit) -> float:
    """kNN or logistic regression on the init's frozen features (computed once per init and repeat seed)."""
    config, spec, seed = run.config, run.config.init_specs[unit.init], repeat_seed(run.config.seed, unit.repeat)
    key = feature_cache_key(spec, seed)
    if key not in run.features:
        run.features[key] = embed(run.images, spec, seed=seed, device=run.device,
                                  batch_size=config.recipe.eval_batch_size)
    x, y = run.features[key].cpu().numpy(), run.images.labels
    train, _, test = run.splits[unit.split_key]
    if unit.mode == EvalMode.KNN:
        return knn_auc(x[train], y[train], x[test], y[test], k=config.knn_k)
    return logistic_auc(x[train], y[train], x[test], y[test], c=config.logistic_c)


@contextmanager
def _pooled_fine_tuning(run: _TaskRun, host_images: TaskImages,
                        units: Sequence[Unit]) -> Iterator[dict[Unit, Future]]:
    """With ``workers > 1`` and more than one fine-tuning unit: a pool running all of them, their futures by unit;
    else no futures (every unit runs in this process)."""
    jobs = [u for u in units if u.mode == EvalMode.FINE_TUNING]
    if run.config.workers <= 1 or len(jobs) <= 1:
        yield {}
        return
    pool = _fine_tune_pool(host_images, min(run.config.workers, len(jobs)), run.device)
    try:
        yield {u: pool.submit(_fine_tune_job, run.splits[u.split_key], run.config.init_specs[u.init],
                              run.config.recipe, repeat_seed(run.config.seed, u.repeat), str(run.device)) for u in jobs}
    finally:  # on an error: drop the queued folds, wait for the running ones
        pool.shutdown(wait=True, cancel_futures=True)


def _collect_roc(config: ExperimentConfig, log: ResultsLog) -> RocData:
    """``"<task> <mode>"`` -> init -> ``(y_true, y_score)`` of every fold at the largest label fraction (that of the
    report's tables), for the trained modes; a task and mode with a fold lacking its saved scores has no entry (a
    partial ROC would misrepresent the rows)."""
    roc_data: RocData = {}
    fraction = max(config.label_fractions)
    for task, mode in itertools.product(config.tasks, config.modes):
        keys = [(init, mode, task, fraction, r, f) for init in config.inits for r in range(config.repeats)
                for f in range(config.folds)]
        lacking = [k for k in keys if not log.scores.get(k)]
        if lacking:  # predictions.csv was edited or removed
            logger.warning("no ROC plot for %s %s: %d folds have no saved predictions in %s", task, mode,
                           len(lacking), log.predictions.path)
            continue
        by_init: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        for k in keys:
            labels, scores = zip(*log.scores[k])
            by_init[k[0]].append((np.asarray(labels), np.asarray(scores)))
        roc_data[f"{task} {mode}"] = dict(by_init)
    return roc_data


def _report(config: ExperimentConfig, log: ResultsLog, device: torch.device, roc_data: RocData,
            embeddings: dict[str, tuple] | None, plans: Mapping[str, _TaskPlan],
            leakage: Sequence[str] = ()) -> dict[str, Path]:
    """:func:`~monai_modan.evaluation.report.write_report` of every row present; returns every file written."""
    train_sizes = {task: plan.train_sizes() for task, plan in plans.items()}
    sources = {task: (plan.imported_folds, plan.imported_validation) for task, plan in plans.items()}
    plan_paths = {task: _fold_plan_path(config, task) for task in config.tasks}
    task_pos = {t: i for i, t in enumerate(config.tasks)}
    init_pos = {n: i for i, n in enumerate(config.inits)}
    mode_pos = {m.value: i for i, m in enumerate(_MODE_ORDER)}
    rows = sorted(log.rows, key=lambda r: (task_pos[r.task], mode_pos[r.mode], r.label_fraction, init_pos[r.init],
                                           r.repeat, r.fold))
    written = write_report(rows, Path(config.out_dir), config.reference_init, roc_data=roc_data or None,
                           embeddings=embeddings,
                           protocol=_protocol(config, plan_paths, _environment(device, config.workers), sources,
                                             leakage),
                           init_order=list(config.inits), task_order=list(config.tasks), title=config.title,
                           seed=config.seed, train_sizes=train_sizes, alternative=config.alternative)
    written["predictions.csv"] = log.predictions.path
    written["experiment.json"] = log.settings_path
    written.update({f"folds/{task}.json": path for task, path in plan_paths.items()})
    return written


def _environment(device: torch.device, workers: int) -> str:
    """Where the rows were computed (the last run writing the report): floats can differ across these."""
    return (f"Environment of this report's run: device {device}, {torch.get_num_threads()} torch thread(s), "
            f"{max(1, workers)} fine-tuning process(es); monai-modan {__version__}, torch {torch.__version__}, "
            f"MONAI {monai.__version__}, scikit-learn {sklearn.__version__}, SciPy {scipy.__version__}.")


def _scale_note(config: ExperimentConfig) -> str:
    """One line saying what the report's numbers mean: how far this run is from the paper's protocol."""
    r = config.recipe
    reduced = [what for what, small in ((f"{config.repeats} repeat(s)", config.repeats < 10),
                                        (f"{config.folds} folds", config.folds < 5),
                                        (f"{r.image_size} px", r.image_size < 224),
                                        (f"{r.epochs} epoch(s)", r.epochs < 10)) if small]
    paper = ("paper-grade numbers need 10 repeats x 5 folds at 224 px, 10 epochs, with encoders pretrained by the "
             "paper's recipe (bundles/modan_pretrain/configs/paper.json: 224 px, batch 256, 1000 epochs) on a large "
             "corpus such as RadImageNet")
    if reduced:
        return (f"What these numbers mean: a reduced protocol ({', '.join(reduced)}): the AUCs show what this budget "
                f"learns on these images, with wide uncertainty; {paper}.")
    return f"What these numbers mean: the paper's evaluation protocol; {paper}."


def _protocol(config: ExperimentConfig, plan_paths: Mapping[str, Path], environment: str,
              sources: Mapping[str, tuple[bool, bool]], leakage: Sequence[str] = ()) -> EvaluationProtocol:
    """What the report states; ``sources``: task -> (its folds imported, its validation part imported)."""
    r = config.recipe
    own_folds = [t for t, (folds, _) in sources.items() if folds]
    own_validation = [t for t, (_, val) in sources.items() if val]
    selection = (f"the weights of the epoch (of {r.epochs}) with the lowest validation loss (mean BCE, eval mode; "
                 "earliest on ties); the test fold is scored once with them" if r.val_fraction > 0 or own_validation
                 else f"none (val_fraction = 0): the weights after the last of {r.epochs} epochs")
    seed0 = config.split_seed(0)
    if config.fixed_splits:
        drawn = (f"{VALIDATION_SPLIT_METHOD}; drawn once per fold with split seed {seed0} (repeat 0's) and kept in "
                 "every repeat (fixed_splits = true, the ModAn paper's setting: splits unchanged across repeats), so "
                 "repeats differ by their training seed only")
    else:
        drawn = (f"{VALIDATION_SPLIT_METHOD}; redrawn in every repeat with that repeat's seed (fixed_splits = false; "
                 "the paper keeps the splits unchanged across repeats)")
    drawn_tasks = [t for t in sources if t not in own_validation]
    validation = "; ".join(
        ([f"{', '.join(drawn_tasks) + ': ' if own_validation else ''}{drawn}"] if drawn_tasks else [])
        + ([f"{', '.join(own_validation)}: {IMPORTED_VALIDATION_METHOD}"] if own_validation else []))
    folds = None
    if own_folds:
        others = [t for t in sources if t not in own_folds]
        folds = (f"test folds imported from the task datalist's own 'fold' values for {', '.join(own_folds)} (the "
                 "data set's published partition, not drawn)"
                 + (f"; fixed stratified folds drawn for {', '.join(others)} (grouped by patient/case where the task "
                    "has groups)" if others else ""))
    subsets = ("drawn with the split seed (repeat 0's in every repeat, fixed_splits = true)" if config.fixed_splits
               else "drawn with that repeat's seed (fixed_splits = false)")
    notes = [_scale_note(config),
             f"Recipe (ModAn paper, Table 3, except the image size): {r.describe()}.",
             "Protocol settings: "
             f"folds = {config.folds}, fold_seed = {config.fold_seed}, repeats = {config.repeats}, seed = "
             f"{config.seed}, fixed_splits = {str(config.fixed_splits).lower()} (paper: true), alternative = "
             f"{config.alternative!r} (paper: one-sided, reference better = 'greater'), val_fraction = "
             f"{r.val_fraction:g}, label_fractions = {sorted(config.label_fractions)}"
             + (f", imported folds: {', '.join(own_folds)}" if own_folds else "")
             + (f", imported validation parts: {', '.join(own_validation)}" if own_validation else "") + ".",
             "Training seed of repeat r: numpy SeedSequence([seed, r]) (seed "
             f"{config.seed}), the same for every initialisation; validation parts and label-fraction subsets are "
             f"{subsets}, so every initialisation sees the same images in the same parts.",
             "Fine-tuning: every layer trained, model = encoder + Linear(512, 1). Linear probing: encoder frozen "
             "with BatchNorm in eval mode, only the Linear layer trained, on features computed once per "
             "initialisation (identical to running the frozen encoder at every step, since nothing is augmented).",
             *(f"Initialisation {spec.describe()}." for spec in config.init_specs.values())]
    if config.knn:
        notes.append(f"kNN: k = {config.knn_k} nearest neighbours by cosine distance on the frozen encoder's "
                     "features of the same training part as the probes (no validation part used); score = share of "
                     "positive neighbours. kNN folds have no ROC plot.")
    if config.logistic:
        notes.append(f"Logistic regression (not in the ModAn paper): L2-regularised, C = {config.logistic_c:g}, "
                     "lbfgs to convergence, on the frozen encoder's features standardised with the mean and sd of "
                     "the same training part as the probes (no validation part used); score = class-1 probability. "
                     "Logistic folds have no ROC plot.")
    notes += leakage  # the leakage check's lines (evaluation.leakage)
    notes.append(environment)
    return EvaluationProtocol(
        fold_seed=config.fold_seed,
        fold_plan="; ".join(f"{task}: {path.relative_to(config.out_dir)}" for task, path in plan_paths.items()),
        repeat_seeds=config.repeat_seeds, val_fraction=r.val_fraction, validation=validation,
        model_selection=selection, label_fraction=config.label_fraction,
        label_fractions=sorted(config.label_fractions), notes=notes, folds=folds)
