"""Two-view augmentation: the recipe, the MONAI transforms, the batched device twin, and that both follow
torchvision's recipe."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import list_data_collate
from scipy import stats

from monai_modan.transforms import (
    BatchedTwoViewAugment,
    BrightnessContrast,
    CropBox,
    RandBrightnessContrast,
    RandBrightnessContrastd,
    RandResizedCrop,
    RandResizedCropd,
    ResizedCrop,
    TwoViewAugment,
    TwoViewAugmentd,
    TwoViewParameters,
    TwoViewRecipe,
    ViewParameters,
)

REFERENCE = Path(__file__).parent / "data" / "two_view_reference.pt"
P_MIN = 1e-3  # significance for the distribution tests (seeds are fixed, so the outcome is deterministic)


def smooth_image(height: int = 48, width: int = 40) -> torch.Tensor:
    """[1, H, W] in [0, 1], smooth and left-right asymmetric."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    img = 0.45 + 0.25 * torch.sin(2 * math.pi * 1.3 * x + 0.4) * torch.cos(2 * math.pi * 0.9 * y) + 0.2 * x * y
    return img[None].clamp(0, 1)


def stack_views(per_sample: list[list[ViewParameters]]) -> TwoViewParameters:
    """Per-image parameters of the MONAI path -> the batched parameter tensors."""

    def field(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([[getattr(v, name) for v in views] for views in per_sample], dtype=dtype)

    return TwoViewParameters(
        crop_box=field("crop_box", torch.int64),
        flip=field("flip", torch.bool),
        jitter=field("jitter", torch.bool),
        brightness=field("brightness", torch.float32),
        contrast=field("contrast", torch.float32),
        brightness_first=field("brightness_first", torch.bool),
    )


# ---------------------------------------------------------------------------------------------------------------
# shapes, dtypes, ranges, determinism


def test_two_view_shapes_dtype_range_and_collate():
    transform = TwoViewAugmentd(keys="image", num_views=3, image_size=24).set_random_state(0)
    out = transform({"image": smooth_image(), "label": 1})
    assert out["image"].shape == (3, 1, 24, 24) and out["image"].dtype == torch.float32
    assert type(out["image"]) is torch.Tensor and out["label"] == 1
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert len(transform.last_parameters) == 3
    batch = list_data_collate([transform({"image": smooth_image().numpy()}) for _ in range(4)])
    assert batch["image"].shape == (4, 3, 1, 24, 24)
    uint8 = (smooth_image() * 255).round().to(torch.uint8)
    assert transform({"image": uint8})["image"].shape == (3, 1, 24, 24)


def test_batched_shapes_dtype_range_and_uint8():
    augment = BatchedTwoViewAugment(image_size=24, num_views=2)
    images = torch.stack([smooth_image(), smooth_image().flip(-1), 1 - smooth_image()])
    out = augment(images, generator=3)
    assert out.shape == (3, 2, 1, 24, 24) and out.dtype == torch.float32 and out.device == images.device
    assert 0.0 <= out.min() and out.max() <= 1.0
    uint8 = (images * 255).round().to(torch.uint8)
    torch.testing.assert_close(augment(uint8, 3), augment(uint8.float() / 255, 3))


def test_determinism_and_views_differ():
    image = {"image": smooth_image()}
    a = TwoViewAugmentd(image_size=24).set_random_state(7)
    b = TwoViewAugmentd(image_size=24).set_random_state(7)
    outs_a, outs_b = [a(image)["image"] for _ in range(3)], [b(image)["image"] for _ in range(3)]
    for x, y in zip(outs_a, outs_b):
        torch.testing.assert_close(x, y)
    assert a.last_parameters == b.last_parameters
    assert not torch.equal(TwoViewAugmentd(image_size=24).set_random_state(8)(image)["image"], outs_a[0])
    assert not torch.equal(outs_a[0], outs_a[1])  # successive calls differ
    for views in outs_a:
        assert not torch.allclose(views[0], views[1])  # the two views of one image differ

    augment = BatchedTwoViewAugment(image_size=24)
    images = smooth_image()[None].repeat(4, 1, 1, 1)
    torch.testing.assert_close(augment(images, 11), augment(images, torch.Generator().manual_seed(11)))
    first = augment(images, 11)
    assert not torch.equal(first, augment(images, 12))
    assert not any(torch.allclose(first[i, 0], first[i, 1]) for i in range(4))
    assert not torch.allclose(first[0, 0], first[1, 0])  # per-sample parameters, not one per batch


def test_dictionary_twins_share_parameters_across_keys():
    data = {"image": smooth_image(), "other": smooth_image().clone()}
    cropped = RandResizedCropd(["image", "other"], image_size=16).set_random_state(1)(data)
    assert cropped["image"].shape == (1, 16, 16)
    torch.testing.assert_close(cropped["image"], cropped["other"])
    jitter = RandBrightnessContrastd(["image", "other"], prob=1.0).set_random_state(1)
    jittered = jitter(data)
    torch.testing.assert_close(jittered["image"], jittered["other"])
    assert not torch.allclose(jittered["image"], data["image"])


# ---------------------------------------------------------------------------------------------------------------
# geometry and intensity, against hand-computed expectations


@pytest.mark.parametrize("flip", [False, True])
def test_flip_flips_left_right(flip):
    image = smooth_image(32, 32)  # asymmetric: flipping changes it
    expected = image.flip(-1) if flip else image
    assert not torch.allclose(image, image.flip(-1))
    options = dict(image_size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=float(flip), jitter_prob=0.0)
    views = TwoViewAugmentd(**options).set_random_state(0)({"image": image})["image"]
    for view in views:
        torch.testing.assert_close(view, expected)
    batched = BatchedTwoViewAugment(**options)(image[None], 0)
    for view in batched[0]:
        torch.testing.assert_close(view, expected, atol=1e-5, rtol=0)


def test_crop_geometry_gives_the_region_pixels():
    image = torch.arange(48 * 40, dtype=torch.float32).reshape(1, 48, 40) / (48 * 40)
    box = CropBox(top=5, left=9, height=16, width=16)
    region = image[:, 5:21, 9:25]
    torch.testing.assert_close(ResizedCrop(16)(image, box), region)
    # 2x downsampling without antialias: bilinear at the centre of each 2x2 block = the block mean
    block_means = region.reshape(1, 8, 2, 8, 2).mean(dim=(2, 4))
    torch.testing.assert_close(ResizedCrop(8, antialias=False)(image, box), block_means)

    boxes = torch.tensor([[[5, 9, 16, 16], [0, 0, 48, 40]]])
    params = TwoViewParameters(
        crop_box=boxes,
        flip=torch.tensor([[False, True]]),
        jitter=torch.tensor([[False, False]]),
        brightness=torch.ones(1, 2),
        contrast=torch.ones(1, 2),
        brightness_first=torch.ones(1, 2, dtype=torch.bool),
    )
    out = BatchedTwoViewAugment(image_size=16, antialias=False).apply(image[None], params)
    torch.testing.assert_close(out[0, 0], region, atol=1e-5, rtol=0)
    out = BatchedTwoViewAugment(image_size=8, antialias=False).apply(image[None], params)
    torch.testing.assert_close(out[0, 0], block_means, atol=1e-5, rtol=0)

    with pytest.raises(ValueError, match="does not fit"):
        ResizedCrop(8)(image, CropBox(40, 0, 16, 16))


@pytest.mark.parametrize(("height", "width", "expected"), [(16, 64, (0, 24, 16, 16)), (64, 16, (24, 0, 16, 16))])
def test_impossible_crops_fall_back_to_the_central_crop(height, width, expected):
    # area >= 99 % at ratio 1 never fits a 1:4 image: all 10 attempts fail -> central crop clamped to the ratio range
    crop = RandResizedCrop(8, scale=(0.99, 1.0), ratio=(1.0, 1.0)).set_random_state(0)
    for _ in range(5):
        crop.randomize((height, width))
        assert crop.box == expected
    params = BatchedTwoViewAugment(image_size=8, scale=(0.99, 1.0), ratio=(1.0, 1.0)).sample_parameters(
        6, height, width, torch.Generator().manual_seed(0)
    )
    assert (params.crop_box == torch.tensor(expected)).all()


def test_brightness_contrast_matches_torchvision_semantics():
    image = torch.tensor([[[0.2, 0.8]]])  # mean 0.5
    # brightness 1.4 -> [0.28, 1.12 -> 1.0]; contrast 0.6 around the new mean 0.64 -> [0.424, 0.856]
    torch.testing.assert_close(BrightnessContrast()(image, 1.4, 0.6, True), torch.tensor([[[0.424, 0.856]]]))
    # contrast first: 0.6 around 0.5 -> [0.32, 0.68]; brightness 1.4 -> [0.448, 0.952]
    torch.testing.assert_close(BrightnessContrast()(image, 1.4, 0.6, False), torch.tensor([[[0.448, 0.952]]]))

    jitter = RandBrightnessContrast(strength=0.4, prob=1.0).set_random_state(0)
    factors = []
    for _ in range(200):
        jitter.randomize()
        assert jitter.applied
        factors += [jitter.brightness, jitter.contrast]
    assert 0.6 <= min(factors) and max(factors) <= 1.4 and max(factors) - min(factors) > 0.7
    off = RandBrightnessContrast(prob=0.0)
    torch.testing.assert_close(off(image), image)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="scale"):
        TwoViewAugmentd(scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="ratio"):
        BatchedTwoViewAugment(ratio=(0.0, 1.0))
    with pytest.raises(ValueError, match="flip_prob"):
        TwoViewAugmentd(flip_prob=1.5)
    with pytest.raises(ValueError, match="strength"):
        BatchedTwoViewAugment(jitter_strength=-0.1)
    with pytest.raises(ValueError, match="num_views"):
        TwoViewAugmentd(num_views=0)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        TwoViewAugmentd()({"image": torch.rand(8, 8)})
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        BatchedTwoViewAugment()(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="dtype"):
        BatchedTwoViewAugment()(torch.ones(1, 1, 8, 8, dtype=torch.int32))


