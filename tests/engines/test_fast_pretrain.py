"""FastPretrainer: the plain path's math on a device-resident corpus, without host syncs inside a step."""

from __future__ import annotations

import copy
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.optimizers import WarmupCosineSchedule
from torch import nn

from monai_modan.engines.fast_pretrain import FastPretrainer, SyncFreeContrastiveLoss, epoch_seed
from monai_modan.engines.pretrain import (
    CheckpointError,
    PretrainCheckpoint,
    TwoViewBatch,
    ViewLoss,
    build_pretraining_loss,
    build_pretraining_model,
)
from monai_modan.losses import HybridContrastiveLoss, MulSupConLoss, NTXentLoss
from monai_modan.transforms import BatchedTwoViewAugment

N, SOURCE, SIZE, BATCH, CLASSES = 12, 40, 32, 6, 4
HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def corpus(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (N, 1, SOURCE, SOURCE), dtype=torch.uint8, generator=g)
    labels = torch.zeros(N, 7, dtype=torch.uint8)
    labels[torch.arange(N), torch.arange(N) % 3] = 1  # "modality"
    labels[torch.arange(N), 3 + torch.arange(N) % 4] = 1  # "anatomy"
    labels[::5, 3:] = 0  # some anatomy unknown
    return images, labels, torch.arange(N) % CLASSES


def resnet(method: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_pretraining_model(method, num_classes=CLASSES, stem="conv7x7")  # 7x7/2: cheap at 32 px


class TinyNet(nn.Module):
    """A small conv net with BatchNorm, for the tests that only need some trainable network."""

    def __init__(self, out: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten(), nn.Linear(32, out))

    def forward(self, x):
        return self.body(x)


def trainer(model: nn.Module, method: str = "mulsupcon", seed: int = 0, scheduler: bool = False,
            batch_size: int = BATCH, **kw) -> FastPretrainer:
    images, labels, class_index = corpus()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = WarmupCosineSchedule(optimizer, warmup_steps=2, t_total=8) if scheduler else None
    return FastPretrainer(model, build_pretraining_loss(method), optimizer, sched,
                          BatchedTwoViewAugment(image_size=SIZE), images, labels, batch_size, seed=seed,
                          class_index=class_index, **kw)


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def assert_same_weights(a: nn.Module, b: nn.Module, atol: float = 0.0) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=atol, rtol=0 if atol == 0 else 1e-5, msg=name)


@pytest.mark.parametrize("method", ["mulsupcon", "simclr", "supervised", "hybrid"])
def test_one_step_equals_monai_supervised_trainer_on_the_same_views(method):
    """Oracle: MONAI's SupervisedTrainer with the plain path's prepare_batch and loss, fed the very views the fast
    step drew, gives the same loss and the same updated weights (the pretraining ResNet-18 for MulSupCon and the
    hybrid, with its two heads; a small BatchNorm conv net for the other two, to keep the test fast)."""
    if method in ("mulsupcon", "hybrid"):
        fast, reference = trainer(resnet(method), method), resnet(method)
    else:
        torch.manual_seed(0)
        fast = trainer(TinyNet(CLASSES if method == "supervised" else 16), method)
        reference = copy.deepcopy(fast.model)
    assert_same_weights(fast.model, reference)
    index = torch.tensor([0, 3, 5, 7, 8, 11])
    generator, replay = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)

    loss = fast.train_step(index, generator)

    views = BatchedTwoViewAugment(image_size=SIZE)(fast.images[index], replay)
    batch = {"image": views, "label": fast.labels[index].float(), "class_index": fast.class_index[index]}
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    plain = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[batch], epoch_length=1,
                              network=reference, optimizer=optimizer, loss_function=build_pretraining_loss(method),
                              prepare_batch=TwoViewBatch(method), decollate=False)
    plain.run()
    torch.testing.assert_close(loss, plain.state.output["loss"].detach(), rtol=1e-5, atol=1e-6)
    assert_same_weights(fast.model, reference, atol=1e-6)
    assert fast.iteration == 1


def test_sync_free_loss_is_the_project_loss():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(10, 2, 8, generator=g)
    labels = (torch.rand(10, 6, generator=g) < 0.4).float()
    flat = features.reshape(20, 8)
    for loss in (MulSupConLoss(threshold=0.3), NTXentLoss(temperature=0.2), HybridContrastiveLoss(instance_weight=0.5)):
        ours = SyncFreeContrastiveLoss(ViewLoss(loss, 2))
        torch.testing.assert_close(ours(flat, labels), loss(features, labels))
        assert set(ours.last_diagnostics) == set(loss.last_diagnostics)
    # the copy runs without value checks; the loss given keeps its own (the hybrid's terms are not shared)
    assert not ours.loss.check_values and loss.check_values and loss.metadata_loss.check_values
    with pytest.raises(TypeError, match="MulSupConLoss, NTXentLoss or HybridContrastiveLoss"):
        SyncFreeContrastiveLoss(nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="labels"):
        SyncFreeContrastiveLoss(MulSupConLoss())(flat, None)


