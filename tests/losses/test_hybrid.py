"""HybridContrastiveLoss: MulSupCon + λ · NT-Xent, against its terms and an independent NT-Xent (MONAI's)."""

from __future__ import annotations

import pytest
import torch
from monai.losses import ContrastiveLoss

from monai_modan.losses import HybridContrastiveLoss, MulSupConLoss, NTXentLoss


def batch(views: int = 2, seed: int = 0, images: int = 8, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(images, views, dim, generator=g)
    labels = (torch.rand(images, 7, generator=g) < 0.4).float()
    labels[::3, :3] = torch.eye(3)[0]  # some images share their modality block exactly
    return features, labels


def value_and_grad(loss_fn, features, *args):
    features = features.clone().requires_grad_()
    loss = loss_fn(features, *args)
    loss.backward()
    return loss.detach(), features.grad


@pytest.mark.parametrize("views", [2, 3])
def test_instance_weight_zero_is_exactly_mulsupcon(views):
    features, labels = batch(views)
    loss, grad = value_and_grad(HybridContrastiveLoss(instance_weight=0.0), features, labels)
    expected, expected_grad = value_and_grad(MulSupConLoss(), features, labels)
    assert torch.equal(loss, expected) and torch.equal(grad, expected_grad)
    # the reduction is not vacuous: with λ > 0 the value moves
    assert not torch.isclose(HybridContrastiveLoss(instance_weight=0.5)(features, labels), expected)


@pytest.mark.parametrize("views", [2, 3])
def test_metadata_weight_zero_is_exactly_ntxent(views):
    features, labels = batch(views, seed=1)
    loss, grad = value_and_grad(HybridContrastiveLoss(metadata_weight=0.0), features, labels)
    expected, expected_grad = value_and_grad(NTXentLoss(), features)
    assert torch.equal(loss, expected) and torch.equal(grad, expected_grad)


@pytest.mark.parametrize("instance_weight, metadata_weight", [(1.0, 1.0), (0.25, 1.0), (2.0, 0.5)])
def test_value_is_the_weighted_sum_with_monai_contrastive_loss_as_the_instance_oracle(instance_weight,
                                                                                      metadata_weight):
    features, labels = batch(2, seed=2)
    hybrid = HybridContrastiveLoss(instance_weight, metadata_weight,
                                   metadata_loss=MulSupConLoss(temperature=0.2, threshold=0.3),
                                   instance_loss=NTXentLoss(temperature=0.5))
    ntxent = ContrastiveLoss(temperature=0.5)(features[:, 0], features[:, 1])  # independent NT-Xent (two views)
    expected = metadata_weight * MulSupConLoss(temperature=0.2)(features, labels) + instance_weight * ntxent
    torch.testing.assert_close(hybrid(features, labels), expected, rtol=1e-5, atol=1e-6)
    diagnostics = hybrid.last_diagnostics
    torch.testing.assert_close(diagnostics["instance_loss"], ntxent, rtol=1e-5, atol=1e-6)
    assert {"positives_per_anchor", "partial_positive_share", "metadata_loss"} <= set(diagnostics)
    assert not any(v.requires_grad for v in diagnostics.values())


def test_gradients_flow_from_both_terms():
    features, labels = batch(2, seed=3)
    lam = 0.7
    grad = value_and_grad(HybridContrastiveLoss(instance_weight=lam), features, labels)[1]
    metadata_grad = value_and_grad(MulSupConLoss(), features, labels)[1]
    instance_grad = value_and_grad(NTXentLoss(), features)[1]
    torch.testing.assert_close(grad, metadata_grad + lam * instance_grad, rtol=1e-5, atol=1e-7)
    # the two terms pull in different directions, so each one's share is visible in the sum
    cosine = torch.nn.functional.cosine_similarity(metadata_grad.flatten(), instance_grad.flatten(), dim=0)
    assert metadata_grad.abs().sum() > 0 and instance_grad.abs().sum() > 0 and cosine < 0.99


def test_separate_instance_features_feed_only_the_instance_term():
    features, labels = batch(2, seed=4)
    instance = torch.randn(8, 2, 5, generator=torch.Generator().manual_seed(5))
    f, g = features.clone().requires_grad_(), instance.clone().requires_grad_()
    hybrid = HybridContrastiveLoss(instance_weight=0.5)
    loss = hybrid(f, labels, g)
    torch.testing.assert_close(loss, MulSupConLoss()(features, labels) + 0.5 * NTXentLoss()(instance))
    loss.backward()
    torch.testing.assert_close(f.grad, value_and_grad(MulSupConLoss(), features, labels)[1])
    torch.testing.assert_close(g.grad, 0.5 * value_and_grad(NTXentLoss(), instance)[1])


def test_fp32_under_bfloat16_autocast():
    features, labels = batch(2, seed=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = HybridContrastiveLoss()(features.bfloat16(), labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, HybridContrastiveLoss()(features.bfloat16().float(), labels))


@pytest.mark.parametrize("kwargs, message", [
    ({"instance_weight": -0.5}, r"instance_weight=-0.5: must be a finite number >= 0"),
    ({"metadata_weight": -1}, r"metadata_weight=-1: must be a finite number >= 0"),
    ({"instance_weight": float("nan")}, r"instance_weight=nan: must be a finite number >= 0"),
    ({"instance_weight": "1"}, r"instance_weight='1': must be a finite number >= 0"),
    ({"instance_weight": 0, "metadata_weight": 0}, r"instance_weight=0 and metadata_weight=0"),
])
def test_bad_weights_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HybridContrastiveLoss(**kwargs)


def test_bad_components_and_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="metadata_loss must be a MulSupConLoss, got NTXentLoss"):
        HybridContrastiveLoss(metadata_loss=NTXentLoss())
    with pytest.raises(TypeError, match="instance_loss must be an NTXentLoss, got MulSupConLoss"):
        HybridContrastiveLoss(instance_loss=MulSupConLoss())
    features, labels = batch(2)
    hybrid = HybridContrastiveLoss()
    with pytest.raises(ValueError, match=r"instance_features must be \[B, V, D'\] with the \[B, V\] = \[8, 2\]"):
        hybrid(features, labels, torch.randn(8, 3, 4))
    with pytest.raises(ValueError, match="at least 2 views per image"):
        hybrid(features[:, :1], labels)
    bad = features.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        hybrid(bad, labels)
    with pytest.raises(ValueError, match="multi-hot"):
        hybrid(features, labels * 2)


def test_check_values_switches_both_terms():
    hybrid = HybridContrastiveLoss()
    hybrid.check_values = False
    assert not hybrid.metadata_loss.check_values and not hybrid.instance_loss.check_values
    assert not hybrid.check_values
