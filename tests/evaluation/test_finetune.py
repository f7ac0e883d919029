"""Fold training (fine-tuning, linear probing), initialisations and the in-memory task images (CPU, 32 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet10
from PIL import Image
from sklearn.metrics import roc_auc_score

from monai_modan.data.downstream import load_task_datalist
from monai_modan.synthetic import generate_downstream_task
from monai_modan.evaluation.finetune import (
    Recipe,
    TaskImages,
    embed,
    feature_cache_key,
    repeat_seed,
    train_fold,
)
from monai_modan.evaluation import EvalMode, make_folds
from monai_modan.networks.weights import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, InitKind, InitSpec
from monai_modan.networks import (
    CheckpointError,
    ContrastiveModel,
    StemType,
    build_encoder,
    encoder_state_dict,
    export_encoder,
    to_torchvision_state_dict,
)

SIZE = 32
FAST = Recipe(epochs=2, image_size=SIZE)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """40 synthetic knee MR images (20 cases of 2), their pixels, and one grouped split of a 3-fold plan."""
    root = tmp_path_factory.mktemp("task")
    items, _ = load_task_datalist(generate_downstream_task("knee_acl", root, n_images=40, image_size=SIZE,
                                                           images_per_case=2))
    images = TaskImages.load(items, SIZE)
    plan = make_folds(images.labels, [it["group"] for it in items], n_folds=3, seed=0)
    return items, images, plan.split(0, 0.2, seed=5)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A monai-modan encoder file (conv7x7, so it is cheap at 32 px) and a fake ImageNet torchvision file."""
    root = tmp_path_factory.mktemp("weights")
    g = torch.Generator().manual_seed(0)
    source = build_encoder(StemType.CONV7X7)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode features exercise every buffer
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    encoder_file = export_encoder(source, root / "encoder.pt")
    tv = to_torchvision_state_dict(encoder_state_dict(source))
    tv["conv1.weight"] = tv["conv1.weight"].repeat(1, 3, 1, 1) / 3  # RGB filters that sum to the grey one
    tv["fc.weight"], tv["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    imagenet_file = root / "resnet18-imagenet.pth"
    torch.save(tv, imagenet_file)
    return {"source": source.eval(), "encoder": encoder_file, "imagenet": imagenet_file, "root": root}


def test_repeat_seed_is_deterministic_distinct_and_32_bit():
    seeds = [repeat_seed(0, r) for r in range(10)] + [repeat_seed(1, r) for r in range(10)]
    assert len(set(seeds)) == 20 and all(0 <= s < 2**32 for s in seeds)
    assert repeat_seed(0, 3) == repeat_seed(0, 3) == int(np.random.SeedSequence([0, 3]).generate_state(1)[0])
    with pytest.raises(ValueError, match="repeat"):
        repeat_seed(0, -1)


def test_init_spec_parse_kinds_and_errors(weights, tmp_path):
    assert InitSpec.parse("rand", None) == InitSpec.parse("rand", "scratch") == InitSpec("rand", "scratch",
                                                                                        stem="conv3x3")
    imagenet = InitSpec.parse("in", f"imagenet:{weights['imagenet']}")
    assert (imagenet.kind, imagenet.stem, imagenet.path) == (InitKind.IMAGENET, StemType.CONV7X7, weights["imagenet"])
    assert InitSpec.parse("in", imagenet.value) == imagenet
    modan = InitSpec.parse("modan", str(weights["encoder"]))
    assert (modan.kind, modan.stem) == (InitKind.CHECKPOINT, None) and modan.input_norm == (0.0, 1.0)
    with pytest.raises(FileNotFoundError, match=r"init 'gone'.*nowhere\.pt"):
        InitSpec.parse("gone", str(tmp_path / "nowhere.pt"))
    with pytest.raises(FileNotFoundError, match="init 'gone'"):
        InitSpec.parse("gone", f"imagenet:{tmp_path / 'nowhere.pth'}")
    with pytest.raises(ValueError, match="names no file"):
        InitSpec.parse("in", "imagenet:")
    with pytest.raises(ValueError, match="conv7x7"):
        InitSpec("in", "imagenet", weights["imagenet"], stem="conv3x3")


def test_wrong_architecture_and_non_weights_name_the_init(tmp_path):
    torch.save(resnet10(spatial_dims=2, n_input_channels=1).state_dict(), tmp_path / "resnet10.pt")
    spec = InitSpec.parse("small", str(tmp_path / "resnet10.pt"))
    with pytest.raises(CheckpointError, match=r"init 'small' \(checkpoint\).*(missing|unexpected)"):
        spec.build_encoder()
    (tmp_path / "notes.pt").write_text("not weights")
    with pytest.raises(CheckpointError, match="init 'notes'"):
        InitSpec.parse("notes", str(tmp_path / "notes.pt")).build_encoder()


def test_scratch_init_is_seeded_and_leaves_the_global_rng_alone():
    spec = InitSpec.parse("scratch", None)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = spec.build_encoder(7), spec.build_encoder(7), spec.build_encoder(8)
    assert torch.equal(torch.rand(3), expected_next)  # global stream unchanged
    assert a.stem == StemType.CONV3X3
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)


