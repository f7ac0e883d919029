"""Encoder weights in and out: plain MONAI state dicts, torchvision's ResNet-18 layout, TorchScript.

Key layouts (ResNet-18, 2D). MONAI's ``resnet18`` and torchvision's ``resnet18`` use the same parameter names
(``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ``fc.*`` ...); they
differ in one thing: MONAI's 1x1 shortcut convolutions carry a bias (``layer{2,3,4}.0.downsample.0.bias``,
``bias_downsample=True`` by default) and torchvision's do not. That bias feeds straight into a BatchNorm, so it is
folded exactly into the BatchNorm's running mean (``running_mean - bias``): in eval mode
``BN(Wx + b) == BN'(Wx)``, and in training mode batch statistics cancel a constant bias anyway.

Checkpoints are always read with ``torch.load(..., weights_only=True)``. TorchScript archives (code + weights) are
recognised by their ``constants.pkl`` zip member (the names are listed, nothing is unpickled) and refused: loading one
runs code from the file (a scripted module's ``__setstate__`` executes inside ``torch.jit.load``). Only a caller that
passes ``allow_torchscript=True`` gets them read with ``torch.jit.load``.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
from monai.utils import StrEnum

from monai_modan.utils.io import atomic_path

from .encoder import ResNet18Encoder, StemType

__all__ = [
    "ExportFormat",
    "CheckpointError",
    "encoder_state_dict",
    "to_torchvision_state_dict",
    "from_torchvision_state_dict",
    "export_encoder",
    "load_encoder",
    "refuse_torchscript",
]

# prefixes added by DistributedDataParallel/DataParallel (module.) and torch.compile (_orig_mod.)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# where a training checkpoint ``{"model": state_dict, "optimizer": ..., ...}`` keeps the network weights
_CHECKPOINT_MODEL_KEYS = ("model", "state_dict", "network", "encoder")
_STEM_BY_KERNEL = {3: StemType.CONV3X3, 7: StemType.CONV7X7}
_SHORTCUTS = tuple(f"layer{i}.0.downsample" for i in (2, 3, 4))  # .0 = 1x1 conv, .1 = BatchNorm
_MAX_NAMED = 5  # how many offending keys an error message names


class ExportFormat(StrEnum):
    """``monai``: plain state dict for ``monai.networks.nets.resnet18`` (no ``fc``); ``torchvision``: plain state
    dict in torchvision's ``resnet18`` layout (no ``fc``); ``torchscript``: a scripted encoder ``[B, C, H, W]`` ->
    ``[B, 512]`` in eval mode, loadable without monai-modan (``torch.jit.load``)."""

    MONAI = "monai"
    TORCHVISION = "torchvision"
    TORCHSCRIPT = "torchscript"


class CheckpointError(ValueError):
    """A file or state dict is not usable encoder weights; the message names the file and the cause."""


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _select_encoder(state_dict: Mapping, source: str) -> dict[str, torch.Tensor]:
    """Encoder entries of a model/encoder state dict: wrapper prefixes stripped, ``encoder.`` sub-tree chosen when
    present (heads such as ``projection.*``/``classifier.*`` dropped), a plain network's ``fc.*`` dropped."""
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: not a state dict, non-tensor values under {bad[:_MAX_NAMED]}")
    sd = {_strip_wrappers(str(k)): v for k, v in state_dict.items()}
    if any(k.startswith("encoder.") for k in sd):
        sd = {_strip_wrappers(k[len("encoder.") :]): v for k, v in sd.items() if k.startswith("encoder.")}
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def _stem_of(sd: Mapping[str, torch.Tensor], source: str) -> StemType:
    weight = sd.get("conv1.weight")
    if weight is None or weight.ndim != 4:
        raise CheckpointError(f"{source}: no 2D 'conv1.weight' -- not ResNet encoder weights")
    kernel = weight.shape[-1]
    if kernel not in _STEM_BY_KERNEL:
        raise CheckpointError(f"{source}: conv1 kernel {tuple(weight.shape[-2:])} matches no stem (3x3 or 7x7)")
    return _STEM_BY_KERNEL[kernel]