# ---------------------------------------------------------------------------------------------------------------
# THE KEY TEST: both implementations and an independent transcription of torchvision draw the same distributions


def torchvision_get_params(rng: np.random.Generator, height: int, width: int, scale, ratio) -> tuple[int, ...]:
    """Direct transcription of torchvision.transforms.RandomResizedCrop.get_params (numpy random numbers)."""
    area = height * width
    log_ratio = np.log(np.asarray(ratio))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_statistics(boxes: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    """boxes [N, 4] (top, left, h, w) -> area fraction, log aspect ratio, relative centre."""
    top, left, h, w = boxes.T.astype(np.float64)
    return {
        "area fraction": h * w / (height * width),
        "log aspect ratio": np.log(w / h),
        "centre row": (top + h / 2) / height,
        "centre column": (left + w / 2) / width,
    }


@pytest.mark.parametrize(("height", "width"), [(48, 64), (16, 64)])  # typical; mostly falling back
def test_both_implementations_and_torchvision_draw_the_same_distributions(height, width):
    samples, views = 2000, 2
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)

    monai_transform = TwoViewAugmentd(image_size=16, scale=scale, ratio=ratio).set_random_state(2024)
    monai_views: list[ViewParameters] = []
    for _ in range(samples):
        monai_transform.randomize((height, width))  # parameters only, no image work
        monai_views += monai_transform.last_parameters
    monai = stack_views([monai_views])

    batched = BatchedTwoViewAugment(image_size=16, scale=scale, ratio=ratio).sample_parameters(
        samples, height, width, torch.Generator().manual_seed(2024)
    )
    batched = TwoViewParameters(*(t.reshape(1, samples * views, *t.shape[2:]) for t in batched))

    rng = np.random.default_rng(2024)
    reference = np.array([torchvision_get_params(rng, height, width, scale, ratio) for _ in range(samples * views)])

    sets = {
        "monai": crop_statistics(monai.crop_box[0].numpy(), height, width),
        "batched": crop_statistics(batched.crop_box[0].numpy(), height, width),
        "torchvision": crop_statistics(reference, height, width),
    }
    for name in sets["torchvision"]:
        for a, b in [("monai", "batched"), ("monai", "torchvision"), ("batched", "torchvision")]:
            p = stats.ks_2samp(sets[a][name], sets[b][name]).pvalue
            assert p > P_MIN, f"{name}: {a} vs {b} differ (KS p = {p:.2g})"
    assert sets["monai"]["area fraction"].min() >= 0.2 * 0.9 and sets["batched"]["area fraction"].max() <= 1.0

    for impl in (monai, batched):
        flips, jitters = int(impl.flip.sum()), int(impl.jitter.sum())
        assert stats.binomtest(flips, samples * views, 0.5).pvalue > P_MIN
        assert stats.binomtest(jitters, samples * views, 0.8).pvalue > P_MIN
        jittered = impl.jitter[0]
        assert bool((impl.brightness[0][~jittered] == 1).all() and (impl.contrast[0][~jittered] == 1).all())
        for factor in (impl.brightness[0][jittered], impl.contrast[0][jittered]):
            assert stats.kstest(factor.numpy(), stats.uniform(loc=0.6, scale=0.8).cdf).pvalue > P_MIN
        order = int(impl.brightness_first[0][jittered].sum())
        assert stats.binomtest(order, int(jittered.sum()), 0.5).pvalue > P_MIN
    for field in ("flip", "jitter"):
        table = [[int(getattr(impl, field).sum()), int((~getattr(impl, field)).sum())] for impl in (monai, batched)]
        assert stats.fisher_exact(table).pvalue > P_MIN, f"{field} rates differ: {table}"