def test_imagenet_init_sums_rgb_filters_and_standardises_the_input(task, weights):
    _, images, _ = task
    spec = InitSpec.parse("imagenet", f"imagenet:{weights['imagenet']}")
    encoder = spec.build_encoder()
    assert encoder.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(encoder.conv1.weight, weights["source"].conv1.weight)  # 3 x w/3 summed back
    x = images.images[:6]
    with torch.no_grad():
        expected = weights["source"]((x - IMAGENET_GREY_MEAN) / IMAGENET_GREY_STD)
    torch.testing.assert_close(embed(x, spec), expected, rtol=1e-4, atol=1e-5)


def test_checkpoint_init_loads_a_training_checkpoint(task, weights, tmp_path):
    _, images, _ = task
    model = ContrastiveModel(build_encoder(StemType.CONV7X7), projection_dim=16)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "checkpoint_final.pt")
    spec = InitSpec.parse("ckpt", str(tmp_path / "checkpoint_final.pt"))
    x = images.images[:5]
    with torch.no_grad():
        expected = model.encoder.eval()(x)
    torch.testing.assert_close(embed(x, spec), expected, rtol=1e-4, atol=1e-5)
    assert spec.build_encoder().stem == StemType.CONV7X7  # read from the weights


def test_task_images_hold_the_reader_pixels(task):
    items, images, _ = task
    assert images.images.shape == (40, 1, SIZE, SIZE) and images.images.dtype == torch.float32
    assert np.array_equal(images.labels, [it["label"] for it in items])
    for i in (0, 17, 39):  # 8-bit PNG at its native 32 px: the reader divides by 255
        with Image.open(items[i]["image"]) as im:
            expected = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        np.testing.assert_allclose(images.images[i, 0].numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="no images"):
        TaskImages.load([], SIZE)


def test_recipe_is_table_3_and_rejects_unknown_keys():
    r = Recipe()
    assert (r.epochs, r.batch_size, r.lr, r.step_size, r.gamma, r.val_fraction, r.flip) == (10, 32, 1e-4, 5, 0.1,
                                                                                             0.2, False)
    assert Recipe.from_dict({"epochs": 3, "image_size": 224}) == Recipe(epochs=3, image_size=224)
    with pytest.raises(ValueError, match="recipe.learning_rate"):
        Recipe.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="recipe.val_fraction"):
        Recipe(val_fraction=1.0)


def test_one_mode_enum_with_deprecated_spellings():
    assert EvalMode.parse("fine_tuning") == EvalMode.FINE_TUNING
    assert EvalMode.parse("Linear-Probing") == EvalMode.LINEAR_PROBING
    with pytest.warns(FutureWarning, match="deprecated.*'linear_probing'"):
        assert EvalMode.parse("linear_probe") == EvalMode.LINEAR_PROBING
    with pytest.warns(FutureWarning, match="'fine_tuning'"):
        assert EvalMode.parse("fine_tune") == EvalMode.FINE_TUNING
    assert EvalMode.FINE_TUNING.trains_network and not EvalMode.KNN.trains_network
    with pytest.raises(ValueError, match="known"):
        EvalMode.parse("fine")


