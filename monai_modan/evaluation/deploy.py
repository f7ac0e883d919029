"""A deployable classifier: fine-tune the chosen init on a task's labelled data, save it, classify new images.

**Deploy** (:func:`deploy_classifier`, the task bundles' ``deploy.json``) trains exactly as one cross-validation fold
does (:func:`~monai_modan.evaluation.finetune.train_fold`, fine-tuning, the same :class:`Recipe`, the same seeds):

- *Model selection* as in CV: a stratified, grouped validation part is held out of the training images
  (:data:`~monai_modan.evaluation.folds.VALIDATION_SPLIT_METHOD`, ``recipe.val_fraction``, drawn with the seed of
  CV's repeat 0; items that carry ``split`` give their own ``val`` part), and the weights of the epoch with the
  lowest validation loss are kept.
- *Training images*: every labelled item but the validation part (``holdout=False``, the default: the final model);
  or, with ``holdout=True``, every item outside test fold 0 of the task's CV fold plan (``folds``, ``fold_seed``, as
  the experiment makes it). The held-out model is then the model of CV's repeat 0, fold 0 -- same split, same seed,
  same AUC -- and its held-out AUC is recorded, so that :func:`classify` on the held-out images can be checked
  against it.
- *Decision threshold*: chosen on the validation part's probabilities by **Youden's J** (the threshold maximising
  sensitivity + specificity - 1 over the validation ROC curve's finite thresholds; among equal J the highest
  threshold, i.e. the most specific). A probability ``>= threshold`` is labelled positive. The validation part also
  selected the epoch, so its AUC and J are optimistic; the held-out AUC is not.

Outputs, each written atomically: ``model_dir/model.pt`` -- a plain state dict of :class:`DeployedClassifier`
(encoder + head + input normalisation; read with ``torch.load(weights_only=True)``, and by MONAI's ``ckpt_export``
into ``network_def`` without ``--key_in_ckpt``) -- then ``model_dir/model.json`` (:class:`ModelConfig`: task, what
label 1 means, image size, stem, threshold, the init used, validation and held-out AUC, the SHA-256 of
``model.pt``). ``model.json`` is written last and names its weights by hash, so a pair torn by a crash, or weights
replaced afterwards, is refused by :func:`load_classifier` instead of being used with the wrong threshold.

**Inference** (:func:`classify`, the task bundles' ``inference.json``) reads images the way training did (the
project reader :class:`~monai_modan.data.readers.LoadGrayscaleImage`: one grey channel -- colour converted to
BT.601 luma --, resized to the model's ``image_size`` x ``image_size``, aspect ratio not kept), so images of
another size or channel count are converted exactly as the training images were, not refused. Sources:

- a DICOM folder, through the project's indexer (:func:`~monai_modan.data.dicom_index.index_dicom_folder`): files
  whose path holds one of their identifying header values are listed by their pseudonymous link (``<predictions
  stem>.links/``), and non-image objects (SR, KO, PR ...), non-DICOM and unreadable files are counted skips;
- a folder of images (PNG, JPEG, TIFF, NIfTI, NPY ...; DICOM files there are refused: they go through the indexer);
- a datalist JSON (``{"training": [{"image": ...}, ...]}``; a task datalist's binary labels are copied to
  ``true_label``).

It writes ``predictions.csv`` (``image``, ``probability``, ``label`` at the model's threshold, ``class``, and
``true_label`` when known) and ``skipped.json`` (every image that could not be classified, with the reason) beside it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from tqdm.auto import tqdm

from ..data.dicom_index import index_dicom_folder
from ..data.downstream.task import load_task_datalist, write_task_datalist
from ..data.readers import DICOM_SUFFIXES, IMAGE_SUFFIXES, ImageLoadError, LoadGrayscaleImage
from ..labels.vocabulary import LabelSpace
from ..networks.encoder import FEATURE_DIM, StemType, build_encoder
from ..networks.export import CheckpointError, load_encoder, refuse_torchscript
from ..utils.device import pick_device
from ..utils.errors import UserInputError
from ..utils.io import atomic_path, atomic_write_json, atomic_write_text, check_writable, file_sha256
from .configure import configure_experiment
from .finetune import BinaryClassifier, TaskImages, repeat_seed, train_fold
from .folds import VALIDATION_SPLIT_METHOD, FoldPlanError, load_or_make_folds, make_folds
from .stats import EvalMode

__all__ = [
    "CONFIG_NAME",
    "MODEL_FORMAT",
    "MODEL_NAME",
    "MODEL_SELECTION",
    "THRESHOLD_RULE",
    "DeployError",
    "DeployedClassifier",
    "InferenceResult",
    "InputKind",
    "ModelConfig",
    "classifier_network",
    "classify",
    "deploy_classifier",
    "load_classifier",
    "read_model_config",
    "youden_threshold",
]

MODEL_FORMAT = "monai-modan/classifier/1"
MODEL_NAME = "model.pt"
CONFIG_NAME = "model.json"
HOLDOUT_NAME = "holdout.json"
SKIPPED_NAME = "skipped.json"
HOLDOUT_FOLD = 0  # the test fold of the CV plan a held-out deploy keeps out (CV's repeat 0, fold 0)
THRESHOLD_RULE = ("Youden's J on the validation part: the threshold maximising sensitivity + specificity - 1 over the "
                  "finite thresholds of its ROC curve (the highest one among equal J); probability >= threshold -> "
                  "label 1")
MODEL_SELECTION = ("the epoch with the lowest validation loss (mean BCE, eval mode; the earliest among equal) on a "
                   f"validation part held out of the training images: {VALIDATION_SPLIT_METHOD}, or the items' own "
                   "split: val")


class DeployError(UserInputError):
    """A deploy or inference input is unusable; the one-line message names the file / key, the value and the cause."""


class InputKind(StrEnum):
    """What :func:`classify` reads: ``auto`` detects it (a ``.json`` file -> ``datalist``; a folder holding DICOM
    files -> ``dicom``; any other folder -> ``images``)."""

    AUTO = "auto"
    DICOM = "dicom"
    IMAGES = "images"
    DATALIST = "datalist"


# -- the network ----------------------------------------------------------------------------------------------------


class DeployedClassifier(nn.Module):
    """The deployed network: ``[B, 1, H, W]`` grey images in ``[0, 1]`` -> logits ``[B, 1]`` (P(label 1) =
    sigmoid(logit)).

    The fine-tuned :class:`~monai_modan.evaluation.finetune.BinaryClassifier` with its input normalisation stored
    as (persistent) buffers, so the state dict -- and a TorchScript export of it -- holds everything the forward
    pass needs; its output has a channel axis for MONAI's bundle tools (``verify_net_in_out`` checks ``shape[1]``).
    State dict keys: ``encoder.*`` (plain MONAI ``resnet18`` names), ``head.weight`` ``[1, 512]``, ``head.bias``
    ``[1]``, ``input_mean``, ``input_std`` (scalars).

    Args:
        stem: the encoder's :class:`~monai_modan.networks.StemType`.
        input_norm: ``(mean, std)`` applied to the ``[0, 1]`` input before the encoder.
    """

    def __init__(self, stem: StemType | str = StemType.CONV3X3, input_norm: Sequence[float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.encoder = build_encoder(StemType(stem))
        self.head = nn.Linear(FEATURE_DIM, 1)
        self.register_buffer("input_mean", torch.tensor(float(input_norm[0])))
        self.register_buffer("input_std", torch.tensor(float(input_norm[1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` -> logits ``[B, 1]``."""
        return self.head(self.encoder((x - self.input_mean) / self.input_std))

    @classmethod
    def from_binary_classifier(cls, model: BinaryClassifier, stem: StemType | str) -> DeployedClassifier:
        """A copy of a trained ``BinaryClassifier`` (weights on the CPU, eval mode)."""
        out = cls(stem, (float(model.input_mean), float(model.input_std)))
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        out.load_state_dict({**state, "input_mean": out.input_mean, "input_std": out.input_std}, strict=True)
        return out.eval()


