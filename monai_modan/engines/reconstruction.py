"""SparK's reconstruction picture: a few images, their masked version and the network's reconstruction, as a PNG.

Written at the end of a SparK run by either training path (:class:`ReconstructionFigure` on the plain path,
:meth:`~monai_modan.engines.fast_pretrain.FastPretrainer.run` on the fast path) to ``<output_dir>/reconstruction.png``:
one row per image, three columns -- the input, the input with its masked patches blacked out (what the encoder
sees), and the reconstruction: visible patches from the input, masked ones from the decoder's prediction brought
back from per-patch normalised units to the input's with that patch's own mean and standard deviation (as SparK's
visualisation does). The network runs in eval mode (BatchNorm with running statistics), without gradients, on a
mask drawn from its own seeded generator, so the picture neither changes training nor the global random streams.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from monai.utils import CommonKeys
from torch import nn

from ..losses.spark import patch_statistics, patchify, unpatchify
from ..networks.spark import MaskPyramid, SparKModel
from ..utils.distributed import rank
from ..utils.io import atomic_path

__all__ = ["RECONSTRUCTION_NAME", "reconstruction_panels", "save_reconstruction_figure", "ReconstructionFigure"]

logger = logging.getLogger(__name__)
RECONSTRUCTION_NAME = "reconstruction.png"
COLUMNS = ("input", "masked input", "reconstruction")


def _spark_model(model: nn.Module) -> SparKModel:
    net = getattr(model, "module", model)  # DistributedDataParallel
    net = getattr(net, "_orig_mod", net)  # torch.compile
    if not isinstance(net, SparKModel):
        raise TypeError(f"a reconstruction picture needs a SparKModel, got {type(net).__name__}")
    return net


def reconstruction_panels(model: nn.Module, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The three panels of every image: ``[N, 3, C, S, S]`` float32 on the CPU (input, masked input, reconstruction;
    input intensity units), from ``images`` ``[N, C, S, S]`` on the model's device.

    The model (a :class:`~monai_modan.networks.SparKModel`, possibly wrapped in DDP / ``torch.compile``) runs in
    eval mode without gradients and is put back in its previous mode; the mask comes from a generator seeded with
    ``seed`` on the images' device.
    """
    net = _spark_model(model)
    images = images.detach().float().contiguous()
    generator = torch.Generator(device=images.device).manual_seed(int(seed))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            reconstruction, active = net(images, generator=generator)
    finally:
        net.train(was_training)
    grid = tuple(active.shape[-2:])
    mean, std = patch_statistics(patchify(images, grid))
    predicted = unpatchify(patchify(reconstruction.float(), grid) * std + mean, grid, channels=images.shape[1])
    visible = MaskPyramid(active).at(images)
    shown = visible * images + (1 - visible) * predicted
    return torch.stack([images, visible * images, shown], dim=1).cpu()


def save_reconstruction_figure(model: nn.Module, images: torch.Tensor, path: str | Path, num_images: int = 4,
                               seed: int = 0) -> Path:
    """Draw :func:`reconstruction_panels` of the first ``num_images`` of ``images`` ``[N, C, S, S]`` (values shown on
    a [0, 1] grey scale, the first channel) and write the PNG to ``path`` atomically. Returns ``path``."""
    # lazy: matplotlib is imported only when a figure is drawn
    from matplotlib.figure import Figure

    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"images must be [N >= 1, C, S, S], got {tuple(images.shape)}")
    panels = reconstruction_panels(model, images[: max(1, int(num_images))], seed).numpy()
    rows = panels.shape[0]
    fig = Figure(figsize=(3 * 2.0, rows * 2.0))
    axes = np.asarray(fig.subplots(rows, 3, squeeze=False))
    for r in range(rows):
        for c in range(3):
            ax = axes[r, c]
            ax.imshow(np.clip(panels[r, c, 0], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize="medium")
    fig.suptitle(f"SparK, mask ratio {_spark_model(model).mask_ratio:g}", fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


class ReconstructionFigure:
    """At the end of a SparK run (ignite ``COMPLETED``), write :func:`save_reconstruction_figure` of the first
    ``num_images`` images of the last batch to ``<save_dir>/reconstruction.png`` (rank 0 only under DDP).

    A run that trained no step (resumed from its last epoch) has no batch and writes nothing (logged).

    Args:
        save_dir: the run's output folder.
        model: the trainer's :class:`~monai_modan.networks.SparKModel` (DDP-wrapped or not).
        num_images: rows of the picture.
        seed: seed of the picture's mask.
    """

    def __init__(self, save_dir: str | Path, model: nn.Module, num_images: int = 4, seed: int = 0):
        _spark_model(model)
        self.path = Path(save_dir) / RECONSTRUCTION_NAME
        self.model, self.num_images, self.seed = model, int(num_images), int(seed)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        if rank() != 0:
            return
        output = engine.state.output
        images = output.get(CommonKeys.IMAGE) if isinstance(output, dict) else None
        if images is None:
            logger.info("no batch was trained in this run: %s not written", self.path)
            return
        save_reconstruction_figure(self.model, images, self.path, self.num_images, self.seed)
        logger.info("reconstruction picture written to %s", self.path)
