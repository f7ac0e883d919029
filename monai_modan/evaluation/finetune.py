"""Downstream training of one fold: fine-tuning or linear probing of a ResNet-18 encoder on a binary task.

The recipe is the ModAn paper's (Table 3): 10 epochs, batch 32, Adam (lr 1e-4), StepLR (step 5, gamma 0.1),
binary cross-entropy on one logit, model selection on the validation loss. The pieces:

- :class:`InitSpec` -- where an encoder's weights come from: ``scratch`` (seeded Kaiming init), ``imagenet`` (a
  local torchvision ``resnet18`` weights file, never downloaded) or a ``checkpoint`` (monai-modan pretraining).
- :class:`TaskImages` -- a task's images decoded once into one in-memory ``[N, 1, S, S]`` tensor. Clinical
  downstream sets are small (BUSI 780, DDTI 349, MRNet 1,250 images: 0.25 GB at 224^2 in float32), and every fold,
  repeat and initialisation of an experiment reads the same pixels, so decoding them once per task saves the
  dominant cost of small-image training and removes data-loader randomness.
- :func:`train_fold` -- train on the training part, select the epoch on the validation part, score the test part.

Determinism: every random draw (the scratch encoder, the head, the batch order, the optional flips) comes from the
``seed`` argument through local generators, never from the global RNG, so the same seed gives the same AUC
(exactly on CPU; on GPU up to cuDNN's non-deterministic kernels).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data.readers import LoadGrayscaleImage
from ..networks.weights import InitSpec
from ..utils.defaults import FINETUNE_EPOCHS, IMAGE_SIZE
from .stats import EvalMode, fold_auc

__all__ = [
    "Recipe",
    "TaskImages",
    "BinaryClassifier",
    "FoldResult",
    "repeat_seed",
    "encode",
    "embed",
    "feature_cache_key",
    "train_fold",
]

def repeat_seed(base: int, repeat: int) -> int:
    """The training seed of repeat ``repeat``: ``numpy.random.SeedSequence([base, repeat])``'s first 32-bit word.

    Independent, well-mixed seeds for every (base, repeat) -- ``base + repeat`` would make repeat 1 of base 0 equal
    repeat 0 of base 1. 32 bits so the same seed also drives sklearn's splitters.
    """
    if int(repeat) < 0:
        raise ValueError(f"repeat must be >= 0, got {repeat}")
    return int(np.random.SeedSequence([int(base), int(repeat)]).generate_state(1)[0])


# -- recipe ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Training recipe of every fold (the ModAn paper's Table 3).

    Attributes:
        epochs: training epochs (10).
        batch_size: images per step (32). A last batch of one image is merged into the previous one (BatchNorm
            cannot normalise a single sample whose feature map is 1x1).
        lr: Adam learning rate (1e-4), no weight decay.
        step_size, gamma: ``StepLR`` (lr x 0.1 after 5 epochs).
        image_size: side S in pixels of the square input (64 by default for speed; the paper used 224). Images are
            resized to S x S by the project reader (aspect ratio not kept).
        val_fraction: validation part of each training part, for model selection (0.2). Model selection keeps the
            weights of the epoch with the lowest validation loss (mean BCE, eval mode), the earliest on ties; the
            test part is scored once, with those weights. ``0`` means no validation part: the last epoch is kept.
        flip: random horizontal flips while fine-tuning (off by default: the paper lists no augmentation, and
            laterality can carry meaning in medical images). Linear probing never augments -- it trains on fixed
            features.
        eval_batch_size: images per forward pass when scoring or extracting features.
    """

    epochs: int = FINETUNE_EPOCHS
    batch_size: int = 32
    lr: float = 1e-4
    step_size: int = 5
    gamma: float = 0.1
    image_size: int = IMAGE_SIZE
    val_fraction: float = 0.2
    flip: bool = False
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "step_size", "image_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1 or int(getattr(self, name)) != getattr(self, name):
                raise ValueError(f"recipe.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"recipe.lr must be > 0, got {self.lr!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"recipe.gamma must be in (0, 1], got {self.gamma!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"recipe.val_fraction must be in [0, 1), got {self.val_fraction!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Recipe:
        """A recipe from a plain mapping; an unknown key raises ``ValueError`` naming it."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recipe setting(s) {', '.join(f'recipe.{k}' for k in unknown)}; known: "
                             f"{sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.epochs} epochs, batch {self.batch_size}, Adam lr {self.lr:g}, StepLR(step {self.step_size}, "
                f"gamma {self.gamma:g}), BCE-with-logits on one logit, {self.image_size}x{self.image_size} grey input, "
                + ("random horizontal flips when fine-tuning" if self.flip else "no augmentation"))


# -- data -----------------------------------------------------------------------------------------------------------


@dataclass
class TaskImages:
    """A task's images in memory: ``images [N, 1, S, S]`` float32 in ``[0, 1]``, ``labels [N]`` int64 0/1.

    Index ``i`` is item ``i`` of the task datalist (the fold plan's indices).
    """

    images: torch.Tensor
    labels: np.ndarray
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.ndim != 4 or self.images.shape[1] != 1 or self.images.shape[0] != self.labels.size:
            raise ValueError(f"TaskImages needs images [N, 1, S, S] and labels [N], got {tuple(self.images.shape)} "
                             f"and {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.labels.size)

    @classmethod
    def load(cls, items: Sequence[Mapping[str, Any]], image_size: int, progress: bool = False) -> TaskImages:
        """Decode every ``item["image"]`` once through :class:`~monai_modan.data.readers.LoadGrayscaleImage`.

        ``labels`` are the items' integer ``label``; an item whose ``label`` is not one integer (a pretraining
        datalist's multi-hot vector, embedded for UMAP) gets 0.

        Raises:
            ImageLoadError: an image cannot be read (names the file). Nothing is skipped: the fold plan fixes the
                item set, and dropping an image would silently change it.
        """
        if not items:
            raise ValueError("no images to load")
        loader = LoadGrayscaleImage(spatial_size=int(image_size))
        out = torch.empty((len(items), 1, int(image_size), int(image_size)), dtype=torch.float32)
        for i, item in enumerate(tqdm(items, desc="loading images", unit="img", disable=not progress, leave=False)):
            out[i] = loader(item["image"]).as_tensor()
        labels = [int(it["label"]) if isinstance(it.get("label"), (int, np.integer)) else 0 for it in items]
        return cls(out, np.asarray(labels, dtype=np.int64), [str(it["image"]) for it in items])

    def to(self, device: str | torch.device) -> TaskImages:
        """The same images on ``device`` (labels stay a NumPy array)."""
        return TaskImages(self.images.to(device), self.labels, self.sources)


# -- model ----------------------------------------------------------------------------------------------------------


class BinaryClassifier(nn.Module):
    """Encoder + ``Linear(512, 1)``: ``[B, 1, H, W]`` in ``[0, 1]`` -> logits ``[B]``.

    Args:
        encoder: ``[B, 1, H, W]`` -> ``[B, 512]``.
        freeze_encoder: linear probing -- the encoder's parameters get ``requires_grad = False`` and the encoder
            stays in eval mode even under ``model.train()``, so its BatchNorm running statistics never change and
            its features are those of the pretrained network.
        input_norm: ``(mean, std)`` standardising the input before the encoder (see :attr:`InitSpec.input_norm`).
    """

    def __init__(self, encoder: nn.Module, freeze_encoder: bool = False,
                 input_norm: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(getattr(encoder, "feature_dim", 512), 1)
        self.freeze_encoder = bool(freeze_encoder)
        self.register_buffer("input_mean", torch.tensor(float(input_norm[0])), persistent=False)
        self.register_buffer("input_std", torch.tensor(float(input_norm[1])), persistent=False)
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> BinaryClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` -> ``[B, 512]`` (no autograd graph through a frozen encoder)."""
        x = (x - self.input_mean) / self.input_std
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, 512]`` features -> logits ``[B]``."""
        return self.head(features).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` -> logits ``[B]``."""
        return self.head_logits(self.features(x))


def _build_model(init: InitSpec, mode: EvalMode, seed: int) -> BinaryClassifier:
    """Encoder then head, both drawn from ``seed`` (the head's init does not depend on the global RNG)."""
    encoder = init.build_encoder(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return BinaryClassifier(encoder, freeze_encoder=mode == EvalMode.LINEAR_PROBING, input_norm=init.input_norm)


@torch.no_grad()
def encode(model: BinaryClassifier, images: torch.Tensor, batch_size: int = 256,
           device: str | torch.device | None = None) -> torch.Tensor:
    """``[N, 512]`` float32 features of ``images [N, 1, S, S]`` by ``model``'s encoder in eval mode, on ``device``
    (default: the images' device)."""
    device = images.device if device is None else torch.device(device)
    was_training = model.training
    model.to(device).eval()
    out = torch.cat([model.features(images[i:i + batch_size].to(device)).float()
                     for i in range(0, images.shape[0], int(batch_size))])
    model.train(was_training)
    return out


def embed(images: torch.Tensor | TaskImages, init: InitSpec, seed: int = 0, device: str | torch.device = "cpu",
          batch_size: int = 256) -> torch.Tensor:
    """``[N, 512]`` frozen features of ``images [N, 1, S, S]`` with ``init``'s encoder (eval mode), on ``device``.

    The same features the linear probe trains on (for UMAP panels and kNN).
    """
    images = images.images if isinstance(images, TaskImages) else images
    model = BinaryClassifier(init.build_encoder(seed), freeze_encoder=True, input_norm=init.input_norm)
    return encode(model, images, batch_size=batch_size, device=device)


def feature_cache_key(init: InitSpec, seed: int) -> str:
    """Key of an init's features in a feature cache: its name, plus the seed for a (seed-dependent) scratch init."""
    return f"{init.name}@seed={int(seed)}" if init.seed_dependent else init.name


# -- training -------------------------------------------------------------------------------------------------------


@dataclass
class FoldResult:
    """The outcome of one fold.

    Attributes:
        auc: test ROC AUC.
        y_true: ``[n_test]`` int64 labels; y_score: ``[n_test]`` float64 predicted probabilities of class 1, in the
            order of the test indices.
        best_epoch: the selected epoch (1-based).
        val_loss_curve: mean validation BCE after each epoch (empty without a validation part).
        train_loss_curve: mean training BCE of each epoch.
        model: the selected model (on the training device).
    """

    auc: float
    y_true: np.ndarray
    y_score: np.ndarray
    best_epoch: int
    val_loss_curve: list[float]
    train_loss_curve: list[float] = field(default_factory=list)
    model: BinaryClassifier | None = field(default=None, repr=False, compare=False)


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches of ``order``; a trailing batch of one sample joins the previous batch."""
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@torch.no_grad()
def _predict(forward: nn.Module, inputs: torch.Tensor, idx: torch.Tensor, batch_size: int,
             device: torch.device) -> torch.Tensor:
    if not idx.numel():
        return torch.zeros(0, device=device)
    return torch.cat([forward(inputs[b].to(device)).float() for b in torch.split(idx, batch_size)])


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel where PyTorch has one for the device (CPU and CUDA since torch 2.4): the same
    update, without ~10 full passes over the 11 M parameters per step."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without a fused kernel
        return torch.optim.Adam(params, lr=lr)


def _as_indices(part: Sequence[int] | np.ndarray, n: int, name: str) -> np.ndarray:
    idx = np.asarray(part, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{name} indices out of range for {n} images")
    if np.unique(idx).size != idx.size:
        raise ValueError(f"{name} indices contain duplicates")
    return idx


def train_fold(images: torch.Tensor | TaskImages, labels: Sequence[int] | np.ndarray | None,
               split: tuple[Sequence[int], Sequence[int], Sequence[int]], init: InitSpec,
               mode: EvalMode | str = EvalMode.FINE_TUNING, recipe: Recipe | None = None, seed: int = 0,
               device: str | torch.device = "cpu", *,
               feature_cache: MutableMapping[str, torch.Tensor] | None = None,
               precompute_features: bool = True) -> FoldResult:
    """Train ``init``'s encoder + a linear layer on one fold and score its test part.

    - ``fine_tuning``: every layer trained (Adam over all parameters), BatchNorm in training mode.
    - ``linear_probing``: encoder frozen in eval mode, only ``Linear(512, 1)`` trained. With
      ``precompute_features`` (default) the encoder runs once over all N images and the head trains on the
      ``[N, 512]`` features: with the encoder frozen and no augmentation, every step would compute exactly these
      features, so this is the same optimisation (same batches, same updates) at a fraction of the cost.
      ``feature_cache`` (a dict owned by the caller, one per set of images) keeps the features across folds,
      repeats and calls, keyed by :func:`feature_cache_key`. ``precompute_features=False`` runs the frozen encoder
      on every batch (the reference the fast path is tested against).

    Args:
        images: ``[N, 1, S, S]`` in ``[0, 1]`` (a tensor on any device, or :class:`TaskImages`).
        labels: ``[N]`` 0/1 (``None`` with :class:`TaskImages`, which carries them).
        split: ``(train_idx, val_idx, test_idx)`` indices into ``images``, disjoint; ``val_idx`` may be empty, and
            so may ``test_idx`` (a final model trained on all labelled data, :mod:`~monai_modan.evaluation.deploy`:
            the result's ``auc`` is then NaN and its scores empty).
        init: the initialisation; ``mode``: :class:`~monai_modan.evaluation.stats.EvalMode` (``fine_tuning`` or ``linear_probing``); ``recipe``: :class:`Recipe` (default Table 3).
        seed: scratch init, head init, batch order and flips.
        device: where to train.

    Returns:
        :class:`FoldResult`.

    Raises:
        ValueError: overlapping or out-of-range indices, a training or test part without both classes, or a
            non-finite loss.
    """
    recipe = recipe or Recipe()
    mode = EvalMode.parse(mode)
    if not mode.trains_network:
        raise ValueError(f"train_fold trains fine_tuning or linear_probing, not {mode.value!r}")
    if isinstance(images, TaskImages):
        labels = images.labels if labels is None else labels
        images = images.images
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be [N, 1, S, S], got {tuple(images.shape)}")
    n = images.shape[0]
    y_all = np.asarray(labels, dtype=np.int64).reshape(-1)
    if y_all.size != n or not np.isin(y_all, (0, 1)).all():
        raise ValueError(f"labels must be [N] 0/1 for {n} images, got shape {y_all.shape} with values "
                         f"{sorted(set(y_all.tolist()))[:5]}")
    if len(split) != 3:
        raise ValueError("split must be (train_idx, val_idx, test_idx)")
    train_idx, val_idx, test_idx = (_as_indices(p, n, name) for p, name in zip(split, ("train", "validation", "test")))
    for a, b in ((train_idx, val_idx), (train_idx, test_idx), (val_idx, test_idx)):
        if np.intersect1d(a, b).size:
            raise ValueError("the training, validation and test parts overlap")
    for name, part in (("training", train_idx), ("test", test_idx)):
        if (part.size or name == "training") and set(np.unique(y_all[part]).tolist()) != {0, 1}:
            raise ValueError(f"the {name} part ({part.size} images) does not hold both classes: a binary "
                             "classifier cannot be trained or scored on it")
    if train_idx.size < 2:
        raise ValueError(f"the training part holds {train_idx.size} image(s); need at least 2")

    device = torch.device(device)
    model = _build_model(init, mode, seed).to(device)
    y = torch.as_tensor(y_all, dtype=torch.float32, device=device)
    if mode == EvalMode.LINEAR_PROBING and precompute_features:
        key = feature_cache_key(init, seed)
        cache = feature_cache if feature_cache is not None else {}
        if key not in cache:
            cache[key] = encode(model, images, recipe.eval_batch_size, device)
        inputs, forward = cache[key].to(device), model.head_logits
        params = list(model.head.parameters())
    else:
        inputs, forward = images, model
        params = [p for p in model.parameters() if p.requires_grad]
    flip = recipe.flip and mode == EvalMode.FINE_TUNING

    optimizer = _adam(params, recipe.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    generator = torch.Generator().manual_seed(int(seed))
    train_t, val_t, test_t = (torch.as_tensor(p) for p in (train_idx, val_idx, test_idx))
    best_loss, best_epoch, best_state = math.inf, recipe.epochs, None
    train_curve, val_curve = [], []
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = train_t[torch.randperm(train_t.numel(), generator=generator)]
        total = 0.0
        for batch in _batches(order, recipe.batch_size):
            x = inputs[batch].to(device)
            if flip:
                mask = torch.rand(batch.numel(), generator=generator) < 0.5
                x = torch.where(mask.to(device)[:, None, None, None], x.flip(-1), x)
            loss = F.binary_cross_entropy_with_logits(forward(x), y[batch.to(device)])
            if not torch.isfinite(loss):
                raise ValueError(f"init {init.name!r}: non-finite training loss at epoch {epoch} (lower recipe.lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.numel()
        scheduler.step()
        train_curve.append(total / train_t.numel())
        if val_t.numel():
            model.eval()
            val_logits = _predict(forward, inputs, val_t, recipe.eval_batch_size, device)
            val_loss = float(F.binary_cross_entropy_with_logits(val_logits, y[val_t.to(device)]))
            if not math.isfinite(val_loss):  # would never be "lowest": model selection would silently skip it
                raise ValueError(f"init {init.name!r}: non-finite validation loss at epoch {epoch} (lower recipe.lr)")
            val_curve.append(val_loss)
            if val_loss < best_loss:  # strict: the earliest of equal epochs
                best_loss, best_epoch = val_loss, epoch
                best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    logits = _predict(forward, inputs, test_t, recipe.eval_batch_size, device).double().cpu()
    scores = torch.sigmoid(logits).numpy()  # float64: float32 rounds every logit above ~17 to 1.0 (false ties)
    y_test = y_all[test_idx]
    auc = fold_auc(y_test, logits.numpy()) if test_idx.size else math.nan  # no test part: a final model
    return FoldResult(auc=auc,  # ranks the logits themselves: no rounding at all
                      y_true=y_test, y_score=scores, best_epoch=best_epoch,
                      val_loss_curve=val_curve, train_loss_curve=train_curve, model=model)
