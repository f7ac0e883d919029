"""Pretraining workflow pieces wired into MONAI's :class:`~monai.engines.SupervisedTrainer`.

The trainer sees flat batches: :class:`TwoViewBatch` turns a collated ``[B, V, 1, H, W]`` two-view batch into
``[B·V, 1, H, W]`` network inputs (image-major: rows ``b·V + v``), and :class:`ViewLoss` folds the ``[B·V, D]``
predictions back to ``[B, V, D]`` for the contrastive losses. SparK (``method="spark"``, masked image modelling) trains
on one view per image: the target is the image itself and :class:`SparKLoss` hands the network's
:class:`~monai_modan.networks.spark.SparKOutput` (reconstruction, mask) to the masked reconstruction loss. The
handlers add what MONAI's own handlers do not:
per-epoch reseeding (exact resume), a finite-loss guard naming the step, atomic checkpoints with RNG states and a
configuration fingerprint, contrastive diagnostics / throughput for the loggers, and gradient-norm clipping.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar as IgniteProgressBar
from monai.engines.utils import IterationEvents
from monai.optimizers import WarmupCosineSchedule
from monai.transforms import Compose, EnsureTyped, SelectItemsd
from monai.utils import CommonKeys, StrEnum
from torch import nn

from ..data.datalist import load_datalist, write_datalist
from ..data.index import index_path
from ..data.packed import check_images
from ..data.readers import LoadGrayscaleImaged
from ..labels import LabelSpace
from ..losses import HybridContrastiveLoss, MaskedReconstructionLoss, MulSupConLoss, NTXentLoss
from ..networks import ContrastiveModel, HybridModel, HybridOutput, SparKModel, SupervisedModel, build_encoder
from ..networks.export import CheckpointError
from ..networks.export import export_encoder as export
from ..networks.spark import DEFAULT_DECODER_WIDTH, DEFAULT_MASK_RATIO, SparKOutput
from ..transforms import TwoViewAugmentd
from ..utils.defaults import IMAGE_SIZE
from ..utils.distributed import barrier, rank, world_size
from ..utils.errors import UserInputError
from ..utils.io import atomic_path, atomic_write_json, remove_temporaries

logger = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "checkpoint_epoch="  # periodic checkpoints: checkpoint_epoch=N.pt

__all__ = [
    "PretrainMethod", "TwoViewBatch", "ViewLoss", "SparKLoss", "build_pretraining_model", "build_pretraining_loss",
    "GradientClipping", "weight_decay_groups", "LrSchedule", "build_lr_schedule",
    "EpochSeeding", "FiniteLossGuard", "ProgressBar", "load_pretraining_data", "PretrainCheckpoint", "PretrainDiagnostics", "CheckpointError",
    "prepare_pretraining_datalist", "pretraining_transforms", "save_final_outputs",
]


class PretrainMethod(StrEnum):
    """``mulsupcon``: ModAn-MulSupCon (metadata multi-hot, Jaccard-weighted); ``simclr``: NT-Xent, no labels;
    ``supervised``: cross-entropy over the fine classes (RadImageNet's 165 (modality, anatomy, folder) classes);
    ``spark``: SparK masked image modelling (one view per image, no labels; :class:`~monai_modan.networks.SparKModel`);
    ``hybrid``: MulSupCon + λ · NT-Xent on the same two views (:class:`~monai_modan.losses.HybridContrastiveLoss`).
    """

    MULSUPCON = "mulsupcon"
    SIMCLR = "simclr"
    SUPERVISED = "supervised"
    SPARK = "spark"
    HYBRID = "hybrid"


# data ---------------------------------------------------------------------------------------------------------
def prepare_pretraining_datalist(output_dir: str | Path, dataset_dir: str | Path | None = None,
                                 datalist: str | Path | None = None, *, progress: bool = False) -> str:
    """Return a datalist path for pretraining: the given ``datalist``, else an index of ``dataset_dir`` (RadImageNet
    root, DICOM export or MedMNIST files, auto-detected) written to ``output_dir/datalist.json``.

    The index is reused when it already exists. Without data the entry layer (bundle config, CLI) chooses the
    embedded synthetic corpus itself (:func:`monai_modan.synthetic.default_pretraining_datalist`); this engine
    does not.

    Raises:
        UserInputError: neither ``datalist`` nor ``dataset_dir`` given.
    """
    if datalist:  # validated (once) by load_pretraining_data, before any training starts
        return str(datalist)
    if not dataset_dir:
        raise UserInputError(f"prepare_pretraining_datalist: no data for {output_dir}: give datalist or dataset_dir "
                             "(the embedded synthetic corpus is monai_modan.synthetic.default_pretraining_datalist)")
    out = Path(output_dir) / "datalist.json"
    # under DDP one rank builds the index and the others wait, so they never write the same files at once
    if rank() == 0:
        _build_pretraining_datalist(out, dataset_dir, progress)
    barrier()
    return str(out)


def _build_pretraining_datalist(out: Path, dataset_dir: str | Path, progress: bool) -> None:
    space = LabelSpace.default()
    result, classes = index_path(dataset_dir, space, progress=progress, cache=out.parent / "dicom-cache.json",
                                 link_dir=out.parent / "datalist.links")
    if not result.records:
        raise ValueError(f"{dataset_dir}: no usable image to pretrain on (see the index report)")
    write_datalist(result, space, out, classes=classes)


SKIPPED_NAME = "skipped.json"  # the images a run left out, beside its outputs
MAX_BAD_FRACTION = 0.05  # more undecodable images than this stops the run before training: a wrong folder, not noise

# key -> (kind, low, high, meaning); None bounds are open. Checked before anything is built or loaded.
_SETTINGS = {
    "epochs": ("int", 1, None, "training epochs"),
    "batch_size": ("int", 2, None, "images per step (per rank under DDP)"),
    "lr": ("float>0", None, None, "learning rate"),
    "momentum": ("float", 0.0, 1.0, "SGD momentum, in [0, 1)"),
    "weight_decay": ("float", 0.0, None, "weight decay"),
    "warmup_epochs": ("int", 0, None, "linear warm-up epochs"),
    "temperature": ("float>0|None", None, None, "softmax temperature T > 0 (null: the loss's default)"),
    "threshold": ("float", 0.0, 1.0, "Jaccard threshold tau in (0, 1]"),
    "image_size": ("int", 8, None, "image side in pixels"),
    "num_views": ("int", 1, None, "views per image"),  # >= 2 for the contrastive methods, 1 for spark (below)
    "checkpoint_interval": ("int", 1, None, "epochs between checkpoints"),
    "projection_dim": ("int", 1, None, "projection head output width"),
    "num_workers": ("int", 0, None, "data-loader processes"),
    "seed": ("int", 0, None, "random seed"),
    "max_bad_fraction": ("float", 0.0, 1.0, "largest share of undecodable images a run goes past"),
    "max_grad_norm": ("float>0|None", None, None, "gradient-norm clipping threshold (null: no clipping)"),
    "mask_ratio": ("float", 0.0, 1.0, "share of patches SparK hides, in (0, 1)"),
    "decoder_width": ("int", 1, None, "SparK decoder channels at the deepest scale"),
    "instance_weight": ("float", 0.0, None, "hybrid: weight lambda of the NT-Xent term, >= 0"),
    "metadata_weight": ("float", 0.0, None, "hybrid: weight of the MulSupCon term, >= 0"),
    "instance_temperature": ("float>0|None", None, None, "hybrid: NT-Xent temperature T > 0 (null: its default)"),
    "separate_heads": ("bool", None, None, "hybrid: one projection head per loss term (true) or one shared (false)"),
}


def check_pretraining_settings(**settings: Any) -> dict[str, Any]:
    """Refuse a bad bundle value before anything is built: one line naming the key, the value and what is accepted.

    ``--epochs abc`` or ``--lr nan`` reach a bundle as strings or NaN, which would fail deep inside the trainer
    (``'<' not supported``) or silently train on garbage. Known keys are those of ``_SETTINGS``; others pass
    through. Returns the settings unchanged. ``method`` (a :class:`PretrainMethod` value) decides ``num_views``: at
    least 2 for the contrastive and supervised methods, exactly 1 for ``spark``.

    Raises:
        UserInputError: the first bad value.
    """
    method = settings.get("method")
    if method is not None and method not in set(PretrainMethod):
        raise UserInputError(f"method={method!r}: must be one of {', '.join(m.value for m in PretrainMethod)}")
    for key, value in settings.items():
        if key not in _SETTINGS:
            continue
        kind, low, high, meaning = _SETTINGS[key]
        if value is None and kind.endswith("|None"):
            continue
        shown = f"{key}={value!r} ({meaning})"
        if kind == "bool":
            if not isinstance(value, bool):
                raise UserInputError(f"{shown}: must be true or false")
            continue
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserInputError(f"{shown}: must be an integer{f' >= {low}' if low is not None else ''}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserInputError(f"{shown}: must be a finite number")
        if kind.startswith("float>0") and not value > 0:
            raise UserInputError(f"{shown}: must be > 0")
        if low is not None and value < low:
            advice = (" -- a contrastive batch needs at least 2 images, and more negatives train better "
                      "(the paper: 256)" if key == "batch_size" else "")
            raise UserInputError(f"{shown}: must be >= {low}{advice}")
        if high is not None and (value >= high if key == "momentum" else value > high):
            raise UserInputError(f"{shown}: must be {'<' if key == 'momentum' else '<='} {high}")
        if key == "threshold" and not value > 0:
            raise UserInputError(f"{shown}: must be in (0, 1]")
        if key == "mask_ratio" and not 0 < value < 1:
            raise UserInputError(f"{shown}: must be in (0, 1)")
        if key == "num_views":
            if method == PretrainMethod.SPARK and value != 1:
                raise UserInputError(f"{shown}: SparK trains on one view per image, must be 1")
            if method != PretrainMethod.SPARK and value < 2:
                raise UserInputError(f"{shown}: must be >= 2 (two views of an image are the contrastive positives)")
    if settings.get("instance_weight") == 0 and settings.get("metadata_weight") == 0:
        raise UserInputError(f"instance_weight={settings['instance_weight']!r} and metadata_weight="
                             f"{settings['metadata_weight']!r}: the hybrid loss would be 0, nothing to learn; give one "
                             "of them a weight > 0")
    if "lr_schedule" in settings and _lr_schedule(settings["lr_schedule"]) == LrSchedule.CONSTANT and isinstance(
            settings.get("warmup_epochs"), int) and settings["warmup_epochs"] > 0:
        raise UserInputError(f"lr_schedule=constant has no warm-up, but warmup_epochs={settings['warmup_epochs']}: set "
                             "warmup_epochs to 0, or lr_schedule to warmup_cosine")
    epochs, warmup = settings.get("epochs"), settings.get("warmup_epochs")
    if isinstance(epochs, int) and isinstance(warmup, int) and warmup > epochs:
        raise UserInputError(f"warmup_epochs={warmup} is longer than epochs={epochs}: the learning rate would never "
                             "reach its peak")
    return settings


def load_pretraining_data(datalist_path: str | Path, batch_size: int,
                          method: PretrainMethod | str = PretrainMethod.MULSUPCON, *, image_size: int | None = None,
                          output_dir: str | Path | None = None, max_bad_fraction: float = MAX_BAD_FRACTION,
                          workers: int | None = None, progress: bool = True):
    """Load a datalist and refuse what cannot train: fewer images than one batch, a supervised run without classes.

    With ``image_size``, every training image is first decoded once at that size
    (:func:`~monai_modan.data.packed.check_images`, the packer's crash-proof decoding pool; verdicts cached in
    ``output_dir/image_check.json`` per file identity). Images that fail are left out of the run: counted and named
    in the log and in ``output_dir/skipped.json``; the run goes on -- unless more than ``max_bad_fraction`` of them
    fail, which stops it here, before training. Under DDP rank 0 decodes and the other ranks read its verdicts.
    """
    data = load_datalist(datalist_path)
    n = len(data.items("training"))
    if n == 0:
        raise ValueError(f"{datalist_path}: the 'training' split is empty; nothing to pretrain on")
    if image_size is not None:
        _leave_out_bad_images(data, datalist_path, image_size, output_dir, max_bad_fraction, workers, progress)
        n = len(data.items("training"))
    ranks = max(1, world_size())
    if batch_size < 2 or n // ranks < batch_size:
        per_rank = f" ({n // ranks} per rank on {ranks} ranks)" if ranks > 1 else ""
        raise ValueError(
            f"{datalist_path}: {n} training images{per_rank} with batch_size={batch_size}; a contrastive batch needs "
            "at least 2 images and the loader drops incomplete batches -- lower batch_size or add images"
        )
    if PretrainMethod(method) == PretrainMethod.SUPERVISED and not data.classes:
        raise ValueError(f"{datalist_path}: the supervised baseline needs fine classes ('classes'), which only "
                         "RadImageNet-layout indexes carry")
    return data


def _leave_out_bad_images(data, datalist_path: str | Path, image_size: int, output_dir: str | Path | None,
                          max_bad_fraction: float, workers: int | None, progress: bool) -> None:
    items = data.items("training")
    paths = [str(item["image"]) for item in items]
    cache = Path(output_dir) / "image_check.json" if output_dir is not None else None
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank() == 0:
        bad = check_images(paths, image_size, cache=cache, workers=workers, progress=progress)
    if distributed:  # the others wait for rank 0's verdicts instead of decoding the corpus again
        message = [bad if rank() == 0 else None]
        torch.distributed.broadcast_object_list(message, src=0)
        bad = message[0]
    if not bad:
        return
    listed = [{"image": p, "reason": bad[p]} for p in dict.fromkeys(paths) if p in bad]
    if output_dir is not None and rank() == 0:
        atomic_write_json(Path(output_dir) / SKIPPED_NAME, {"datalist": str(datalist_path), "total": len(paths),
                                                           "skipped": listed})
    where = f" (all listed in {Path(output_dir) / SKIPPED_NAME})" if output_dir is not None else ""
    examples = "; ".join(s["reason"] for s in listed[:3])  # each reason names its file
    if len(listed) > max_bad_fraction * len(paths):
        raise UserInputError(f"{datalist_path}: {len(listed)} of {len(paths)} training images cannot be decoded, more "
                             f"than max_bad_fraction={max_bad_fraction:g}{where}; e.g. {examples}")
    logger.warning("%d of %d training images cannot be decoded and are left out of this run%s: %s", len(listed),
                   len(paths), where, "; ".join(s["reason"] for s in listed[:10]))
    data.splits["training"] = [item for item in items if str(item["image"]) not in bad]


def pretraining_transforms(image_size: int = IMAGE_SIZE, num_views: int = 2, load_size: int | None = None,
                           method: PretrainMethod | str | None = None, **augment: Any):
    """MONAI Compose: load grey ``[1, h, w]`` in [0, 1] -> ``[V, 1, image_size, image_size]`` views; float labels.

    Only the fields training reads are kept (``image``, ``label``, and ``class_index`` unless ``method`` is not the
    supervised baseline), so that a batch collates when its items come from sources with other fields (a merged
    RadImageNet + DICOM corpus: only the RadImageNet items carry a fine class).

    ``augment``: further :class:`~monai_modan.transforms.recipe.TwoViewRecipe` fields, or ``recipe=``."""
    keys_float = ["label"]
    kept = ["image", "label"]
    if method is None or PretrainMethod(method) == PretrainMethod.SUPERVISED:
        kept.append("class_index")
    return Compose([
        SelectItemsd(keys=kept, allow_missing_keys=True),
        LoadGrayscaleImaged(keys="image", spatial_size=load_size or image_size),
        TwoViewAugmentd(keys="image", num_views=num_views, image_size=image_size, **augment),
        EnsureTyped(keys=keys_float, dtype=torch.float32, track_meta=False),
        EnsureTyped(keys="image", track_meta=False),
    ])


# batch + loss -----------------------------------------------------------------------------------------------
class TwoViewBatch:
    """``prepare_batch`` for :class:`~monai.engines.SupervisedTrainer`.

    Input: ``batch["image"]`` ``[B, V, C, H, W]``, ``batch["label"]`` ``[B, K]`` multi-hot and, for the supervised
    method, ``batch["class_index"]`` ``[B]``. Output: ``(images [B·V, C, H, W], target)`` where target is the
    ``[B, K]`` labels (contrastive), the ``[B·V]`` class indices (supervised, one per view) or, for SparK
    (``V = 1``), the images themselves (the network masks them; the loss compares with the unmasked images).
    """

    def __init__(self, method: PretrainMethod | str = PretrainMethod.MULSUPCON, channels_last: bool = True):
        self.method = PretrainMethod(method)
        self.channels_last = channels_last

    def __call__(self, batchdata: Mapping[str, Any], device=None, non_blocking: bool = False, **kwargs):
        images = torch.as_tensor(batchdata["image"])
        if images.ndim != 5:
            raise ValueError(f"expected two-view images [B, V, C, H, W], got shape {tuple(images.shape)}")
        b, v = images.shape[:2]
        if b * v < 2:
            raise ValueError(f"a contrastive batch needs at least 2 views in total, got B={b}, V={v}")
        x = images.reshape(b * v, *images.shape[2:]).to(device=device, non_blocking=non_blocking)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.method == PretrainMethod.SPARK:
            if v != 1:
                raise ValueError(f"SparK trains on one view per image, got V={v} views (images {tuple(images.shape)})")
            target = x
        elif self.method == PretrainMethod.SUPERVISED:
            if "class_index" not in batchdata:
                raise ValueError("the supervised baseline needs fine classes ('class_index'); index a RadImageNet tree")
            target = torch.as_tensor(batchdata["class_index"]).long().repeat_interleave(v).to(device, non_blocking=non_blocking)
        else:
            target = torch.as_tensor(batchdata["label"]).float().to(device, non_blocking=non_blocking)
        return x, target


class ViewLoss(nn.Module):
    """Adapts a ``[B, V, D]`` contrastive loss to the trainer's flat ``[B·V, D]`` predictions (image-major rows).

    A :class:`~monai_modan.networks.HybridOutput` (two heads, each ``[B·V, D]``) is folded head by head and given to
    the hybrid loss as ``loss(metadata, labels, instance)``."""

    def __init__(self, loss: nn.Module, num_views: int = 2):
        super().__init__()
        self.loss, self.num_views = loss, num_views

    @property
    def last_diagnostics(self) -> dict:
        return getattr(self.loss, "last_diagnostics", {})

    def forward(self, pred: torch.Tensor | HybridOutput, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(pred, HybridOutput):
            return self.loss(self._fold(pred.metadata), labels, self._fold(pred.instance))
        return self.loss(self._fold(pred), labels)

    def _fold(self, pred: torch.Tensor) -> torch.Tensor:
        if pred.shape[0] % self.num_views:
            raise ValueError(f"{pred.shape[0]} predictions are not a multiple of {self.num_views} views")
        return pred.reshape(pred.shape[0] // self.num_views, self.num_views, -1)


class SparKLoss(nn.Module):
    """Adapts :class:`~monai_modan.losses.MaskedReconstructionLoss` to the trainer's ``loss(prediction, target)``.

    ``prediction`` is the :class:`~monai_modan.networks.spark.SparKOutput` of a ``SparKModel``
    (``reconstruction [B, C, S, S]``, ``active [B, 1, g, g]`` bool), ``target`` the unmasked images
    ``[B, C, S, S]`` (what :class:`TwoViewBatch` gives for ``spark``). Returns the 0-d fp32 loss over masked patches.
    No host sync (shapes are checked, values are not), so the fast path uses it as is.
    """

    def __init__(self, loss: MaskedReconstructionLoss | None = None):
        super().__init__()
        self.loss = loss if loss is not None else MaskedReconstructionLoss()

    @property
    def last_diagnostics(self) -> dict:
        return {}

    def forward(self, prediction: SparKOutput, target: torch.Tensor) -> torch.Tensor:
        if not (isinstance(prediction, tuple) and len(prediction) == 2):
            raise TypeError(f"SparKLoss expects a SparKModel's output (reconstruction, active), got "
                            f"{type(prediction).__name__}")
        reconstruction, active = prediction
        return self.loss(reconstruction, target, active)


def build_pretraining_model(method: PretrainMethod | str = PretrainMethod.MULSUPCON, num_classes: int | None = None,
                            stem: str = "conv3x3", projection_dim: int = 128, channels_last: bool = True, *,
                            image_size: int | None = None, mask_ratio: float = DEFAULT_MASK_RATIO,
                            decoder_width: int = DEFAULT_DECODER_WIDTH, separate_heads: bool = True) -> nn.Module:
    """ResNet-18 encoder + projection head (contrastive), linear classifier (supervised) or SparK's sparse
    densify + decoder (``spark``: needs ``image_size``, a multiple of the stem's mask patch, 16 px for ``conv3x3``,
    32 px for ``conv7x7``; ``mask_ratio``, ``decoder_width`` as :class:`~monai_modan.networks.SparKModel`).

    ``hybrid``: one projection head per loss term (:class:`~monai_modan.networks.HybridModel`) with
    ``separate_heads``, else one head that both terms share (:class:`~monai_modan.networks.ContrastiveModel`);
    ``separate_heads`` does not apply to the other methods."""
    method = PretrainMethod(method)
    encoder = build_encoder(stem=stem)
    if method == PretrainMethod.SPARK:
        if image_size is None:
            raise ValueError("SparK needs image_size (the training image side, pixels) to lay out its patch mask")
        model: nn.Module = SparKModel(encoder, image_size, mask_ratio=mask_ratio, decoder_width=decoder_width)
    elif method == PretrainMethod.SUPERVISED:
        if not num_classes:
            raise ValueError("the supervised baseline needs num_classes (the datalist's 'classes')")
        model = SupervisedModel(encoder, num_classes)
    elif method == PretrainMethod.HYBRID and separate_heads:
        model = HybridModel(encoder, projection_dim=projection_dim)
    else:
        model = ContrastiveModel(encoder, projection_dim=projection_dim)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def build_pretraining_loss(method: PretrainMethod | str = PretrainMethod.MULSUPCON, num_views: int = 2,
                           temperature: float | None = None, threshold: float = 0.3, *,
                           instance_weight: float | None = None, metadata_weight: float | None = None,
                           instance_temperature: float | None = None) -> nn.Module:
    """MulSupCon (T = 0.07, τ = 0.3), NT-Xent (T = 0.1), their hybrid, cross-entropy or SparK's masked reconstruction
    (:class:`SparKLoss`; ``num_views``, ``temperature`` and ``threshold`` do not apply), ready for the trainer.

    ``temperature=None`` takes the loss's default (:class:`~monai_modan.losses.MulSupConLoss`,
    :class:`~monai_modan.losses.NTXentLoss`). ``hybrid``
    (:class:`~monai_modan.losses.HybridContrastiveLoss`, ``metadata_weight · MulSupCon + instance_weight · NT-Xent``):
    ``temperature`` and ``threshold`` are the MulSupCon term's, ``instance_temperature`` the NT-Xent term's; ``None``
    takes the hybrid's / the terms' defaults. The three hybrid arguments are ignored by the other methods."""
    method = PretrainMethod(method)
    if method == PretrainMethod.SPARK:
        return SparKLoss()
    if method == PretrainMethod.SUPERVISED:
        return nn.CrossEntropyLoss()
    # None = the loss's own default (its one home); 0 or a negative value is refused by the loss, never replaced
    given = {} if temperature is None else {"temperature": temperature}
    if method == PretrainMethod.SIMCLR:
        return ViewLoss(NTXentLoss(**given), num_views)
    if method == PretrainMethod.HYBRID:
        instance = NTXentLoss() if instance_temperature is None else NTXentLoss(temperature=instance_temperature)
        weights = {k: v for k, v in (("instance_weight", instance_weight), ("metadata_weight", metadata_weight))
                   if v is not None}
        return ViewLoss(HybridContrastiveLoss(**weights, metadata_loss=MulSupConLoss(**given, threshold=threshold),
                                              instance_loss=instance), num_views)
    return ViewLoss(MulSupConLoss(**given, threshold=threshold), num_views)


# handlers ---------------------------------------------------------------------------------------------------
class EpochSeeding:
    """Reseed every random source at the start of each epoch from ``seed + epoch``.

    Epoch ``e`` then sees the same shuffling and augmentations whether the run was interrupted before it or not,
    which is what makes resuming reproduce an uninterrupted run exactly (on CPU).
    """

    def __init__(self, seed: int = 0, transform=None):
        self.seed, self.transform = int(seed), transform

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine) -> None:
        # ranks get distinct streams: the k-th image of every rank must not share its augmentation parameters
        s = self.seed + int(engine.state.epoch) + 1_000_003 * rank()
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)
        if self.transform is not None and hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=s % 2**32)


class ProgressBar:
    """tqdm progress bar with the running loss (ignite's ``ProgressBar``, attachable from a bundle's handler list)."""

    def __init__(self, persist: bool = False):
        self.bar = IgniteProgressBar(persist=persist)

    def attach(self, engine) -> None:
        self.bar.attach(engine, output_transform=lambda out: {"loss": out[CommonKeys.LOSS].detach().item()})


class FiniteLossGuard:
    """Stop with a clear error at the first non-finite loss, naming epoch, iteration and the usual causes."""

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine) -> None:
        loss = engine.state.output[CommonKeys.LOSS]
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"loss is {loss.item()} at epoch {engine.state.epoch}, iteration {engine.state.iteration}: "
                "training stopped (lower the learning rate, check for constant images, or disable AMP)"
            )


class GradientClipping:
    """Clip the global gradient norm of the trainer's network to ``max_norm`` after every backward pass, before the
    optimiser step (``torch.nn.utils.clip_grad_norm_``, L2 over all parameters; SparK clips at 5).

    Runs on MONAI's ``IterationEvents.BACKWARD_COMPLETED``. Under AMP with a ``GradScaler`` the gradients are unscaled
    first (``scaler.unscale_``; the scaler's ``step`` then skips its own unscaling). No host sync. ``max_norm=None``
    attaches nothing, so a bundle can list the handler for every method and switch it with one key.
    """

    def __init__(self, max_norm: float | None = None):
        if max_norm is not None and not (isinstance(max_norm, (int, float)) and not isinstance(max_norm, bool)
                                         and math.isfinite(max_norm) and max_norm > 0):
            raise UserInputError(f"max_grad_norm={max_norm!r}: must be a finite number > 0, or null for no clipping")
        self.max_norm = None if max_norm is None else float(max_norm)

    def attach(self, engine) -> None:
        if self.max_norm is not None:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None:
            scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)


def weight_decay_groups(model: nn.Module, weight_decay: float,
                        no_decay_names: tuple[str, ...] = ("mask_token",)) -> list[dict[str, Any]]:
    """Two optimiser parameter groups: the weights of convolutions and linear layers (``ndim >= 2``) with
    ``weight_decay``, and -- without decay -- biases, normalisation parameters (``ndim <= 1``) and any parameter whose
    name contains one of ``no_decay_names`` (SparK's mask tokens), as SparK and MAE exclude them. Frozen parameters
    are left out. For ``torch.optim.AdamW(weight_decay_groups(net, 0.04), lr=...)``."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or any(key in name for key in no_decay_names):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]


class LrSchedule(StrEnum):
    """The learning-rate schedule of a pretraining run (the bundle's ``lr_schedule``), stepped per iteration.

    ``warmup_cosine`` (default): linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``t_total``
    (``monai.optimizers.WarmupCosineSchedule``). ``constant``: the optimiser's rate throughout, no warm-up -- what
    an optimiser with torch's defaults and no scheduler does, the ModAn paper's supervised-165 baseline (Adam,
    torch defaults; ``supervised.json``).
    """

    WARMUP_COSINE = "warmup_cosine"
    CONSTANT = "constant"


def _lr_schedule(value: Any) -> LrSchedule:
    try:
        return LrSchedule(value)
    except ValueError:
        raise UserInputError(f"lr_schedule={value!r}: must be one of {', '.join(s.value for s in LrSchedule)}") from None


def build_lr_schedule(optimizer: torch.optim.Optimizer, schedule: LrSchedule | str = LrSchedule.WARMUP_COSINE,
                      warmup_steps: int = 0, t_total: int = 1) -> torch.optim.lr_scheduler.LRScheduler:
    """The :class:`LrSchedule` ``schedule`` over ``optimizer``: ``WarmupCosineSchedule(optimizer, warmup_steps,
    t_total)`` or ``ConstantLR(optimizer, factor=1.0, total_iters=0)`` (the rate never changes).

    Raises:
        UserInputError: an unknown ``schedule``, or ``warmup_steps > 0`` with the constant schedule (a warm-up it
            would silently skip).
    """
    schedule = _lr_schedule(schedule)
    if schedule == LrSchedule.CONSTANT:
        if warmup_steps > 0:
            raise UserInputError(f"lr_schedule=constant has no warm-up, but {warmup_steps} warm-up steps were asked "
                                 "for: set warmup_epochs to 0, or lr_schedule to warmup_cosine")
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return WarmupCosineSchedule(optimizer, warmup_steps=warmup_steps, t_total=t_total)


class PretrainDiagnostics:
    """Contrastive diagnostics and throughput, as epoch means in ``engine.state.metrics``.

    Metrics: ``positives_per_anchor``, ``partial_positive_share`` (MulSupCon only), ``images_per_second`` (original
    images, not views), ``epoch_seconds``, ``lr``. MONAI's Stats/TensorBoard handlers log ``engine.state.metrics`` at
    each epoch end. The diagnostics stay on the device during the epoch (no host sync per step).
    """

    def __init__(self, loss: nn.Module | None = None, optimizer=None, num_views: int = 2):
        self.loss, self.optimizer, self.num_views = loss, optimizer, num_views
        self._t0, self._images, self._steps, self._sums = 0.0, 0, 0, {}

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _start(self, engine) -> None:
        self._t0, self._images, self._steps, self._sums = time.perf_counter(), 0, 0, {}

    def _iteration(self, engine) -> None:
        self._images += int(engine.state.output[CommonKeys.IMAGE].shape[0]) // self.num_views
        self._steps += 1
        for k, v in (getattr(self.loss, "last_diagnostics", None) or {}).items():
            self._sums[k] = self._sums.get(k, 0) + v.detach()

    def _epoch(self, engine) -> None:
        dt = max(time.perf_counter() - self._t0, 1e-9)
        for k, v in self._sums.items():
            engine.state.metrics[k] = float(v) / max(self._steps, 1)
        engine.state.metrics["images_per_second"] = self._images / dt
        engine.state.metrics["epoch_seconds"] = dt
        if self.optimizer is not None:
            engine.state.metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])