# ---------------------------------------------------------------------------------------------------------------
# same parameters -> same pixels


def _monai_sampled_parameters(height, width, samples, size, seed, **options):
    transform = TwoViewAugmentd(image_size=size, **options).set_random_state(seed)
    per_sample = []
    for _ in range(samples):
        transform.randomize((height, width))
        per_sample.append(transform.last_parameters)
    return transform, per_sample


@pytest.mark.parametrize("antialias", [False, True])
def test_batched_matches_the_monai_path_given_the_same_parameters(antialias):
    image = smooth_image(48, 40)
    transform, per_sample = _monai_sampled_parameters(48, 40, 12, 32, 5, jitter_prob=0.0, antialias=antialias)
    params = stack_views(per_sample)
    expected = torch.stack([torch.stack([transform.augment_view(image, p) for p in views]) for views in per_sample])
    got = BatchedTwoViewAugment(image_size=32, antialias=antialias).apply(image[None].expand(12, -1, -1, -1), params)
    assert params.flip.any() and not params.flip.all()
    if not antialias:  # the same bilinear sampling; only the outermost upsampled pixels may read beyond the crop
        torch.testing.assert_close(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4, rtol=0)
        torch.testing.assert_close(got, expected, atol=0.02, rtol=0)
    else:  # Gaussian prefilter (batched) vs torchvision's triangle antialias: close, not equal
        assert (got - expected).abs().max() < 0.03 and (got - expected).abs().mean() < 0.003


