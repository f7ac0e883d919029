"""Pretraining benchmark: what the fast path costs on top of the network, and what it gains over the plain loop.

Two comparisons, measured in the same process on the same synthetic corpus (generated, indexed and packed in a
temporary folder; packing time is reported, not compared):

(1) overhead -- one full fast-path step (index the uint8 batch on the device, batched two-view augmentation,
    forward, MulSupCon loss, backward, SGD step) against the same model's forward + loss + backward on ready
    tensors (views already augmented, already channels_last). ``overhead = full step / forward+backward``; targets
    <= 1.3 on CPU at 64 px, <= 1.15 on a GPU.
(2) throughput -- one epoch of :class:`~monai_modan.engines.fast_pretrain.FastPretrainer` against one epoch of an
    authors'-style loop over the same images: a ``DataLoader`` whose workers read each PNG and augment it on the CPU
    per sample (the plain path's ``pretraining_transforms``), then forward, loss with its value checks, backward,
    step and ``loss.item()`` for the running loss at every step. ``ratio = plain epoch / fast epoch`` (images per
    second, fast over plain). The GPU configuration is 224 px, batch 256, bf16 (``--device cuda``); on a CPU the
    module runs it at 64 px with a small batch so that it finishes -- a stand-in, labelled as such in the result.
(3) SparK (``case="spark"``, ``--case spark``) -- one fast-path SparK step (uint8 batch, one augmented view, patch
    mask, sparse encoder, densify + decoder, masked reconstruction loss, backward, gradient clipping at 5, AdamW
    step) against one fast-path MulSupCon step (two views, SGD) on the *same* ``B`` images.
    ``overhead = SparK step / MulSupCon step``; target <= 1.3 on CPU at 64 px. SparK encodes one view per image
    where MulSupCon encodes two, so the ratio is what the sparse emulation and the decoder cost against half the
    contrastive encoder work.

``case="fast"`` (the default) runs (1) and (2), ``"spark"`` runs (3), ``"all"`` all three.
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import Timed, comparison, make_result, measure_interleaved

__all__ = ["run", "prepare_corpus", "DEFAULTS", "CASES"]

# (image_size, batch_size, images in the throughput epoch) per device type
DEFAULTS = {"cpu": (64, 16, 64), "cuda": (224, 256, 2048)}
CASES = ("fast", "spark", "all")
TRAIN_SHARE = 0.7  # lower bound of the synthetic corpus' training share (75 % less the rounding of small classes)


def prepare_corpus(workdir: str | Path, image_size: int, min_images: int, seed: int = 0, workers: int | None = None):
    """Synthetic RadImageNet-layout corpus with >= ``min_images`` training images at ``image_size`` px, its
    datalist, and the pack of its training split. Returns ``(datalist_path, PackedCorpus, pack_seconds)``."""
    import time

    from ..data.index import index_path
    from ..data.datalist import write_datalist
    from ..data.packed import pack_datalist
    from ..synthetic import RADIMAGENET_CLASSES, generate_pretraining_corpus
    from ..labels import LabelSpace

    workdir = Path(workdir)
    per_class = 1
    while True:
        per_class = max(per_class, math.ceil(min_images / (len(RADIMAGENET_CLASSES) * TRAIN_SHARE)))
        corpus = generate_pretraining_corpus(workdir / "corpus", images_per_class=per_class, image_size=image_size,
                                             seed=seed, layouts=("radimagenet",), progress=False)
        space = LabelSpace.default()
        result, classes = index_path(corpus.radimagenet_root, space, "radimagenet", progress=False)
        if sum(r.split == "training" for r in result.records) >= min_images:
            break
        per_class += 1
    datalist = write_datalist(result, space, workdir / "datalist.json", classes=classes, report=False)
    start = time.perf_counter()
    pack = pack_datalist(datalist, workdir / "pack", image_size, workers=workers)
    return datalist, pack, time.perf_counter() - start


def run(
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    batch_size: int | None = None,
    images: int | None = None,
    stem: str = "conv3x3",
    amp: bool | None = None,
    compile: bool = False,
    loader_workers: int | None = None,
    warmup: int = 1,
    repeats: int = 3,
    epoch_repeats: int = 2,
    seed: int = 0,
    workdir: str | Path | None = None,
    case: str = "fast",
) -> dict[str, Any]:
    """Measure and return the result dict (see :mod:`monai_modan.benchmarks.common`).

    Args:
        device: ``cpu`` or ``cuda``.
        image_size, batch_size, images: view size in px, images per step, images in the timed epoch (spread
            evenly over the synthetic corpus; at least 2 batches) -- defaults per device type: :data:`DEFAULTS`.
        stem: encoder stem (``conv3x3`` = the paper's 6.81 GMAC variant).
        amp: bf16 autocast; default on CUDA only.
        compile: ``torch.compile`` the fast path's forward.
        loader_workers: ``DataLoader`` workers of the plain loop (default: all CPUs).
        warmup, repeats: untimed and timed calls of the single-step comparison.
        epoch_repeats: timed epochs of the throughput comparison (after one untimed epoch each, if ``warmup``).
        workdir: where the corpus goes (default: a temporary folder, removed afterwards).
        case: ``fast`` (comparisons 1 and 2 of the module docstring), ``spark`` (3) or ``all``.
    """
    import os

    if case not in CASES:
        raise ValueError(f"case must be one of {', '.join(CASES)}, got {case!r}")
    device = torch.device(device)
    size_default, batch_default, images_default = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    image_size, batch_size = image_size or size_default, batch_size or batch_default
    min_images = max(images or images_default, 2 * batch_size)
    amp = device.type == "cuda" if amp is None else amp
    amp_dtype = torch.bfloat16 if amp else None
    loader_workers = (os.cpu_count() or 1) if loader_workers is None else loader_workers
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="modan-bench-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        _, pack, pack_seconds = prepare_corpus(root, image_size, min_images, seed)
        # the timed epoch: min_images rows spread evenly over the pack (it is sorted by class)
        rows = np.unique(np.linspace(0, len(pack) - 1, min_images).round().astype(np.int64))
        data = _EpochData(pack.to_device(device)[torch.from_numpy(rows).to(device)],
                          pack.targets_to_device(device)[0][torch.from_numpy(rows).to(device)],
                          [pack.paths[r] for r in rows], pack.labels[rows])
        comparisons = []
        if case in ("fast", "all"):
            comparisons += [
                _overhead(device, data, image_size, batch_size, stem, amp_dtype, compile, warmup, repeats, seed),
                _throughput(device, data, image_size, batch_size, stem, amp_dtype, compile, loader_workers,
                            min(warmup, 1), epoch_repeats, seed),
            ]
        if case in ("spark", "all"):
            comparisons.append(_spark_step(device, data, image_size, batch_size, stem, amp_dtype, compile, warmup,
                                           repeats, seed))
    gpu_config = device.type == "cuda" and image_size >= 224 and amp
    notes = [f"corpus: {len(pack)} synthetic training images at {image_size} px, {len(rows)} of them in the timed "
             f"epoch; packing all took {pack_seconds:.2f} s (one-off, {len(pack) / max(pack_seconds, 1e-9):.0f} "
             "images/s)"]
    if not gpu_config and case != "spark":
        notes.append(f"throughput row at {image_size} px, batch {batch_size}{', bf16' if amp else ', fp32'} on "
                     f"{device.type}: a stand-in so that the module runs here, NOT the GPU configuration "
                     "(224 px, batch 256, bf16, --device cuda)")
    sizes = {"image_size": image_size, "batch_size": batch_size, "views": 2, "case": case,
             "epoch_images": len(rows) // batch_size * batch_size, "stem": stem, "amp": "bf16" if amp else "fp32",
             "channels_last": True, "compile": compile, "loader_workers": loader_workers}
    if case != "fast":
        sizes["spark_views"] = 1
    titles = {"fast": "fast pretraining path: per-step overhead and throughput vs the plain loop",
              "spark": "SparK step vs MulSupCon step on the fast path",
              "all": "fast pretraining path: step overhead, throughput vs the plain loop, SparK vs MulSupCon step"}
    return make_result("pretrain", titles[case],
                       device, sizes, comparisons, notes, configuration="gpu" if gpu_config else "cpu stand-in")


@dataclass
class _EpochData:
    """The images of the timed epoch: on the device for the fast path, as files for the plain loop."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    host_labels: np.ndarray


def _model_and_optimizer(stem: str, device: torch.device, seed: int):
    from ..engines.pretrain import build_pretraining_model

    torch.manual_seed(seed)
    model = build_pretraining_model("mulsupcon", stem=stem).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def _fast_trainer(device, data, image_size, batch_size, stem, amp_dtype, compile, seed):
    from ..engines.fast_pretrain import FastPretrainer
    from ..engines.pretrain import build_pretraining_loss
    from ..transforms import BatchedTwoViewAugment

    model, optimizer = _model_and_optimizer(stem, device, seed)
    return FastPretrainer(model, build_pretraining_loss("mulsupcon"), optimizer, None,
                          BatchedTwoViewAugment(image_size=image_size), data.images, data.labels, batch_size,
                          seed=seed, amp_dtype=amp_dtype, channels_last=True, compile=compile)


def _overhead(device, data, image_size, batch_size, stem, amp_dtype, compile, warmup, repeats, seed) -> dict:
    trainer = _fast_trainer(device, data, image_size, batch_size, stem, amp_dtype, compile, seed)
    generator = trainer.epoch_generator(1)
    index = trainer.epoch_order(1, generator)[:batch_size]
    with torch.no_grad():
        views = trainer.augment(trainer.images.index_select(0, index), generator)
    x = views.reshape(-1, *views.shape[2:]).contiguous(memory_format=torch.channels_last)
    target = trainer.labels.index_select(0, index)

    def forward_backward():
        trainer.model.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = trainer.loss(trainer.forward(x), target)
        loss.backward()

    ready, step = measure_interleaved([
        Timed("same model fwd -> loss -> bwd on ready tensors", forward_backward, batch_size, "images"),
        Timed("fast step: uint8 batch -> augment -> fwd -> loss -> bwd -> SGD step",
              lambda: trainer.train_step(index, generator), batch_size, "images"),
    ], device=device, warmup=warmup, repeats=repeats)
    target_value = 1.15 if device.type == "cuda" else 1.3
    return comparison("full fast step vs forward+backward on ready tensors", ready, step, metric="overhead",
                      target=("<=", target_value),
                      note="overhead = augmentation + batch indexing + optimiser step, relative to fwd+bwd")


def _throughput(device, data, image_size, batch_size, stem, amp_dtype, compile, loader_workers, warmup,
                epoch_repeats, seed) -> dict:
    from monai.data import DataLoader, Dataset

    from ..engines.pretrain import TwoViewBatch, build_pretraining_loss, pretraining_transforms

    trainer = _fast_trainer(device, data, image_size, batch_size, stem, amp_dtype, compile, seed)
    steps = trainer.steps_per_epoch

    # the authors' style: per-sample decode + augmentation in DataLoader workers, loss read back at every step
    model, optimizer = _model_and_optimizer(stem, device, seed)
    model.load_state_dict(copy.deepcopy(trainer.model.state_dict()))
    loss_fn = build_pretraining_loss("mulsupcon")
    items = [{"image": path, "label": label.tolist()} for path, label in zip(data.paths, data.host_labels)]
    loader = DataLoader(Dataset(items, pretraining_transforms(image_size)), batch_size=batch_size, shuffle=True,
                        drop_last=True, num_workers=loader_workers)
    prepare = TwoViewBatch("mulsupcon")
    running = []

    def plain_epoch():
        model.train()
        for batch in loader:
            x, target = prepare(batch, device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(model(x), target)
            loss.backward()
            optimizer.step()
            running.append(loss.item())

    plain, fast = measure_interleaved([
        Timed(f"authors'-style loop (DataLoader, {loader_workers} workers, per-sample CPU decode + augmentation, "
              "loss.item() per step)", plain_epoch, steps * batch_size, "images"),
        Timed("FastPretrainer epoch (device-resident uint8, batched augmentation)", trainer.run_epoch,
              steps * batch_size, "images"),
    ], device=device, warmup=warmup, repeats=epoch_repeats)
    return comparison("fast epoch vs authors'-style DataLoader epoch", plain, fast, target=None,
                      note="throughput ratio (images/s fast over plain); the issue sets no number for it")


def _spark_step(device, data, image_size, batch_size, stem, amp_dtype, compile, warmup, repeats, seed) -> dict:
    from ..engines.fast_pretrain import FastPretrainer
    from ..engines.pretrain import build_pretraining_loss, build_pretraining_model, weight_decay_groups
    from ..networks.spark import encoder_downsampling
    from ..transforms import BatchedTwoViewAugment

    contrastive = _fast_trainer(device, data, image_size, batch_size, stem, amp_dtype, compile, seed)
    torch.manual_seed(seed)
    model = build_pretraining_model("spark", stem=stem, image_size=image_size).to(device)
    optimizer = torch.optim.AdamW(weight_decay_groups(model, 0.04), lr=2e-4 * batch_size / 256, betas=(0.9, 0.95))
    # the spark.json recipe: one view, crop area U[0.67, 1], flip, no intensity jitter; clip the gradient norm at 5
    augment = BatchedTwoViewAugment(image_size=image_size, num_views=1, scale=(0.67, 1.0), jitter_prob=0.0)
    spark = FastPretrainer(model, build_pretraining_loss("spark"), optimizer, None, augment, data.images, data.labels,
                           batch_size, seed=seed, amp_dtype=amp_dtype, channels_last=True, compile=compile,
                           max_grad_norm=5.0)
    index = contrastive.epoch_order(1)[:batch_size]
    mulsupcon_gen, spark_gen = contrastive.epoch_generator(1), spark.epoch_generator(1)
    baseline, candidate = measure_interleaved([
        Timed("MulSupCon fast step: uint8 batch -> 2 views -> fwd -> loss -> bwd -> SGD step",
              lambda: contrastive.train_step(index, mulsupcon_gen), batch_size, "images"),
        Timed("SparK fast step: uint8 batch -> 1 view -> mask -> sparse encoder + decoder -> masked loss -> bwd -> "
              "clip -> AdamW step", lambda: spark.train_step(index, spark_gen), batch_size, "images"),
    ], device=device, warmup=warmup, repeats=repeats)
    patch = encoder_downsampling(model.encoder)
    return comparison("SparK step vs MulSupCon step on the same batch", baseline, candidate, metric="overhead",
                      target=("<=", 1.3) if device.type == "cpu" else None,
                      note=f"overhead = SparK step / MulSupCon step; {patch}-px patches "
                           f"({(image_size // patch) ** 2} per image, mask ratio {model.mask_ratio:g}), decoder "
                           f"width {model.decoder.width}; SparK encodes 1 view per image, MulSupCon 2")