@pytest.mark.parametrize("method", ["mulsupcon", "simclr", "supervised", "hybrid"])
def test_a_step_never_reads_a_device_value_back(monkeypatch, method):
    """Every Python-level way of reading a tensor back to the host raises inside the step; the guard itself is
    shown to work on the plain MulSupConLoss, whose value checks do read back."""
    model = resnet(method) if method == "hybrid" else TinyNet(CLASSES if method == "supervised" else 16)
    fast = trainer(model, method, scheduler=True)

    def host_sync(*args, **kwargs):
        raise AssertionError("host sync inside the step")

    for name in HOST_SYNCS:
        monkeypatch.setattr(torch.Tensor, name, host_sync)
    fast.train_step(torch.arange(BATCH), torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match="host sync"):
        MulSupConLoss()(torch.randn(4, 2, 3), torch.ones(4, 2))


def test_run_epochs_statistics_determinism_and_scheduler():
    first = trainer(TinyNet(), seed=7, scheduler=True)
    stats = first.run(2)
    assert [s["epoch"] for s in stats] == [1, 2] and first.epoch == 2
    assert first.iteration == 2 * (N // BATCH) and all(s["steps"] == N // BATCH for s in stats)
    for s in stats:
        assert torch.isfinite(torch.tensor(s["loss"])) and s["loss"] > 0
        assert s["images_per_second"] > 0 and s["seconds"] > 0
        assert 1 <= s["diagnostics"]["positives_per_anchor"] < 2 * BATCH
    assert stats[-1]["lr"] == pytest.approx(first.scheduler.get_last_lr()[0])
    assert first.scheduler.last_epoch == first.iteration  # stepped once per optimiser step
    assert first.run(2) == []  # already complete
    with pytest.raises(ValueError, match="already completed"):
        first.run(1)

    torch.manual_seed(0)
    same = trainer(TinyNet(), seed=7, scheduler=True)
    torch.manual_seed(0)
    other = trainer(TinyNet(), seed=8, scheduler=True)
    assert_same_weights(same.model, other.model)  # same start
    torch.manual_seed(0)
    first_again = trainer(TinyNet(), seed=7, scheduler=True)
    first_again.run(2)
    same.run(2)
    other.run(2)
    assert_same_weights(first_again.model, same.model)
    assert any(not torch.equal(a, b) for a, b in zip(weights(same.model), weights(other.model)))


def test_epochs_are_fresh_permutations_from_independent_streams():
    fast = trainer(TinyNet())
    orders = [fast.epoch_order(e) for e in (1, 2, 1)]
    assert sorted(orders[0].tolist()) == list(range(N))
    assert torch.equal(orders[0], orders[2]) and not torch.equal(orders[0], orders[1])
    assert len({epoch_seed(0, 2), epoch_seed(1, 1), epoch_seed(0, 1, rank=1), epoch_seed(0, 1)}) == 4


def test_checkpoints_have_the_plain_format_and_resume_exactly(tmp_path):
    config = {"method": "mulsupcon", "image_size": SIZE, "batch_size": BATCH}
    torch.manual_seed(0)
    straight = trainer(TinyNet(), scheduler=True)
    straight.run(2)

    torch.manual_seed(0)
    interrupted = trainer(TinyNet(), scheduler=True)
    interrupted.run(1, checkpoint_dir=tmp_path / "a", config=config, export_encoder=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["checkpoint_final.pt", "config.json"]
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == config
    ckpt = torch.load(tmp_path / "a" / "checkpoint_final.pt", weights_only=True)
    engine = SimpleNamespace(state=SimpleNamespace(epoch=1, iteration=2), scaler=None)
    plain = PretrainCheckpoint(tmp_path, interrupted.model, interrupted.optimizer, interrupted.scheduler,
                               config=config).state_dict(engine)
    assert set(ckpt) == set(plain) and ckpt["config"] == plain["config"] and ckpt["epoch"] == 1

    torch.manual_seed(1)  # other initial weights: everything must come from the checkpoint
    resumed = trainer(TinyNet(), scheduler=True)
    resumed.load_checkpoint(tmp_path / "a" / "checkpoint_final.pt", config)
    assert (resumed.epoch, resumed.iteration) == (1, N // BATCH)
    stats = resumed.run(2)
    assert [s["epoch"] for s in stats] == [2]
    assert_same_weights(resumed.model, straight.model)
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()
    with pytest.raises(CheckpointError, match="batch_size"):
        resumed.load_checkpoint(tmp_path / "a" / "checkpoint_final.pt", {**config, "batch_size": 4})


def test_periodic_checkpoints_keep_the_last_ones(tmp_path):
    fast = trainer(TinyNet())
    fast.run(4, checkpoint_dir=tmp_path, checkpoint_interval=1, keep_last=2, export_encoder=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt",
                                                          "checkpoint_final.pt", "config.json"]


def test_the_plain_workflow_resumes_from_a_fast_checkpoint(tmp_path):
    config = {"method": "mulsupcon", "batch_size": N}
    fast = trainer(resnet("mulsupcon"), batch_size=N)  # one step per epoch
    fast.run(1, checkpoint_dir=tmp_path, config=config)
    encoder = torch.load(tmp_path / "encoder.pt", weights_only=True)  # the plain path's export, as MONAI resnet18
    assert "conv1.weight" in encoder and not any(k.startswith("projection") for k in encoder)
    model = resnet("mulsupcon", seed=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    handler = PretrainCheckpoint(tmp_path / "plain", model, optimizer, config=config,
                                 resume_from=tmp_path / "checkpoint_final.pt", export_encoder=False)
    plain = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[{}], epoch_length=1,
                              network=model, optimizer=optimizer, loss_function=build_pretraining_loss("mulsupcon"),
                              prepare_batch=TwoViewBatch("mulsupcon"), train_handlers=[handler], decollate=False)
    plain.run()  # resumes at epoch 1 of 1: loads the weights and stops without a step
    assert plain.state.epoch == 1 and plain.state.iteration == 1
    assert_same_weights(model, fast.model)
    torch.testing.assert_close(optimizer.state_dict()["state"][0]["momentum_buffer"],
                               fast.optimizer.state_dict()["state"][0]["momentum_buffer"])


def test_a_non_finite_loss_stops_the_epoch_naming_the_step():
    fast = trainer(TinyNet())
    with torch.no_grad():
        fast.model.body[-1].bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 1 of 2 \(iteration 1\)"):
        fast.run_epoch()
    assert fast.epoch == 0 and fast.history == []


def test_inputs_are_checked():
    images, labels, class_index = corpus()
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    augment = BatchedTwoViewAugment(image_size=SIZE)
    loss = build_pretraining_loss("mulsupcon")
    with pytest.raises(ValueError, match="uint8"):
        FastPretrainer(model, loss, opt, None, augment, images.float(), labels, BATCH)
    with pytest.raises(ValueError, match="labels must be"):
        FastPretrainer(model, loss, opt, None, augment, images, labels[:5], BATCH)
    with pytest.raises(ValueError, match="batch_size"):
        FastPretrainer(model, loss, opt, None, augment, images, labels, N + 1)
    with pytest.raises(ValueError, match="class_index"):
        FastPretrainer(TinyNet(CLASSES), nn.CrossEntropyLoss(), opt, None, augment, images, labels, BATCH)
    with pytest.raises(ValueError, match="contradicts"):
        FastPretrainer(model, loss, opt, None, augment, images, labels, BATCH, method="simclr")
    with pytest.raises(ValueError, match="views"):
        FastPretrainer(model, loss, opt, None, BatchedTwoViewAugment(image_size=SIZE, num_views=3), images, labels,
                       BATCH)
    with pytest.raises(ValueError, match="meta"):
        FastPretrainer(TinyNet().to("meta"), loss, opt, None, augment, images, labels, BATCH)
    with pytest.raises(TypeError, match="BatchedTwoViewAugment"):
        FastPretrainer(model, loss, opt, None, lambda x, g: x, images, labels, BATCH)
    fast = FastPretrainer(model, loss, opt, None, augment, images, labels, BATCH)  # compile=False, amp "auto"
    assert fast.amp_dtype is None and fast.method == "mulsupcon" and fast.forward is model
    assert fast.model.body[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++") or shutil.which("cc")),
                    reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_forward_trains_like_eager():
    """``compile=True`` (the GPU recipe's ``--compile``) is the same optimisation: same losses and weights after an
    epoch, up to float reassociation in the generated kernels."""
    torch.manual_seed(0)
    eager = trainer(TinyNet(), seed=3)
    torch.manual_seed(0)
    compiled = trainer(TinyNet(), seed=3, compile=True)
    assert isinstance(compiled.forward, torch._dynamo.eval_frame.OptimizedModule)
    torch._dynamo.reset()
    eager_stats, compiled_stats = eager.run(1), compiled.run(1)
    assert compiled_stats[0]["loss"] == pytest.approx(eager_stats[0]["loss"], rel=1e-4)
    assert_same_weights(compiled.model, eager.model, atol=1e-5)
