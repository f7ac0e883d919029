"""SparK's masked reconstruction loss: an oracle by hand on a tiny example, masked patches only, the patch layout."""

from __future__ import annotations

import math

import pytest
import torch

from monai_modan.losses import MaskedReconstructionLoss, patch_statistics, patchify, unpatchify


def test_oracle_by_hand_on_a_tiny_example():
    """One 4x4 image, 2x2 patches, the two off-diagonal patches masked: per masked patch, normalise the target's
    four pixels with their mean and unbiased variance (+1e-6), average the squared errors over the four pixels;
    the loss is the mean over the two masked patches. Written out with plain Python numbers."""
    image = [[0.0, 1.0, 2.0, 3.0],
             [4.0, 5.0, 6.0, 8.0],
             [1.0, 1.0, 0.5, 0.0],
             [3.0, 2.0, 0.0, 9.0]]
    pred = [[0.1 * (r * 4 + c) - 0.7 for c in range(4)] for r in range(4)]
    masked_patches = [(0, 1), (1, 0)]  # (patch row, patch column)

    def patch_error(pr: int, pc: int) -> float:
        pixels = [(2 * pr + i, 2 * pc + j) for i in range(2) for j in range(2)]
        values = [image[r][c] for r, c in pixels]
        mean = sum(values) / 4
        var = sum((v - mean) ** 2 for v in values) / 3  # unbiased
        return sum((pred[r][c] - (image[r][c] - mean) / math.sqrt(var + 1e-6)) ** 2 for r, c in pixels) / 4

    expected = sum(patch_error(*p) for p in masked_patches) / len(masked_patches)
    active = torch.tensor([[True, False], [False, True]]).view(1, 1, 2, 2)
    loss = MaskedReconstructionLoss()(torch.tensor(pred).view(1, 1, 4, 4), torch.tensor(image).view(1, 1, 4, 4),
                                      active)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_only_masked_patches_count():
    """(b) Changing the prediction on visible patches leaves the loss unchanged; on a masked patch it does not."""
    g = torch.Generator().manual_seed(0)
    target, pred = torch.rand(3, 1, 32, 32, generator=g), torch.randn(3, 1, 32, 32, generator=g)
    active = torch.rand(3, 1, 4, 4, generator=g) < 0.5
    active[:, :, 0, 0], active[:, :, 0, 1] = True, False  # at least one of each per image
    loss_fn = MaskedReconstructionLoss()
    base = loss_fn(pred, target, active)
    visible = active.repeat_interleave(8, 2).repeat_interleave(8, 3)
    changed = torch.where(visible, torch.randn(pred.shape, generator=g) * 10, pred)
    torch.testing.assert_close(loss_fn(changed, target, active), base, rtol=0, atol=0)
    pred_on_masked = torch.where(~visible, pred + 0.5, pred)
    assert not torch.isclose(loss_fn(pred_on_masked, target, active), base)
    # the gradient reaches masked pixels only
    pred.requires_grad_(True)
    loss_fn(pred, target, active).backward()
    assert (pred.grad[visible] == 0).all() and (pred.grad[~visible] != 0).any()


def test_the_mean_is_over_all_masked_patches_of_the_batch():
    g = torch.Generator().manual_seed(1)
    target, pred = torch.rand(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    active = torch.tensor([[[[True, False], [False, False]]], [[[True, True], [True, False]]]])
    per_image = [MaskedReconstructionLoss()(pred[i:i + 1], target[i:i + 1], active[i:i + 1]) for i in range(2)]
    expected = (3 * per_image[0] + 1 * per_image[1]) / 4  # 3 masked patches in image 0, 1 in image 1
    torch.testing.assert_close(MaskedReconstructionLoss()(pred, target, active), expected)
    assert MaskedReconstructionLoss()(pred, target, torch.ones_like(active)).item() == 0.0  # nothing masked


def test_a_perfect_prediction_is_the_normalised_target():
    target = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    patches = patchify(target, (2, 2))
    mean, std = patch_statistics(patches)
    perfect = unpatchify((patches - mean) / std, (2, 2))
    active = torch.tensor([True, False, False, True]).view(1, 1, 2, 2).expand(2, 1, 2, 2)
    assert MaskedReconstructionLoss()(perfect, target, active).item() < 1e-10
    # a constant patch (variance 0) is normalised with the 1e-6 floor: finite
    flat = torch.full((1, 1, 16, 16), 0.5)
    assert torch.isfinite(MaskedReconstructionLoss()(torch.zeros_like(flat), flat, torch.zeros(1, 1, 1, 1).bool()))


def test_patch_layout_is_row_major_and_round_trips():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    patches = patchify(x, (2, 3))  # 2x2-pixel patches on a 2x3 grid
    assert patches.shape == (2, 6, 12)
    # patch (row 1, column 2) of image 1, channel 0, its top-left pixel is x[1, 0, 2, 4]
    assert patches[1, 1 * 3 + 2, 0] == x[1, 0, 2, 4]
    torch.testing.assert_close(unpatchify(patches, (2, 3), channels=3), x)


def test_runs_in_fp32_under_autocast():
    target = torch.rand(2, 1, 16, 32)
    pred = torch.randn(2, 1, 16, 32).bfloat16()
    active = torch.tensor([True, False]).view(1, 1, 1, 2).expand(2, 1, 1, 2)  # two 16x16 patches side by side
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = MaskedReconstructionLoss()(pred, target.bfloat16(), active)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("pred_shape, active, message", [
    ((2, 1, 16, 16), torch.zeros(2, 1, 2, 2, dtype=torch.bool), None),
    ((2, 1, 16, 8), torch.zeros(2, 1, 2, 2, dtype=torch.bool), "differ in shape"),
    ((2, 1, 16, 16), torch.zeros(2, 1, 2, 2), "active must be a bool mask"),
    ((2, 1, 16, 16), torch.zeros(3, 1, 2, 2, dtype=torch.bool), r"active must be a bool mask \[B=2"),
    ((2, 1, 16, 16), torch.zeros(2, 1, 3, 3, dtype=torch.bool), "3x3 patch grid does not cut an image of 16x16"),
    ((2, 1, 16, 16), torch.zeros(2, 1, 2, 4, dtype=torch.bool), "equal square patches"),
])
def test_bad_shapes_are_refused(pred_shape, active, message):
    target = torch.rand(2, 1, 16, 16)
    loss_fn = MaskedReconstructionLoss()
    if message is None:
        assert torch.isfinite(loss_fn(torch.zeros(pred_shape), target, active))
        return
    with pytest.raises(ValueError, match=message):
        loss_fn(torch.zeros(pred_shape), target, active)


def test_bad_eps_is_refused():
    with pytest.raises(ValueError, match="eps must be > 0, got 0"):
        MaskedReconstructionLoss(eps=0)