def _bn_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k or "num_batches" in k}


def _half_size(images: TaskImages) -> TaskImages:
    """16 px copies: the conv3x3 stem costs 4x the conv7x7 one, and these tests look at behaviour, not accuracy."""
    return TaskImages(F.avg_pool2d(images.images, 2), images.labels)


def test_fine_tuning_is_deterministic_and_trains_every_layer(task):
    _, images, split = task
    images = _half_size(images)
    spec = InitSpec.parse("scratch", None)
    a = train_fold(images, None, split, spec, "fine_tuning", FAST, seed=11)
    b = train_fold(images.images, images.labels, split, spec, EvalMode.FINE_TUNING, FAST, seed=11)
    c = train_fold(images, None, split, spec, "fine_tuning", FAST, seed=12)
    assert a.auc == b.auc and a.auc == pytest.approx(roc_auc_score(a.y_true, a.y_score), abs=1e-12)
    assert (a.auc, c.auc) == pytest.approx((0.7083, 0.25), abs=0.05)  # seeded (CPU, torch 2.13, 2026-12-03)
    assert np.array_equal(a.y_score, b.y_score) and not np.array_equal(a.y_score, c.y_score)
    assert np.array_equal(a.y_true, images.labels[split[2]]) and a.y_score.shape == split[2].shape
    assert len(a.val_loss_curve) == len(a.train_loss_curve) == 2 and a.best_epoch in (1, 2)
    initial = spec.build_encoder(11)
    changed = [k for k, v in _bn_state(a.model.encoder).items() if not torch.equal(v, _bn_state(initial)[k])]
    assert changed  # BatchNorm statistics move when fine-tuning (the contrast to the linear probe below) ...
    assert not torch.equal(a.model.encoder.conv1.weight, initial.conv1.weight)  # ... and so do the weights


