"""MulSupConLoss and NTXentLoss against independent oracles (pytorch-metric-learning, MONAI, a per-anchor loop)."""

from __future__ import annotations


import pytest
import torch
from monai.losses import ContrastiveLoss
from pytorch_metric_learning.losses import SupConLoss

from monai_modan.losses import MulSupConLoss, NTXentLoss, jaccard_similarity, positive_pair_weights


def reference_mulsupcon(
    features: torch.Tensor, labels: torch.Tensor, temperature: float, threshold: float
) -> torch.Tensor:
    """Slow, readable float64 loop straight from the formula (anchors ordered image-major, a = b·V + v).

    Scalar torch ops only, so that autograd gives reference gradients too.
    """
    batch, views, _ = features.shape
    z = features.double().reshape(batch * views, -1)
    z = z / z.norm(dim=1, keepdim=True)
    label_sets = [{k for k, on in enumerate(row.tolist()) if on} for row in labels]
    image_of = [a // views for a in range(batch * views)]

    def weight(a: int, p: int) -> float:
        if image_of[a] == image_of[p]:
            return 1.0
        union = label_sets[image_of[a]] | label_sets[image_of[p]]
        if not union:
            return 0.0
        return len(label_sets[image_of[a]] & label_sets[image_of[p]]) / len(union)

    def sim(a: int, k: int) -> torch.Tensor:
        return torch.dot(z[a], z[k]) / temperature

    anchors = range(batch * views)
    losses = []
    for a in anchors:
        log_denominator = torch.log(sum(torch.exp(sim(a, k)) for k in anchors if k != a))
        positives = [p for p in anchors if p != a and weight(a, p) >= threshold]
        if not positives:
            continue
        total = sum(weight(a, p) * (sim(a, p) - log_denominator) for p in positives)
        losses.append(-total / len(positives))
    return sum(losses) / len(losses)


def one_hot(classes: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes)


def modality_anatomy(pairs: list[tuple[int, int]], modalities: int = 3, anatomies: int = 4) -> torch.Tensor:
    """Two one-hot groups concatenated: modality ‖ anatomy."""
    mods, anats = zip(*pairs)
    return torch.cat([one_hot(list(mods), modalities), one_hot(list(anats), anatomies)], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "classes,views",
    [([0, 1, 2, 3, 4, 5], 2), ([0, 0, 1, 1, 2, 3, 3, 3], 2), ([4, 1, 4, 2, 1], 3), ([0, 1, 0, 2, 1, 0, 3], 1)],
)
def test_one_hot_threshold_one_is_supcon_of_pytorch_metric_learning(seed, classes, views):
    generator = torch.Generator().manual_seed(seed)
    temperature = 0.07 + 0.1 * seed
    features = torch.randn(len(classes), views, 16, generator=generator)
    labels = one_hot(classes, max(classes) + 1)

    ours = MulSupConLoss(temperature=temperature, threshold=1.0)(features, labels)
    # PML: [B·V, D] embeddings; image-major flattening, so the class of each embedding is repeated per view
    expected = SupConLoss(temperature=temperature)(
        features.reshape(-1, 16), torch.tensor(classes).repeat_interleave(views)
    )
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch", [2, 5, 16])
def test_ntxent_is_monai_contrastive_loss_on_two_views(seed, batch):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, 2, 32, generator=generator) * (1 + seed)
    ours = NTXentLoss(temperature=0.1)(features)
    expected = ContrastiveLoss(temperature=0.1)(features[:, 0], features[:, 1])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    # labels are accepted and ignored
    torch.testing.assert_close(NTXentLoss(temperature=0.1)(features, torch.ones(batch, 3)), ours)


@pytest.mark.parametrize("views", [2, 3])
def test_ntxent_is_mulsupcon_with_distinct_labels_and_threshold_one(views):
    features = torch.randn(6, views, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.eye(6)
    torch.testing.assert_close(
        NTXentLoss(temperature=0.2)(features), MulSupConLoss(temperature=0.2, threshold=1.0)(features, labels)
    )
    expected = reference_mulsupcon(features, labels, 0.2, 1.0).item()
    assert NTXentLoss(temperature=0.2)(features).item() == pytest.approx(expected, rel=1e-5)


# labels with empty sets, duplicates and pairs whose Jaccard is exactly 1/2, 1/3, 2/3, 1/4
MULTI_HOT = torch.tensor(
    [
        [1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0],  # J = 1/2 with row 0
        [0, 0, 0, 0, 0],  # empty
        [0, 0, 0, 0, 0],  # empty: w = 0 with row 2
        [1, 1, 1, 0, 0],  # J = 2/3 with row 0, 1/3 with row 1
        [0, 0, 1, 1, 1],  # J = 1/5 with row 4
        [1, 1, 0, 0, 0],  # same set as row 0
        [0, 0, 0, 1, 0],
    ]
)


@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("threshold", [0.2, 0.3, 1 / 3, 0.5, 2 / 3, 1.0])
def test_multi_hot_matches_per_anchor_loop(views, threshold):
    features = torch.randn(len(MULTI_HOT), views, 12, generator=torch.Generator().manual_seed(views))
    loss = MulSupConLoss(temperature=0.1, threshold=threshold)(features, MULTI_HOT)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_mulsupcon(features, MULTI_HOT, 0.1, threshold).item(), rel=1e-5)


