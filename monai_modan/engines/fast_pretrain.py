"""The fast pretraining path: the whole corpus as uint8 on the device, batched augmentation there, no host sync.

The plain path (:mod:`monai_modan.engines.pretrain`, MONAI ``SupervisedTrainer``) decodes and augments every image
on the CPU in every epoch and reads the loss back to the host at every step (progress bar, finite-loss guard). On a
GPU that caps throughput far below the compute limit of the network. :class:`FastPretrainer` runs the same
optimisation with

- the images of a :class:`~monai_modan.data.packed.PackedCorpus` resident on the device (``[N, 1, S, S]`` uint8);
- an epoch = one random permutation drawn on the device (``torch.Generator`` there, seeded from
  ``(seed, epoch, rank)``, so an epoch is the same whether or not the run was resumed before it);
- per step: index the uint8 batch, :class:`~monai_modan.transforms.batched.BatchedTwoViewAugment` on the device,
  forward (channels_last, bf16 autocast on CUDA), loss, backward, optimiser step, scheduler step -- and nothing that
  waits for the device: no ``.item()``, no ``.cpu()``, no branch on a device value. Step losses and diagnostics are
  collected in device tensors and read back once, at the end of the epoch.

The math is the plain path's: the same network, the same loss (:class:`SyncFreeContrastiveLoss` runs a copy
of the :class:`~monai_modan.losses.MulSupConLoss`, :class:`~monai_modan.losses.NTXentLoss` or
:class:`~monai_modan.losses.HybridContrastiveLoss` given, without its per-call value checks, which read a flag back to
the host), the same optimiser and scheduler (stepped per iteration, as the bundle's
``LrScheduleHandler(epoch_level=False)``). ``tests/engines/test_fast_pretrain.py`` checks one step against MONAI's
``SupervisedTrainer`` on the same augmented batch.

What differs, by design: the augmentation is the batched twin of the per-image MONAI transforms (same
distributions, different random streams; see :mod:`monai_modan.transforms.batched`), pixels come quantised to uint8
(at most 1/510 off), and bf16 autocast runs without a ``GradScaler`` (bf16 has fp32's exponent range, so no loss
scaling is needed -- and the scaler's inf check is a host sync per step). A non-finite value is not caught inside
the step (that would be a sync): it makes that step's loss non-finite, and :meth:`FastPretrainer.run_epoch` raises
at the end of the epoch, naming the first bad step.

SparK (``method="spark"``) runs here too: one view per image (``BatchedTwoViewAugment(num_views=1)``), the patch
mask drawn by the model from the epoch's device generator, the target the view itself, the loss
:class:`~monai_modan.engines.pretrain.SparKLoss` (shape checks only, no sync); at the end the reconstruction picture
is written beside the checkpoints (:mod:`monai_modan.engines.reconstruction`). ``max_grad_norm`` clips the global
gradient norm before each optimiser step (no sync), as the plain path's ``GradientClipping``.

Checkpoints have :class:`~monai_modan.engines.pretrain.PretrainCheckpoint`'s format (same keys, same
``config`` check, same file names, ``encoder.pt`` export at the end), so either path can resume from the other's
checkpoint when both were given the same ``config``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.packed import PackedCorpus, PackedCorpusError, open_or_pack
from ..losses.hybrid import HybridContrastiveLoss
from ..losses.mulsupcon import MulSupConLoss
from ..losses.ntxent import NTXentLoss
from ..networks import HybridOutput
from ..transforms.batched import BatchedTwoViewAugment
from ..utils.device import same_device
from ..utils.distributed import is_distributed, world_size
from ..utils.distributed import rank as distributed_rank
from .pretrain import (
    CHECKPOINT_PREFIX,
    CheckpointRotation,
    PretrainMethod,
    SparKLoss,
    ViewLoss,
    checkpoint_payload,
    restore_checkpoint,
    save_checkpoint,
    save_final_outputs,
)
from .reconstruction import RECONSTRUCTION_NAME, save_reconstruction_figure

__all__ = ["FastPretrainer", "EpochStats", "SyncFreeContrastiveLoss", "DeviceCorpus", "load_device_corpus",
           "epoch_seed"]

logger = logging.getLogger(__name__)

AUTO = "auto"


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of the device generator of ``epoch`` (1-based) on ``rank``: independent streams for every
    ``(seed, epoch, rank)`` (``numpy.random.SeedSequence``), unlike ``seed + epoch``, where seed 0 epoch 2 would
    repeat seed 1 epoch 1."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1, dtype=np.uint64)[0])


class SyncFreeContrastiveLoss(nn.Module):
    """MulSupCon, NT-Xent or their hybrid on the trainer's flat ``[B·V, D]`` predictions, without host
    synchronisation.

    Built from a :class:`~monai_modan.losses.MulSupConLoss`, :class:`~monai_modan.losses.NTXentLoss` or
    :class:`~monai_modan.losses.HybridContrastiveLoss` (bare, or wrapped in
    :class:`~monai_modan.engines.pretrain.ViewLoss` as ``build_pretraining_loss`` returns them): it runs a copy of that
    very loss with ``check_values=False`` -- the finite-features / binary-labels checks each read a flag back to the
    host -- so the math is the loss's own (a deep copy: the hybrid's terms are modules of their own, and the loss
    given stays as it was). Shapes are still checked (no sync). ``last_diagnostics`` holds
    detached 0-d device tensors, as for the wrapped loss.
    """

    def __init__(self, loss: nn.Module, num_views: int = 2) -> None:
        super().__init__()
        inner = loss.loss if isinstance(loss, ViewLoss) else loss
        if isinstance(inner, MulSupConLoss):
            self.method = PretrainMethod.MULSUPCON
        elif isinstance(inner, NTXentLoss):
            self.method = PretrainMethod.SIMCLR
        elif isinstance(inner, HybridContrastiveLoss):
            self.method = PretrainMethod.HYBRID
        else:
            raise TypeError(f"expected MulSupConLoss, NTXentLoss or HybridContrastiveLoss (optionally in ViewLoss), "
                            f"got {type(inner).__name__}")
        self.loss = copy.deepcopy(inner)
        self.loss.check_values = False
        self.num_views = loss.num_views if isinstance(loss, ViewLoss) else int(num_views)

    @property
    def last_diagnostics(self) -> dict[str, torch.Tensor]:
        return self.loss.last_diagnostics

    def forward(self, pred: torch.Tensor | HybridOutput, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``pred`` ``[B·V, D]`` (rows ``b·V + v``) or, for the hybrid with two heads, a
        :class:`~monai_modan.networks.HybridOutput` of two such tensors; ``labels`` ``[B, K]`` multi-hot (MulSupCon,
        hybrid) -> 0-d fp32 loss."""
        heads = list(pred) if isinstance(pred, HybridOutput) else [pred]
        if len(heads) > 1 and self.method != PretrainMethod.HYBRID:
            raise ValueError(f"two projection heads (HybridOutput) need the hybrid loss, not {self.method}")
        for head in heads:
            if head.ndim != 2 or head.shape[0] % self.num_views or head.shape[0] != heads[0].shape[0]:
                raise ValueError(f"predictions must be [B·V, D] with V={self.num_views}, got "
                                 f"{[tuple(h.shape) for h in heads]}")
        batch = heads[0].shape[0] // self.num_views
        features = [head.reshape(batch, self.num_views, -1) for head in heads]
        if self.method in (PretrainMethod.MULSUPCON, PretrainMethod.HYBRID):
            if labels is None or labels.ndim != 2 or labels.shape[0] != batch:
                raise ValueError(f"{self.method} needs labels [B={batch}, K], got {getattr(labels, 'shape', None)}")
            return self.loss(features[0], labels, *features[1:])
        return self.loss(features[0])


