"""Where a downstream encoder's weights come from: :class:`InitSpec` (scratch, ImageNet or a monai-modan checkpoint).

- ``scratch``: a seeded Kaiming initialisation;
- ``imagenet``: a local torchvision ``resnet18`` weights file (never downloaded);
- ``checkpoint``: a monai-modan pretraining checkpoint or exported encoder.

Every entry point that accepts weights (the experiment runner, its configs, the task bundles) goes through
:meth:`InitSpec.build_encoder`, which loads through :func:`~monai_modan.networks.export.load_encoder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from monai.utils import StrEnum

from .encoder import ResNet18Encoder, StemType, build_encoder
from .export import CheckpointError, load_encoder, refuse_torchscript

__all__ = ["IMAGENET_GREY_MEAN", "IMAGENET_GREY_STD", "IMAGENET_PREFIX", "InitKind", "InitSpec"]

IMAGENET_PREFIX = "imagenet:"
# ImageNet's per-channel normalisation (mean 0.485/0.456/0.406, std 0.229/0.224/0.225) averaged over RGB: a grey
# image g fed to the summed 1-channel stem as (g - 0.449) / 0.226 reproduces what the RGB network saw for the
# replicated grey image to within the small spread of the three channels' statistics.
IMAGENET_GREY_MEAN = 0.449
IMAGENET_GREY_STD = 0.226


class InitKind(StrEnum):
    """Where an encoder's initial weights come from (see :class:`InitSpec`)."""

    CHECKPOINT = "checkpoint"
    IMAGENET = "imagenet"
    SCRATCH = "scratch"


