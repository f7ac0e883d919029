"""Encoder variants, heads, and weight export/import (CPU, 32x32 inputs; one 224x224 forward for the MAC count)."""

from __future__ import annotations

import copy
import pickle
import random
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import resnet18

from monai_modan.networks import (
    CheckpointError,
    ContrastiveModel,
    ExportFormat,
    ResNet18Encoder,
    StemType,
    SupervisedModel,
    build_encoder,
    encoder_state_dict,
    export_encoder,
    from_torchvision_state_dict,
    load_encoder,
    to_torchvision_state_dict,
)

# the plain MONAI arguments of each stem, written out independently of monai_modan.networks.stem_kwargs
PLAIN_MONAI_STEM = {
    StemType.CONV3X3: {"conv1_t_size": 3, "conv1_t_stride": 1, "no_max_pool": False},
    StemType.CONV7X7: {"conv1_t_size": 7, "conv1_t_stride": 2, "no_max_pool": False},
}


SMALL = (2, 1, 16, 16)  # [B, C, H, W] for output comparisons: 16 px still leaves layer4 a 1x1 map with either stem


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomise(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random BatchNorm statistics/affines and shortcut biases, so that eval-mode comparisons test every buffer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    return model


@pytest.fixture(scope="module")
def _trained_encoders() -> dict[StemType, ResNet18Encoder]:
    torch.manual_seed(0)
    return {stem: randomise(build_encoder(stem)) for stem in StemType}


@pytest.fixture
def trained_encoder(_trained_encoders):
    """``trained_encoder(stem)``: a fresh copy of an encoder with random BatchNorm statistics and shortcut biases."""
    return lambda stem: copy.deepcopy(_trained_encoders[StemType(stem)])


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of all Conv2d and Linear layers for one forward pass (forward hooks)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


def torchvision_resnet18_reference(in_channels: int = 3, kernel: int = 7) -> dict[str, tuple[int, ...]]:
    """torchvision ``resnet18().state_dict()`` names and shapes, without fc, written out by hand (stem adapted)."""
    ref = {"conv1.weight": (64, in_channels, kernel, kernel)}

    def bn(name: str, c: int) -> None:
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            ref[f"{name}.{buffer}"] = (c,)
        ref[f"{name}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_c = 64
    for layer, c in enumerate((64, 128, 256, 512), start=1):
        for block in (0, 1):
            prefix = f"layer{layer}.{block}"
            ref[f"{prefix}.conv1.weight"] = (c, in_c if block == 0 else c, 3, 3)
            bn(f"{prefix}.bn1", c)
            ref[f"{prefix}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{prefix}.bn2", c)
            if block == 0 and layer > 1:
                ref[f"{prefix}.downsample.0.weight"] = (c, in_c, 1, 1)
                bn(f"{prefix}.downsample.1", c)
        in_c = c
    return ref


def fake_torchvision_imagenet(in_channels: int = 3, with_batch_counters: bool = True) -> dict[str, torch.Tensor]:
    """Random weights in torchvision's ImageNet resnet18 layout, fc (1000 classes) included."""
    g = torch.Generator().manual_seed(7)
    sd = {}
    for name, shape in torchvision_resnet18_reference(in_channels, 7).items():
        if name.endswith("num_batches_tracked"):
            if with_batch_counters:
                sd[name] = torch.tensor(100, dtype=torch.long)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.1
    sd["fc.weight"] = torch.randn(1000, 512, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    return sd


# ---------------------------------------------------------------- architecture


@pytest.mark.parametrize("stem", list(StemType))
def test_output_shapes(stem):
    encoder = build_encoder(stem)
    x = torch.randn(SMALL)
    assert isinstance(encoder, ResNet18Encoder) and encoder.feature_dim == 512
    assert encoder(x).shape == (2, 512)

    contrastive = ContrastiveModel(encoder, projection_dim=128, hidden_dim=512)
    assert contrastive.encoder is encoder
    assert contrastive(x).shape == (2, 128)
    assert contrastive.forward_features(x).shape == (2, 512)
    assert ContrastiveModel(encoder, projection_dim=16, batch_norm=False)(x).shape == (2, 16)

    supervised = SupervisedModel(encoder, num_classes=5)
    assert supervised.encoder is encoder
    assert supervised(x).shape == (2, 5)
    assert supervised.forward_features(x).shape == (2, 512)
    assert build_encoder(stem, in_channels=3)(torch.randn(2, 3, 16, 16)).shape == (2, 512)


def test_supervised_model_rejects_no_classes(trained_encoder):
    with pytest.raises(ValueError, match="num_classes"):
        SupervisedModel(trained_encoder("conv3x3"), num_classes=0)


@pytest.mark.parametrize(
    "stem, kernel, stride, layer1_size", [("conv3x3", 3, 1, 16), ("conv7x7", 7, 2, 8)]
)
def test_stem_first_conv(stem, kernel, stride, layer1_size):
    encoder = build_encoder(stem)
    assert encoder.stem == StemType(stem)
    assert encoder.conv1.weight.shape == (64, 1, kernel, kernel)
    assert encoder.conv1.stride == (stride, stride) and encoder.conv1.padding == (kernel // 2, kernel // 2)
    assert not encoder.no_max_pool  # both stems keep the 3x3/2 max-pool
    sizes = []
    encoder.layer1.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        encoder.eval()(torch.zeros(1, 1, 32, 32))
    assert sizes == [(layer1_size, layer1_size)]


def test_mac_ratio_matches_paper():
    """Paper: 6.81 GMAC per 224^2 view = 3.75x a standard ResNet-18 (RGB, 7x7/2 stem, fc 1000)."""
    standard = resnet18(spatial_dims=2, n_input_channels=3, num_classes=1000, **PLAIN_MONAI_STEM[StemType.CONV7X7])
    standard_macs = count_macs(standard, torch.zeros(1, 3, 224, 224))
    paper_macs = count_macs(build_encoder(StemType.CONV3X3), torch.zeros(1, 1, 224, 224))
    assert standard_macs == pytest.approx(1.82e9, rel=0.01)
    assert paper_macs == pytest.approx(6.81e9, rel=0.01)
    assert paper_macs / standard_macs == pytest.approx(3.75, rel=0.05)


# ---------------------------------------------------------------- MONAI / torchvision layouts


@pytest.mark.parametrize("stem", list(StemType))
def test_encoder_state_dict_loads_into_plain_monai_resnet18(stem, trained_encoder):
    model = ContrastiveModel(trained_encoder(stem))
    sd = encoder_state_dict(model)
    plain = resnet18(spatial_dims=2, n_input_channels=1, num_classes=10, **PLAIN_MONAI_STEM[stem])
    result = plain.load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    plain.fc = nn.Identity()
    x = torch.randn(SMALL)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), model.encoder.eval()(x))
    # DDP / torch.compile prefixes and the heads are removed from a raw model state dict too
    wrapped = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    assert encoder_state_dict(wrapped).keys() == sd.keys()


def test_encoder_state_dict_rejects_other_networks():
    with pytest.raises(CheckpointError, match="conv1.weight"):
        encoder_state_dict(nn.Linear(3, 4))


@pytest.mark.parametrize("stem, kernel", [("conv3x3", 3), ("conv7x7", 7)])
def test_torchvision_key_layout(stem, kernel, trained_encoder):
    tv = to_torchvision_state_dict(encoder_state_dict(trained_encoder(stem)))
    reference = torchvision_resnet18_reference(in_channels=1, kernel=kernel)
    assert len(reference) == 120  # torchvision resnet18 has 122 state-dict entries, fc.weight and fc.bias excluded
    assert {k: tuple(v.shape) for k, v in tv.items()} == reference


def test_torchvision_conversion_is_numerically_exact(trained_encoder):
    """MONAI's ResNet with ``bias_downsample=False`` is torchvision's architecture: folded weights give equal output."""
    encoder = trained_encoder("conv3x3").eval()
    tv = to_torchvision_state_dict(encoder_state_dict(encoder))
    torchvision_like = resnet18(
        spatial_dims=2, n_input_channels=1, feed_forward=False, bias_downsample=False, **PLAIN_MONAI_STEM["conv3x3"]
    )
    torchvision_like.load_state_dict(tv, strict=True)
    back = ResNet18Encoder("conv3x3")
    back.load_state_dict(from_torchvision_state_dict(tv), strict=True)
    x = torch.randn(SMALL)
    with torch.no_grad():
        expected = encoder(x)
        torch.testing.assert_close(torchvision_like.eval()(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(back.eval()(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("with_batch_counters", [True, False])
def test_imagenet_rgb_stem_becomes_summed_grey_filter(with_batch_counters):
    imagenet = fake_torchvision_imagenet(with_batch_counters=with_batch_counters)
    converted = from_torchvision_state_dict(imagenet, stem="conv7x7", in_channels=1)
    rgb = imagenet["conv1.weight"]
    torch.testing.assert_close(converted["conv1.weight"], rgb.sum(dim=1, keepdim=True))
    assert not any(k.startswith("fc.") for k in converted)
    encoder = ResNet18Encoder("conv7x7")
    encoder.load_state_dict(converted, strict=True)
    # a grey image replicated to RGB through the original 3-channel conv gives the same first-layer output
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder.conv1(grey), F.conv2d(grey.repeat(1, 3, 1, 1), rgb, stride=2, padding=3))


def test_imagenet_weights_on_3x3_stem_crop_and_warn():
    imagenet = fake_torchvision_imagenet()
    with pytest.warns(UserWarning, match="conv7x7"):
        converted = from_torchvision_state_dict(imagenet, stem="conv3x3")
    torch.testing.assert_close(converted["conv1.weight"], imagenet["conv1.weight"].sum(1, keepdim=True)[..., 2:5, 2:5])
    ResNet18Encoder("conv3x3").load_state_dict(converted, strict=True)
    with pytest.raises(CheckpointError, match="channels"):
        from_torchvision_state_dict(imagenet, in_channels=2)


def test_load_encoder_reads_an_imagenet_pth(tmp_path):
    path = tmp_path / "resnet18-imagenet.pth"
    imagenet = fake_torchvision_imagenet()
    torch.save(imagenet, path)
    encoder = load_encoder(path)
    assert encoder.stem == StemType.CONV7X7
    torch.testing.assert_close(encoder.conv1.weight.detach(), imagenet["conv1.weight"].sum(1, keepdim=True))


# ---------------------------------------------------------------- export / load round trips


@pytest.mark.parametrize("fmt", list(ExportFormat))
@pytest.mark.parametrize("stem", list(StemType))
def test_export_load_round_trip(tmp_path, fmt, stem, trained_encoder):
    model = SupervisedModel(trained_encoder(stem), num_classes=3)
    path = export_encoder(model, tmp_path / f"encoder-{fmt}.pt", fmt=fmt)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    if fmt == ExportFormat.TORCHSCRIPT:  # an archive runs code on load: refused unless opted in
        with pytest.raises(CheckpointError, match="TorchScript archive"):
            load_encoder(path, stem=stem)
    loaded = load_encoder(path, stem=stem, allow_torchscript=fmt == ExportFormat.TORCHSCRIPT)
    assert isinstance(loaded, ResNet18Encoder) and loaded.stem == StemType(stem)
    assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()])
    x = torch.randn(SMALL)
    with torch.no_grad():
        expected = model.encoder.eval()(x)
        torch.testing.assert_close(loaded.eval()(x), expected, rtol=1e-4, atol=1e-5)
        if fmt == ExportFormat.TORCHSCRIPT:  # usable without monai-modan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still MONAI's format
                scripted = torch.jit.load(str(path))
            assert not scripted.training
            torch.testing.assert_close(scripted(x), expected)


def test_load_encoder_accepts_training_checkpoint(tmp_path, trained_encoder):
    model = ContrastiveModel(trained_encoder("conv3x3"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 1, 16, 16)).square().mean().backward()
    optimizer.step()
    checkpoint = {
        "model": {f"module.{k}": v for k, v in model.state_dict().items()},  # as saved from a DDP-wrapped model
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "config": {"temperature": 0.1},
    }
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint, path)
    loaded = load_encoder(path)
    x = torch.randn(SMALL)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.encoder.eval()(x))


# ---------------------------------------------------------------- bad input


class NotAWeight:
    def __reduce__(self):
        return (print, ("arbitrary code would run here",))


def test_load_encoder_rejects_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(random.Random(3).randbytes(4096))
    with pytest.raises(CheckpointError, match="noise.pt"):
        load_encoder(path)


def test_load_encoder_rejects_arbitrary_pickles(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": NotAWeight()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_encoder(path)
    assert "arbitrary code" not in capsys.readouterr().out
    torch.save({"model": NotAWeight()}, tmp_path / "evil_torch.pt")
    with pytest.raises(CheckpointError, match="evil_torch.pt.*weights_only"):
        load_encoder(tmp_path / "evil_torch.pt")
    assert "arbitrary code" not in capsys.readouterr().out


def test_load_encoder_rejects_wrong_architecture(tmp_path, trained_encoder):
    from monai.networks.nets import resnet34

    resnet34_sd = resnet34(spatial_dims=2, n_input_channels=1, **PLAIN_MONAI_STEM["conv3x3"]).state_dict()
    torch.save(resnet34_sd, tmp_path / "resnet34.pt")
    with pytest.raises(CheckpointError, match=r"resnet34.pt.*unexpected.*layer1\.2\.conv1\.weight"):
        load_encoder(tmp_path / "resnet34.pt")

    rgb_sd = encoder_state_dict(build_encoder("conv3x3", in_channels=3))
    torch.save(rgb_sd, tmp_path / "rgb.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*conv1\.weight \(64, 3, 3, 3\) != \(64, 1, 3, 3\)"):
        load_encoder(tmp_path / "rgb.pt")
    assert load_encoder(tmp_path / "rgb.pt", in_channels=3).in_channels == 3

    partial = {k: v for k, v in encoder_state_dict(trained_encoder("conv3x3")).items() if not k.startswith("layer4.1.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"missing \(\d+\): layer4\.1\.conv1\.weight"):
        load_encoder(tmp_path / "partial.pt")

    export_encoder(trained_encoder("conv7x7"), tmp_path / "seven.pt")
    with pytest.raises(CheckpointError, match="conv7x7 stem, conv3x3 was requested"):
        load_encoder(tmp_path / "seven.pt", stem="conv3x3")

    torch.save({"epoch": 3, "notes": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_encoder(tmp_path / "empty.pt")

    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: the top level holds a list"):
        load_encoder(tmp_path / "list.pt")

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_encoder(tmp_path / "missing.pt")
