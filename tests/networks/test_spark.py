"""SparK's network side: the patch mask, the sparse emulation of the ResNet-18 (nothing under a masked patch reaches
an active position, at any stage; BatchNorm statistics from active positions only), densify + decoder shapes, and
the export of the pretrained encoder into plain MONAI."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets import resnet18
from torch import nn

from monai_modan.engines.pretrain import build_pretraining_model
from monai_modan.losses import MaskedReconstructionLoss
from monai_modan.networks import (
    MaskPyramid,
    RandomPatchMask,
    SparKDecoder,
    SparKModel,
    build_encoder,
    encoder_downsampling,
    encoder_state_dict,
    export_encoder,
    sparse_batch_norm,
    stem_kwargs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def spark(stem: str = "conv3x3", size: int = 32, seed: int = 0, **kw) -> SparKModel:
    torch.manual_seed(seed)
    return SparKModel(build_encoder(stem), size, **kw)


def images(batch: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def checkerboard(batch: int, grid: int) -> torch.Tensor:
    """A fixed mask with active and masked patches side by side (every masked patch touches active ones)."""
    i, j = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    board = ((i + j) % 2 == 0).expand(batch, 1, grid, grid).clone()
    board[1:] = ~board[1:]  # the other images the other way round
    return board


# ------------------------------------------------------------------------------------------------------ the mask
@pytest.mark.parametrize("stem, patch", [("conv3x3", 16), ("conv7x7", 32)])
def test_the_patch_is_the_encoders_total_downsampling(stem, patch):
    encoder = build_encoder(stem)
    assert encoder_downsampling(encoder) == patch
    with torch.no_grad():
        features = encoder.layer4(encoder.layer3(encoder.layer2(encoder.layer1(encoder.maxpool(encoder.act(
            encoder.bn1(encoder.conv1(torch.zeros(1, 1, 2 * patch, 2 * patch)))))))))
    assert features.shape[-2:] == (2, 2)  # one layer4 cell per patch


def test_masks_keep_the_same_number_of_random_patches_per_image():
    masking = RandomPatchMask(image_size=128, patch_size=16, mask_ratio=0.6)
    assert (masking.grid, masking.num_patches, masking.num_active) == (8, 64, round(64 * 0.4))
    active = masking(200, "cpu", torch.Generator().manual_seed(0))
    assert active.shape == (200, 1, 8, 8) and active.dtype == torch.bool
    assert (active.sum(dim=(1, 2, 3)) == masking.num_active).all()
    assert len({tuple(a.flatten().tolist()) for a in active}) == 200, "each image its own mask"
    # every patch is as likely to stay visible (binomial, 200 draws of p = 26/64 per patch: 5 sigma band)
    rate = active.float().mean(dim=0).flatten()
    p = masking.num_active / masking.num_patches
    assert (rate - p).abs().max() < 5 * (p * (1 - p) / 200) ** 0.5
    again = masking(200, "cpu", torch.Generator().manual_seed(0))
    assert torch.equal(active, again), "a seeded generator reproduces the masks"
    torch.manual_seed(5)
    first = masking(4)
    torch.manual_seed(5)
    assert torch.equal(first, masking(4)), "without a generator: the device's default one, seeded by manual_seed"


def test_drawing_a_mask_never_reads_a_device_value_back(monkeypatch):
    model = spark()
    x, generator = images(), torch.Generator().manual_seed(0)

    def host_sync(*args, **kwargs):
        raise AssertionError("host sync")

    for name in HOST_SYNCS:
        monkeypatch.setattr(torch.Tensor, name, host_sync)
    out = model(x, generator=generator)
    MaskedReconstructionLoss()(out.reconstruction, x, out.active).backward()


@pytest.mark.parametrize("stem, image_size, mask_ratio, message", [
    ("conv3x3", 40, 0.6, r"image_size=40 must be a positive multiple of the 16-pixel mask patch .*e\.g\. 32 or 48"),
    ("conv7x7", 48, 0.6, r"image_size=48 must be a positive multiple of the 32-pixel mask patch .*e\.g\. 32 or 64"),
    ("conv3x3", 0, 0.6, r"image_size=0 must be a positive multiple"),
    ("conv3x3", 32.0, 0.6, r"image_size=32.0 must be a positive multiple"),
    ("conv3x3", 32, 0.0, r"mask_ratio=0.0 must be a share of patches in \(0, 1\)"),
    ("conv3x3", 32, 1.0, r"mask_ratio=1.0 must be a share of patches in \(0, 1\)"),
    ("conv3x3", 32, -0.2, r"mask_ratio=-0.2 must be"),
    ("conv3x3", 32, 1.5, r"mask_ratio=1.5 must be"),
    ("conv3x3", 32, "0.6", r"mask_ratio='0.6' must be"),
    ("conv3x3", 16, 0.6, r"mask_ratio=0.6 on a 1x1 patch grid .* keeps 0 of 1 patches visible"),
    ("conv3x3", 32, 0.9, r"keeps 0 of 4 patches visible"),
    ("conv3x3", 32, 0.1, r"keeps 4 of 4 patches visible"),
])
def test_bad_image_size_or_mask_ratio_is_refused_naming_the_value(stem, image_size, mask_ratio, message):
    """(d) One-line ValueErrors naming the value, from the model and from the bundle's builder."""
    with pytest.raises(ValueError, match=message):
        SparKModel(build_encoder(stem), image_size, mask_ratio=mask_ratio)
    with pytest.raises(ValueError, match=message) as info:
        build_pretraining_model("spark", stem=stem, image_size=image_size, mask_ratio=mask_ratio)
    assert "\n" not in str(info.value)