def test_linear_probe_on_cached_features_equals_the_frozen_encoder_path(task, weights):
    _, images, split = task
    spec = InitSpec.parse("modan", str(weights["encoder"]))
    recipe = Recipe(epochs=4, image_size=SIZE, batch_size=8, lr=1e-2)  # several steps per epoch, visible updates
    cache: dict[str, torch.Tensor] = {}
    fast = train_fold(images, None, split, spec, "linear_probing", recipe, seed=3, feature_cache=cache)
    slow = train_fold(images, None, split, spec, "linear_probing", recipe, seed=3, precompute_features=False)
    assert list(cache) == [feature_cache_key(spec, 3)] == ["modan"] and cache["modan"].shape == (40, 512)
    torch.testing.assert_close(fast.model.head.weight, slow.model.head.weight, rtol=0, atol=1e-5)
    logits = {name: torch.logit(torch.as_tensor(r.y_score)) for name, r in (("fast", fast), ("slow", slow))}
    torch.testing.assert_close(logits["fast"], logits["slow"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.val_loss_curve, slow.val_loss_curve, atol=1e-5)
    assert fast.best_epoch == slow.best_epoch
    # the frozen encoder is untouched: weights and BatchNorm running statistics as loaded, in both paths
    initial = spec.build_encoder().state_dict()
    for result in (fast, slow):
        for k, v in result.model.encoder.state_dict().items():
            assert torch.equal(v, initial[k]), k
        assert not result.model.encoder.training and not any(p.requires_grad for p in result.model.encoder.parameters())
    # the cache is what the head trains on: other features, other scores
    cache["modan"] = cache["modan"].flip(0)
    other = train_fold(images, None, split, spec, "linear_probing", recipe, seed=3, feature_cache=cache)
    assert not np.allclose(other.y_score, fast.y_score)


def test_scratch_features_are_cached_per_seed():
    spec = InitSpec.parse("scratch", None)
    assert feature_cache_key(spec, 1) != feature_cache_key(spec, 2)


def test_model_selection_keeps_the_best_validation_epoch(task, weights):
    _, images, split = task
    spec = InitSpec.parse("modan", str(weights["encoder"]))
    recipe = Recipe(epochs=6, image_size=SIZE, batch_size=8, lr=3e-2, step_size=10)
    result = train_fold(images, None, split, spec, "linear_probing", recipe, seed=1)
    curve = np.asarray(result.val_loss_curve)
    assert result.best_epoch == int(np.argmin(curve)) + 1
    with torch.no_grad():  # the returned model's validation loss is the minimum of the curve
        val = torch.as_tensor(split[1])
        loss = F.binary_cross_entropy_with_logits(result.model(images.images[val]),
                                                  torch.as_tensor(images.labels[val], dtype=torch.float32))
    assert float(loss) == pytest.approx(curve.min(), abs=1e-5)
    no_val = train_fold(images, None, (np.concatenate(split[:2]), [], split[2]), spec, "linear_probing", recipe, seed=1)
    assert no_val.val_loss_curve == [] and no_val.best_epoch == recipe.epochs


def test_flip_augments_fine_tuning_only(task, weights):
    _, images, split = task
    images = _half_size(images)
    spec = InitSpec.parse("modan", str(weights["encoder"]))
    plain = train_fold(images, None, split, spec, "fine_tuning", FAST, seed=2)
    flipped = Recipe(epochs=2, image_size=SIZE, flip=True)
    a = train_fold(images, None, split, spec, "fine_tuning", flipped, seed=2)
    b = train_fold(images, None, split, spec, "fine_tuning", flipped, seed=2)
    assert np.array_equal(a.y_score, b.y_score) and not np.array_equal(a.y_score, plain.y_score)
    probe = [train_fold(images, None, split, spec, "linear_probing", r, seed=2).y_score for r in (FAST, flipped)]
    assert np.array_equal(*probe)


def test_train_fold_refuses_bad_splits(task):
    _, images, (train, val, test) = task
    spec = InitSpec.parse("scratch", None)
    with pytest.raises(ValueError, match="overlap"):
        train_fold(images, None, (train, val, np.append(test, train[0])), spec, "fine_tuning", FAST)
    one_class = train[images.labels[train] == 0]
    with pytest.raises(ValueError, match="training part .* both classes"):
        train_fold(images, None, (one_class, val, test), spec, "fine_tuning", FAST)
    with pytest.raises(ValueError, match="out of range"):
        train_fold(images, None, (train, val, [100]), spec, "fine_tuning", FAST)
    with pytest.raises(ValueError, match="labels"):
        train_fold(images.images, images.labels[:10], (train, val, test), spec, "fine_tuning", FAST)


def test_confident_scores_keep_their_ranking(task, monkeypatch):
    """Logits above ~17 all become 1.0 through a float32 sigmoid; the AUC ranks the logits and the saved scores are
    float64 probabilities, so a confident model is not scored as if it had ties."""
    from monai_modan.evaluation import finetune

    _, images, split = task
    test = split[2]
    logits = torch.linspace(18.0, 30.0, len(test))  # every one past float32's sigmoid saturation
    real = finetune._predict

    def confident(forward, inputs, idx, batch_size, device):
        out = real(forward, inputs, idx, batch_size, device)
        return logits.to(out) if len(idx) == len(test) and torch.equal(idx, torch.as_tensor(test)) else out

    monkeypatch.setattr(finetune, "_predict", confident)
    result = train_fold(_half_size(images), None, split, InitSpec.parse("scratch", None), "linear_probing",
                        Recipe(epochs=1, image_size=SIZE), seed=0)
    expected = roc_auc_score(images.labels[test], logits.numpy())
    assert expected != 0.5 and result.auc == pytest.approx(expected)
    assert len(set(result.y_score.tolist())) == len(test)  # no ties among the saved probabilities
    assert torch.sigmoid(logits).unique().numel() == 1  # what float32 would have given
