"""The downstream experiment runner: tasks x initialisations x modes x repeats x folds -> AUC rows -> report.

For every task the fixed fold plan (``out_dir/folds/<task>.json``, made once, reused by every initialisation, mode
and repeat and by every later run) gives the test folds; repeat ``r`` draws its validation part inside each
training part (grouped, stratified) and its training seed from :func:`~monai_modan.evaluation.finetune.repeat_seed`,
the same for every initialisation, so the AUCs are paired by (repeat, fold). The task's images are decoded once.

Outputs in ``out_dir``:

- ``experiment.json`` -- the settings the rows were computed with (a restart with other settings is refused);
- ``folds/<task>.json`` -- the fold plans;
- ``results.csv`` -- one row per (init, mode, task, repeat, fold), appended (flushed and synced) as each fold
  finishes, so an interrupted run keeps its rows; a restart skips the rows present (resume);
- ``predictions.csv`` -- the test scores of every fine-tuned / probed fold (``index`` = item of the task
  datalist), written before the fold's row, so the ROC curves of a resumed run are complete;
- the report of :func:`~monai_modan.evaluation.report.write_report` (summary tables, box plots, ROC per task and
  mode, UMAP panels of each initialisation's embedding of ``umap_datalist``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
import os
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..networks.weights import InitSpec
from .finetune import (Recipe, TaskImages, embed, feature_cache_key, repeat_seed,
                                train_fold)
from ..utils.device import pick_device
from ..utils.io import atomic_write_json, atomic_write_text, file_sha256
from .embedding import knn_auc, logistic_auc
from .folds import FoldPlan, FoldPlanError, load_or_make_folds
from .report import EvaluationProtocol, write_report
from .stats import RESULT_FIELDS, AucRow, EvalMode

__all__ = ["ExperimentConfig", "ExperimentError", "PREDICTION_FIELDS", "run_experiment", "experiment_from_yaml",
           "umap_items"]

logger = logging.getLogger(__name__)

FORMAT = "monai-modan/experiment/1"
PREDICTION_FIELDS = ("init", "mode", "task", "repeat", "fold", "index", "label", "score")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # task names become file names
_MODE_ORDER = (EvalMode.FINE_TUNING, EvalMode.LINEAR_PROBING, EvalMode.LOGISTIC, EvalMode.KNN)
_FROZEN_FEATURE_MODES = (EvalMode.LOGISTIC, EvalMode.KNN)  # classifiers fitted on the frozen features
# settings that change the numbers: a restart in the same out_dir must keep them
_RESULT_SETTINGS = ("folds", "fold_seed", "seed", "recipe", "label_fraction", "knn_k", "logistic_c")

Key = tuple[str, str, str, int, int]  # (init, mode, task, repeat, fold)


class ExperimentError(ValueError):
    """An experiment cannot run as configured, or its output folder belongs to another configuration."""


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
        folds: k test folds (5), fold plan seed ``fold_seed`` (0).
        seed: base of the repeat seeds ``repeat_seed(seed, r)``.
        recipe: :class:`~monai_modan.evaluation.finetune.Recipe` (or its fields as a mapping).
        label_fraction: share of each training part used (after the validation part is held out), drawn
            stratified and grouped per repeat (:meth:`~monai_modan.evaluation.folds.FoldPlan.subsample`).
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
    """

    tasks: dict[str, str]
    inits: dict[str, str | None]
    out_dir: str
    reference_init: str | None = None
    modes: tuple[str, ...] = (EvalMode.FINE_TUNING.value, EvalMode.LINEAR_PROBING.value)
    repeats: int = 10
    folds: int = 5
    fold_seed: int = 0
    seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)
    label_fraction: float = 1.0
    knn: bool = False
    knn_k: int = 20
    logistic: bool = False
    logistic_c: float = 1.0
    umap_datalist: str | None = None
    umap_max_images: int = 300
    device: str = "auto"
    title: str = "Downstream evaluation"
    workers: int = 1
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
        self.init_specs = {name: InitSpec.parse(name, value) for name, value in self.inits.items()}
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
        if not isinstance(self.label_fraction, (int, float)) or not 0.0 < float(self.label_fraction) <= 1.0:
            raise ExperimentError(f"label_fraction must be in (0, 1], got {self.label_fraction!r}")
        self.label_fraction = float(self.label_fraction)
        self.knn, self.logistic = bool(self.knn), bool(self.logistic)
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
        return out


