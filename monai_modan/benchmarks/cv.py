"""Cross-validation benchmark: the evaluation protocol's runs done together vs one after another.

Two comparisons, on the same synthetic grouped task (generated in a temporary folder).

**Fine-tuning**, measured in the same process on the same synthetic grouped task (generated in a temporary folder):
:func:`~monai_modan.evaluation.experiment.run_experiment` for one task and one initialisation (scratch, fine-tuning
only, ``repeats x folds`` folds) with ``workers=1`` (baseline: every fold in this process, with this process' torch
threads) against ``workers=W`` (candidate: a process pool, ``cores // W`` threads per worker). Each timed call is
a whole fresh run -- loading the images, training every fold, writing results, predictions and the report -- in an
empty output folder. ``ratio = serial seconds / pooled seconds``; targets >= 1.5 on CPU, >= 3 on a GPU.

**Linear probing**: the ``repeats x folds`` linear-probe runs of one pretrained encoder (a seeded random ResNet-18
saved as a checkpoint, so the init is loaded like any pretrained one) through
:func:`~monai_modan.evaluation.finetune.train_fold`, each run on its own with the frozen encoder applied to every batch
(``precompute_features=False``: baseline) against all runs sharing one feature pass over the task's images
(``feature_cache``, as :func:`~monai_modan.evaluation.experiment.run_experiment` does: candidate). With the encoder
frozen and no augmentation, every run computes exactly these features, so the runs are the same optimisation.

The result records, for each comparison, the largest difference between the two sides' AUCs (the protocol promises
none: every fold's seed depends only on its repeat and init).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .common import Timed, comparison, make_result, measure_interleaved

__all__ = ["run", "DEFAULTS"]

# (image side in px, images in the task, workers) per device type
DEFAULTS = {"cpu": (32, 60, 2), "cuda": (64, 400, 4)}
TARGETS = {"cpu": 1.5, "cuda": 3.0}


def run(
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    images: int | None = None,
    workers: int | None = None,
    repeats_cv: int = 2,
    folds: int = 3,
    epochs: int = 1,
    batch_size: int = 32,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Time the protocol serially and with ``workers`` processes; returns the result dict of
    :mod:`~monai_modan.benchmarks.common`.

    Args:
        device: where the folds train (``"cpu"`` or ``"cuda"``).
        image_size, images, workers: task images' side in px, their number, pool size (defaults per device in
            :data:`DEFAULTS`).
        repeats_cv, folds, epochs, batch_size: the protocol's repeats, folds, and the fine-tuning recipe.
        warmup, repeats: untimed and timed rounds (each round runs the protocol once per side).
        workdir: folder for the synthetic task and the outputs (default: a temporary folder, removed).
    """
    from ..synthetic import generate_downstream_task
    from ..evaluation import read_results_csv
    from ..evaluation.experiment import ExperimentConfig, run_experiment

    device = torch.device(device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    default_size, default_images, default_workers = DEFAULTS[kind]
    image_size, images = image_size or default_size, images or default_images
    workers = workers or default_workers
    if workers < 2:
        raise ValueError(f"workers must be >= 2 to compare with the serial run, got {workers}")
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="modan-bench-cv-") if owned else workdir)
    try:
        task = generate_downstream_task("knee_acl", root / "task", n_images=images, image_size=image_size,
                                        seed=seed, images_per_case=2)
        configs = {w: ExperimentConfig(tasks={"task": str(task)}, inits={"scratch": None},
                                       out_dir=str(root / f"out_workers{w}"), modes=("fine_tuning",),
                                       repeats=repeats_cv, folds=folds, seed=seed, device=str(device), workers=w,
                                       recipe={"epochs": epochs, "image_size": image_size, "batch_size": batch_size})
                   for w in (1, workers)}

        def entry(w: int, name: str) -> Timed:
            def fresh() -> None:
                shutil.rmtree(configs[w].out_dir, ignore_errors=True)

            return Timed(name, lambda: run_experiment(configs[w], progress=False), repeats_cv * folds, "folds",
                         setup=fresh)

        threads = torch.get_num_threads()
        serial, pooled = measure_interleaved([
            entry(1, f"serial protocol (workers=1, {threads} torch threads)"),
            entry(workers, f"process pool (workers={workers})"),
        ], device=device, warmup=warmup, repeats=repeats)
        aucs = [{(r.repeat, r.fold): r.auc for r in read_results_csv(Path(configs[w].out_dir) / "results.csv")}
                for w in (1, workers)]
        if set(aucs[0]) != set(aucs[1]) or len(aucs[0]) != repeats_cv * folds:
            raise RuntimeError("the serial and pooled runs wrote different rows")
        max_diff = max(abs(aucs[0][k] - aucs[1][k]) for k in aucs[0])
        probe = _linear_probe_comparison(task, root, image_size=image_size, repeats_cv=repeats_cv, folds=folds,
                                         epochs=epochs, batch_size=batch_size, seed=seed, device=device,
                                         warmup=warmup, repeats=repeats, target=TARGETS[kind])
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
    compared = comparison(f"cross-validation, {workers} workers vs serial", serial, pooled,
                          target=(">=", TARGETS[kind]),
                          note=f"max |AUC serial - AUC pooled| over the {repeats_cv * folds} folds: {max_diff:.3g}")
    sizes = {"image_size": image_size, "images": images, "workers": workers, "repeats": repeats_cv, "folds": folds,
             "epochs": epochs, "batch_size": batch_size, "init": "scratch (fine-tuning), checkpoint (linear probing)"}
    notes = [f"baseline threads: {threads}; each of the {workers} workers gets cores // workers torch threads",
             ("fine-tuning: each timed call is a whole run_experiment (image loading, every fold, results, "
              "predictions, report)"),
             ("linear probing: each timed call is every run of the protocol through train_fold on images in memory; "
              "the candidate starts from an empty feature cache")]
    return make_result("cv", "evaluation protocol: runs done together vs one after another", device, sizes,
                       [compared, probe["comparison"]], notes, max_auc_diff=max_diff,
                       max_auc_diff_linear_probe=probe["max_auc_diff"])


