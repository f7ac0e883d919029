"""SparK in the pretraining engines: settings that depend on the method, the batch/loss adapters, gradient
clipping, parameter groups, the fast path's SparK step (against a manual step, without host syncs) and the
reconstruction picture."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from monai.engines import SupervisedTrainer
from PIL import Image
from torch import nn

from monai_modan.engines.fast_pretrain import FastPretrainer
from monai_modan.engines.pretrain import (
    GradientClipping,
    SparKLoss,
    TwoViewBatch,
    build_pretraining_loss,
    build_pretraining_model,
    check_pretraining_settings,
    weight_decay_groups,
)
from monai_modan.engines.reconstruction import ReconstructionFigure, reconstruction_panels, save_reconstruction_figure
from monai_modan.losses import MaskedReconstructionLoss
from monai_modan.networks import MaskPyramid
from monai_modan.transforms import BatchedTwoViewAugment
from monai_modan.utils.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, SOURCE, SIZE, BATCH = 8, 40, 32, 4
HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def spark_model(seed: int = 0, decoder_width: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return build_pretraining_model("spark", image_size=SIZE, decoder_width=decoder_width)


def corpus() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (N, 1, SOURCE, SOURCE), dtype=torch.uint8, generator=g), torch.zeros(N, 3)


def spark_trainer(model: nn.Module, num_views: int = 1, **kw) -> FastPretrainer:
    images, labels = corpus()
    optimizer = torch.optim.AdamW(weight_decay_groups(model, 0.04), lr=1e-3, betas=(0.9, 0.95))
    augment = BatchedTwoViewAugment(image_size=SIZE, num_views=num_views, scale=(0.67, 1.0), jitter_prob=0.0)
    return FastPretrainer(model, build_pretraining_loss("spark"), optimizer, None, augment, images, labels, BATCH,
                          **kw)


# ------------------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("settings, message", [
    ({"method": "spark", "num_views": 2}, r"num_views=2 \(views per image\): SparK trains on one view per image"),
    ({"method": "mulsupcon", "num_views": 1}, r"num_views=1 .*must be >= 2"),
    ({"num_views": 1}, r"num_views=1 .*must be >= 2"),
    ({"method": "spark", "mask_ratio": 1.0}, r"mask_ratio=1.0 .*must be in \(0, 1\)"),
    ({"method": "spark", "mask_ratio": 0}, r"mask_ratio=0 .*must be in \(0, 1\)"),
    ({"method": "spark", "mask_ratio": "0.6"}, r"mask_ratio='0.6' .*finite number"),
    ({"method": "spark", "decoder_width": 0}, r"decoder_width=0 .*>= 1"),
    ({"max_grad_norm": 0.0}, r"max_grad_norm=0.0 .*must be > 0"),
    ({"method": "mae"}, r"method='mae': must be one of mulsupcon, simclr, supervised, spark"),
])
def test_settings_that_depend_on_the_method(settings, message):
    with pytest.raises(UserInputError, match=message):
        check_pretraining_settings(**settings)


def test_spark_settings_that_pass():
    ok = {"method": "spark", "num_views": 1, "mask_ratio": 0.6, "decoder_width": 256, "max_grad_norm": 5.0}
    assert check_pretraining_settings(**ok) == ok
    assert check_pretraining_settings(method="simclr", num_views=2, max_grad_norm=None)


# ------------------------------------------------------------------------------------------ batch, loss, clipping
def test_spark_batch_targets_the_images_and_the_loss_reads_the_model_output():
    batch = {"image": torch.rand(BATCH, 1, 1, SIZE, SIZE), "label": torch.zeros(BATCH, 3)}
    x, target = TwoViewBatch("spark")(batch)
    assert x.shape == (BATCH, 1, SIZE, SIZE) and target is x
    with pytest.raises(ValueError, match="SparK trains on one view per image, got V=2"):
        TwoViewBatch("spark")({"image": torch.rand(BATCH, 2, 1, SIZE, SIZE)})
    model = spark_model()
    out = model(x)
    loss = build_pretraining_loss("spark", num_views=1, temperature=None)
    assert isinstance(loss, SparKLoss) and loss.last_diagnostics == {}
    torch.testing.assert_close(loss(out, target), MaskedReconstructionLoss()(out.reconstruction, x, out.active))
    with pytest.raises(TypeError, match="SparKLoss expects a SparKModel's output"):
        loss(out.reconstruction, target)


def test_gradient_clipping_clips_before_the_optimiser_step():
    """One SupervisedTrainer step with GradientClipping(0.5) equals a manual step on the clipped gradient (and
    differs from an unclipped one); max_norm=None attaches nothing."""
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    reference, unclipped = copy.deepcopy(net), copy.deepcopy(net)
    x, y = torch.randn(8, 4), torch.randn(8, 3) * 50

    def step(model, clip):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1,
                                    train_data_loader=[{"image": x, "label": y}], network=model, optimizer=optimizer,
                                    loss_function=nn.MSELoss(), decollate=False, train_handlers=[GradientClipping(clip)])
        trainer.run()

    step(net, 0.5)
    step(unclipped, None)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    nn.functional.mse_loss(reference(x), y).backward()
    assert torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5) > 0.5  # the test clips something
    optimizer.step()
    for a, b, c in zip(net.parameters(), reference.parameters(), unclipped.parameters()):
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)
    with pytest.raises(UserInputError, match="max_grad_norm=-1"):
        GradientClipping(-1)


def test_weight_decay_spares_biases_norms_and_mask_tokens():
    model = spark_model()
    decay, no_decay = weight_decay_groups(model, 0.04)
    assert decay["weight_decay"] == 0.04 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    spared = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert spared.isdisjoint(decayed) and spared | decayed == set(names.values())
    assert {f"densify.{i}.mask_token" for i in range(4)} <= spared
    assert "encoder.bn1.weight" in spared and "densify.0.proj.bias" in spared
    assert "encoder.conv1.weight" in decayed and "decoder.blocks.0.up_sample.weight" in decayed
    assert all(p.ndim >= 2 for p in decay["params"])


# ------------------------------------------------------------------------------------------------- the fast path
def test_a_fast_spark_step_equals_a_manual_step_on_the_same_view_and_mask():
    fast, reference = spark_trainer(spark_model(), max_grad_norm=0.5), spark_model()
    index = torch.tensor([0, 2, 5, 7])
    generator, replay = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)

    loss = fast.train_step(index, generator)

    views = fast.augment(fast.images[index], replay)[:, 0].contiguous(memory_format=torch.channels_last)
    active = reference.masking(BATCH, "cpu", replay)  # the model's draw follows the augmentation's
    optimizer = torch.optim.AdamW(weight_decay_groups(reference, 0.04), lr=1e-3, betas=(0.9, 0.95))
    reference.to(memory_format=torch.channels_last).train()
    out = reference(views, active=active)
    expected = MaskedReconstructionLoss()(out.reconstruction, views, out.active)
    expected.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    optimizer.step()
    torch.testing.assert_close(loss, expected.detach())
    for (name, a), b in zip(fast.model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert fast.method == "spark"


def test_a_fast_spark_step_never_reads_a_device_value_back(monkeypatch):
    """Mask, sparse encoder, decoder, loss, clipping: no read-back. (SGD here: AdamW reads its step counter with
    .item(), a host tensor by design -- not a device sync -- which this crude guard cannot tell apart.)"""
    fast = spark_trainer(spark_model(), max_grad_norm=5.0)
    fast.optimizer = torch.optim.SGD(fast.model.parameters(), lr=0.01)

    def host_sync(*args, **kwargs):
        raise AssertionError("host sync inside the step")

    for name in HOST_SYNCS:
        monkeypatch.setattr(torch.Tensor, name, host_sync)
    fast.train_step(torch.arange(BATCH), torch.Generator().manual_seed(0))


def test_the_fast_path_refuses_two_views_for_spark_and_writes_the_picture(tmp_path):
    with pytest.raises(ValueError, match="SparK trains on one view per image; the augmentation makes 2"):
        spark_trainer(spark_model(), num_views=2)
    fast = spark_trainer(spark_model())
    fast.run(1, tmp_path, config={"method": "spark"})
    assert (tmp_path / "encoder.pt").is_file() and (tmp_path / "reconstruction.png").is_file()


# ------------------------------------------------------------------------------------------ reconstruction picture
def test_reconstruction_panels_show_input_masked_input_and_the_filled_in_image():
    model = spark_model().train()
    x = torch.rand(3, 1, SIZE, SIZE)
    rng = torch.get_rng_state()
    panels = reconstruction_panels(model, x, seed=1)
    assert torch.equal(torch.get_rng_state(), rng), "the picture draws its mask from its own generator"
    assert model.training, "the model is put back in training mode"
    assert panels.shape == (3, 3, 1, SIZE, SIZE)
    active = model.masking(3, "cpu", torch.Generator().manual_seed(1))
    visible = MaskPyramid(active).at(x).bool()
    torch.testing.assert_close(panels[:, 0], x)
    assert (panels[:, 1][~visible] == 0).all() and torch.equal(panels[:, 1][visible], x[visible])
    torch.testing.assert_close(panels[:, 2][visible], x[visible])
    assert not torch.allclose(panels[:, 2][~visible], x[~visible])  # predicted, not copied
    with pytest.raises(TypeError, match="needs a SparKModel"):
        reconstruction_panels(nn.Linear(2, 2), x)


def test_the_picture_is_a_png_with_one_row_per_image(tmp_path):
    model = spark_model()
    one = save_reconstruction_figure(model, torch.rand(4, 1, SIZE, SIZE), tmp_path / "four.png", num_images=4)
    two = save_reconstruction_figure(model, torch.rand(4, 1, SIZE, SIZE), tmp_path / "two.png", num_images=2)
    with Image.open(one) as big, Image.open(two) as small:
        assert big.format == "PNG" and big.width == small.width and big.height > 1.5 * small.height


def test_the_handler_skips_a_run_without_a_batch(tmp_path):
    handler = ReconstructionFigure(tmp_path, spark_model())
    handler(SimpleNamespace(state=SimpleNamespace(output=None)))
    assert not (tmp_path / "reconstruction.png").exists()
    handler(SimpleNamespace(state=SimpleNamespace(output={"image": torch.rand(2, 1, SIZE, SIZE)})))
    assert (tmp_path / "reconstruction.png").is_file()