@torch.no_grad()
def _probabilities(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> np.ndarray:
    """``[N]`` float64 P(label 1) of ``images [N, 1, S, S]`` (eval mode; the sigmoid in float64 keeps the ranking of
    confident logits, as the CV's scores do)."""
    model.to(device).eval()
    if not images.shape[0]:
        return np.zeros(0, dtype=np.float64)
    logits = torch.cat([model(images[i:i + batch_size].to(device)).reshape(-1).double().cpu()
                        for i in range(0, images.shape[0], int(batch_size))])
    return torch.sigmoid(logits).numpy()


def youden_threshold(y_true: Sequence[int] | np.ndarray, probability: Sequence[float] | np.ndarray
                     ) -> tuple[float, float, float]:
    """``(threshold, sensitivity, specificity)`` maximising Youden's J = sensitivity + specificity - 1.

    Over the finite thresholds of ``sklearn.metrics.roc_curve(y_true, probability, drop_intermediate=False)`` (each
    a probability of the data: ``probability >= threshold`` is positive); among equal J the highest threshold.

    Raises:
        ValueError: the labels do not hold both classes.
    """
    y = np.asarray(y_true, dtype=np.int64)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"a threshold needs both classes; the labels hold {sorted(set(y.tolist()))}")
    fpr, tpr, thresholds = roc_curve(y, np.asarray(probability, dtype=np.float64), drop_intermediate=False)
    j = np.where(np.isfinite(thresholds), tpr - fpr, -np.inf)
    k = int(np.argmax(j))  # thresholds decrease: the first maximum is the highest threshold
    return float(thresholds[k]), float(tpr[k]), float(1.0 - fpr[k])


