"""ResNet-18 encoders (MONAI's ``ResNet``, 2D) and the heads put on them for pretraining.

The ModAn paper's encoder is "a ResNet-18 with a 1-channel 3x3 stride-1 stem, other layers unchanged" and is
quoted at 6.81 GMAC per 224x224 view, 3.75x a standard ResNet-18 (1.82 GMAC). Multiply-accumulates of every conv
and linear layer, counted with forward hooks (as ``tests/networks/test_networks.py`` does) on MONAI's ``resnet18`` with a
1000-class fc (0.5 M MAC, absent from the encoder):

=====================================================  ===========  ========
variant (one 224x224 image)                            MAC          ratio
=====================================================  ===========  ========
standard: RGB, 7x7/2 stem, max-pool                    1.814 G      1
1 channel, 7x7/2 stem, max-pool (``CONV7X7``)          1.735 G      0.96
1 channel, 3x3/1 stem, max-pool kept (``CONV3X3``)     6.812 G      3.75
1 channel, 3x3/1 stem, no max-pool                     27.158 G     14.97
=====================================================  ===========  ========

So the paper's variant keeps the 3x3/2 max-pool: the stem output is 224x224, ``layer1`` runs at 112x112
(4x the area of the standard 56x56), hence ~4x the MACs of every residual stage.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
from monai.networks.nets.resnet import ResNet, ResNetBlock, get_inplanes
from monai.utils import StrEnum

__all__ = ["StemType", "stem_kwargs", "ResNet18Encoder", "build_encoder", "projection_head", "ContrastiveModel",
           "HybridOutput", "HybridModel", "SupervisedModel"]

FEATURE_DIM = 512  # ResNet-18 layer4 channels = size of the pooled feature vector


class StemType(StrEnum):
    """First convolution of the ResNet-18.

    - ``conv3x3``: 3x3 kernel, stride 1, padding 1, max-pool kept -- the ModAn paper's variant (6.81 GMAC at 224^2).
    - ``conv7x7``: the standard 7x7 kernel, stride 2, padding 3, then max-pool -- what the authors' released code
      used, and the only stem ImageNet (torchvision) weights fit exactly.
    """

    CONV3X3 = "conv3x3"
    CONV7X7 = "conv7x7"


_STEMS = {
    StemType.CONV3X3: {"conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": False},
    StemType.CONV7X7: {"conv1_t_size": 7, "conv1_t_stride": 2, "no_max_pool": False},
}


def stem_kwargs(stem: StemType | str) -> dict:
    """The ``monai.networks.nets.resnet18`` arguments that select ``stem``.

    ``resnet18(spatial_dims=2, n_input_channels=1, **stem_kwargs(stem), num_classes=k)`` is the plain MONAI network
    that an exported encoder state dict loads into (``strict=False`` leaves only ``fc.weight``/``fc.bias`` missing).
    """
    return dict(_STEMS[StemType(stem)])


class ResNet18Encoder(ResNet):
    """MONAI 2D ResNet-18 without its classification layer: ``[B, C, H, W]`` -> pooled features ``[B, 512]``.

    Built as MONAI's ``ResNet`` with ``feed_forward=False`` (``fc`` is ``None``), so the parameter names are those
    of ``monai.networks.nets.resnet18`` -- its state dict *is* the plain MONAI state dict minus ``fc.*``. The other
    arguments are MONAI's ``resnet18`` defaults (basic blocks [2, 2, 2, 2], shortcut "B" = 1x1 conv + BN,
    ``bias_downsample=True``). Works for any H, W >= 1 (adaptive average pooling); the input is in whatever
    intensity units the transforms produce.

    Args:
        stem: ``StemType`` (or its string value).
        in_channels: C, number of input channels (1 for grey-level medical images).
    """

    feature_dim: int = FEATURE_DIM

    def __init__(self, stem: StemType | str = StemType.CONV3X3, in_channels: int = 1) -> None:
        stem = StemType(stem)
        super().__init__(
            block=ResNetBlock,
            layers=[2, 2, 2, 2],
            block_inplanes=get_inplanes(),
            spatial_dims=2,
            n_input_channels=in_channels,
            feed_forward=False,
            **stem_kwargs(stem),
        )
        self.stem = stem
        self.in_channels = in_channels


def build_encoder(stem: StemType | str = StemType.CONV3X3, in_channels: int = 1) -> ResNet18Encoder:
    """A freshly initialised (Kaiming) ``ResNet18Encoder``; see :class:`StemType` for the stems."""
    return ResNet18Encoder(stem=stem, in_channels=in_channels)


def projection_head(feature_dim: int = FEATURE_DIM, projection_dim: int = 128, hidden_dim: int = 512,
                    batch_norm: bool = True) -> nn.Sequential:
    """The MLP projection head of :class:`ContrastiveModel`: ``[B, feature_dim]`` -> ``[B, projection_dim]``."""
    return nn.Sequential(
        nn.Linear(feature_dim, hidden_dim, bias=not batch_norm),  # a bias before BatchNorm is redundant
        nn.BatchNorm1d(hidden_dim) if batch_norm else nn.Identity(),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, projection_dim),
    )


class ContrastiveModel(nn.Module):
    """Encoder + MLP projection head for contrastive pretraining (SimCLR-style).

    head = Linear(512, hidden_dim) -> BatchNorm1d -> ReLU -> Linear(hidden_dim, projection_dim). SimCLR v1 used
    Linear-ReLU-Linear; the BatchNorm (as in SimCLR v2 / MoCo v3 heads) keeps the head's scale stable at the large
    batch sizes of pretraining. Note that in training mode BatchNorm1d needs B > 1. The head is thrown away after
    pretraining; downstream tasks use ``.encoder`` (or ``forward_features``).

    ``forward`` returns the projections ``[B, projection_dim]`` *not* L2-normalised: the contrastive loss
    normalises them (as ``monai.losses.ContrastiveLoss`` does).

    Args:
        encoder: module mapping ``[B, C, H, W]`` -> ``[B, encoder.feature_dim]``.
        projection_dim: size of the embedding the loss sees.
        hidden_dim: width of the head's hidden layer.
        batch_norm: set False for the SimCLR v1 head (no BatchNorm).
    """

    def __init__(
        self, encoder: ResNet18Encoder, projection_dim: int = 128, hidden_dim: int = 512, batch_norm: bool = True
    ) -> None:
        super().__init__()
        self.encoder = encoder
        feature_dim = getattr(encoder, "feature_dim", FEATURE_DIM)
        self.projection = projection_head(feature_dim, projection_dim, hidden_dim, batch_norm)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> encoder features ``[B, 512]``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> projections ``[B, projection_dim]`` (not normalised)."""
        return self.projection(self.encoder(x))