class PretrainCheckpoint:
    """Atomic checkpoints every ``interval`` epochs and at the end, and exact resume.

    A checkpoint holds model, optimiser, scheduler, AMP scaler, trainer epoch/iteration, the RNG states and a
    ``config`` fingerprint (method, label width, classes, image size, stem, batch size ...). Resuming from a checkpoint
    of another configuration is refused. Files are written to a temporary name and renamed, so a crash never leaves a
    truncated ``checkpoint_epoch=N.pt``; loading uses ``torch.load(weights_only=True)``.

    At the end it also writes ``checkpoint_final.pt``, the encoder alone (``encoder.pt``, loadable into plain MONAI
    ``resnet18``), ``config.json``, and -- when ``model_file`` is given -- the whole network's state dict there (the
    bundle's ``models/model.pt``).
    """

    def __init__(self, save_dir: str | Path, model: nn.Module, optimizer=None, scheduler=None, interval: int = 1,
                 config: Mapping[str, Any] | None = None, resume_from: str | Path | None = None, keep_last: int = 2,
                 export_encoder: bool = True, model_file: str | Path | None = None):
        self.save_dir = Path(save_dir)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise UserInputError(f"checkpoint_interval must be an integer >= 1 (epochs between checkpoints), got "
                                 f"{interval!r}")
        self.interval = interval
        self.config = _jsonable(dict(config or {}))
        self.resume_from = str(resume_from) if resume_from else None
        self.export_encoder = export_encoder
        self.model_file = Path(model_file) if model_file else None
        self.rotation = CheckpointRotation(keep_last, self.save_dir if self.resume_from else None)
        remove_checkpoint_temporaries(self.save_dir)

    def attach(self, engine) -> None:
        if self.resume_from:
            engine.add_event_handler(Events.STARTED, self._resume)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def state_dict(self, engine) -> dict:
        scaler = getattr(engine, "scaler", None)
        return checkpoint_payload(self.model, self.optimizer, self.scheduler, engine.state.epoch,
                                  engine.state.iteration, self.config, scaler.state_dict() if scaler is not None else None)

    def _epoch_completed(self, engine) -> None:
        if engine.state.epoch % self.interval == 0 and engine.state.epoch < engine.state.max_epochs:
            path = save_checkpoint(self.save_dir / f"{CHECKPOINT_PREFIX}{engine.state.epoch}.pt",
                                   self.state_dict(engine))
            self.rotation.add(path)

    def _completed(self, engine) -> None:
        save_final_outputs(self.save_dir, self.model, self.state_dict(engine), self.config,
                           export_encoder=self.export_encoder, model_file=self.model_file)

    def _resume(self, engine) -> None:
        ckpt = restore_checkpoint(self.resume_from, self.config, self.model, self.optimizer, self.scheduler,
                                  getattr(engine, "scaler", None))
        engine.state.epoch = int(ckpt["epoch"])
        engine.state.iteration = int(ckpt["iteration"])
        if engine.state.epoch >= engine.state.max_epochs:
            engine.terminate()


