"""Loss benchmark: ModAn-MulSupCon forward + backward against the authors' per-pair loop and against
pytorch-metric-learning's ``SupConLoss``, at the same size (default ``B = 256`` images, ``V = 2`` views, ``D = 128``).

Baselines, measured in the same process on the same inputs:

(a) the authors' style: the Jaccard index of every pair of images computed in a Python double loop over the batch
    (one small tensor computation per pair, written into a ``[B, B]`` matrix), then a SupCon-style weighted loss
    (view-major rows, max-subtraction, masked ``exp``/``log``). It computes the same loss (the result records the
    absolute difference of the two values) -- the loop is what made the authors' epochs slow. Target: >= 100x.
(b) ``pytorch_metric_learning.losses.SupConLoss`` on the ``B·V`` embeddings with one class id per distinct label
    set (plain SupCon: no Jaccard weights). Target: MulSupCon takes <= 1.5x its time, i.e. ratio >= 1/1.5.

Labels are drawn like a metadata corpus: a modality and an anatomy one-hot from the default label space, the anatomy
unknown (all-zero block) for 20 % of the images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..labels import LabelSpace
from ..losses import MulSupConLoss
from .common import Timed, comparison, make_result, measure_interleaved

__all__ = ["run", "authors_style_mulsupcon", "metadata_labels"]

UNKNOWN_ANATOMY_SHARE = 0.2


def metadata_labels(batch: int, space: LabelSpace, generator: torch.Generator, device: torch.device | str = "cpu",
                    unknown_share: float = UNKNOWN_ANATOMY_SHARE) -> torch.Tensor:
    """``[B, K]`` float multi-hot: one class per group, blocks after the first left empty with ``unknown_share``."""
    labels = torch.zeros(batch, space.width)
    for i, block in enumerate(space.slices.values()):
        pick = torch.randint(block.start, block.stop, (batch,), generator=generator)
        if i == 0:
            keep = torch.ones(batch, dtype=torch.bool)  # the modality is always known
        else:
            keep = torch.rand(batch, generator=generator) >= unknown_share
        labels[torch.arange(batch)[keep], pick[keep]] = 1.0
    return labels.to(device)


def authors_style_mulsupcon(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                            threshold: float = 0.3) -> torch.Tensor:
    """MulSupCon as the authors' released code computes it: ``features`` ``[B, V, D]``, ``labels`` ``[B, K]``.

    The Jaccard matrix is filled pair by pair in Python (``B²`` iterations, each a handful of tensor operations); the
    rest is the SupCon recipe with the Jaccard index as positive weight and the count of positives as normaliser.
    For non-empty label sets this is the value of :class:`~monai_modan.losses.MulSupConLoss` (to ~1e-6: the
    authors add ``1e-8`` to the union and subtract the row maximum before ``exp``).
    """
    batch, views, _ = features.shape
    device = features.device
    jaccard = torch.zeros((batch, batch), device=device)
    for i in range(batch):
        for j in range(batch):
            pair = torch.stack((labels[i], labels[j]))
            intersection = pair.min(dim=0).values.sum().float()
            union = pair.max(dim=0).values.sum().float()
            jaccard[i, j] = intersection / (union + 1e-8)
    positive = (jaccard >= threshold).float()

    z = F.normalize(torch.cat(torch.unbind(features, dim=1), dim=0), dim=1)  # view-major [V·B, D]
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = 1.0 - torch.eye(batch * views, device=device)
    positive = positive.repeat(views, views) * not_self
    weights = jaccard.repeat(views, views)
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(dim=1, keepdim=True))
    per_anchor = (positive * weights * log_prob).sum(dim=1) / positive.sum(dim=1)
    return -per_anchor.mean()


def run(
    device: str | torch.device = "cpu",
    batch: int = 256,
    views: int = 2,
    dim: int = 128,
    temperature: float = 0.07,
    threshold: float = 0.3,
    warmup: int = 1,
    repeats: int = 5,
    number: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure and return the result dict (see :mod:`monai_modan.benchmarks.common`).

    The three losses are timed in alternation, ``repeats`` rounds; a sample of the two fast ones is ``number``
    consecutive calls, the per-pair loop is called once per sample.
    """
    device = torch.device(device)
    space = LabelSpace.default()
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, views, dim, generator=generator).to(device).requires_grad_(True)
    labels = metadata_labels(batch, space, generator, device)
    loss_fn = MulSupConLoss(temperature=temperature, threshold=threshold)

    def forward_backward(compute, inputs):
        def call():
            inputs.grad = None
            compute().backward()
        return call

    entries = [
        Timed("MulSupConLoss (matrix Jaccard)", forward_backward(lambda: loss_fn(features, labels), features),
              batch, "images", number=number),
        Timed("per-pair Python-loop Jaccard (authors' style)",
              forward_backward(lambda: authors_style_mulsupcon(features, labels, temperature, threshold), features),
              batch, "images"),
    ]
    notes = []
    try:
        from pytorch_metric_learning.losses import SupConLoss
    except ImportError:
        notes.append("pytorch-metric-learning is not installed: the SupConLoss comparison was skipped")
        class_ids = None
    else:
        pml = SupConLoss(temperature=temperature)
        class_ids = torch.unique(labels, dim=0, return_inverse=True)[1].repeat(views)  # view-major rows
        embeddings = features.detach().transpose(0, 1).reshape(batch * views, dim).clone().requires_grad_(True)
        entries.append(Timed("pytorch-metric-learning SupConLoss",
                             forward_backward(lambda: pml(embeddings, class_ids), embeddings), batch, "images",
                             number=number))
    timings = measure_interleaved(entries, device=device, warmup=warmup, repeats=repeats)
    candidate = timings[0]
    with torch.no_grad():
        ours_value = float(loss_fn(features, labels))
        loop_value = float(authors_style_mulsupcon(features, labels, temperature, threshold))
    comparisons = [comparison(
        "MulSupCon fwd+bwd vs per-pair loop Jaccard", timings[1], candidate, target=(">=", 100.0),
        note=f"same loss value: {ours_value:.6f} vs {loop_value:.6f} (|diff| {abs(ours_value - loop_value):.2e})",
    )]
    if class_ids is not None:
        comparisons.append(comparison(
            "MulSupCon fwd+bwd vs pytorch-metric-learning SupConLoss", timings[2], candidate, target=(">=", 1 / 1.5),
            note="target: MulSupCon <= 1.5x SupConLoss's time (ratio >= 0.667); SupConLoss gets class ids of the "
                 f"label sets ({int(class_ids.max()) + 1} distinct), MulSupCon the multi-hot labels",
        ))
    sizes = {"B": batch, "V": views, "D": dim, "K": space.width, "temperature": temperature, "threshold": threshold}
    return make_result("loss", "MulSupCon forward+backward vs per-pair loop and pytorch-metric-learning SupConLoss",
                       device, sizes, comparisons, notes)