@dataclass
class EpochStats:
    """One epoch of :class:`FastPretrainer`: mean step loss, throughput (original images, not views, per second of
    wall time including the one end-of-epoch sync), the learning rate after the epoch, diagnostics' epoch means."""

    epoch: int
    loss: float
    images_per_second: float
    seconds: float
    steps: int
    lr: float
    diagnostics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeviceCorpus:
    """One rank's share of a packed corpus on the training device (:func:`load_device_corpus`).

    Attributes:
        images: ``[N, 1, S, S]`` uint8; labels: ``[N, K]`` uint8 multi-hot; class_index: ``[N]`` int64 or ``None``.
        pack: the :class:`~monai_modan.data.packed.PackedCorpus` share these rows come from.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_index: torch.Tensor | None
    pack: Any

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_device_corpus(datalist_path: str | Path, pack_dir: str | Path, image_size: int,
                       device: torch.device | str = "cpu") -> DeviceCorpus:
    """The packed corpus of ``datalist_path`` on ``device``, as :class:`FastPretrainer` takes it.

    The pack in ``pack_dir`` is reused while current, else written (:func:`~monai_modan.data.packed.open_or_pack`).
    Under DDP, rank 0 alone (re)packs while the others wait, and every rank keeps its strided share
    (:meth:`~monai_modan.data.packed.PackedCorpus.shard`: ``N // world_size`` rows each, disjoint). When rank 0
    cannot pack, every rank raises its error (rather than the others waiting out the process-group timeout); a
    first pack that takes longer than that timeout (30 min) should be made beforehand with ``monai_modan pack``.

    Raises:
        PackedCorpusError: the datalist cannot be packed (on every rank under DDP).
    """
    pack, failure = None, None
    if distributed_rank() == 0:
        try:
            pack = open_or_pack(datalist_path, pack_dir, image_size)
        except Exception as e:  # noqa: BLE001 - told to every rank below, then raised here
            failure = e
    if is_distributed():
        message = [None if failure is None else f"{type(failure).__name__}: {failure}"]
        torch.distributed.broadcast_object_list(message, src=0)  # also the barrier: rank 0 has packed
        if failure is None and message[0] is not None:
            raise PackedCorpusError(f"rank 0 could not pack {datalist_path} into {pack_dir}: {message[0]}")
    if failure is not None:
        raise failure
    if pack is None:
        pack = PackedCorpus.open(pack_dir)
    share = pack.shard(distributed_rank(), world_size())
    labels, class_index = share.targets_to_device(device)
    return DeviceCorpus(share.to_device(device), labels, class_index, share)


class FastPretrainer:
    """Device-resident pretraining loop (see the module docstring).

    Args:
        model: network ``[B·V, 1, s, s]`` -> ``[B·V, D]`` projections (contrastive), ``[B·V, C]`` logits
            (supervised) or a :class:`~monai_modan.networks.SparKModel` (``spark``; called as
            ``model(x, generator=...)``), on the images' device; may be wrapped in DistributedDataParallel.
        loss: as ``build_pretraining_loss`` makes it: ``ViewLoss(MulSupConLoss)``, ``ViewLoss(NTXentLoss)``,
            ``ViewLoss(HybridContrastiveLoss)`` (run through :class:`SyncFreeContrastiveLoss`),
            :class:`~monai_modan.engines.pretrain.SparKLoss` (``spark``, called as is on the model's output and the
            views) or a classification loss such as
            ``nn.CrossEntropyLoss`` (supervised; called as is, on logits and the ``[B·V]`` class indices, one per
            view).
        optimizer: optimiser of ``model``'s parameters.
        scheduler: learning-rate scheduler stepped after every optimiser step, or ``None``.
        augment: :class:`~monai_modan.transforms.batched.BatchedTwoViewAugment`; its ``num_views`` is V.
        images: ``[N, 1, S, S]`` uint8 on the device (``PackedCorpus.to_device``).
        labels: ``[N, K]`` multi-hot (uint8/bool/float) on the same device.
        batch_size: B, images per step; an epoch is ``N // B`` steps (the last incomplete batch is dropped, as the
            plain path's ``DataLoader(drop_last=True)``).
        seed: seeds the device generator of every epoch via :func:`epoch_seed` (with the distributed rank).
        amp_dtype: autocast dtype; ``"auto"`` = ``torch.bfloat16`` on CUDA, none on CPU; ``None`` = fp32.
        channels_last: convert the model and every input batch to ``torch.channels_last``.
        compile: run the forward through ``torch.compile(model)`` (the first steps then include compilation).
        class_index: ``[N]`` int64 fine classes on the device; required for the supervised method.
        method: :class:`~monai_modan.engines.pretrain.PretrainMethod`; inferred from ``loss`` when ``None``.
        max_grad_norm: clip the global gradient L2 norm to this value before every optimiser step; ``None``: no
            clipping.

    Raises:
        ValueError / TypeError: inconsistent shapes, dtypes or devices, a batch larger than the corpus, a supervised
            run without ``class_index``, or a ``method`` that contradicts ``loss``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        augment: BatchedTwoViewAugment,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        seed: int = 0,
        amp_dtype: torch.dtype | str | None = AUTO,
        channels_last: bool = True,
        compile: bool = False,
        *,
        class_index: torch.Tensor | None = None,
        method: PretrainMethod | str | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor [N, C, S, S], got "
                             f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}")
        self.device = images.device
        n = images.shape[0]
        if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or labels.shape[0] != n:
            raise ValueError(f"labels must be a tensor [N={n}, K], got {tuple(getattr(labels, 'shape', ()))}")
        if isinstance(batch_size, bool) or not 2 <= int(batch_size) <= n:
            raise ValueError(f"batch_size must be in [2, N={n}] (a contrastive batch needs 2 images), got {batch_size}")
        param = next(model.parameters(), None)
        for name, tensor in (("labels", labels), ("model", param), ("class_index", class_index)):
            if tensor is not None and not same_device(tensor.device, self.device):
                raise ValueError(f"{name} is on {tensor.device} but images are on {self.device}: put them together")
        if not isinstance(augment, BatchedTwoViewAugment):
            raise TypeError(f"augment must be a BatchedTwoViewAugment, got {type(augment).__name__}")

        self.num_views = augment.num_views
        if isinstance(loss.loss if isinstance(loss, ViewLoss) else loss,
                      (MulSupConLoss, NTXentLoss, HybridContrastiveLoss)):
            self.loss: nn.Module = SyncFreeContrastiveLoss(loss, self.num_views)
            if self.loss.num_views != self.num_views:
                raise ValueError(
                    f"the loss expects {self.loss.num_views} views, the augmentation makes {self.num_views}")
            inferred = self.loss.method
        elif isinstance(loss, SparKLoss):
            if self.num_views != 1:
                raise ValueError(f"SparK trains on one view per image; the augmentation makes {self.num_views}")
            self.loss, inferred = loss, PretrainMethod.SPARK
        else:
            self.loss, inferred = loss, PretrainMethod.SUPERVISED
        if method is not None and PretrainMethod(method) != inferred:
            raise ValueError(f"method={method!r} contradicts the loss {type(loss).__name__} (a {inferred} loss)")
        self.method = inferred
        if inferred == PretrainMethod.SUPERVISED and (
            class_index is None or class_index.ndim != 1 or class_index.shape[0] != n
        ):
            raise ValueError(f"the supervised method needs class_index [N={n}] (int64 fine classes), got "
                             f"{None if class_index is None else tuple(class_index.shape)}")

        if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.model, self.optimizer, self.scheduler, self.augment = model, optimizer, scheduler, augment
        self.images, self.labels = images, labels
        self.class_index = None if class_index is None else class_index.long()
        self.batch_size, self.seed = int(batch_size), int(seed)
        if amp_dtype == AUTO:
            amp_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        self.amp_dtype: torch.dtype | None = amp_dtype
        self.channels_last = channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(model) if compile else model
        self.rank = distributed_rank()
        self.epoch = 0  # epochs completed
        self.iteration = 0  # optimiser steps completed
        self.history: list[EpochStats] = []

    # ------------------------------------------------------------------------------------------------- one step
    @property
    def steps_per_epoch(self) -> int:
        return self.images.shape[0] // self.batch_size

    def epoch_generator(self, epoch: int) -> torch.Generator:
        """The device generator that draws epoch ``epoch``'s permutation and then all its augmentations."""
        return torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, self.rank))

    def epoch_order(self, epoch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[N]`` int64 permutation of the corpus for ``epoch``, on the device (the first draw of its generator)."""
        generator = generator if generator is not None else self.epoch_generator(epoch)
        return torch.randperm(self.images.shape[0], generator=generator, device=self.device)

    def train_step(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One optimisation step on the images ``index`` (``[B]`` int64 on the device); augmentations drawn from
        ``generator``. Returns the detached 0-d loss, still on the device (reading it is the caller's sync)."""
        images = self.images.index_select(0, index)
        views = self.augment(images, generator)  # [B, V, C, s, s] float32 in [0, 1]
        batch, views_per_image = views.shape[:2]
        x = views.reshape(batch * views_per_image, *views.shape[2:])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.method == PretrainMethod.SUPERVISED:
            target = self.class_index.index_select(0, index).repeat_interleave(views_per_image)
        elif self.method == PretrainMethod.SPARK:
            target = x  # the unmasked view; the model draws the mask from this epoch's generator
        else:
            target = self.labels.index_select(0, index)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            pred = self.forward(x, generator=generator) if self.method == PretrainMethod.SPARK else self.forward(x)
            loss = self.loss(pred, target).mean()
        loss.backward()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.iteration += 1
        return loss.detach()

    # ------------------------------------------------------------------------------------------------ epochs
    def run_epoch(self) -> EpochStats:
        """Train epoch ``self.epoch + 1``: ``N // B`` steps over a fresh device permutation, one sync at the end.

        Raises:
            FloatingPointError: some step's loss was not finite (the message names the first such step; the weights
                have been updated from it and are no longer usable).
        """
        epoch = self.epoch + 1
        steps = self.steps_per_epoch
        generator = self.epoch_generator(epoch)
        losses = torch.zeros(steps, device=self.device)
        sums: dict[str, torch.Tensor] = {}
        start = time.perf_counter()
        order = self.epoch_order(epoch, generator)
        for step in range(steps):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            losses[step] = self.train_step(index, generator)
            for key, value in getattr(self.loss, "last_diagnostics", {}).items():
                sums[key] = sums[key] + value if key in sums else value.float()
        keys = list(sums)
        summary = torch.cat([losses, torch.stack([sums[k] for k in keys])]) if keys else losses
        summary = summary.cpu()  # the one host sync of the epoch
        seconds = max(time.perf_counter() - start, 1e-9)
        step_losses = summary[:steps]
        bad = torch.nonzero(~torch.isfinite(step_losses)).flatten()
        if bad.numel():
            first = int(bad[0])
            raise FloatingPointError(
                f"loss is {float(step_losses[first])} at epoch {epoch}, step {first + 1} of {steps} (iteration "
                f"{self.iteration - steps + first + 1}); {bad.numel()} step(s) of this epoch were not finite and the "
                "weights are spoiled: training stopped (lower the learning rate, check for constant images, or "
                "disable AMP)"
            )
        self.epoch = epoch
        stats = EpochStats(
            epoch=epoch,
            loss=float(step_losses.mean()),
            images_per_second=steps * self.batch_size / seconds,
            seconds=seconds,
            steps=steps,
            lr=float(self.optimizer.param_groups[0]["lr"]),
            diagnostics={k: float(v) / steps for k, v in zip(keys, summary[steps:].tolist())},
        )
        self.history.append(stats)
        logger.info("epoch %d: loss %.4f, %.1f images/s", epoch, stats.loss, stats.images_per_second)
        return stats

    def run(
        self,
        epochs: int,
        checkpoint_dir: str | Path | None = None,
        checkpoint_interval: int = 1,
        config: Mapping[str, Any] | None = None,
        keep_last: int = 2,
        export_encoder: bool = True,
        model_file: str | Path | None = None,
    ) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are complete in total (ignite's ``max_epochs``: after resuming from a
        checkpoint of epoch 2, ``run(5)`` trains epochs 3, 4 and 5).

        With ``checkpoint_dir``, writes ``checkpoint_epoch=N.pt`` every ``checkpoint_interval`` epochs (keeping the
        last ``keep_last``) and, at the end, what :class:`~monai_modan.engines.pretrain.PretrainCheckpoint` writes
        (:func:`~monai_modan.engines.pretrain.save_final_outputs`): ``checkpoint_final.pt``, ``encoder.pt``
        (``export_encoder``), ``config.json`` and the network's state dict at ``model_file`` (the bundle's
        ``models/model.pt``); ``config`` is the fingerprint stored in them and checked on resume.

        Returns:
            one :meth:`EpochStats.to_dict` per epoch trained by this call (``loss``, ``images_per_second`` ...).
        """
        if int(epochs) < self.epoch:
            raise ValueError(f"epochs={epochs} is below the {self.epoch} epochs already completed")
        epochs, interval = int(epochs), max(1, int(checkpoint_interval))
        rotation = CheckpointRotation(keep_last, checkpoint_dir if self.epoch and checkpoint_dir is not None else None)
        done = []
        while self.epoch < epochs:
            done.append(self.run_epoch().to_dict())
            if checkpoint_dir is not None and self.epoch % interval == 0 and self.epoch < epochs:
                rotation.add(self.save_checkpoint(Path(checkpoint_dir) / f"{CHECKPOINT_PREFIX}{self.epoch}.pt", config))
        if checkpoint_dir is None:
            return done
        save_final_outputs(checkpoint_dir, self.model, self.state_dict(config), config or {},
                           export_encoder=export_encoder, model_file=model_file)
        if self.method == PretrainMethod.SPARK and self.rank == 0:
            self.save_reconstruction(Path(checkpoint_dir) / RECONSTRUCTION_NAME)
        return done

    def save_reconstruction(self, path: str | Path, num_images: int = 4, seed: int = 0) -> Path:
        """SparK only: the reconstruction picture (:func:`~monai_modan.engines.reconstruction.
        save_reconstruction_figure`) of views of the corpus' first ``num_images`` images, drawn with ``seed``."""
        if self.method != PretrainMethod.SPARK:
            raise ValueError(f"a reconstruction picture needs the spark method, this trainer runs {self.method}")
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        with torch.no_grad():
            views = self.augment(self.images[:num_images], generator)[:, 0]
        return save_reconstruction_figure(self.model, views, path, num_images, seed)

    # --------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """:class:`~monai_modan.engines.pretrain.PretrainCheckpoint`'s checkpoint content (no AMP scaler: bf16
        needs none)."""
        return checkpoint_payload(self.model, self.optimizer, self.scheduler, self.epoch, self.iteration, config or {})

    def save_checkpoint(self, path: str | Path, config: Mapping[str, Any] | None = None) -> Path | None:
        """Write :meth:`state_dict` atomically to ``path`` (on rank 0 only; other ranks return ``None``)."""
        return save_checkpoint(Path(path), self.state_dict(config))

    def load_checkpoint(self, path: str | Path, config: Mapping[str, Any] | None = None) -> None:
        """Resume from a checkpoint of either path (``torch.load(weights_only=True)``): weights, optimiser,
        scheduler, global RNG states, epoch and iteration counters. The next epoch is ``epoch + 1``, exactly as in
        an uninterrupted run (its generator depends only on seed, epoch and rank).

        Raises:
            CheckpointError: not a checkpoint, or its ``config`` differs from ``config`` (as ``PretrainCheckpoint``).
        """
        ckpt = restore_checkpoint(path, config or {}, self.model, self.optimizer, self.scheduler)
        self.epoch, self.iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
