"""SparK masked image modelling for the ResNet-18 encoder (Tian et al., "Designing BERT for convolutional networks:
sparse and hierarchical masked modeling", ICLR 2023).

A random share of the patches of every image is hidden; the encoder sees only the visible ("active") patches, as a
sparse convolutional network would, and a light UNet-style decoder reconstructs the hidden ones from the encoder's
four stages. The pieces, top-down:

- :class:`RandomPatchMask`: the mask, one cell per patch on the encoder's output grid (patch side = the encoder's
  total downsampling: 16 px for the 3x3/1 stem + max-pool, 32 px for the 7x7/2 stem), drawn on the device.
- :func:`sparse_resnet_features`: the encoder's forward as a sparse network. The input's masked patches are zeroed,
  and after every convolution, pooling and BatchNorm the features at masked positions are zeroed again (the mask
  repeated to each stage's resolution, :class:`MaskPyramid`), so nothing computed at a masked position ever reaches an
  active one; BatchNorm takes its statistics from active positions only (:func:`sparse_batch_norm`). The encoder is
  an ordinary :class:`~monai_modan.networks.encoder.ResNet18Encoder`: its weights are dense weights, and after
  pretraining its own ``forward`` is the usual dense one (``export_encoder`` writes it like any other encoder).
- :class:`Densify`: per scale, sparse BatchNorm on the active features, masked positions filled with a learned mask
  token, a projection to the decoder's width at that scale.
- :class:`SparKDecoder`: x2 upsampling blocks with halving widths, to full resolution, 1 output channel.
- :class:`SparKModel`: all of it, ``[B, 1, S, S]`` -> :class:`SparKOutput` (reconstruction, mask); the loss is
  :class:`~monai_modan.losses.spark.MaskedReconstructionLoss`.

Shapes: ``B`` images, ``S`` image side in pixels, ``p`` patch side, ``g = S / p`` mask grid side, ``L = g^2`` patches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from monai_modan.utils.device import same_device

from .encoder import ResNet18Encoder

__all__ = [
    "DEFAULT_MASK_RATIO",
    "DEFAULT_DECODER_WIDTH",
    "encoder_downsampling",
    "RandomPatchMask",
    "MaskPyramid",
    "sparse_batch_norm",
    "sparse_resnet_features",
    "Densify",
    "UpsampleBlock",
    "SparKDecoder",
    "SparKOutput",
    "SparKModel",
]

DEFAULT_MASK_RATIO = 0.6  # SparK's default share of masked patches
DEFAULT_DECODER_WIDTH = 256  # channels at the deepest scale; SparK uses 768 for ResNet-50 (see docs/pretraining.md)
_LAYERS = ("layer1", "layer2", "layer3", "layer4")


def encoder_downsampling(encoder: ResNet18Encoder) -> int:
    """Total downsampling of the encoder's deepest feature map (pixels per ``layer4`` cell): conv1 stride x max-pool
    stride x the first strides of the four stages; 16 for the ``conv3x3`` stem, 32 for ``conv7x7``."""
    factor = int(encoder.conv1.stride[0])
    if not encoder.no_max_pool:
        stride = encoder.maxpool.stride
        factor *= int(stride if isinstance(stride, int) else stride[0])
    for name in _LAYERS:
        factor *= int(getattr(encoder, name)[0].stride)
    return factor


# ---------------------------------------------------------------------------------------------------------- mask
class RandomPatchMask:
    """Random patch masks for ``image_size``-pixel images cut into ``patch_size``-pixel patches.

    Each call draws, for every image, ``num_active = round(L (1 - mask_ratio))`` visible patches uniformly without
    replacement (the smallest of ``L`` uniform numbers on the device, ``argsort``; no Python loop, no host sync) and
    returns ``active [B, 1, g, g]`` bool, True where a patch stays visible.

    Args:
        image_size: ``S``, side of the (square) images in pixels; a multiple of ``patch_size``.
        patch_size: ``p``, side of a patch in pixels (the encoder's total downsampling).
        mask_ratio: share of patches hidden, in (0, 1); SparK's default 0.6.

    Raises:
        ValueError: ``image_size`` not a positive multiple of ``patch_size``, ``mask_ratio`` outside (0, 1), or a
            grid on which the ratio would leave no visible or no hidden patch.
    """

    def __init__(self, image_size: int, patch_size: int, mask_ratio: float = DEFAULT_MASK_RATIO) -> None:
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int (pixels), got {patch_size!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1 or image_size % patch_size:
            nearest = ""
            if isinstance(image_size, int) and not isinstance(image_size, bool) and image_size > 0:
                below = image_size // patch_size * patch_size
                nearest = f", e.g. {' or '.join(str(n) for n in (below, below + patch_size) if n > 0)}"
            raise ValueError(f"image_size={image_size!r} must be a positive multiple of the {patch_size}-pixel mask "
                             f"patch (the encoder's total downsampling){nearest}")
        if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={mask_ratio!r} must be a share of patches in (0, 1)")
        self.image_size, self.patch_size, self.mask_ratio = image_size, patch_size, float(mask_ratio)
        self.grid = image_size // patch_size
        patches = self.grid**2
        self.num_active = round(patches * (1.0 - self.mask_ratio))
        if not 1 <= self.num_active <= patches - 1:
            raise ValueError(
                f"mask_ratio={mask_ratio:g} on a {self.grid}x{self.grid} patch grid (image_size={image_size}, "
                f"{patch_size}-pixel patches) keeps {self.num_active} of {patches} patches visible: at least one "
                "patch must stay visible and one be hidden -- use larger images or another mask_ratio")

    @property
    def num_patches(self) -> int:
        """``L = g^2``, patches per image."""
        return self.grid**2

    def __call__(self, batch: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``[batch, 1, g, g]`` bool masks on ``device`` (True = visible), from ``generator`` (on ``device``; ``None``:
        the device's default generator, which ``torch.manual_seed`` seeds)."""
        device = torch.device(device)
        if generator is not None and not same_device(generator.device, device):
            raise ValueError(f"the mask generator is on {generator.device}, the images on {device}: draw masks with a "
                             "generator on the images' device")
        noise = torch.rand(batch, self.num_patches, device=device, generator=generator)
        keep = noise.argsort(dim=1)[:, : self.num_active]
        active = torch.zeros(batch, self.num_patches, dtype=torch.bool, device=device)
        return active.scatter_(1, keep, True).view(batch, 1, self.grid, self.grid)


class MaskPyramid:
    """The active mask ``[B, 1, g, g]`` at every resolution of the encoder: ``at(x)`` is ``[B, 1, H, W]`` in ``x``'s
    dtype, 1 at active and 0 at masked positions, for a feature map ``x`` whose side is a multiple of ``g`` (each grid
    cell repeated ``H / g`` times per axis). Each (resolution, dtype) is built once per forward.
    """

    def __init__(self, active: torch.Tensor) -> None:
        if active.dtype != torch.bool or active.ndim != 4 or active.shape[1] != 1:
            raise ValueError(f"active must be a bool mask [B, 1, g, g], got {active.dtype} {tuple(active.shape)}")
        self.active = active
        self._cache: dict[tuple[int, int, torch.dtype], torch.Tensor] = {}

    def at(self, x: torch.Tensor) -> torch.Tensor:
        """The mask for feature map ``x`` ``[B, C, H, W]``, as ``[B, 1, H, W]`` in ``x.dtype``."""
        height, width = x.shape[-2:]
        key = (height, width, x.dtype)
        if key not in self._cache:
            b, _, gh, gw = self.active.shape
            if x.shape[0] != b or height % gh or width % gw:
                raise ValueError(f"a feature map {tuple(x.shape)} does not fit the mask {tuple(self.active.shape)}: "
                                 "its batch must match and its sides be multiples of the mask grid")
            fh, fw = height // gh, width // gw
            mask = self.active[:, :, :, None, :, None].expand(b, 1, gh, fh, gw, fw).reshape(b, 1, height, width)
            self._cache[key] = mask.to(x.dtype)
        return self._cache[key]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with its masked positions set to zero (a new tensor)."""
        return x * self.at(x)


# ------------------------------------------------------------------------------------------------- sparse layers
def sparse_batch_norm(x: torch.Tensor, masks: MaskPyramid, bn: nn.BatchNorm2d) -> torch.Tensor:
    """BatchNorm over the active positions only, as if they were a 1-D batch of ``C``-vectors (SparK's
    ``SparseBatchNorm2d``), with ``bn``'s affine parameters, ``eps``, momentum and running statistics.

    In training mode (or without running statistics) each channel is normalised with the mean and biased variance of
    its active positions, and ``bn``'s running mean / unbiased variance are updated from them as
    ``torch.nn.BatchNorm1d`` would on the gathered active vectors; in eval mode the running statistics are used. The
    count of active positions stays a device tensor (no gather by index, no host sync). Statistics are computed in
    fp32 (also under autocast); the output has ``x``'s dtype and is zero at masked positions.

    Args:
        x: ``[B, C, H, W]`` features, **zero at masked positions** (the output of a masked convolution; the gradient
            this function returns at those positions is not meaningful, and that mask discards it).
        masks: the batch's :class:`MaskPyramid`.
        bn: the ``nn.BatchNorm2d`` whose parameters and buffers are used (and whose running statistics are updated).

    Returns:
        ``[B, C, H, W]`` normalised features, zero at masked positions.
    """
    mask = masks.at(x)
    xf, mf = x.float(), mask.float()
    use_batch = bn.training or bn.running_mean is None
    if use_batch:
        count = mf.sum()  # active positions over B, H, W; >= 1 for any mask from RandomPatchMask
        mean = xf.sum(dim=(0, 2, 3)).div(count).view(1, -1, 1, 1)
        centred = torch.addcmul(xf, mf, -mean)  # (x - mean) at active positions, 0 at masked ones (x is 0 there)
        var = centred.square().sum(dim=(0, 2, 3)).div(count)
        if bn.training and bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                momentum = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.float()
                unbiased = var * count / (count - 1).clamp_min(1.0)
                bn.running_mean.mul_(1 - momentum).add_(momentum * mean.detach().flatten())
                bn.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
    else:
        mean, var = bn.running_mean.float().view(1, -1, 1, 1), bn.running_var.float()
        centred = torch.addcmul(xf, mf, -mean)
    scale = torch.rsqrt(var + bn.eps)
    if not bn.affine:
        return (centred * scale.view(1, -1, 1, 1)).to(x.dtype)
    out = torch.addcmul(centred * (scale * bn.weight.float()).view(1, -1, 1, 1), mf, bn.bias.float().view(1, -1, 1, 1))
    return out.to(x.dtype)


def _sparse_block(block: nn.Module, x: torch.Tensor, masks: MaskPyramid) -> torch.Tensor:
    """MONAI's ``ResNetBlock.forward`` with every convolution masked and every BatchNorm sparse."""
    out = block.act(sparse_batch_norm(masks.apply(block.conv1(x)), masks, block.bn1))
    out = sparse_batch_norm(masks.apply(block.conv2(out)), masks, block.bn2)
    if block.downsample is not None:
        conv, bn = block.downsample[0], block.downsample[1]
        x = sparse_batch_norm(masks.apply(conv(x)), masks, bn)
    return block.act(out + x)


def _check_encoder(encoder: nn.Module) -> None:
    if not isinstance(encoder, ResNet18Encoder):
        raise TypeError(f"SparK's sparse forward is written for ResNet18Encoder, got {type(encoder).__name__}")
    for name in _LAYERS:
        for i, block in enumerate(getattr(encoder, name)):
            shortcut = block.downsample
            if shortcut is not None and not (
                isinstance(shortcut, nn.Sequential) and len(shortcut) == 2
                and isinstance(shortcut[0], nn.Conv2d) and isinstance(shortcut[1], nn.BatchNorm2d)
            ):
                raise TypeError(f"{name}.{i}.downsample must be a 1x1 conv + BatchNorm (shortcut B), got {shortcut}")
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    if any(type(m) is not nn.BatchNorm2d for m in norms):
        raise TypeError("SparK's sparse forward needs plain nn.BatchNorm2d layers (convert SyncBatchNorm back, or "
                        "build the encoder without it)")


def sparse_resnet_features(encoder: ResNet18Encoder, x: torch.Tensor, masks: MaskPyramid) -> list[torch.Tensor]:
    """The encoder run as a sparse network on the active patches of ``x``.

    The input's masked patches are zeroed; after conv1, the max-pool and every convolution of the residual stages
    (shortcut convolutions included) the masked positions are zeroed again, and every BatchNorm is
    :func:`sparse_batch_norm` (whose output is zero there too); ReLU and the residual sum keep zeros zero. An active
    position therefore never sees what lies under a masked patch, at any depth.

    Args:
        encoder: the dense :class:`~monai_modan.networks.encoder.ResNet18Encoder` whose modules and weights are used.
        x: ``[B, C, S, S]`` images (``S`` a multiple of the mask grid).
        masks: the :class:`MaskPyramid` of the batch's ``[B, 1, g, g]`` mask.

    Returns:
        ``[stem, layer1, layer2, layer3, layer4]``: the stem's output (conv1 -> BN -> ReLU -> max-pool) and the four
        stages' outputs, each ``[B, C_i, H_i, W_i]`` and zero at masked positions. For the ``conv3x3`` stem the sides
        are ``S/2, S/2, S/4, S/8, S/16`` with 64, 64, 128, 256, 512 channels (``conv7x7``: ``S/4 ... S/32``).
    """
    x = masks.apply(x)
    x = masks.apply(encoder.conv1(x))
    x = encoder.act(sparse_batch_norm(x, masks, encoder.bn1))
    if not encoder.no_max_pool:
        x = masks.apply(encoder.maxpool(x))
    features = [x]
    for name in _LAYERS:
        for block in getattr(encoder, name):
            x = _sparse_block(block, x, masks)
        features.append(x)
    return features


# --------------------------------------------------------------------------------------------- densify + decoder
class Densify(nn.Module):
    """One scale of SparK's densifying: ``[B, C_in, H, W]`` sparse features -> ``[B, C_out, H, W]`` dense ones.

    Sparse BatchNorm on the active features (:func:`sparse_batch_norm`), masked positions filled with a learned mask
    token ``[1, C_in, 1, 1]`` (truncated normal, std 0.02), then a convolution to ``C_out`` (``kernel_size`` 1 at the
    deepest scale, 3 at the others, bias).

    Args:
        in_channels: ``C_in``, the encoder stage's width.
        out_channels: ``C_out``, the decoder's width at this scale.
        kernel_size: 1 or 3 (odd; padding keeps the size).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"kernel_size must be 1 or 3, got {kernel_size!r}")
        self.norm = nn.BatchNorm2d(in_channels)
        self.mask_token = nn.Parameter(torch.zeros(1, in_channels, 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True)

    def forward(self, x: torch.Tensor, masks: MaskPyramid) -> torch.Tensor:
        normed = sparse_batch_norm(x, masks, self.norm)  # zero at masked positions
        filled = normed + (1 - masks.at(normed)) * self.mask_token.to(normed.dtype)
        return self.proj(filled)


class UpsampleBlock(nn.Module):
    """UNet-style decoder block, ``[B, C_in, H, W]`` -> ``[B, C_out, 2H, 2W]``: transposed conv 4x4/2 (``C_in``,
    bias) -> conv 3x3 (``C_in``) -> BN -> ReLU6 -> conv 3x3 (``C_out``) -> BN (as SparK's ``UNetBlock``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up_sample = nn.ConvTranspose2d(in_channels, in_channels, kernel_size=4, stride=2, padding=1, bias=True)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False), nn.BatchNorm2d(in_channels),
            nn.ReLU6(inplace=True),
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up_sample(x))


class SparKDecoder(nn.Module):
    """Light UNet-style decoder: ``num_blocks`` :class:`UpsampleBlock` (x2 each; widths ``width, width/2, ...``) and
    a 1x1 projection to ``out_channels``.

    ``forward(features)`` takes the densified scales deepest first, ``features[i]`` ``[B, width / 2^i, h 2^i, w 2^i]``
    (at most ``num_blocks`` of them); each is added to the running map before block ``i``. Output
    ``[B, out_channels, h 2^n, w 2^n]``, ``n = num_blocks``: full resolution when ``2^n`` is the encoder's total
    downsampling.

    Initialisation (SparK's): convolutions truncated normal std 0.02 with zero bias, transposed convolutions Kaiming
    normal (fan-out), BatchNorm weight 1 and bias 0.

    Args:
        width: channels of the deepest scale; divisible by ``2^num_blocks``.
        num_blocks: number of x2 upsampling blocks (``log2`` of the patch side: 4 for 16 px, 5 for 32 px).
        out_channels: channels of the reconstruction (1 for grey images).
    """

    def __init__(self, width: int, num_blocks: int, out_channels: int = 1) -> None:
        super().__init__()
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 2**num_blocks or width % 2**num_blocks:
            raise ValueError(f"decoder width={width!r} must be a positive multiple of 2^{num_blocks} = "
                             f"{2**num_blocks} (it halves in each of the {num_blocks} upsampling blocks)")
        self.width = width
        channels = [width >> i for i in range(num_blocks + 1)]
        self.blocks = nn.ModuleList(UpsampleBlock(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:]))
        self.proj = nn.Conv2d(channels[-1], out_channels, kernel_size=1, bias=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if not 1 <= len(features) <= len(self.blocks):
            raise ValueError(f"expected 1 to {len(self.blocks)} feature maps, got {len(features)}")
        x = features[0]
        for i, block in enumerate(self.blocks):
            if 0 < i < len(features):
                x = x + features[i]
            x = block(x)
        return self.proj(x)


# --------------------------------------------------------------------------------------------------------- model
class SparKOutput(NamedTuple):
    """What :class:`SparKModel` returns: ``reconstruction [B, C, S, S]`` (per-patch normalised units, what
    :class:`~monai_modan.losses.spark.MaskedReconstructionLoss` compares with the normalised input) and
    ``active [B, 1, g, g]`` bool (True = the patch was visible to the encoder)."""

    reconstruction: torch.Tensor
    active: torch.Tensor


class SparKModel(nn.Module):
    """SparK pretraining network around a :class:`~monai_modan.networks.encoder.ResNet18Encoder`:
    ``[B, C, S, S]`` images -> :class:`SparKOutput`.

    ``forward`` draws a random patch mask (:class:`RandomPatchMask`, or takes ``active``), runs the encoder sparsely
    (:func:`sparse_resnet_features`), densifies its four stages (:class:`Densify`: 1x1 projection at the deepest
    scale, 3x3 at the others, to ``decoder_width / 2^i``) and decodes them (:class:`SparKDecoder`) to a
    ``[B, C, S, S]`` reconstruction. ``.encoder`` keeps MONAI's parameter names, so the export path
    (``export_encoder``, ``encoder.pt``) takes the encoder alone and drops densify and decoder.

    Args:
        encoder: the ResNet-18 to pretrain (its weights are ordinary dense weights).
        image_size: ``S``, the (square) training image side in pixels; a multiple of the encoder's total
            downsampling ``p`` (16 for the ``conv3x3`` stem, 32 for ``conv7x7``).
        mask_ratio: share of patches hidden, in (0, 1).
        decoder_width: decoder channels at the deepest scale; a multiple of ``2^log2(p)``.

    Raises:
        ValueError: bad ``image_size``, ``mask_ratio`` or ``decoder_width`` (the message names the value).
    """

    def __init__(self, encoder: ResNet18Encoder, image_size: int, mask_ratio: float = DEFAULT_MASK_RATIO,
                 decoder_width: int = DEFAULT_DECODER_WIDTH) -> None:
        super().__init__()
        _check_encoder(encoder)
        self.encoder = encoder
        self.patch_size = encoder_downsampling(encoder)
        self.masking = RandomPatchMask(image_size, self.patch_size, mask_ratio)
        num_blocks = self.patch_size.bit_length() - 1
        if 2**num_blocks != self.patch_size:
            raise ValueError(f"the encoder's total downsampling {self.patch_size} is not a power of 2")
        self.decoder = SparKDecoder(decoder_width, num_blocks, out_channels=encoder.conv1.in_channels)
        widths = [getattr(encoder, name)[-1].bn2.num_features for name in reversed(_LAYERS)]
        self.densify = nn.ModuleList(
            Densify(c, decoder_width >> i, kernel_size=1 if i == 0 else 3) for i, c in enumerate(widths)
        )

    @property
    def image_size(self) -> int:
        return self.masking.image_size

    @property
    def mask_ratio(self) -> float:
        return self.masking.mask_ratio

    def _check_input(self, x: torch.Tensor) -> None:
        channels, size = self.encoder.conv1.in_channels, self.image_size
        if x.ndim != 4 or x.shape[1] != channels or tuple(x.shape[-2:]) != (size, size):
            raise ValueError(f"SparK expects images [B, {channels}, {size}, {size}] (image_size={size}), got "
                             f"{tuple(x.shape)}")

    def sparse_features(self, x: torch.Tensor, active: torch.Tensor) -> list[torch.Tensor]:
        """The sparse encoder's ``[stem, layer1, ..., layer4]`` for images ``x`` and mask ``active``
        (see :func:`sparse_resnet_features`)."""
        self._check_input(x)
        return sparse_resnet_features(self.encoder, x, MaskPyramid(active))

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> SparKOutput:
        """
        Args:
            x: ``[B, C, S, S]`` images (unmasked: the masking happens here).
            active: ``[B, 1, g, g]`` bool mask to use instead of drawing one.
            generator: device generator for the mask (``None``: the device's default generator).
        """
        self._check_input(x)
        if active is None:
            active = self.masking(x.shape[0], x.device, generator)
        elif active.shape != (x.shape[0], 1, self.masking.grid, self.masking.grid) or active.dtype != torch.bool:
            raise ValueError(f"active must be a bool mask [{x.shape[0]}, 1, {self.masking.grid}, {self.masking.grid}], "
                             f"got {active.dtype} {tuple(active.shape)}")
        masks = MaskPyramid(active)
        stages = sparse_resnet_features(self.encoder, x, masks)[1:]
        dense = [densify(feature, masks) for densify, feature in zip(self.densify, reversed(stages))]
        return SparKOutput(self.decoder(dense), active)