def save_final_outputs(save_dir: str | Path, model: nn.Module, payload: dict, config: Mapping[str, Any], *,
                       export_encoder: bool = True, model_file: str | Path | None = None) -> Path | None:
    """The end of a pretraining run, for either training path (each file atomic; only rank 0 writes under DDP):
    ``checkpoint_final.pt`` (``payload``), ``encoder.pt`` (the ResNet-18 alone, loadable into plain MONAI
    ``resnet18``), ``config.json`` (``config``) and, with ``model_file``, the whole network's state dict there.

    Returns:
        the path of ``checkpoint_final.pt`` (``None`` on other ranks).
    """
    save_dir = Path(save_dir)
    final = save_checkpoint(save_dir / "checkpoint_final.pt", payload)
    if final is None:
        return None
    if export_encoder:
        export(_unwrap(model), save_dir / "encoder.pt")
    with atomic_path(save_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(dict(config)), indent=2))
    if model_file is not None:
        Path(model_file).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(model_file) as tmp:
            torch.save(_unwrap(model).state_dict(), tmp)
    written = [("encoder (plain MONAI resnet18 weights)", save_dir / "encoder.pt" if export_encoder else None),
               ("whole network", Path(model_file) if model_file is not None else None),
               ("settings", save_dir / "config.json"), ("resumable checkpoint", final),
               ("TensorBoard logs", save_dir / "tensorboard" if (save_dir / "tensorboard").is_dir() else None)]
    # printed, not only logged: the last lines of every run say where its outputs are, whatever the logging setup
    print("pretraining finished; outputs:\n" + "\n".join(f"  {what}: {path}" for what, path in written if path),
          flush=True)
    return final