# -- the model's config ---------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """``model.json``: what a deployed ``model.pt`` is and how it was made.

    Attributes:
        task: the task it classifies (the bundle's ``task``); positive: what label 1 means (the task datalist's
            ``positive``); label 0 is everything else the task kept (``classes``).
        image_size: input side S (images are resized to S x S); stem: the encoder's stem; input_norm: ``(mean,
            std)`` inside the network.
        threshold: probability threshold (``>=`` -> label 1), chosen by :data:`THRESHOLD_RULE`.
        weights_sha256: SHA-256 of the ``model.pt`` written with this config.
        init: the init fine-tuned (``name``, ``kind``, ``weights`` file, its ``sha256``).
        recipe: the :class:`~monai_modan.evaluation.finetune.Recipe` used; seed: the training seed (CV's repeat 0).
        best_epoch, val_loss_curve, train_loss_curve: model selection (:data:`MODEL_SELECTION`).
        n_train, n_val, n_holdout: images per part; val_auc, val_sensitivity, val_specificity, val_youden_j: on the
            validation part (optimistic: it selected the epoch and the threshold).
        holdout: whether test fold ``holdout_fold`` of the ``folds``-fold plan (``fold_seed``) was held out;
            holdout_auc, holdout_sensitivity, holdout_specificity: on it (``None`` without).
        task_datalist, task_sha256: the labelled data.
    """

    task: str
    positive: str
    image_size: int
    stem: str
    input_norm: list[float]
    threshold: float
    weights_sha256: str
    init: dict[str, Any]
    recipe: dict[str, Any]
    seed: int
    best_epoch: int
    n_train: int
    n_val: int
    val_auc: float
    val_sensitivity: float
    val_specificity: float
    val_youden_j: float
    holdout: bool = False
    holdout_fold: int | None = None
    folds: int | None = None
    fold_seed: int | None = None
    n_holdout: int = 0
    holdout_auc: float | None = None
    holdout_sensitivity: float | None = None
    holdout_specificity: float | None = None
    task_datalist: str = ""
    task_sha256: str = ""
    val_loss_curve: list[float] = field(default_factory=list)
    train_loss_curve: list[float] = field(default_factory=list)
    threshold_rule: str = THRESHOLD_RULE
    model_selection: str = MODEL_SELECTION
    format: str = MODEL_FORMAT

    @property
    def classes(self) -> dict[int, str]:
        """``{0: "not <positive>", 1: "<positive>"}``."""
        return {0: f"not {self.positive}", 1: self.positive}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "classes": {str(k): v for k, v in self.classes.items()}}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ModelConfig:
        """Raises :class:`DeployError` naming ``source`` for another format, a missing key or a bad value."""
        if not isinstance(data, Mapping) or data.get("format") != MODEL_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise DeployError(f"{source}: not a monai-modan classifier config (format {found!r}, expected "
                              f"{MODEL_FORMAT!r}); deploy.json writes it beside model.pt")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise DeployError(f"{source}: classifier config lacks {missing}")
        config = cls(**{k: v for k, v in data.items() if k in known})
        try:
            config.stem = StemType(config.stem).value
        except ValueError:
            raise DeployError(f"{source}: stem {config.stem!r} is not one of {[s.value for s in StemType]}") from None
        for name, ok in (("image_size", isinstance(config.image_size, int) and config.image_size >= 1),
                         ("threshold", isinstance(config.threshold, (int, float)) and math.isfinite(config.threshold)),
                         ("input_norm", isinstance(config.input_norm, list) and len(config.input_norm) == 2)):
            if not ok:
                raise DeployError(f"{source}: {name} {getattr(config, name)!r} is not valid")
        return config


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """Read ``model.json``.

    Raises:
        FileNotFoundError: no such file (the message says how to make one); DeployError: not a classifier config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier config {path}: deploy a model first (the task bundle's deploy.json "
                                "writes model.pt and model.json together)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeployError(f"{path}: unreadable classifier config ({e})") from None
    return ModelConfig.from_dict(data, str(path))


def classifier_network(model_config: str | os.PathLike | None = None, stem: StemType | str | None = None
                       ) -> DeployedClassifier:
    """A :class:`DeployedClassifier` to load ``model.pt`` into (the task bundles' ``network_def``, for MONAI's
    ``verify_net_in_out`` and ``ckpt_export``).

    The stem is ``stem`` when given, else the one ``model_config`` records when that file exists, else the default
    ``conv3x3`` (a shape check before any model is deployed). The weights are random until a checkpoint is loaded.
    """
    if stem is None and model_config is not None and Path(model_config).is_file():
        stem = read_model_config(model_config).stem
    return DeployedClassifier(StemType.CONV3X3 if stem is None else stem)


def load_classifier(model_file: str | os.PathLike, model_config: str | os.PathLike | None = None, *,
                    task: str | None = None) -> tuple[DeployedClassifier, ModelConfig]:
    """Load a deployed ``model.pt`` with its ``model.json`` (default: beside it), checking they belong together.

    The encoder goes through :func:`~monai_modan.networks.export.load_encoder` (stem checked against the config),
    the head and normalisation through ``torch.load(weights_only=True)``; a TorchScript file is refused (loading
    one runs code from the file; the TorchScript export is for use outside monai-modan).

    Raises:
        FileNotFoundError: a file is missing. DeployError: the config is of another task than ``task``, or does not
            describe these weights (SHA-256). CheckpointError: TorchScript, not weights, another stem, missing keys.
    """
    model_file = Path(model_file)
    config_file = Path(model_config) if model_config is not None else model_file.with_name(CONFIG_NAME)
    config = read_model_config(config_file)
    if task is not None and config.task != task:
        raise DeployError(f"{config_file}: the model classifies task {config.task!r} ({config.positive} vs not), "
                          f"not {task!r}: point model_dir at a model deployed for {task}")
    if not model_file.is_file():
        raise FileNotFoundError(f"no model {model_file}: deploy a model first (deploy.json)")
    try:
        refuse_torchscript(model_file)
    except CheckpointError:
        raise CheckpointError(f"{model_file}: a TorchScript archive (e.g. ckpt_export's model.ts), refused because "
                              "loading it runs code from the file; inference reads the state dict deploy wrote "
                              f"({MODEL_NAME})") from None
    digest = file_sha256(model_file)
    if digest != config.weights_sha256:
        raise DeployError(f"{model_file} is not the model {config_file} describes (SHA-256 {digest[:12]}... vs "
                          f"{config.weights_sha256[:12]}...): the weights were replaced, or come from another deploy; "
                          "use the model.pt and model.json written together, or deploy again")
    encoder = load_encoder(model_file, stem=config.stem)  # checks the file, the architecture and the stem
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    rest = {k: v for k, v in state.items() if not str(k).startswith("encoder.")} if isinstance(state, Mapping) else {}
    expected = {"head.weight": (1, FEATURE_DIM), "head.bias": (1,), "input_mean": (), "input_std": ()}
    bad = [f"{k} {tuple(rest[k].shape) if k in rest else 'missing'}" for k, shape in expected.items()
           if k not in rest or tuple(rest[k].shape) != shape]
    if bad or set(rest) != set(expected):
        extra = sorted(set(rest) - set(expected))[:5]
        raise CheckpointError(f"{model_file}: not a deployed classifier's weights ({', '.join(bad) or 'ok'}"
                              f"{'; unexpected ' + ', '.join(extra) if extra else ''})")
    model = DeployedClassifier(config.stem)
    model.encoder = encoder
    model.load_state_dict({**{f"encoder.{k}": v for k, v in encoder.state_dict().items()}, **rest}, strict=True)
    return model.eval(), config


# -- deploy ---------------------------------------------------------------------------------------------------------


def _rate(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of ``p >= threshold``."""
    pred = p >= threshold
    return float(pred[y == 1].mean()), float((~pred[y == 0]).mean())


def _validation_part(items: Sequence[Mapping[str, Any]], candidates: np.ndarray, labels: np.ndarray,
                     groups: list[str], val_fraction: float, seed: int, source: str) -> np.ndarray:
    """The validation part of ``candidates`` (all items, no held-out part): the items' own ``split: val`` when they
    carry ``split``, else one fold of a stratified grouped k-fold with ``k = max(2, round(1 / val_fraction))`` --
    the method CV's :meth:`~monai_modan.evaluation.folds.FoldPlan.split` uses on a training part."""
    if all(it.get("split") not in (None, "") for it in items):
        val = np.asarray([i for i in candidates if items[i]["split"] == "val"], dtype=np.int64)
    else:
        n_splits = max(2, round(1.0 / val_fraction))
        try:
            plan = make_folds(labels[candidates], [groups[i] for i in candidates], n_folds=n_splits, seed=seed)
        except FoldPlanError as e:
            raise DeployError(f"{source}: cannot draw a validation part: {e}") from None
        val = np.sort(candidates[plan.test_folds[0]])
    present = set(labels[val].tolist())
    if present != {0, 1}:
        raise DeployError(f"{source}: the validation part ({val.size} images) lacks class "
                          f"{({0, 1} - present).pop() if present else 0}: a threshold cannot be chosen on it")
    return val


def deploy_classifier(task: str, task_datalist: str | os.PathLike, inits: Mapping[str, str | None],
                      model_dir: str | os.PathLike, run_dir: str | os.PathLike, *, holdout: bool | None = None,
                      image_size: int | None = None, recipe: Mapping[str, Any] | None = None,
                      folds: int | None = None, fold_seed: int | None = None, seed: int | None = None,
                      device: str | None = None, allow_torchscript: bool | None = None,
                      progress: bool = True) -> dict[str, Path]:
    """Fine-tune one init on a task's labelled images and save the classifier (see the module docstring).

    Args:
        task: the task's name (recorded; inference checks it).
        task_datalist: the task datalist (:func:`~monai_modan.data.downstream.load_task_datalist`).
        inits: exactly one ``{name: weights}`` (the values :class:`~monai_modan.evaluation.experiment.ExperimentConfig`
            takes: ``None``/``"scratch"``, ``"imagenet:<file>"``, an encoder or checkpoint path).
        model_dir: where ``model.pt`` and ``model.json`` go.
        run_dir: where the held-out fold plan (``folds/<task>.json``) and ``holdout.json`` go.
        holdout: keep test fold 0 of the CV plan out (default ``False``: train on everything but the validation
            part).
        image_size, recipe, folds, fold_seed, seed, device, allow_torchscript: as for the experiment
            (:func:`~monai_modan.evaluation.configure.configure_experiment`); ``None`` = the package default.

    Returns:
        ``{"model": model.pt, "config": model.json}`` (+ ``"holdout"``: the held-out task datalist).

    Raises:
        DeployError: not exactly one init, no validation part (``recipe.val_fraction`` 0), a part missing a class;
        and what the experiment's configuration, the task datalist and the fold plan raise for bad values.
    """
    if not isinstance(inits, Mapping) or len(inits) != 1:
        names = list(inits) if isinstance(inits, Mapping) else inits
        raise DeployError(f"inits: deploy fine-tunes one initialisation, got {names!r}; choose one, e.g. --inits "
                          "\"{'mulsupcon': '<runs>/mulsupcon/encoder.pt'}\" or \"{'scratch': None}\"")
    if holdout is not None and not isinstance(holdout, bool):
        raise DeployError(f"holdout must be True or False, got {holdout!r}")
    holdout = bool(holdout)
    run_dir, model_dir = Path(run_dir), Path(model_dir)
    config = configure_experiment({task: task_datalist}, inits, run_dir, image_size=image_size, recipe=recipe,
                                  modes=[EvalMode.FINE_TUNING.value], repeats=1, folds=folds, fold_seed=fold_seed,
                                  seed=seed, device=device, allow_torchscript=allow_torchscript)
    recipe_, (name, spec) = config.recipe, next(iter(config.init_specs.items()))
    if recipe_.val_fraction <= 0:
        raise DeployError("recipe.val_fraction is 0: deploy needs a validation part, which selects the epoch and "
                          "the decision threshold")
    for path in (model_dir / MODEL_NAME, model_dir / CONFIG_NAME):
        check_writable(path)  # before training, which can take long
    items, meta = load_task_datalist(task_datalist)
    labels = np.asarray([int(it["label"]) for it in items], dtype=np.int64)
    groups = [str(it["group"]) for it in items]
    seed_ = repeat_seed(config.seed, 0)  # CV's repeat 0: its training seed and its validation draw
    source = f"task {task} ({task_datalist})"
    if holdout:
        try:  # the fold plan's errors say what, not which task
            plan = load_or_make_folds(run_dir / "folds" / f"{task}.json", items, n_folds=config.folds,
                                      seed=config.fold_seed)
            train, val, test = plan.split(HOLDOUT_FOLD, recipe_.val_fraction, seed=seed_)
        except FoldPlanError as e:
            raise type(e)(f"{source}: {e}") from e
    else:
        everything = np.arange(len(items), dtype=np.int64)
        val = _validation_part(items, everything, labels, groups, recipe_.val_fraction, seed_, source)
        train, test = np.setdiff1d(everything, val), np.zeros(0, np.int64)
    images = TaskImages.load(items, recipe_.image_size, progress=progress)
    dev = pick_device(config.device)
    result = train_fold(images, None, (train, val, test), spec, EvalMode.FINE_TUNING, recipe_, seed_, dev)
    stem = StemType.CONV7X7 if result.model.encoder.conv1.kernel_size[0] == 7 else StemType.CONV3X3
    model = DeployedClassifier.from_binary_classifier(result.model, stem)

    val_p = _probabilities(model, images.images[torch.as_tensor(val)], recipe_.eval_batch_size, dev)
    threshold, sensitivity, specificity = youden_threshold(labels[val], val_p)
    card = ModelConfig(
        task=str(task), positive=str(meta["positive"]), image_size=recipe_.image_size, stem=stem.value,
        input_norm=[float(model.input_mean), float(model.input_std)], threshold=threshold, weights_sha256="",
        init={"name": name, "kind": spec.kind.value, "weights": None if spec.path is None else str(spec.path),
              "sha256": None if spec.path is None else file_sha256(spec.path)},
        recipe=recipe_.to_dict(), seed=seed_, best_epoch=result.best_epoch, n_train=int(train.size),
        n_val=int(val.size), val_auc=float(roc_auc_score(labels[val], val_p)), val_sensitivity=sensitivity,
        val_specificity=specificity, val_youden_j=sensitivity + specificity - 1.0, holdout=holdout,
        task_datalist=str(Path(task_datalist).resolve()), task_sha256=file_sha256(task_datalist),
        val_loss_curve=[float(v) for v in result.val_loss_curve],
        train_loss_curve=[float(v) for v in result.train_loss_curve])
    outputs: dict[str, Path] = {}
    if holdout:
        test_p = _probabilities(model, images.images[torch.as_tensor(test)], recipe_.eval_batch_size, dev)
        card.holdout_fold, card.folds, card.fold_seed, card.n_holdout = (HOLDOUT_FOLD, config.folds,
                                                                         config.fold_seed, int(test.size))
        card.holdout_auc = float(roc_auc_score(labels[test], test_p))
        card.holdout_sensitivity, card.holdout_specificity = _rate(labels[test], test_p, threshold)
        outputs["holdout"] = write_task_datalist(
            [items[i] for i in test], run_dir / HOLDOUT_NAME, task=str(task), positive=card.positive,
            notes=[f"test fold {HOLDOUT_FOLD} of the {config.folds}-fold plan (fold seed {config.fold_seed}) of "
                   f"{task_datalist}, held out of training by deploy"])
    with atomic_path(model_dir / MODEL_NAME) as tmp:
        torch.save(model.to("cpu").state_dict(), tmp)
    card.weights_sha256 = file_sha256(model_dir / MODEL_NAME)
    outputs["model"] = model_dir / MODEL_NAME
    outputs["config"] = atomic_write_json(model_dir / CONFIG_NAME, card.to_dict())
    print(f"deployed the {task} classifier ({card.positive} vs not): {outputs['model']} + {outputs['config']}")
    print(f"  init {name}, {card.n_train} training images, epoch {card.best_epoch} of {recipe_.epochs} selected on "
          f"{card.n_val} validation images (AUC {card.val_auc:.3f}); threshold {threshold:.4g} (Youden's J "
          f"{card.val_youden_j:.3f}: sensitivity {sensitivity:.3f}, specificity {specificity:.3f} on validation)")
    if holdout:
        print(f"  held-out AUC {card.holdout_auc:.4f} on {card.n_holdout} images (test fold {HOLDOUT_FOLD} of "
              f"{config.folds}), listed in {outputs['holdout']}")
    return outputs


# -- inference ------------------------------------------------------------------------------------------------------


@dataclass
class InferenceResult:
    """What :func:`classify` did: ``predictions`` (the CSV), ``skipped`` (the JSON), the count of images
    classified and of positives, and the skipped files by reason."""

    predictions: Path
    skipped: Path
    n_classified: int
    n_positive: int
    skipped_reasons: dict[str, int]


def _is_dicom(path: Path) -> bool:
    """A DICOM suffix or the ``DICM`` marker at byte 128 (4 bytes read)."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder`` (recursively, hidden folders left out), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / n for n in sorted(filenames) if not n.startswith("."))
    return out


def _is_image_name(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def _datalist_items(path: Path) -> tuple[list[dict[str, Any]], list[int] | None]:
    """``(items {"image": absolute reference}, binary labels or None)`` of a datalist's ``training`` list."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeployError(f"{path}: unreadable datalist ({e})") from None
    entries = data.get("training") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise DeployError(f"{path}: not a datalist (no 'training' list of {{'image': ...}} items)")
    if not entries:
        raise DeployError(f"{path}: the datalist lists no image")
    items, labels = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("image"), str) or not entry["image"].strip():
            raise DeployError(f"{path}: training[{i}] has no 'image' path")
        image = entry["image"]
        items.append({"image": image if os.path.isabs(image) else str(path.parent.absolute() / image)})
        label = entry.get("label")  # a task datalist's 0/1 (an index's multi-hot vector is no true label)
        binary = isinstance(label, (bool, int, np.integer)) and int(label) in (0, 1)
        labels.append(int(label) if binary else None)
    return items, (labels if all(v is not None for v in labels) else None)


def _collect(source: Path, kind: InputKind, link_dir: Path, workers: int | None, progress: bool
             ) -> tuple[list[dict[str, Any]], list[int] | None, list[dict[str, str]], str]:
    """``(items, true labels or None, skipped [{"image", "reason"}], what the source is called in messages)``."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder to classify")
    if kind == InputKind.AUTO:
        if source.is_file():
            if source.suffix.lower() != ".json":
                raise DeployError(f"{source}: give a folder (DICOM export or images) or a datalist .json, not one "
                                  "image file")
            kind = InputKind.DATALIST
        else:
            kind = InputKind.DICOM if any(_is_dicom(p) for p in _files(source)) else InputKind.IMAGES
    if kind == InputKind.DATALIST:
        items, labels = _datalist_items(source)
        return items, labels, [], str(source)
    if not source.is_dir():
        raise DeployError(f"{source}: {kind.value} input must be a folder")
    if kind == InputKind.DICOM:
        result = index_dicom_folder(source, LabelSpace.default(), workers=workers, link_dir=link_dir,
                                    progress=progress)
        skipped = [{"image": s.path, "reason": s.reason, "detail": s.detail} for s in result.skipped]
        return [{"image": r.image} for r in result.records], None, skipped, result.root
    files = _files(source)
    if not files:
        raise DeployError(f"{source}: no files to classify (empty folder)")
    if any(_is_dicom(p) for p in files):  # their paths may name patients: only the indexer may list them
        raise DeployError(f"{source} holds DICOM files: classify it as a DICOM folder (images_kind dicom, or auto), "
                          "whose indexer lists files with identifying paths by pseudonymous links")
    images = [p for p in files if _is_image_name(p)]
    skipped = [{"image": str(p), "reason": "not an image file"} for p in files if not _is_image_name(p)]
    return [{"image": str(p)} for p in images], None, skipped, str(source)


def classify(model_file: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike, *,
             model_config: str | os.PathLike | None = None, task: str | None = None,
             kind: InputKind | str | None = None, device: str | None = None, batch_size: int | None = None,
             link_dir: str | os.PathLike | None = None, workers: int | None = None,
             progress: bool = True) -> InferenceResult:
    """Classify new images with a deployed model and write ``out`` (``predictions.csv``) and ``skipped.json``.

    Args:
        model_file, model_config: ``model.pt`` and its ``model.json`` (default: beside it; :func:`load_classifier`).
        source: a DICOM folder, a folder of images or a datalist JSON (:class:`InputKind`).
        out: the CSV to write (atomically): ``image`` (the path, or for a DICOM file whose path identifies a
            patient its pseudonymous link), ``probability`` (of label 1, full float64 precision), ``label`` (0/1 at
            the model's threshold), ``class`` (what the label means), ``true_label`` (a datalist's binary labels).
        task: the task the model must classify (the bundle's ``task``); ``None`` skips the check.
        kind: :class:`InputKind` (``None``/``"auto"`` detects it).
        device: ``None``/``"auto"``: CUDA when available; batch_size: images per forward pass (default: the
            model's ``recipe.eval_batch_size``).
        link_dir: DICOM input: the folder of pseudonymous links (default ``<out stem>.links`` beside ``out``).
        workers: DICOM input: header reader processes (the indexer's default: one per CPU core).

    Every image is read by the training reader at the model's ``image_size``. An image that cannot be read is
    skipped, counted and listed in ``skipped.json`` with the reason; no image at all is an error.

    Raises:
        DeployError: nothing to classify (an empty folder, only skipped files), a bad datalist, DICOM files in an
            images folder, a model of another task; FileNotFoundError / CheckpointError: see :func:`load_classifier`.
    """
    if source is None or not str(source).strip():
        raise DeployError("no images to classify: give a DICOM folder, a folder of images or a datalist (bundles: "
                          "--images PATH)")
    out = Path(out)
    model, config = load_classifier(model_file, model_config, task=task)
    try:
        kind = InputKind(kind or InputKind.AUTO)
    except ValueError:
        raise DeployError(f"images_kind {kind!r} is not one of {[k.value for k in InputKind]}") from None
    check_writable(out)
    links = Path(link_dir) if link_dir is not None else out.with_name(out.stem + ".links")
    items, true_labels, skipped, shown = _collect(Path(source), kind, links, workers, progress)
    loader = LoadGrayscaleImage(spatial_size=config.image_size)
    kept, tensors = [], []
    for i, item in enumerate(tqdm(items, desc="reading images", unit="img", disable=not progress, leave=False)):
        try:
            tensors.append(loader(item["image"]).as_tensor())
        except ImageLoadError as e:  # names the file as listed (a pseudonymous link where the path identifies)
            skipped.append({"image": item["image"], "reason": str(e)})
            continue
        kept.append(i)
    reasons = Counter(s["reason"].split(": ", 1)[-1] if s["reason"].startswith(s["image"]) else s["reason"]
                      for s in skipped)
    skipped_path = atomic_write_json(out.with_name(SKIPPED_NAME), {"source": shown, "skipped": skipped})
    if not kept:
        summary = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3)) or "nothing listed"
        raise DeployError(f"{shown}: no image to classify ({len(skipped)} skipped: {summary}; see {skipped_path})")
    dev = pick_device(device)
    batch = int(batch_size) if batch_size is not None else int(config.recipe.get("eval_batch_size", 256))
    if batch < 1:
        raise DeployError(f"batch_size must be >= 1, got {batch_size!r}")
    probability = _probabilities(model, torch.stack(tensors), batch, dev)
    label = (probability >= config.threshold).astype(int)
    columns = ["image", "probability", "label", "class"] + (["true_label"] if true_labels is not None else [])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for j, i in enumerate(kept):
        row = [items[i]["image"], repr(float(probability[j])), int(label[j]), config.classes[int(label[j])]]
        writer.writerow(row + ([true_labels[i]] if true_labels is not None else []))
    atomic_write_text(out, text.getvalue())
    result = InferenceResult(out, skipped_path, len(kept), int(label.sum()), dict(reasons))
    print(f"classified {len(kept)} images of {shown} with the {config.task} model (threshold {config.threshold:.4g}):"
          f" {result.n_positive} {config.positive}; {len(skipped)} skipped"
          + (f" ({', '.join(f'{n} {r}' for r, n in reasons.most_common(3))})" if skipped else "") + f" -> {out}")
    return result