def test_other_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="SparK needs image_size"):
        build_pretraining_model("spark")
    model = spark()
    with pytest.raises(ValueError, match=r"expects images \[B, 1, 32, 32\] \(image_size=32\), got \(2, 1, 64, 64\)"):
        model(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"active must be a bool mask \[2, 1, 2, 2\]"):
        model(torch.rand(2, 1, 32, 32), active=torch.ones(2, 1, 2, 2))
    with pytest.raises(ValueError, match="decoder width=100 must be a positive multiple of 2\\^4 = 16"):
        spark(decoder_width=100)
    with pytest.raises(TypeError, match="ResNet18Encoder"):
        SparKModel(nn.Conv2d(1, 1, 3), 32)


# ---------------------------------------------------------------------------------------------------- sparsity
def _stage_features(model: SparKModel, x: torch.Tensor, active: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(zip(STAGES, model.sparse_features(x, active)))


@pytest.mark.parametrize("stem, size", [("conv3x3", 64), ("conv7x7", 64)])
def test_pixels_under_masked_patches_never_change_the_active_features(stem, size):
    """(a) Fill the masked patches of the input with other content: at every stage (stem and the four ResNet stages)
    the features at active positions stay the same, and masked positions are exactly zero. Train mode: BatchNorm
    uses the batch's statistics, which therefore must come from active positions only."""
    model = spark(stem, size).train()
    grid = size // model.patch_size
    x, active = images(4, size), checkerboard(4, grid)
    hidden = 1 - MaskPyramid(active).at(x)
    other = x * (1 - hidden) + hidden * (5 * torch.rand_like(x) - 2)  # other pixels, other range, same active ones
    state = copy.deepcopy(model.state_dict())
    first = _stage_features(model, x, active)
    model.load_state_dict(state)  # the same running statistics before the second pass
    second = _stage_features(model, other, active)
    pyramid = MaskPyramid(active)
    for name in STAGES:
        keep = pyramid.at(first[name]).bool().expand_as(first[name])
        assert keep.any() and (~keep).any(), name
        torch.testing.assert_close(second[name][keep], first[name][keep], msg=name)
        assert (first[name][~keep] == 0).all() and (second[name][~keep] == 0).all(), name


def _dense_stage_outputs(encoder: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs = {}
    hooks = [getattr(encoder, n).register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o))
             for n in STAGES[1:]]
    try:
        encoder(x)
    finally:
        for h in hooks:
            h.remove()
    return outputs