def _checkpoint_epoch(path: Path) -> int | None:
    match = re.fullmatch(rf"{re.escape(CHECKPOINT_PREFIX)}(\d+)\.pt", path.name)
    return int(match.group(1)) if match else None


class CheckpointRotation:
    """Keeps the last ``keep_last`` periodic checkpoints on disk (0 keeps all); ``None`` paths (other ranks) ignored."""

    def __init__(self, keep_last: int = 2, save_dir: str | Path | None = None):
        self.keep_last, self.saved = int(keep_last), []
        if save_dir is not None:  # a resumed run: the periodic checkpoints already there count as saved, oldest first
            found = Path(save_dir).glob(f"{CHECKPOINT_PREFIX}*.pt")
            self.saved = sorted((p for p in found if _checkpoint_epoch(p) is not None), key=_checkpoint_epoch)

    def add(self, path: Path | None) -> None:
        if path is None:
            return
        self.saved.append(path)
        if self.keep_last:
            for old in self.saved[:-self.keep_last]:
                old.unlink(missing_ok=True)
            self.saved = self.saved[-self.keep_last:]


def checkpoint_payload(model: nn.Module, optimizer, scheduler, epoch: int, iteration: int, config: Mapping[str, Any],
                       scaler_state: dict | None = None) -> dict:
    """What a monai-modan training checkpoint holds (either training path writes and reads this format)."""
    return {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": scaler_state or {},
        "epoch": int(epoch),
        "iteration": int(iteration),
        "rng": _rng_state(),
        "config": _jsonable(dict(config)),
    }