def _resolve_init(value: Any, resolve: Callable[[Any], Any]) -> Any:
    if value is None or str(value).strip().lower() == "scratch":
        return value
    text = str(value).strip()
    if text.lower().startswith("imagenet:"):
        return "imagenet:" + str(resolve(text[len("imagenet:"):].strip()))
    return resolve(text)


def experiment_from_yaml(path: str | Path) -> ExperimentConfig:
    """Read an :class:`ExperimentConfig` from YAML (or JSON); relative paths are relative to the file's folder."""
    from ..utils.io import read_yaml_file

    path = Path(path)
    data = read_yaml_file(path, "experiment config", ExperimentError)
    try:
        return ExperimentConfig.from_dict(data, base_dir=path.parent.absolute())
    except ExperimentError as e:
        raise ExperimentError(f"{path}: {e}") from None


# -- append-only logs -----------------------------------------------------------------------------------------------


class _CsvLog:
    """A CSV file appended row by row (flushed and fsynced) and read back on restart.

    A restart after a crash may find a torn last line (no final newline): it is dropped. Any other bad line is an
    error naming the file and line.
    """

    def __init__(self, path: Path, fieldnames: Sequence[str]) -> None:
        self.path, self.fieldnames = path, tuple(fieldnames)
        self.rows: list[dict[str, str]] = []
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8")
        torn = bool(text) and not text.endswith("\n")
        if torn:
            text = text[: text.rfind("\n") + 1]
            logger.warning("%s: dropped a torn last line (interrupted write)", path)
        reader = csv.DictReader(io.StringIO(text))
        if text and tuple(reader.fieldnames or ()) != self.fieldnames:
            raise ExperimentError(f"{path}: header {reader.fieldnames} is not {list(self.fieldnames)}; not a file "
                                  "of this experiment runner")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise ExperimentError(f"{path}: line {reader.line_num} does not have {len(self.fieldnames)} fields")
            self.rows.append(row)
        if torn:
            self.rewrite(self.rows)

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


def _key(row: Mapping[str, Any] | AucRow) -> Key:
    if isinstance(row, AucRow):
        return (row.init, row.mode, row.task, row.repeat, row.fold)
    return (str(row["init"]), str(row["mode"]), str(row["task"]), int(row["repeat"]), int(row["fold"]))


# -- settings of an output folder -----------------------------------------------------------------------------------