@dataclass(frozen=True)
class InitSpec:
    """One initialisation of the downstream encoder.

    Attributes:
        name: the name results are reported under (``"modan"``, ``"imagenet"``, ``"scratch"`` ...).
        kind: :class:`InitKind`.
        path: the weights file (``checkpoint`` and ``imagenet``).
        stem: ``scratch``: the stem built (default ``conv3x3``, the ModAn paper's variant); ``imagenet``: always
            ``conv7x7`` -- the pretrained 7x7/2 filters and ``bn1``'s statistics are kept exactly, whereas a 3x3/1
            stem would need a centre crop of each filter that is no longer the pretrained filter and would make
            every later layer see features at twice the resolution it was trained on (see
            :func:`~monai_modan.networks.from_torchvision_state_dict`); ``checkpoint``: ``None`` reads the stem from
            the weights (a given stem must match them).
        allow_torchscript: accept a TorchScript archive as the weights file. **Loading one runs code from the
            file** (see :func:`~monai_modan.networks.export.load_encoder`); off by default, so such a file is
            refused with a message on how to convert it to a state dict.
    """

    name: str
    kind: InitKind
    path: Path | None = None
    stem: StemType | None = None
    allow_torchscript: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", InitKind(self.kind))
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))
        if self.stem is not None:
            object.__setattr__(self, "stem", StemType(self.stem))
        if self.kind != InitKind.SCRATCH and self.path is None:
            raise ValueError(f"init {self.name!r}: a {self.kind} initialisation needs a weights file")
        if self.kind == InitKind.IMAGENET and self.stem not in (None, StemType.CONV7X7):
            raise ValueError(f"init {self.name!r}: ImageNet weights are used with the conv7x7 stem only")
        if not isinstance(self.allow_torchscript, bool):
            raise ValueError(f"init {self.name!r}: allow_torchscript must be True or False, got "
                             f"{self.allow_torchscript!r}")

    @classmethod
    def parse(cls, name: str, value: str | Path | None, allow_torchscript: bool = False) -> InitSpec:
        """``None``/``"scratch"`` -> scratch; ``"imagenet:<path>"`` -> a local torchvision ``resnet18`` file; any
        other value -> the path of a monai-modan pretraining checkpoint or exported encoder.

        ``allow_torchscript`` (off by default) lets the weights file be a TorchScript archive, whose loading runs
        code from the file (see :attr:`allow_torchscript`).

        Raises:
            FileNotFoundError: the weights file does not exist (names the init).
            CheckpointError: the weights file is a TorchScript archive and ``allow_torchscript`` is off (only the
                zip's member names are read; :meth:`build_encoder` checks again).
            ValueError: an empty name or ``"imagenet:"`` without a path.
        """
        name = str(name)
        if not name.strip():
            raise ValueError(f"an init needs a non-empty name, got {name!r}")
        text = None if value is None else str(value).strip()
        if text is None or text.lower() == InitKind.SCRATCH:
            return cls(name, InitKind.SCRATCH, stem=StemType.CONV3X3, allow_torchscript=allow_torchscript)
        if text.lower().startswith(IMAGENET_PREFIX):
            path_text = text[len(IMAGENET_PREFIX):].strip()
            if not path_text:
                raise ValueError(f"init {name!r}: {value!r} names no file; write 'imagenet:/path/resnet18.pth' (a "
                                 "local torchvision resnet18 weights file: nothing is downloaded)")
            kind, path = InitKind.IMAGENET, Path(path_text).expanduser()
        elif not text:
            raise ValueError(f"init {name!r}: empty value (use 'scratch', 'imagenet:<path>' or a checkpoint path)")
        else:
            kind, path = InitKind.CHECKPOINT, Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"init {name!r}: weights file {path} not found")
        if allow_torchscript is not True:  # refuse at configuration time, before any run starts
            try:
                refuse_torchscript(path)
            except CheckpointError as e:
                raise CheckpointError(f"init {name!r} ({kind}): {e}") from None
        return cls(name, kind, path, StemType.CONV7X7 if kind == InitKind.IMAGENET else None,
                   allow_torchscript=allow_torchscript)

    @property
    def value(self) -> str:
        """The inverse of :meth:`parse`: ``"scratch"``, ``"imagenet:<path>"`` or the checkpoint path."""
        if self.kind == InitKind.SCRATCH:
            return InitKind.SCRATCH.value
        return f"{IMAGENET_PREFIX}{self.path}" if self.kind == InitKind.IMAGENET else str(self.path)

    @property
    def seed_dependent(self) -> bool:
        """Whether :meth:`build_encoder` depends on its seed (only a scratch init does)."""
        return self.kind == InitKind.SCRATCH

    @property
    def input_norm(self) -> tuple[float, float]:
        """``(mean, std)`` applied to the ``[0, 1]`` grey input: ImageNet's grey statistics for ImageNet weights,
        identity otherwise (monai-modan pretraining sees ``[0, 1]`` images)."""
        if self.kind == InitKind.IMAGENET:
            return IMAGENET_GREY_MEAN, IMAGENET_GREY_STD
        return 0.0, 1.0

    def describe(self) -> str:
        """One line for the report."""
        if self.kind == InitKind.SCRATCH:
            return f"{self.name}: random (Kaiming) initialisation, seeded per repeat, {self.stem} stem"
        if self.kind == InitKind.IMAGENET:
            return (f"{self.name}: ImageNet torchvision resnet18 weights from {self.path.name}, conv7x7 stem kept, RGB "
                    f"conv1 filters summed to one channel, input standardised with ImageNet's grey mean "
                    f"{IMAGENET_GREY_MEAN} / std {IMAGENET_GREY_STD}")
        return f"{self.name}: pretrained encoder {self.path.name} (stem read from the weights), input in [0, 1]"

    def build_encoder(self, seed: int = 0) -> ResNet18Encoder:
        """A fresh ``ResNet18Encoder`` (training mode) ``[B, 1, H, W]`` -> ``[B, 512]`` holding this init's weights.

        ``seed`` drives the scratch initialisation (the global RNG is left untouched); pretrained weights ignore it.

        Raises:
            FileNotFoundError: the weights file has gone.
            CheckpointError: the file is not encoder weights, does not fit the ResNet-18, or is a TorchScript
                archive and :attr:`allow_torchscript` is off (message names the init).
        """
        if self.kind == InitKind.SCRATCH:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                return build_encoder(self.stem or StemType.CONV3X3)
        try:
            return load_encoder(self.path, stem=self.stem, allow_torchscript=self.allow_torchscript)
        except FileNotFoundError:
            raise FileNotFoundError(f"init {self.name!r}: weights file {self.path} not found") from None
        except CheckpointError as e:
            raise CheckpointError(f"init {self.name!r} ({self.kind}): {e}") from None