class HybridOutput(NamedTuple):
    """What :class:`HybridModel` returns: the projections of its two heads, each ``[B, projection_dim]``, not
    normalised -- ``metadata`` for the MulSupCon term, ``instance`` for the NT-Xent term of
    :class:`~monai_modan.losses.HybridContrastiveLoss`."""

    metadata: torch.Tensor
    instance: torch.Tensor


class HybridModel(ContrastiveModel):
    """Encoder + two projection heads of :class:`ContrastiveModel`'s shape, one per term of the hybrid loss.

    Both heads read the same encoder features; ``projection`` (named as in :class:`ContrastiveModel`) feeds the
    metadata term, ``instance_projection`` the instance term, so each term shapes its own embedding space and the
    encoder features must serve both (as SLIP's separate heads for its CLIP and SimCLR terms; Mu et al., ECCV 2022).
    The heads are thrown away after pretraining, as :class:`ContrastiveModel`'s.

    Args:
        encoder: module mapping ``[B, C, H, W]`` -> ``[B, encoder.feature_dim]``.
        projection_dim, hidden_dim, batch_norm: of each head, as :class:`ContrastiveModel`.
    """

    def __init__(
        self, encoder: ResNet18Encoder, projection_dim: int = 128, hidden_dim: int = 512, batch_norm: bool = True
    ) -> None:
        super().__init__(encoder, projection_dim, hidden_dim, batch_norm)
        feature_dim = getattr(encoder, "feature_dim", FEATURE_DIM)
        self.instance_projection = projection_head(feature_dim, projection_dim, hidden_dim, batch_norm)

    def forward(self, x: torch.Tensor) -> HybridOutput:  # type: ignore[override]
        """``[B, C, H, W]`` -> :class:`HybridOutput` (two ``[B, projection_dim]`` projections, not normalised)."""
        features = self.encoder(x)
        return HybridOutput(self.projection(features), self.instance_projection(features))


class SupervisedModel(nn.Module):
    """Encoder + linear classifier: ``[B, C, H, W]`` -> logits ``[B, num_classes]``.

    Used for the supervised baseline (e.g. 165-class RadImageNet) and for fine-tuning / linear probing.
    """

    def __init__(self, encoder: ResNet18Encoder, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.classifier = nn.Linear(getattr(encoder, "feature_dim", FEATURE_DIM), num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> encoder features ``[B, 512]``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))