def test_random_multi_hot_matches_per_anchor_loop():
    generator = torch.Generator().manual_seed(7)
    for trial in range(5):
        labels = (torch.rand(10, 6, generator=generator) < 0.3).float()
        features = torch.randn(10, 2, 8, generator=generator)
        loss = MulSupConLoss(temperature=0.07, threshold=0.25)(features, labels)
        expected = reference_mulsupcon(features, labels, 0.07, 0.25).item()
        assert loss.item() == pytest.approx(expected, rel=1e-5), trial


def test_threshold_is_inclusive():
    weights = positive_pair_weights(jaccard_similarity(MULTI_HOT), views=1, threshold=0.5)
    assert weights[0, 1].item() == pytest.approx(0.5)  # J = 1/2 exactly, kept at τ = 0.5
    weights = positive_pair_weights(jaccard_similarity(MULTI_HOT), views=1, threshold=1 / 3)
    assert weights[1, 4].item() == pytest.approx(1 / 3)  # J = 1/3 exactly, kept at τ = 1/3
    weights = positive_pair_weights(jaccard_similarity(MULTI_HOT), views=1, threshold=0.51)
    assert weights[0, 1].item() == 0.0


def test_empty_label_sets():
    jaccard = jaccard_similarity(MULTI_HOT)
    assert jaccard[2, 3].item() == 0.0 and jaccard[2, 2].item() == 0.0
    weights = positive_pair_weights(jaccard, views=2, threshold=0.3)
    # the two views of an image with an empty label set are still positives of weight 1 ...
    assert weights[4, 5].item() == 1.0 and weights[5, 4].item() == 1.0
    # ... but two different images with empty label sets are not
    assert weights[4:6, 6:8].count_nonzero().item() == 0 and weights[6:8, 4:6].count_nonzero().item() == 0
    # every anchor has its other view
    assert (weights > 0).sum(dim=1).min().item() >= 1


def test_meaning_of_threshold_with_two_groups():
    # CT chest, CT abdomen (shares modality only), MR knee (shares nothing), CT chest (identical to image 0)
    labels = modality_anatomy([(0, 0), (0, 1), (1, 2), (0, 0)])
    weights = positive_pair_weights(jaccard_similarity(labels), views=2, threshold=0.3)
    anchor = {image: 2 * image for image in range(4)}  # image-major: view 0 of image b is anchor 2b
    assert weights[anchor[0], anchor[1]].item() == pytest.approx(1 / 3, abs=1e-7)
    assert weights[anchor[0], anchor[3]].item() == 1.0
    assert weights[anchor[0], anchor[2]].item() == 0.0
    assert positive_pair_weights(jaccard_similarity(labels), views=2, threshold=0.34)[anchor[0], anchor[1]] == 0

    features = torch.randn(4, 2, 8, generator=torch.Generator().manual_seed(0))
    loss = MulSupConLoss(threshold=0.3)
    value = loss(features, labels)
    assert value.item() == pytest.approx(reference_mulsupcon(features, labels, 0.07, 0.3).item(), rel=1e-5)
    # positives per image: {other view, image 3 ×2, image 1 ×2 at 1/3} = 5, image 1: 1 + 2×2 partial = 5,
    # image 2: its other view only = 1, image 3 like image 0 = 5  -> mean 4; partial pairs 2+4+0+2 of 5+5+1+5
    diagnostics = loss.last_diagnostics
    assert diagnostics["positives_per_anchor"].item() == pytest.approx(4.0)
    assert diagnostics["partial_positive_share"].item() == pytest.approx(0.5)
    assert all(t.ndim == 0 and not t.requires_grad for t in diagnostics.values())

    strict = MulSupConLoss(threshold=0.34)
    strict(features, labels)
    # τ = 0.34: image 0 {other view, image 3 ×2} = 3, image 1 = 1, image 2 = 1, image 3 = 3 -> mean 2, no partials
    assert strict.last_diagnostics["positives_per_anchor"].item() == pytest.approx(2.0)
    assert strict.last_diagnostics["partial_positive_share"].item() == 0.0