def _linear_probe_comparison(task: Path, root: Path, *, image_size: int, repeats_cv: int, folds: int, epochs: int,
                             batch_size: int, seed: int, device: torch.device, warmup: int, repeats: int,
                             target: float) -> dict[str, Any]:
    """Every linear-probe run of the protocol, each encoding its own batches vs all sharing one feature pass."""
    import json

    from ..evaluation.finetune import Recipe, TaskImages, repeat_seed, train_fold
    from ..networks.weights import InitSpec
    from ..evaluation.folds import make_folds
    from ..networks import build_encoder, export_encoder

    items = json.loads(Path(task).read_text())["training"]
    images = TaskImages.load(items, image_size).to(device)
    plan = make_folds(images.labels, [it["group"] for it in items], n_folds=folds, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init = InitSpec.parse("pretrained", export_encoder(build_encoder(), root / "encoder.pt"))
    recipe = Recipe(epochs=epochs, batch_size=batch_size, image_size=image_size)
    runs = [(repeat_seed(seed, r), plan.split(f, recipe.val_fraction, seed=repeat_seed(seed, r)))
            for r in range(repeats_cv) for f in range(folds)]
    aucs: dict[bool, list[float]] = {}

    def protocol(shared: bool) -> None:
        cache: dict[str, torch.Tensor] = {}
        aucs[shared] = [train_fold(images, None, split, init, "linear_probing", recipe, seed=s, device=device,
                                   feature_cache=cache if shared else None, precompute_features=shared).auc
                        for s, split in runs]

    baseline, candidate = measure_interleaved([
        Timed("each run on its own, frozen encoder on every batch", lambda: protocol(False), len(runs), "runs"),
        Timed("all runs share one feature pass", lambda: protocol(True), len(runs), "runs"),
    ], device=device, warmup=warmup, repeats=repeats)
    max_diff = max(abs(a - b) for a, b in zip(aucs[False], aucs[True]))
    return {"comparison": comparison(f"linear probing, {len(runs)} runs: shared features vs per-run encoder",
                                     baseline, candidate, target=(">=", target),
                                     note=f"max |AUC per-run - AUC shared| over the {len(runs)} runs: {max_diff:.3g}"),
            "max_auc_diff": max_diff}