def test_nothing_computed_at_a_masked_position_leaks_into_an_active_one():
    """After every convolution and pooling, noise is added at the masked positions of the layer's output (forward
    hooks): the sparse forward zeroes it again, so the active features of every stage do not move. The same noise
    in the dense forward of the masked image does move them -- the check can fail."""
    model = spark("conv3x3", 64).train()
    x, active = images(4, 64), checkerboard(4, 4)
    pyramid = MaskPyramid(active)
    layers = [m for m in model.encoder.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    assert len(layers) == 1 + 1 + 16 + 3  # conv1, max-pool, 2 convs in each of 8 blocks, 3 shortcut convs
    generator = torch.Generator().manual_seed(7)

    def add_noise(module, inputs, output):
        return output + (1 - pyramid.at(output)) * torch.randn(output.shape, generator=generator)

    state = copy.deepcopy(model.state_dict())
    clean = _stage_features(model, x, active)
    model.load_state_dict(state)
    dense_clean = _dense_stage_outputs(model.encoder, x * pyramid.at(x))
    handles = [m.register_forward_hook(add_noise) for m in layers]
    try:
        model.load_state_dict(state)
        noisy = _stage_features(model, x, active)
        model.load_state_dict(state)
        dense_noisy = _dense_stage_outputs(model.encoder, x * pyramid.at(x))
    finally:
        for h in handles:
            h.remove()
    for name in STAGES:
        keep = pyramid.at(clean[name]).bool().expand_as(clean[name])
        torch.testing.assert_close(noisy[name][keep], clean[name][keep], msg=name)
    keep = pyramid.at(dense_clean["layer4"]).bool().expand_as(dense_clean["layer4"])
    assert not torch.allclose(dense_noisy["layer4"][keep], dense_clean["layer4"][keep], atol=1e-3)


def test_with_every_patch_active_the_sparse_forward_is_the_dense_encoder():
    """The sparse forward re-implements MONAI's ResNet forward; with nothing masked it must be that forward (stage
    outputs and BatchNorm running statistics)."""
    model = spark("conv3x3", 64).train()
    x = images(4, 64)
    dense = copy.deepcopy(model.encoder)
    outputs = _dense_stage_outputs(dense, x)
    sparse = _stage_features(model, x, torch.ones(4, 1, 4, 4, dtype=torch.bool))
    for name in STAGES[1:]:
        torch.testing.assert_close(sparse[name], outputs[name], rtol=1e-4, atol=1e-4, msg=name)
    for (name, a), b in zip(model.encoder.state_dict().items(), dense.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("training", [True, False])
def test_sparse_batch_norm_is_batchnorm1d_on_the_active_positions(training):
    """Oracle (SparK's SparseBatchNorm2d): gather the active positions' C-vectors, run nn.BatchNorm1d on them,
    scatter back -- outputs, input gradients at active positions, affine gradients and running statistics agree."""
    g = torch.Generator().manual_seed(3)
    active = checkerboard(3, 2)
    pyramid = MaskPyramid(active)
    x = torch.randn(3, 5, 8, 8, generator=g) * 2 + 1
    x = (x * pyramid.at(x)).requires_grad_()
    bn = nn.BatchNorm2d(5, momentum=0.3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0, generator=g)
        bn.bias.uniform_(-1.0, 1.0, generator=g)
        bn.running_mean.uniform_(-1.0, 1.0, generator=g)
        bn.running_var.uniform_(0.5, 2.0, generator=g)
    oracle = nn.BatchNorm1d(5, momentum=0.3)
    oracle.load_state_dict(bn.state_dict())
    bn.train(training)
    oracle.train(training)
    upstream = torch.randn(3, 5, 8, 8, generator=g)

    out = sparse_batch_norm(x, pyramid, bn)
    (out * upstream).sum().backward()
    grads = (x.grad.clone(), bn.weight.grad.clone(), bn.bias.grad.clone())

    x.grad = None
    where = pyramid.at(x)[:, 0].bool()  # [B, H, W]
    bhwc = x.permute(0, 2, 3, 1)
    expected = torch.zeros_like(bhwc).index_put((where.nonzero(as_tuple=True)), oracle(bhwc[where]))
    expected = expected.permute(0, 3, 1, 2)
    (expected * upstream).sum().backward()

    torch.testing.assert_close(out, expected)
    # at masked positions x is a masked convolution's zero, whose gradient that mask discards: compare active ones
    keep = where[:, None].expand_as(x)
    torch.testing.assert_close(grads[0][keep], x.grad[keep], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], oracle.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[2], oracle.bias.grad, rtol=1e-4, atol=1e-5)
    for key, value in oracle.state_dict().items():
        torch.testing.assert_close(bn.state_dict()[key], value, msg=key)
    assert (out[~pyramid.at(out).bool().expand_as(out)] == 0).all()


# ---------------------------------------------------------------------------------------------- densify + decoder
@pytest.mark.parametrize("stem, size, blocks", [("conv3x3", 32, 4), ("conv7x7", 64, 5)])
def test_forward_shapes_widths_and_scales(stem, size, blocks):
    model = spark(stem, size, decoder_width=64)
    x = images(2, size)
    out = model(x)
    grid = size // model.patch_size
    assert out.reconstruction.shape == (2, 1, size, size) and out.reconstruction.dtype == torch.float32
    assert out.active.shape == (2, 1, grid, grid) and out.active.dtype == torch.bool
    assert len(model.decoder.blocks) == blocks
    assert [d.proj.out_channels for d in model.densify] == [64, 32, 16, 8]
    assert [d.proj.kernel_size for d in model.densify] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [d.mask_token.shape[1] for d in model.densify] == [512, 256, 128, 64]
    # the four encoder stages (deepest first) have 1, 2, 4, 8 cells per patch side: decoder blocks 0-3 take them
    sides = [f.shape[-1] // grid for f in model.sparse_features(x, out.active)[1:]][::-1]
    assert sides == [1, 2, 4, 8]
    out.reconstruction.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad), "every parameter is used"


def test_the_decoder_upsamples_by_two_per_block_and_halves_the_width():
    decoder = SparKDecoder(width=32, num_blocks=3, out_channels=1)
    features = [torch.rand(2, 32, 2, 2), torch.rand(2, 16, 4, 4), torch.rand(2, 8, 8, 8)]
    assert decoder(features).shape == (2, 1, 16, 16)
    assert [b.conv[-1].num_features for b in decoder.blocks] == [16, 8, 4]
    with pytest.raises(ValueError, match="expected 1 to 3 feature maps, got 4"):
        decoder(features + [torch.rand(2, 4, 16, 16)])


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    """The whole model learns: 15 AdamW steps on one batch (fixed mask) bring the masked loss well down."""
    model = spark("conv3x3", 32, decoder_width=64)
    x = images(4, 32)
    active = checkerboard(4, 2)
    loss_fn = MaskedReconstructionLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        out = model(x, active=active)
        loss = loss_fn(out.reconstruction, x, out.active)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# ---------------------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("stem", ["conv3x3", "conv7x7"])
def test_the_pretrained_encoder_loads_into_plain_monai_resnet18(tmp_path, stem):
    """(c) After a SparK step the exported encoder.pt is a plain MONAI resnet18 state dict (only fc missing), and
    the plain network computes what the encoder computes (dense weights, eval mode)."""
    model = spark(stem, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = images(4, 64)
    out = model(x)
    MaskedReconstructionLoss()(out.reconstruction, x, out.active).backward()
    optimizer.step()
    assert not any(k.startswith(("densify", "decoder")) for k in encoder_state_dict(model))
    path = export_encoder(model, tmp_path / "encoder.pt")
    net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, **stem_kwargs(stem))
    missing, unexpected = net.load_state_dict(torch.load(path, weights_only=True), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    net.fc = nn.Identity()
    model.eval()
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), model.encoder(x))
    assert model.encoder.bn1.num_batches_tracked == 1, "the sparse pass updated the encoder's own statistics"