def remove_checkpoint_temporaries(save_dir: str | Path) -> None:
    """Remove what a run killed while writing (``.checkpoint_epoch=N.pt.<rand>.tmp``, up to ~90 MB each) left in
    ``save_dir`` (rank 0 only; every later run that writes there calls this)."""
    if rank() != 0 or not Path(save_dir).is_dir():
        return
    for pattern in (f"{CHECKPOINT_PREFIX}*.pt", "checkpoint_final.pt", "encoder.pt", "config.json", "*.pt"):
        for stale in remove_temporaries(save_dir, pattern):
            logger.info("removed %s, left by a run that was stopped while writing it", stale)


def save_checkpoint(path: Path, payload: dict) -> Path | None:
    """Write ``payload`` atomically; under DDP only rank 0 writes (every rank holds the same weights)."""
    if rank() != 0:
        return None
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def restore_checkpoint(path: str | Path, config: Mapping[str, Any], model: nn.Module, optimizer=None, scheduler=None,
                       scaler=None) -> dict:
    """Load a checkpoint written with ``config`` into model / optimiser / scheduler / scaler and restore the RNG
    states; returns the checkpoint (for its ``epoch`` and ``iteration``).

    Raises:
        CheckpointError: not a checkpoint, or written by a different configuration (the differing keys are named).
    """
    ckpt = load_checkpoint(path)
    mine, theirs = _jsonable(dict(config)), ckpt.get("config", {})
    diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k) and k not in PROVENANCE_KEYS)
    if diff:
        details = "; ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {mine.get(k)!r}" for k in diff[:6])
        raise CheckpointError(f"{path} was written by a different configuration ({details})")
    _unwrap(model).load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt.get("optimizer"):
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        _load_schedule_progress(scheduler, ckpt["scheduler"], path)
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt.get("rng", {}))
    return ckpt