@lru_cache(maxsize=None)
def _reference_shapes(stem: StemType, in_channels: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only, no memory, no initialisation cost
        reference = ResNet18Encoder(stem, in_channels)
    return {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def _check_architecture(sd: Mapping[str, torch.Tensor], stem: StemType, in_channels: int, source: str) -> None:
    """Raise ``CheckpointError`` naming the first missing/unexpected/mis-shaped keys against ``ResNet18Encoder``."""
    expected = _reference_shapes(stem, in_channels)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mis_shaped = [
        f"{k} {tuple(sd[k].shape)} != {shape}" for k, shape in expected.items() if k in sd and sd[k].shape != shape
    ]
    problems = [
        f"{name} ({len(keys)}): {', '.join(keys[:_MAX_NAMED])}{' ...' if len(keys) > _MAX_NAMED else ''}"
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mis_shaped))
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source}: weights do not fit the ResNet-18 encoder (stem {stem}, {in_channels} input channel(s)); "
            + "; ".join(problems)
        )


def encoder_state_dict(model: nn.Module | Mapping) -> dict[str, torch.Tensor]:
    """Encoder-only weights, keyed as plain ``monai.networks.nets.resnet18(spatial_dims=2, ...)`` minus ``fc.*``.

    Args:
        model: a ``ResNet18Encoder``, ``ContrastiveModel``/``HybridModel``/``SupervisedModel`` (heads dropped), either
            wrapped in DDP or ``torch.compile``, or such a model's state dict.

    Returns:
        detached CPU copies, so ``resnet18(spatial_dims=2, n_input_channels=C, **stem_kwargs(stem),
        num_classes=k).load_state_dict(sd, strict=False)`` reports only ``fc.weight``/``fc.bias`` missing.

    Raises:
        CheckpointError: the weights are not those of a ResNet-18 encoder.
    """
    source = type(model).__name__
    sd = _select_encoder(model.state_dict() if isinstance(model, nn.Module) else model, source)
    stem = _stem_of(sd, source)
    _check_architecture(sd, stem, sd["conv1.weight"].shape[1], source)
    return {k: v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True) for k, v in sd.items()}


def _is_torchvision_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(f"{s}.0.weight" in sd for s in _SHORTCUTS) and not any(f"{s}.0.bias" in sd for s in _SHORTCUTS)