def _check_out_dir(config: ExperimentConfig, settings_path: Path, rows: Sequence[AucRow]) -> None:
    """Refuse to mix rows of different settings in one ``out_dir``; record the settings (tasks/inits merged)."""
    current = config.to_dict()
    record = {"format": FORMAT, **{k: current[k] for k in _RESULT_SETTINGS}, "tasks": dict(current["tasks"]),
              "inits": dict(current["inits"]),
              # the weights' contents, not only their paths: a checkpoint retrained in place must not mix its rows
              "weights": {name: file_sha256(spec.path) for name, spec in config.init_specs.items() if spec.path}}
    if settings_path.exists():
        try:
            saved = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ExperimentError(f"cannot read {settings_path}: {e}") from None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise ExperimentError(f"{settings_path} is not an experiment record ({FORMAT})")
        # a setting missing from the record was added to the package later; its rows cannot exist there
        diffs = [f"{k}: {saved.get(k)!r} there, {record[k]!r} now" for k in _RESULT_SETTINGS
                 if saved.get(k, record[k]) != record[k]]
        for group in ("tasks", "inits", "weights"):
            old = saved.get(group) or {}
            diffs += [f"{group}.{name}: {old[name]!r} there, {value!r} now" for name, value in record[group].items()
                      if name in old and old[name] != value]
            record[group] = {**old, **record[group]}
        if diffs:
            raise ExperimentError(f"{settings_path.parent} holds results of other settings ({'; '.join(diffs)}): use "
                                  "another out_dir, or restore the settings to resume")
    allowed_modes = set(config.eval_modes)
    extra = [r for r in rows if r.task not in config.tasks or r.init not in config.inits or r.mode not in allowed_modes
             or r.repeat >= config.repeats or r.fold >= config.folds]
    if extra:
        shown = ", ".join(f"{r.init}/{r.mode}/{r.task}/repeat {r.repeat}/fold {r.fold}" for r in extra[:3])
        raise ExperimentError(f"{settings_path.parent / 'results.csv'} holds {len(extra)} rows outside this "
                              f"configuration (e.g. {shown}): add their inits, tasks, modes or repeats back, or use "
                              "another out_dir")
    atomic_write_json(settings_path, record)


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
    from ..data.datalist import load_datalist

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