@pytest.mark.parametrize("views", [1, 3])
def test_gradients_finite_and_match_float64_reference(views):
    features = torch.randn(8, views, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    MulSupConLoss(threshold=0.3)(features, MULTI_HOT).backward()
    assert torch.isfinite(features.grad).all()

    features64 = features.detach().double().requires_grad_()
    reference_mulsupcon(features64, MULTI_HOT, 0.07, 0.3).backward()
    torch.testing.assert_close(features.grad, features64.grad.float(), rtol=1e-4, atol=1e-6)


def test_fp32_under_bfloat16_autocast():
    projection = torch.nn.Linear(16, 8)
    inputs = torch.randn(8, 2, 16, generator=torch.Generator().manual_seed(2))
    loss = MulSupConLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = projection(inputs)
        assert features.dtype == torch.bfloat16
        value = loss(features, MULTI_HOT)
        ntxent = NTXentLoss()(features)
    assert value.dtype == torch.float32 and ntxent.dtype == torch.float32
    # the same numbers as the fp32 loss on the (bf16) features: nothing inside ran in bf16
    torch.testing.assert_close(value, loss(features.float(), MULTI_HOT))
    value.backward()
    assert torch.isfinite(projection.weight.grad).all()


def test_stable_at_low_temperature_and_large_norms():
    features = torch.randn(8, 2, 16, generator=torch.Generator().manual_seed(4))
    loss = MulSupConLoss(temperature=0.07)
    scaled = (features * 1e4).requires_grad_()
    value = loss(scaled, MULTI_HOT)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(scaled.grad).all()
    torch.testing.assert_close(value, loss(features, MULTI_HOT))  # normalised inside: the norm does not matter
    # collapsed embeddings (all equal) are the worst case for exp overflow without logsumexp
    collapsed = torch.ones(8, 2, 16) * 1e3
    expected = reference_mulsupcon(collapsed, MULTI_HOT, 0.07, 0.3).item()
    assert loss(collapsed, MULTI_HOT).item() == pytest.approx(expected)
    tiny = NTXentLoss(temperature=0.01)(features)
    assert torch.isfinite(tiny)


def test_single_view_without_positives():
    features = torch.randn(3, 1, 4, requires_grad=True)
    loss = MulSupConLoss()(features, torch.eye(3))  # V = 1 and no shared labels: nothing to attract
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_bad_inputs_raise_clear_errors():
    loss = MulSupConLoss()
    labels = torch.eye(4)
    with pytest.raises(ValueError, match=r"\[B, V, D\]"):
        loss(torch.randn(4, 8), labels)
    with pytest.raises(ValueError, match="at least one view"):
        loss(torch.randn(4, 0, 8), labels)
    with pytest.raises(ValueError, match=r"labels must have shape \[B, K\]"):
        loss(torch.randn(4, 2, 8), torch.eye(3))
    with pytest.raises(ValueError, match=r"labels must have shape \[B, K\]"):
        loss(torch.randn(4, 2, 8), torch.ones(4))
    with pytest.raises(ValueError, match="need at least 2 views in the batch"):
        loss(torch.randn(1, 1, 8), torch.ones(1, 2))
    nan_features = torch.randn(4, 2, 8)
    nan_features[1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(nan_features, labels)
    with pytest.raises(ValueError, match="NaN or Inf"):
        NTXentLoss()(nan_features)
    with pytest.raises(ValueError, match="multi-hot"):
        loss(torch.randn(4, 2, 8), labels * 0.5)
    with pytest.raises(ValueError, match="at least 2 views per image"):
        NTXentLoss()(torch.randn(4, 1, 8))
    with pytest.raises(ValueError, match="temperature"):
        MulSupConLoss(temperature=0.0)
    with pytest.raises(ValueError, match="threshold"):
        MulSupConLoss(threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        MulSupConLoss(threshold=1.5)


def test_labels_of_any_binary_dtype():
    features = torch.randn(8, 2, 8, generator=torch.Generator().manual_seed(5))
    loss = MulSupConLoss()
    expected = loss(features, MULTI_HOT.float())
    torch.testing.assert_close(loss(features, MULTI_HOT.bool()), expected)
    torch.testing.assert_close(loss(features, MULTI_HOT.long()), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    features = torch.randn(8, 3, 16, generator=torch.Generator().manual_seed(6))
    for loss in (MulSupConLoss(), NTXentLoss()):
        cpu = loss(features, MULTI_HOT)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            cuda = loss(features.cuda().bfloat16().float(), MULTI_HOT.cuda())
        assert cuda.dtype == torch.float32 and cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), loss(features.bfloat16().float(), MULTI_HOT), rtol=1e-4, atol=1e-5)
        assert torch.isfinite(cpu)