def to_torchvision_state_dict(encoder_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MONAI-layout encoder weights -> torchvision ``resnet18`` layout (no ``fc``), numerically equivalent.

    The shortcut-conv biases ``layer{2,3,4}.0.downsample.0.bias`` (absent in torchvision) are folded into the
    following BatchNorm: ``downsample.1.running_mean -= downsample.0.bias``. All other names are identical.
    Load into torchvision with ``strict=False`` (only ``fc.*`` missing) or replace its ``fc`` first.
    """
    sd = encoder_state_dict(encoder_sd)
    for shortcut in _SHORTCUTS:
        bias = sd.pop(f"{shortcut}.0.bias")
        sd[f"{shortcut}.1.running_mean"] = sd[f"{shortcut}.1.running_mean"] - bias
    return sd


def from_torchvision_state_dict(
    state_dict: Mapping[str, torch.Tensor], stem: StemType | str | None = None, in_channels: int = 1
) -> dict[str, torch.Tensor]:
    """torchvision ``resnet18`` weights (e.g. the ImageNet ``.pth``) -> MONAI-layout encoder weights.

    - ``fc.*`` is dropped; zero shortcut biases are added (exact: torchvision has none).
    - RGB -> 1 channel: the three input filters of ``conv1`` are summed. A grey image ``g`` replicated to RGB gives
      ``sum_c W_c * g = (sum_c W_c) * g``, so the summed filter reproduces the RGB network's activations exactly
      when every channel would have received the same values. With ImageNet's per-channel mean/std the channels
      differ slightly (std 0.229/0.224/0.225), so it is then a close approximation, not an identity.
    - Stem: the weights' own stem is the 7x7/2 one, and ``stem=None`` (or ``conv7x7``) keeps it exactly -- use the
      ``conv7x7`` encoder for an ImageNet baseline. ``stem="conv3x3"`` with 7x7 weights centre-crops each filter to
      3x3 and warns: the cropped filter is not the pretrained one, ``bn1``'s statistics no longer match it and the
      stride-1 stem makes every later layer see features at twice the resolution it was trained on.

    Args:
        state_dict: torchvision-layout weights (``module.``/``_orig_mod.`` prefixes are stripped).
        stem: target stem; None takes it from the ``conv1`` kernel size.
        in_channels: target input channels; 3 -> 1 by summing is the only conversion.

    Raises:
        CheckpointError: the weights do not fit (names the keys) or the conversion is not defined.
    """
    source = "torchvision state dict"
    sd = _select_encoder(state_dict, source)
    source_stem = _stem_of(sd, source)
    stem = source_stem if stem is None else StemType(stem)
    weight = sd["conv1.weight"]
    if weight.shape[1] != in_channels:
        if in_channels != 1:
            raise CheckpointError(f"{source}: cannot convert conv1 from {weight.shape[1]} to {in_channels} channels")
        weight = weight.sum(dim=1, keepdim=True)
    if stem != source_stem:
        if stem != StemType.CONV3X3:
            raise CheckpointError(f"{source}: a {source_stem} conv1 cannot initialise a {stem} stem")
        warnings.warn(
            "from_torchvision_state_dict: ImageNet conv1 is 7x7/stride 2; the conv3x3 stem gets its centre 3x3 crop, "
            "an approximation (bn1 statistics no longer match, later layers see 2x finer features). "
            "Use stem='conv7x7' to keep the pretrained network exact.",
            UserWarning,
            stacklevel=2,
        )
        weight = weight[..., 2:5, 2:5]
    sd["conv1.weight"] = weight.contiguous()
    for shortcut in _SHORTCUTS:
        if f"{shortcut}.0.weight" in sd:
            sd.setdefault(f"{shortcut}.0.bias", torch.zeros(sd[f"{shortcut}.0.weight"].shape[0], dtype=weight.dtype))
    for name in _reference_shapes(stem, in_channels):  # torchvision's oldest .pth files predate this buffer
        if name.endswith("num_batches_tracked"):
            sd.setdefault(name, torch.tensor(0, dtype=torch.long))
    _check_architecture(sd, stem, in_channels, source)
    return sd


def export_encoder(model: nn.Module | Mapping, path: str | Path, fmt: ExportFormat | str = ExportFormat.MONAI) -> Path:
    """Write the encoder of ``model`` to ``path`` atomically (see :class:`ExportFormat`); returns ``path``.

    The TorchScript export is a fresh ``ResNet18Encoder`` holding the weights, scripted in eval mode (BatchNorm uses
    running statistics). ``torch.jit`` is deprecated in recent PyTorch but remains MONAI's deployment format
    (``monai.bundle ckpt_export``); its deprecation warnings are silenced here.
    """
    fmt = ExportFormat(fmt)
    sd = encoder_state_dict(model)
    with atomic_path(path) as tmp:
        if fmt == ExportFormat.MONAI:
            torch.save(sd, tmp)
        elif fmt == ExportFormat.TORCHVISION:
            torch.save(to_torchvision_state_dict(sd), tmp)
        else:
            encoder = _encoder_from(sd, _stem_of(sd, str(path)), in_channels=sd["conv1.weight"].shape[1])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(torch.jit.script(encoder.eval()), str(tmp))
    return Path(path)


def _encoder_from(sd: Mapping[str, torch.Tensor], stem: StemType, in_channels: int) -> ResNet18Encoder:
    """A ``ResNet18Encoder`` holding ``sd`` (checked), built on the meta device to skip a useless initialisation."""
    with torch.device("meta"):
        encoder = ResNet18Encoder(stem, in_channels)
    encoder.load_state_dict({k: v.contiguous() for k, v in sd.items()}, strict=True, assign=True)
    return encoder


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip with a ``constants.pkl`` member, the test ``torch.load`` uses
    to dispatch to ``torch.jit.load``. Only the zip directory is read."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):  # a damaged directory: torch.load(weights_only=True) refuses it
        return False


def refuse_torchscript(path: str | Path) -> None:
    """Raise :class:`CheckpointError` when ``path`` is a TorchScript archive (which can run code on load).

    The check lists the zip's member names only; nothing from the file is unpickled or executed. The one-line
    message names the file, the risk, how to convert the archive to a plain state dict in a trusted session and how
    to opt in (``allow_torchscript=True``).
    """
    path = Path(path)
    if path.is_file() and _is_torchscript(path):
        raise CheckpointError(
            f"{path}: a TorchScript archive (code + weights), refused because loading it runs code from the file "
            f"(torch.jit.load executes the scripted modules' __setstate__); convert it once in a trusted session with "
            f"`torch.save(torch.jit.load({str(path)!r}).state_dict(), 'encoder_state_dict.pt')` and load that file, "
            "or, only for a file you trust, opt in with allow_torchscript=True (experiment: --allow-torchscript or "
            "`allow_torchscript: true`; bundles: --allow_torchscript True)"
        )


def _unpickler_reason(error: Exception) -> str:
    """The specific cause inside torch's long weights-only error text (e.g. "Unsupported global: GLOBAL print ...")."""
    detail = str(error).partition("WeightsUnpickler error:")[2].split("Check the documentation")[0]
    return " ".join(detail.split()).split(". Please use")[0] or type(error).__name__


def _find_state_dict(obj: object, source: str, where: str = "the top level") -> Mapping:
    """The state dict in a loaded object: itself, or under ``model``/``state_dict``/``network``/``encoder``."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: {where} holds a {type(obj).__name__}, not a state dict")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in _CHECKPOINT_MODEL_KEYS:
        if key in obj:
            return _find_state_dict(obj[key], source, where=f"entry {key!r}")
    keys = [str(k) for k in obj][:_MAX_NAMED]
    raise CheckpointError(
        f"{source}: no state dict found at {where} (keys {keys}): expected tensors, or a checkpoint with one of "
        f"the entries {list(_CHECKPOINT_MODEL_KEYS)}"
    )


def load_encoder(
    path: str | Path,
    stem: StemType | str | None = None,
    in_channels: int = 1,
    map_location: str = "cpu",
    *,
    allow_torchscript: bool = False,
) -> ResNet18Encoder:
    """Load encoder weights from any format :func:`export_encoder` writes, or from a training checkpoint.

    Accepted: a MONAI-layout or torchvision-layout state dict (torchvision RGB weights are converted by
    :func:`from_torchvision_state_dict`); a checkpoint ``{"model": state_dict, ...}`` whose model is a
    ``ContrastiveModel``/``SupervisedModel``/``ResNet18Encoder``, possibly DDP- or compile-wrapped (``module.``,
    ``_orig_mod.`` and ``encoder.`` prefixes stripped, heads ignored); a TorchScript encoder only with
    ``allow_torchscript=True``.

    This is the one loader of encoder weights: every entry point (``InitSpec.build_encoder``, the experiment runner
    and CLI, the bundles) reads weights through it.

    Args:
        path: the file.
        stem: expected stem; None takes it from the ``conv1`` kernel size (3x3 or 7x7). For torchvision 7x7
            weights, ``conv3x3`` centre-crops the stem with a warning (see :func:`from_torchvision_state_dict`).
        in_channels: input channels of the returned encoder.
        map_location: device for the returned encoder's weights.
        allow_torchscript: read a TorchScript archive with ``torch.jit.load``. **This runs code from the file** (a
            scripted module's ``__setstate__`` executes during loading, with the rights of this process): pass True
            only for a file you trust. By default such a file is refused (see :func:`refuse_torchscript`).

    Returns:
        a ``ResNet18Encoder`` in training mode (call ``.eval()`` for inference), ``[B, C, H, W]`` -> ``[B, 512]``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a weights file, a TorchScript archive without ``allow_torchscript=True``, refused by
            ``weights_only`` loading, or weights that do not fit (the message names the first offending keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    source = str(path)
    if not isinstance(allow_torchscript, bool):  # "false" from a config file must not read as True
        raise TypeError(f"{source}: allow_torchscript must be True or False, got {allow_torchscript!r} (bundles: "
                        "write --allow_torchscript True)")
    if _is_torchscript(path):
        if not allow_torchscript:
            refuse_torchscript(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                obj: object = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:  # torch raises RuntimeError for most damage, but not only
            raise CheckpointError(f"{source}: unreadable TorchScript archive ({type(e).__name__}: {e})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{source}: refused by torch.load(weights_only=True) -- not a PyTorch weights file, or it holds "
                f"objects other than tensors and plain containers ({_unpickler_reason(e)})"
            ) from None
        except Exception as e:  # random bytes raise IndexError, EOFError, RuntimeError ... depending on content
            raise CheckpointError(f"{source}: not a PyTorch weights file ({type(e).__name__}: {e})") from None
    sd = _select_encoder(_find_state_dict(obj, source), source)
    if _is_torchvision_layout(sd):
        try:
            sd = from_torchvision_state_dict(sd, stem=stem, in_channels=in_channels)
        except CheckpointError as e:
            raise CheckpointError(f"{source}: {e}") from None
    file_stem = _stem_of(sd, source)
    if stem is not None and StemType(stem) != file_stem:
        raise CheckpointError(f"{source}: weights have the {file_stem} stem, {StemType(stem)} was requested")
    _check_architecture(sd, file_stem, in_channels, source)
    return _encoder_from(sd, file_stem, in_channels).to(map_location)
