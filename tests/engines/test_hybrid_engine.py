"""The hybrid method in the pretraining engine: its network (two heads or one), its loss, and one trainer step in
which the gradient reaches the encoder and both heads."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from monai_modan.engines.pretrain import (
    PretrainMethod,
    TwoViewBatch,
    ViewLoss,
    build_pretraining_loss,
    build_pretraining_model,
    check_pretraining_settings,
)
from monai_modan.losses import HybridContrastiveLoss, MulSupConLoss, NTXentLoss
from monai_modan.networks import ContrastiveModel, HybridModel, HybridOutput
from monai_modan.utils.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BATCH, SIZE = 6, 32


def two_view_batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(BATCH, 7)
    labels[torch.arange(BATCH), torch.arange(BATCH) % 3] = 1
    labels[torch.arange(BATCH), 3 + torch.arange(BATCH) % 4] = 1
    return {"image": torch.rand(BATCH, 2, 1, SIZE, SIZE, generator=g), "label": labels}


def test_the_network_has_one_head_per_term_unless_shared():
    torch.manual_seed(0)
    model = build_pretraining_model("hybrid", stem="conv7x7", channels_last=False)
    assert isinstance(model, HybridModel)
    out = model(torch.rand(4, 1, SIZE, SIZE))
    assert isinstance(out, HybridOutput) and out.metadata.shape == out.instance.shape == (4, 128)
    assert not torch.allclose(out.metadata, out.instance)  # two heads, two initialisations
    shared = build_pretraining_model("hybrid", stem="conv7x7", separate_heads=False)
    assert type(shared) is ContrastiveModel
    # the switch belongs to the hybrid only
    assert type(build_pretraining_model("mulsupcon", stem="conv7x7", separate_heads=True)) is ContrastiveModel


def test_the_loss_is_the_hybrid_of_the_configured_terms():
    loss = build_pretraining_loss("hybrid", temperature=0.2, threshold=1 / 3, instance_weight=0.25,
                                  instance_temperature=0.3)
    assert isinstance(loss, ViewLoss) and isinstance(loss.loss, HybridContrastiveLoss)
    hybrid = loss.loss
    assert (hybrid.instance_weight, hybrid.metadata_weight) == (0.25, 1.0)
    assert (hybrid.metadata_loss.temperature, hybrid.metadata_loss.threshold) == (0.2, 1 / 3)
    assert hybrid.instance_loss.temperature == 0.3
    defaults = build_pretraining_loss("hybrid").loss  # None everywhere: the losses' own defaults
    assert (defaults.metadata_loss.temperature, defaults.instance_loss.temperature) == (0.07, 0.1)
    with pytest.raises(ValueError, match="instance_weight=-1: must be a finite number >= 0"):
        build_pretraining_loss("hybrid", instance_weight=-1)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        build_pretraining_loss("hybrid", instance_temperature=0)


def test_view_loss_folds_each_head():
    g = torch.Generator().manual_seed(1)
    metadata, instance = torch.randn(2 * BATCH, 8, generator=g), torch.randn(2 * BATCH, 5, generator=g)
    labels = two_view_batch()["label"]
    loss = build_pretraining_loss("hybrid", instance_weight=0.5)
    expected = (MulSupConLoss()(metadata.reshape(BATCH, 2, 8), labels)
                + 0.5 * NTXentLoss()(instance.reshape(BATCH, 2, 5)))
    torch.testing.assert_close(loss(HybridOutput(metadata, instance), labels), expected)
    # one shared head: both terms on the same projections
    folded = metadata.reshape(BATCH, 2, 8)
    torch.testing.assert_close(loss(metadata, labels), MulSupConLoss()(folded, labels) + 0.5 * NTXentLoss()(folded))


@pytest.mark.parametrize("instance_weight", [1.0, 0.0])
def test_one_trainer_step_sends_gradient_to_the_encoder_and_both_heads(instance_weight):
    torch.manual_seed(0)
    model = build_pretraining_model("hybrid", stem="conv7x7")
    grads = {}

    def keep_grads(engine):
        grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[two_view_batch()],
                                epoch_length=1, network=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                                loss_function=build_pretraining_loss("hybrid", instance_weight=instance_weight),
                                prepare_batch=TwoViewBatch("hybrid"), decollate=False)
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, keep_grads)
    trainer.run()
    assert set(grads) == {n for n, _ in model.named_parameters()}  # every parameter took part (DDP needs this)

    def norm(prefix: str) -> float:
        return sum(float(g.norm()) for n, g in grads.items() if n.startswith(prefix))

    assert norm("encoder.") > 0 and norm("projection.") > 0
    if instance_weight:
        assert norm("instance_projection.") > 0
    else:  # λ = 0: the instance head is in the graph with an exactly zero gradient
        assert norm("instance_projection.") == 0


def test_settings_check_refuses_bad_hybrid_values():
    assert PretrainMethod("hybrid") == PretrainMethod.HYBRID
    assert check_pretraining_settings(method="hybrid", num_views=2, instance_weight=0.0, metadata_weight=1.0,
                                      instance_temperature=None, separate_heads=False)
    for settings, message in (({"instance_weight": -2.0}, r"instance_weight=-2.0 .*must be >= 0"),
                              ({"metadata_weight": "1"}, r"metadata_weight='1' .*must be a finite number"),
                              ({"separate_heads": "yes"}, r"separate_heads='yes' .*must be true or false"),
                              ({"num_views": 1}, r"num_views=1 .*must be >= 2"),
                              ({"instance_weight": 0, "metadata_weight": 0}, r"hybrid loss would be 0")):
        with pytest.raises(UserInputError, match=message):
            check_pretraining_settings(method="hybrid", **settings)