def _fine_tune_job(split: tuple[np.ndarray, np.ndarray, np.ndarray], spec: InitSpec, recipe: Recipe, seed: int,
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


# -- the run --------------------------------------------------------------------------------------------------------


def _split(plan: FoldPlan, fold: int, val_fraction: float, seed: int,
           label_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` of one repeat and fold; the training part subsampled for label-fraction runs."""
    train, val, test = plan.split(fold, val_fraction, seed=seed)
    if label_fraction < 1.0:
        train = plan.subsample(train, label_fraction, seed=seed)
    return train, val, test


def _environment(device: torch.device, workers: int) -> str:
    """Where the rows were computed (the last run writing the report): floats can differ across these."""
    import monai
    import scipy
    import sklearn

    from .. import __version__

    return (f"Environment of this report's run: device {device}, {torch.get_num_threads()} torch thread(s), "
            f"{max(1, workers)} fine-tuning process(es); monai-modan {__version__}, torch {torch.__version__}, "
            f"MONAI {monai.__version__}, scikit-learn {sklearn.__version__}, SciPy {scipy.__version__}.")


def _protocol(config: ExperimentConfig, plan_paths: Mapping[str, Path], environment: str) -> EvaluationProtocol:
    r = config.recipe
    selection = (f"the weights of the epoch (of {r.epochs}) with the lowest validation loss (mean BCE, eval mode; "
                 "earliest on ties); the test fold is scored once with them" if r.val_fraction > 0
                 else f"none (val_fraction = 0): the weights after the last of {r.epochs} epochs")
    notes = [f"Recipe (ModAn paper, Table 3, except the image size): {r.describe()}.",
             "Training seed of repeat r: numpy SeedSequence([seed, r]) (seed "
             f"{config.seed}); it also draws that repeat's validation part and label-fraction subset, so every "
             "initialisation sees the same images in the same parts.",
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
    notes.append(environment)
    return EvaluationProtocol(
        fold_seed=config.fold_seed,
        fold_plan="; ".join(f"{task}: {path.relative_to(config.out_dir)}" for task, path in plan_paths.items()),
        repeat_seeds=config.repeat_seeds, val_fraction=r.val_fraction, model_selection=selection,
        label_fraction=config.label_fraction, notes=notes)


def run_experiment(config: ExperimentConfig | Mapping[str, Any], progress: bool = True) -> dict[str, Path]:
    """Run (or resume) the experiment and write its report; returns file name -> path of every file written.

    Order: task -> init -> mode (fine-tuning, linear probing, logistic, kNN) -> repeat -> fold, then UMAP and the
    report. Every init's weights are loaded once up front, so a missing or wrong file fails before any training; a
    task's images are decoded when its first missing row is computed, and released after the task. With
    ``config.workers > 1`` a task's fine-tuning folds are all submitted to a process pool at once and their rows
    written, as they are collected, in the same order as a serial run.

    Raises:
        ExperimentError: bad settings, or ``out_dir`` holds results of other settings.
        FoldPlanError, TaskDatalistError, CheckpointError, ImageLoadError: bad data or weights (the message names
            the file).
    """
    from tqdm.auto import tqdm

    from ..data.downstream import load_task_datalist
    
    if not isinstance(config, ExperimentConfig):
        config = ExperimentConfig.from_dict(config)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    for spec in config.init_specs.values():  # fail now, not after hours of training on the first inits
        spec.build_encoder(config.seed)

    results = _CsvLog(out_dir / "results.csv", RESULT_FIELDS)
    try:
        rows = [AucRow.coerce(r) for r in results.rows]
    except ValueError as e:
        raise ExperimentError(f"{results.path}: {e}") from None
    _check_out_dir(config, out_dir / "experiment.json", rows)
    done = {_key(r) for r in rows}
    if len(done) != len(rows):
        raise ExperimentError(f"{results.path} holds duplicated rows; remove them to resume")
    predictions = _CsvLog(out_dir / "predictions.csv", PREDICTION_FIELDS)
    kept = [p for p in predictions.rows if _key(p) in done]  # scores of a fold whose row was never written
    if len(kept) != len(predictions.rows):
        predictions.rewrite(kept)
    scores: dict[Key, list[tuple[int, float]]] = defaultdict(list)
    for p in kept:
        scores[_key(p)].append((int(p["label"]), float(p["score"])))
    if rows:
        logger.info("resuming in %s: %d result rows already present", out_dir, len(rows))

    seeds = config.repeat_seeds
    modes = [EvalMode(m) for m in config.modes]
    run_modes: list[EvalMode] = [*modes, *config.frozen_feature_modes]
    plan_paths: dict[str, Path] = {}
    units_per_task = len(config.inits) * len(config.eval_modes) * config.repeats * config.folds
    with tqdm(total=units_per_task * len(config.tasks), desc="experiment", unit="fold", disable=not progress) as bar:
        for task, datalist in config.tasks.items():
            items, _ = load_task_datalist(datalist)
            plan_paths[task] = out_dir / "folds" / f"{task}.json"
            todo = [(init, mode, r, f) for init in config.inits for mode in run_modes
                    for r in range(config.repeats) for f in range(config.folds)]
            todo = [u for u in todo if (u[0], u[1].value, task, u[2], u[3]) not in done]
            try:  # a fold error names the task: the message alone says what, not which task
                plan = load_or_make_folds(plan_paths[task], items, n_folds=config.folds, seed=config.fold_seed)
                splits = {(r, f): _split(plan, f, config.recipe.val_fraction, seeds[r], config.label_fraction)
                          for r in range(config.repeats) for f in range(config.folds)} if todo else {}
            except FoldPlanError as e:
                raise type(e)(f"task {task} ({datalist}): {e}") from e
            bar.update(units_per_task - len(todo))
            if not todo:
                continue
            host_images = TaskImages.load(items, config.recipe.image_size, progress=progress)
            images = host_images.to(device)
            features: dict[str, Any] = {}
            pool: ProcessPoolExecutor | None = None
            futures: dict[tuple, Future] = {}
            parallel = [u for u in todo if u[1] == EvalMode.FINE_TUNING]
            if config.workers > 1 and len(parallel) > 1:
                pool = _fine_tune_pool(host_images, min(config.workers, len(parallel)), device)
                futures = {u: pool.submit(_fine_tune_job, splits[(u[2], u[3])], config.init_specs[u[0]],
                                          config.recipe, seeds[u[2]], str(device)) for u in parallel}
            try:
                for init, mode, r, f in todo:
                    spec, mode_name = config.init_specs[init], mode.value
                    bar.set_postfix_str(f"{task} {init} {mode_name} r{r} f{f}", refresh=False)
                    train, val, test = splits[(r, f)]
                    if mode in _FROZEN_FEATURE_MODES:
                        key = feature_cache_key(spec, seeds[r])
                        if key not in features:
                            features[key] = embed(images, spec, seed=seeds[r], device=device,
                                                  batch_size=config.recipe.eval_batch_size)
                        x, y = features[key].cpu().numpy(), images.labels
                        auc = (knn_auc(x[train], y[train], x[test], y[test], k=config.knn_k) if mode == EvalMode.KNN
                               else logistic_auc(x[train], y[train], x[test], y[test], c=config.logistic_c))
                    else:
                        try:
                            if (init, mode, r, f) in futures:
                                auc, y_true, y_score = futures.pop((init, mode, r, f)).result()
                            else:
                                result = train_fold(images, None, (train, val, test), spec, mode, config.recipe,
                                                    seeds[r], device, feature_cache=features)
                                auc, y_true, y_score = result.auc, result.y_true, result.y_score
                        except ValueError as e:  # name the fold: the message alone says what, not where
                            raise ExperimentError(f"task {task} ({datalist}), init {init}, {mode_name}, repeat {r}, "
                                                  f"fold {f}: {e}") from e
                        pred = [{"init": init, "mode": mode_name, "task": task, "repeat": r, "fold": f,
                                 "index": int(i), "label": int(t), "score": repr(float(s))}
                                for i, t, s in zip(test, y_true, y_score)]
                        predictions.append(pred)  # before the row: a row present implies its scores are present
                        scores[(init, mode_name, task, r, f)] = [(int(t), float(s)) for t, s in zip(y_true, y_score)]
                    row = AucRow(init=init, mode=mode_name, task=task, repeat=r, fold=f, auc=float(auc))
                    results.append([row.as_dict()])
                    rows.append(row)
                    done.add(_key(row))
                    bar.update(1)
            finally:
                if pool is not None:  # on an error: drop the queued folds, wait for the running ones
                    pool.shutdown(wait=True, cancel_futures=True)
            del images, host_images, features

    embeddings = _umap_embeddings(config, device, progress) if config.umap_datalist else None
    roc_data: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for task in config.tasks:
        for mode in modes:
            units = [(init, r, f) for init in config.inits for r in range(config.repeats) for f in range(config.folds)]
            lacking = [u for u in units if not scores.get((u[0], mode.value, task, u[1], u[2]))]
            if lacking:  # predictions.csv was edited or removed: a partial ROC would misrepresent the rows
                logger.warning("no ROC plot for %s %s: %d folds have no saved predictions in %s", task,
                               mode.value, len(lacking), predictions.path)
                continue
            by_init: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
            for init, r, f in units:
                pairs = scores[(init, mode.value, task, r, f)]
                by_init[init].append((np.asarray([t for t, _ in pairs]), np.asarray([v for _, v in pairs])))
            roc_data[f"{task} {mode.value}"] = dict(by_init)

    task_pos = {t: i for i, t in enumerate(config.tasks)}
    init_pos = {n: i for i, n in enumerate(config.inits)}
    mode_pos = {m.value: i for i, m in enumerate(_MODE_ORDER)}
    rows.sort(key=lambda r: (task_pos[r.task], mode_pos[r.mode], init_pos[r.init], r.repeat, r.fold))
    written = write_report(rows, out_dir, config.reference_init, roc_data=roc_data or None, embeddings=embeddings,
                           protocol=_protocol(config, plan_paths, _environment(device, config.workers)),
                           init_order=list(config.inits),
                           task_order=list(config.tasks), title=config.title, seed=config.seed)
    written["predictions.csv"] = predictions.path
    written["experiment.json"] = out_dir / "experiment.json"
    written.update({f"folds/{task}.json": path for task, path in plan_paths.items()})
    return written