# settings of a schedule's shape (MONAI's WarmupCosineSchedule, torch's schedulers): the run's own, not the checkpoint's
_SCHEDULE_SHAPE = ("t_total", "warmup_steps", "cycles", "end_lr", "warmup_multiplier", "T_max", "eta_min",
                   "total_iters", "step_size", "gamma", "milestones")


def _load_schedule_progress(scheduler, state: Mapping[str, Any], path: str | Path) -> None:
    """Restore where a schedule stands (its step count, last rates) but keep this run's shape: a scheduler's state
    also holds its horizon (``t_total`` ...), and a run resumed with more epochs would otherwise follow the old one,
    whose cosine climbs back up after its end."""
    shape = {k: copy.deepcopy(v) for k, v in vars(scheduler).items() if k in _SCHEDULE_SHAPE}
    scheduler.load_state_dict(state)
    changed = sorted(k for k, v in shape.items() if getattr(scheduler, k) != v)
    for key, value in shape.items():
        setattr(scheduler, key, value)
    if changed:
        logger.info("resumed from %s: the learning-rate schedule keeps this run's %s (the checkpoint's differ)",
                    path, ", ".join(f"{k}={shape[k]!r}" for k in changed))


def load_checkpoint(path: str | Path) -> dict:
    """``torch.load(weights_only=True)`` with a clear error for anything that is not a monai-modan checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, refused globals: all mean "not a weights file"
        raise CheckpointError(f"{path} is not a weights file that can be loaded safely ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"{path} is not a monai-modan training checkpoint (expected keys 'model', 'epoch', ...)")
    return ckpt


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel / DataParallel (checkpoints never carry 'module.')."""
    return getattr(model, "module", model)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _py_state(random.getstate()),
    }


def _py_state(state):
    return [state[0], list(state[1]), state[2]]


def _set_rng_state(state: Mapping) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():  # a checkpoint from a machine with more GPUs: those there are
        torch.cuda.set_rng_state_all(list(state["cuda"])[:torch.cuda.device_count()])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _jsonable(obj: Any) -> Any:
    """Config values as plain JSON types so they compare equal after a save/load round trip."""
    return json.loads(json.dumps(obj, default=str))


# keys of a run's config that record where its data came from (written to config.json, e.g. for the experiment
# runner's leakage check) but are not compared on resume: a datalist moved or re-written in place must not block it
PROVENANCE_KEYS = ("datalist",)


def config_fingerprint(**values: Any) -> dict:
    """What must match for a resume to be valid (anything that changes shapes or the meaning of the labels), plus
    the :data:`PROVENANCE_KEYS` recorded but not compared (``datalist``: the pretraining datalist's absolute path)."""
    return _jsonable(values)