def test_batched_jitter_matches_the_monai_path_given_the_same_parameters():
    image = smooth_image(32, 32)
    transform, per_sample = _monai_sampled_parameters(32, 32, 16, 32, 9, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    params = stack_views(per_sample)
    assert params.jitter.any() and params.brightness_first[params.jitter].any()
    assert not params.brightness_first[params.jitter].all()
    expected = torch.stack([torch.stack([transform.augment_view(image, p) for p in views]) for views in per_sample])
    got = BatchedTwoViewAugment(image_size=32).apply(image[None].expand(16, -1, -1, -1), params)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_antialias_suppresses_aliasing_of_fine_stripes():
    stripes = (torch.arange(96) % 2).float().expand(96, 96)[None]  # 1-px columns: averages to 0.5
    options = dict(image_size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0)
    monai = TwoViewAugmentd(**options).set_random_state(0)({"image": stripes})["image"]
    assert (monai - 0.5).abs().max() < 0.1  # torchvision's triangle filter leaves ~0.06
    smoothed = BatchedTwoViewAugment(**options)(stripes[None], 0)
    assert (smoothed - 0.5).abs().max() < 0.1  # replicated borders break the stripes: ~0.06 at the edges
    assert (smoothed[..., 1:-1] - 0.5).abs().max() < 0.01
    aliased = BatchedTwoViewAugment(**options, antialias=False)(stripes[None], 0)
    assert (aliased - 0.5).abs().max() > 0.4  # 3x decimation of 1-px stripes: the documented aliasing

    # on white noise the batched prefilter leaves the texture energy of torchvision's triangle filter; none leaves ~2x
    noise = torch.rand(1, 96, 96, generator=torch.Generator().manual_seed(0))
    transform, per_sample = _monai_sampled_parameters(96, 96, 16, 32, 3, jitter_prob=0.0)
    params = stack_views(per_sample)
    reference_std = torch.stack([transform.augment_view(noise, p) for views in per_sample for p in views]).std()
    batch = noise[None].expand(16, -1, -1, -1)
    assert abs(BatchedTwoViewAugment(image_size=32).apply(batch, params).std() / reference_std - 1) < 0.1
    assert BatchedTwoViewAugment(image_size=32, antialias=False).apply(batch, params).std() / reference_std > 1.5

    # views that are not downsampled are left untouched by the per-view prefilter
    boxes = torch.tensor([[[0, 0, 96, 96], [10, 20, 24, 24]]])
    params = TwoViewParameters(
        boxes, torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool),
        torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool),
    )
    image = smooth_image(96, 96)[None]
    with_aa = BatchedTwoViewAugment(image_size=32).apply(image, params)
    without_aa = BatchedTwoViewAugment(image_size=32, antialias=False).apply(image, params)
    torch.testing.assert_close(with_aa[0, 1], without_aa[0, 1], atol=1e-6, rtol=0)
    assert not torch.allclose(with_aa[0, 0], without_aa[0, 0], atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_runs_on_cuda_without_host_sync():
    images = (torch.rand(8, 1, 96, 96, device="cuda") * 255).to(torch.uint8)
    generator = torch.Generator(device="cuda").manual_seed(0)
    augment = BatchedTwoViewAugment(image_size=32)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment(images, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device == images.device and out.shape == (8, 2, 1, 32, 32)
    cpu = BatchedTwoViewAugment(image_size=32)
    params = augment.sample_parameters(8, 96, 96, torch.Generator(device="cuda").manual_seed(1))
    torch.testing.assert_close(
        augment.apply(images, params).cpu(),
        cpu.apply(images.cpu(), TwoViewParameters(*(t.cpu() for t in params))),
        atol=5e-3,  # cuDNN may run the blur convolution in TF32
        rtol=0,
    )


# ---------------------------------------------------------------------------------------------------------------
# one recipe: same views as before it, validation, array twin = dictionary twin, shared defaults, size= deprecated


def view_parameters_as_tensors(views: list[ViewParameters]) -> dict[str, torch.Tensor]:
    return {
        "crop_box": torch.tensor([list(v.crop_box) for v in views], dtype=torch.int64),
        "flip": torch.tensor([v.flip for v in views]),
        "jitter": torch.tensor([v.jitter for v in views]),
        "brightness": torch.tensor([v.brightness for v in views], dtype=torch.float64),
        "contrast": torch.tensor([v.contrast for v in views], dtype=torch.float64),
        "brightness_first": torch.tensor([v.brightness_first for v in views]),
    }


def assert_same_parameters(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():  # random draws: exactly equal
        assert torch.equal(got[name], value), name


def assert_same_views(got: torch.Tensor, expected: torch.Tensor) -> None:
    # the reference was computed on CPU with the same code path; 1e-6 only allows another CPU's float kernels
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_same_seeds_give_the_views_of_before_the_recipe():
    """``tests/data/two_view_reference.pt`` holds views and parameters computed with the code before
    :class:`TwoViewRecipe` (commit 6ba1002, ``size=``); the same seeds must give the same views now."""
    ref = torch.load(REFERENCE, weights_only=True)
    image = smooth_image()

    transform = TwoViewAugmentd(keys="image", image_size=16).set_random_state(7)
    for call in range(3):
        assert_same_views(transform({"image": image})["image"], ref["default"]["views"][call])
        assert_same_parameters(view_parameters_as_tensors(transform.last_parameters), ref["default"]["params"][call])

    options = {"num_views": 3, "image_size": (12, 20), "scale": (0.5, 0.9), "ratio": (0.5, 2.0), "flip_prob": 0.3,
               "jitter_strength": 0.2, "jitter_prob": 0.6, "antialias": False}
    transform = TwoViewAugmentd(keys=["image", "other"], **options).set_random_state(3)
    uint8 = (image * 255).round().to(torch.uint8)
    for call in range(2):
        out = transform({"image": uint8, "other": 1 - image})
        assert_same_views(out["image"], ref["options"]["views"][call])
        assert_same_views(out["other"], ref["options"]["other"][call])
        assert_same_parameters(view_parameters_as_tensors(transform.last_parameters), ref["options"]["params"][call])

    crop = RandResizedCropd("image", image_size=16).set_random_state(1)({"image": image})["image"]
    assert_same_views(crop, ref["crop_d"])
    jitter = RandBrightnessContrastd("image", prob=1.0).set_random_state(1)({"image": image})["image"]
    assert_same_views(jitter, ref["jitter_d"])

    images = torch.stack([smooth_image(), smooth_image().flip(-1), 1 - smooth_image()])
    for name, augment, batch, seed in [
        ("batched_default", BatchedTwoViewAugment(image_size=16), images, 11),
        ("batched_options", BatchedTwoViewAugment(**options), (images * 255).round().to(torch.uint8), 5),
    ]:
        assert_same_views(augment(batch, seed), ref[name]["views"])
        params = augment.sample_parameters(3, 48, 40, torch.Generator().manual_seed(seed))._asdict()
        assert_same_parameters(params, ref[name]["params"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_size", 0, "image_size"),
        ("image_size", (16, 16, 16), "image_size"),
        ("image_size", 16.0, "image_size"),
        ("num_views", 0, "num_views"),
        ("num_views", True, "num_views"),
        ("scale", (0.5, 0.2), "scale"),
        ("scale", (0.0, 1.0), "scale"),
        ("scale", (0.2, 1.5), "scale"),
        ("scale", (0.2, 0.5, 1.0), "scale"),
        ("ratio", (0.0, 1.0), "ratio"),
        ("ratio", (2.0, 1.0), "ratio"),
        ("ratio", 1.0, "ratio"),
        ("ratio", ("a", "b"), "ratio"),
        ("flip_prob", 1.5, "flip_prob"),
        ("flip_prob", -0.1, "flip_prob"),
        ("jitter_strength", 1.5, "jitter_strength"),
        ("jitter_strength", -0.1, "jitter_strength"),
        ("jitter_prob", float("nan"), "jitter_prob"),
        ("jitter_prob", "0.5", "jitter_prob"),
        ("antialias", "yes", "antialias"),
    ],
)
def test_recipe_rejects_bad_values_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TwoViewRecipe(**{field: value})
    for build in (TwoViewAugment, TwoViewAugmentd, BatchedTwoViewAugment):  # all through the recipe
        with pytest.raises(ValueError, match=message):
            build(**{field: value})


def test_recipe_is_frozen_normalised_and_buildable():
    recipe = TwoViewRecipe(image_size=32, scale=[0.5, 1], flip_prob=1)
    assert recipe.image_size == (32, 32) and recipe.scale == (0.5, 1.0) and isinstance(recipe.flip_prob, float)
    assert recipe == TwoViewRecipe(image_size=(32, 32), scale=(0.5, 1.0), flip_prob=1.0)
    assert TwoViewRecipe(jitter_strength=0.4).factor_range == (0.6, 1.4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.image_size = 64  # type: ignore[misc]
    assert TwoViewRecipe.build() == TwoViewRecipe()
    assert TwoViewRecipe.build(recipe) is recipe  # no overrides: the same object
    assert TwoViewRecipe.build(recipe, num_views=3, flip_prob=None) == dataclasses.replace(recipe, num_views=3)
    with pytest.raises(ValueError, match="scale"):
        dataclasses.replace(recipe, scale=(0.9, 0.1))  # variants are validated again
    with pytest.raises(TypeError, match="TwoViewRecipe"):
        TwoViewAugment(recipe={"image_size": 32})


def test_every_implementation_takes_the_same_recipe_and_defaults():
    default = TwoViewRecipe()
    assert default == TwoViewRecipe(image_size=64, num_views=2, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3),
                                    flip_prob=0.5, jitter_strength=0.4, jitter_prob=0.8, antialias=True)
    assert TwoViewAugment().recipe == TwoViewAugmentd().recipe == BatchedTwoViewAugment().recipe == default
    # the single-step transforms default to the recipe's values too
    crop, jitter = RandResizedCrop(8), RandBrightnessContrast()
    assert (crop.scale, crop.ratio, crop.resized_crop.antialias) == (default.scale, default.ratio, default.antialias)
    assert (jitter.factor_range, jitter.prob) == (default.factor_range, default.jitter_prob)

    recipe = TwoViewRecipe(image_size=(12, 20), num_views=3, flip_prob=0.0, jitter_prob=0.0)
    for build in (TwoViewAugment, TwoViewAugmentd, BatchedTwoViewAugment):
        augment = build(recipe=recipe)
        assert augment.recipe is recipe and augment.num_views == 3
    assert TwoViewAugment(recipe=recipe).image_size == BatchedTwoViewAugment(recipe=recipe).image_size == (12, 20)
    # keyword arguments override the given recipe, in every implementation alike
    overridden = dataclasses.replace(recipe, image_size=(8, 8))
    assert TwoViewAugmentd(image_size=8, recipe=recipe).recipe == overridden
    assert BatchedTwoViewAugment(image_size=8, recipe=recipe).recipe == overridden
    views = TwoViewAugment(recipe=recipe).set_random_state(0)(smooth_image())
    assert views.shape == (3, 1, 12, 20)
    assert BatchedTwoViewAugment(recipe=recipe)(smooth_image()[None], 0).shape == (1, 3, 1, 12, 20)


def test_array_twin_equals_the_dictionary_twin():
    options = {"num_views": 3, "image_size": 20, "scale": (0.3, 0.9), "jitter_prob": 0.9}
    array = TwoViewAugment(**options).set_random_state(5)
    dictionary = TwoViewAugmentd(keys="image", **options).set_random_state(5)
    for image in (smooth_image(), (smooth_image() * 255).round().to(torch.uint8), smooth_image(30, 50).numpy()):
        expected = dictionary({"image": image, "label": 2})
        got = array(image)
        assert type(got) is torch.Tensor and got.shape == (3, 1, 20, 20)
        assert torch.equal(got, expected["image"]) and expected["label"] == 2
        assert array.last_parameters == dictionary.last_parameters
    # randomize=False reapplies the last parameters
    assert torch.equal(array(smooth_image(30, 50), randomize=False), array(smooth_image(30, 50), randomize=False))
    with pytest.raises(RuntimeError, match="randomize"):
        TwoViewAugment()(smooth_image(), randomize=False)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        TwoViewAugment()(torch.rand(8, 8))


@pytest.mark.parametrize(
    "build",
    [
        lambda **size: TwoViewAugmentd(keys="image", num_views=2, **size),
        lambda **size: BatchedTwoViewAugment(num_views=2, **size),
        lambda **size: RandResizedCropd("image", **size),
        lambda **size: RandResizedCrop(**size),
        lambda **size: ResizedCrop(**size),
    ],
    ids=["TwoViewAugmentd", "BatchedTwoViewAugment", "RandResizedCropd", "RandResizedCrop", "ResizedCrop"],
)
def test_size_is_a_deprecated_name_of_image_size(build):
    with pytest.warns(FutureWarning, match="image_size"):
        old = build(size=(12, 20))
    new = build(image_size=(12, 20))
    assert repr(vars(old).get("recipe")) == repr(vars(new).get("recipe"))
    if isinstance(new, (TwoViewAugmentd, RandResizedCropd)):
        old.set_random_state(4), new.set_random_state(4)
        assert torch.equal(old({"image": smooth_image()})["image"], new({"image": smooth_image()})["image"])
    elif isinstance(new, BatchedTwoViewAugment):
        assert torch.equal(old(smooth_image()[None], 4), new(smooth_image()[None], 4))
    elif isinstance(new, ResizedCrop):
        assert old.image_size == new.image_size == (12, 20)
    else:
        assert old.resized_crop.image_size == new.resized_crop.image_size == (12, 20)
    with pytest.raises(TypeError, match="image_size only"):
        build(size=12, image_size=12)
