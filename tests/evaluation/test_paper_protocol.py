"""The ModAn paper's protocol as the default where the paper states it, today's behaviour by option: one-sided
Wilcoxon (``alternative``), validation parts fixed across repeats (``fixed_splits``), imported folds and validation
parts (items' ``fold`` / ``split``), and the resume of folders written before these settings (CPU, 32 px)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from monai_modan.evaluation import (
    Alternative, FoldPlan, FoldPlanError, FoldPlanMismatchError, compare_inits, load_or_make_folds,
    make_imported_folds, paired_wilcoxon, write_report)
from monai_modan.evaluation import experiment
from monai_modan.evaluation.experiment import ExperimentConfig, ExperimentError, run_experiment
from monai_modan.evaluation.finetune import repeat_seed
from monai_modan.networks import build_encoder, export_encoder
from monai_modan.synthetic import generate_downstream_task

SIZE, REPEATS, FOLDS = 32, 2, 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    task = generate_downstream_task("knee_acl", root, n_images=40, image_size=SIZE, images_per_case=2)
    torch.manual_seed(0)
    modan = export_encoder(build_encoder("conv7x7"), root / "modan.pt")
    return {"root": root, "task": task, "inits": {"scratch": None, "modan": str(modan)}}


def config(setup, out_dir, **overrides) -> ExperimentConfig:
    values = dict(tasks={"knee": str(setup["task"])}, inits=setup["inits"], out_dir=str(out_dir),
                  reference_init="modan", repeats=REPEATS, folds=FOLDS, recipe={"epochs": 1, "image_size": SIZE},
                  device="cpu", modes=["linear_probing"])
    values.update(overrides)
    return ExperimentConfig.from_dict(values)


class Recorder:
    """Wraps the runner's ``train_fold``: records (init, training seed, train, val, test) of every trained fold."""

    def __init__(self):
        self.calls: list[tuple[str, int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.real = experiment.train_fold

    def __call__(self, images, labels, split, init, mode, *args, **kwargs):
        self.calls.append((init.name, args[1], *(np.asarray(p).copy() for p in split)))
        return self.real(images, labels, split, init, mode, *args, **kwargs)


def run(cfg: ExperimentConfig, recorder: Recorder | None = None) -> dict[str, Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "train_fold", recorder or Recorder())
        return run_experiment(cfg, progress=False)


def _items(setup) -> list[dict]:
    return json.loads(Path(setup["task"]).read_text())["training"]


def _write_task(path: Path, items: list[dict]) -> Path:
    path.write_text(json.dumps({"training": items}))
    return path


# -- alternative ------------------------------------------------------------------------------------------------------


def test_one_sided_wilcoxon_is_scipys_on_reference_minus_other():
    rng = np.random.default_rng(3)
    for _ in range(20):
        ref, other = rng.uniform(0.6, 0.9, 10), rng.uniform(0.6, 0.9, 10)
        for alternative in ("two-sided", "greater", "less"):
            oracle = wilcoxon(ref - other, zero_method="wilcox", alternative=alternative).pvalue
            test = paired_wilcoxon(ref, other, alternative)
            assert test.p_value == pytest.approx(oracle, rel=1e-12) and test.alternative == alternative
        # the two-sided p is that of the sign convention before `alternative` existed (other - reference)
        assert paired_wilcoxon(ref, other).p_value == pytest.approx(wilcoxon(other - ref).pvalue, rel=1e-12)
    ref = np.linspace(0.80, 0.89, 10)  # the reference better in every repeat
    other = ref - np.linspace(0.01, 0.02, 10)
    assert paired_wilcoxon(ref, other, "greater").p_value == pytest.approx(1 / 2 ** 10)  # exact, smallest
    assert paired_wilcoxon(ref, other, "two-sided").p_value == pytest.approx(2 / 2 ** 10)
    assert paired_wilcoxon(ref, other, "less").p_value == pytest.approx(1.0)  # the paper's p = 1.000 case
    assert Alternative.GREATER.smallest_p(10) == 1 / 2 ** 10 and Alternative.TWO_SIDED.smallest_p(10) == 2 / 2 ** 10


def test_an_unknown_alternative_is_named(setup, tmp_path):
    with pytest.raises(ValueError, match=r"unknown alternative 'one-sided'; known: \['two-sided', 'greater', 'less'\]"):
        paired_wilcoxon([0.5, 0.6], [0.4, 0.5], "one-sided")
    rows = [{"init": i, "mode": "m", "task": "t", "repeat": r, "fold": 0, "auc": 0.5 + 0.01 * r + (i == "a") * 0.1}
            for i in ("a", "b") for r in range(3)]
    with pytest.raises(ValueError, match="unknown alternative 'bigger'"):
        compare_inits(rows, "a", "bigger")
    with pytest.raises(ExperimentError, match=r"^alternative: unknown alternative 'one-sided'; known: "):
        config(setup, tmp_path, alternative="one-sided")
    with pytest.raises(ExperimentError, match="alternative: unknown alternative 1"):
        config(setup, tmp_path, alternative=1)
    assert config(setup, tmp_path, alternative=" Greater ").alternative == "greater"
    assert config(setup, tmp_path).alternative == "two-sided"  # the default: the test the report states


def test_the_report_states_the_alternative_and_its_p_values(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.6, 0.8, 4)
    rows = [{"init": init, "mode": "fine_tuning", "task": "t", "repeat": r, "fold": f,
             "auc": float(base[r] + (0.05 if init == "modan" else 0.0) + 0.01 * f)}
            for init in ("modan", "simclr") for r in range(4) for f in range(2)]
    write_report(rows, tmp_path, "modan", alternative="greater")
    md = (tmp_path / "report.md").read_text()
    assert "one-sided, alternative 'greater' (the reference is better)" in md
    assert "smallest attainable p is 1 / 2^R (here 0.0625 for R = 4)" in md
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["alternative"] == "greater"
    p = next(s["p_value"] for s in summary["summary"] if s["init"] == "simclr")
    assert p == pytest.approx(1 / 16)  # modan better in all 4 repeats: the smallest one-sided p
    assert "(p = 0.062)" in md
    with pytest.raises(ValueError, match="unknown alternative 'up'"):
        write_report(rows, tmp_path / "x", "modan", alternative="up")


# -- fixed splits ----------------------------------------------------------------------------------------------------


def test_fixed_splits_is_the_default_and_repeats_then_share_their_splits(setup, tmp_path):
    fixed, redrawn = config(setup, tmp_path / "a", label_fractions=[0.5, 1.0]), config(
        setup, tmp_path / "b", label_fractions=[0.5, 1.0], fixed_splits=False)
    assert fixed.fixed_splits is True and ExperimentConfig.__dataclass_fields__["fixed_splits"].default is True
    a, b = experiment._plan_task(fixed, "knee").splits, experiment._plan_task(redrawn, "knee").splits
    for fraction in (0.5, 1.0):
        for f in range(FOLDS):
            for part in range(3):  # train (subset), validation, test
                assert np.array_equal(a[(fraction, 0, f)][part], a[(fraction, 1, f)][part])  # fixed across repeats
                assert np.array_equal(a[(fraction, 0, f)][part], b[(fraction, 0, f)][part])  # = redrawn repeat 0
            assert not np.array_equal(b[(fraction, 0, f)][1], b[(fraction, 1, f)][1])  # redrawn: other validation
    with pytest.raises(ExperimentError, match="fixed_splits must be true or false, got 'false'"):
        config(setup, tmp_path, fixed_splits="false")


@pytest.fixture(scope="module")
def default_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "out"
    recorder = Recorder()
    run(config(setup, out), recorder)
    return {"out": out, "calls": recorder.calls}


def test_with_fixed_splits_repeats_differ_by_their_training_seed_only(default_run):
    by_fold: dict[bytes, dict[int, tuple[bytes, bytes]]] = {}
    for init, seed, train, val, test in default_run["calls"]:
        by_fold.setdefault(test.tobytes(), {}).setdefault(seed, (train.tobytes(), val.tobytes()))
    assert len(by_fold) == FOLDS
    for per_seed in by_fold.values():
        assert sorted(per_seed) == sorted(repeat_seed(0, r) for r in range(REPEATS))  # one training seed per repeat
        assert len(set(per_seed.values())) == 1  # the same training and validation parts in every repeat
    md = (default_run["out"] / "report.md").read_text()
    assert "fixed_splits = true (paper: true)" in md and "kept in every repeat" in md
    assert "alternative = 'two-sided'" in md


def test_alternative_changes_only_the_report_so_a_folder_is_re_reported(default_run, setup, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(default_run["out"], out)
    recorder = Recorder()
    run(config(setup, out, alternative="greater"), recorder)
    assert recorder.calls == []  # no row depends on the alternative
    summary = json.loads((out / "summary.json").read_text())
    before = json.loads((default_run["out"] / "summary.json").read_text())
    assert summary["alternative"] == "greater" and before["alternative"] == "two-sided"
    scores = {s["init"]: s["repeat_means"] for s in summary["summary"]}
    oracle = wilcoxon(np.subtract(scores["modan"], scores["scratch"]), alternative="greater").pvalue
    assert next(s["p_value"] for s in summary["summary"] if s["init"] == "scratch") == pytest.approx(oracle)


def test_a_folder_from_before_fixed_splits_resumes_as_redrawn_splits_or_is_refused(setup, tmp_path):
    out = tmp_path / "old"
    run(config(setup, out, fixed_splits=False, repeats=1))
    record = json.loads((out / "experiment.json").read_text())
    assert record["fixed_splits"] is False
    del record["fixed_splits"]  # as written before the setting existed
    (out / "experiment.json").write_text(json.dumps(record))
    with pytest.raises(ExperimentError, match=r"fixed_splits: False -> True \(not in the record, which is older "
                                              r"than the setting\)"):
        run(config(setup, out, repeats=1))  # the new default would mix fixed splits into redrawn rows
    recorder = Recorder()
    run(config(setup, out, fixed_splits=False, repeats=1), recorder)  # its own setting: resumes
    assert recorder.calls == [] and json.loads((out / "experiment.json").read_text())["fixed_splits"] is False
    with pytest.raises(ExperimentError, match=r"fixed_splits: False -> True$"):
        run(config(setup, out, repeats=1))


# -- imported folds ---------------------------------------------------------------------------------------------------


def _with_folds(setup, k: int = FOLDS) -> list[dict]:
    """The task's items with a fold per group (groups dealt round-robin per class, so every fold holds both)."""
    items = _items(setup)
    first = {}
    for it in items:
        first.setdefault(it["group"], it["label"])
    order = {c: [g for g, y in first.items() if y == c] for c in (0, 1)}
    fold_of = {g: i % k for c in (0, 1) for i, g in enumerate(order[c])}
    return [dict(it, fold=fold_of[it["group"]]) for it in items]


def test_imported_folds_are_used_as_given(setup, tmp_path):
    items = _with_folds(setup)
    task = _write_task(tmp_path / "task.json", items)
    cfg = config(setup, tmp_path / "out", tasks={"knee": str(task)})
    plan = experiment._plan_task(cfg, "knee")
    saved = FoldPlan.load(tmp_path / "out" / "folds" / "knee.json")
    assert saved.method == "imported" and plan.imported_folds and not plan.imported_validation
    for f in range(FOLDS):
        expected = np.flatnonzero([it["fold"] == f for it in items])
        assert np.array_equal(saved.test_folds[f], expected)
        for r in range(REPEATS):
            assert np.array_equal(plan.splits[(1.0, r, f)][2], expected)
    drawn = experiment._plan_task(config(setup, tmp_path / "drawn"), "knee")  # the same items without folds
    assert any(not np.array_equal(drawn.splits[(1.0, 0, f)][2], plan.splits[(1.0, 0, f)][2]) for f in range(FOLDS))


def test_bad_imported_folds_are_named_with_the_task(setup, tmp_path):
    items = _with_folds(setup)
    four = _write_task(tmp_path / "four.json", _with_folds(setup, 4))
    with pytest.raises(FoldPlanError, match=r"task knee \(.*four\.json\): the items carry 4 imported folds "
                                            r"\(fold 0\.\.3\) but 3 folds were asked for: set folds to 4"):
        experiment._plan_task(config(setup, tmp_path / "o1", tasks={"knee": str(four)}), "knee")
    positive = [it for it in items if it["label"] == 1]
    one_class = [dict(it, fold=it["fold"] if it["label"] == 0 else (0 if it["fold"] == 2 else it["fold"]))
                 for it in items]  # fold 2 loses its positives
    assert positive and not any(it["fold"] == 2 and it["label"] == 1 for it in one_class)
    path = _write_task(tmp_path / "one.json", one_class)
    with pytest.raises(FoldPlanError, match=r"task knee \(.*one\.json\): imported fold 2 holds only class 0 "):
        experiment._plan_task(config(setup, tmp_path / "o2", tasks={"knee": str(path)}), "knee")
    straddle = [dict(it) for it in items]
    twin = next(i for i, it in enumerate(straddle) if sum(o["group"] == it["group"] for o in straddle) > 1)
    straddle[twin]["fold"] = (straddle[twin]["fold"] + 1) % FOLDS  # one image of a patient moves to another fold
    with pytest.raises(FoldPlanError, match=r"share a group but are in imported folds"):
        load_or_make_folds(tmp_path / "p.json", straddle, n_folds=FOLDS)
    partial = [dict(it) for it in items]
    del partial[5]["fold"]  # folds given for only some items
    with pytest.raises(FoldPlanError, match=r"datalist item 5 \(.*\) has no 'fold' while 39 of the 40 items do"):
        load_or_make_folds(tmp_path / "q.json", partial, n_folds=FOLDS)
    with pytest.raises(FoldPlanError, match=r"fold values \[1, 2, 3\] are not 0\.\.2"):
        make_imported_folds([it["label"] for it in items], [it["fold"] + 1 for it in items])


def test_a_saved_plan_is_not_mixed_with_imported_folds(setup, tmp_path):
    items = _items(setup)
    load_or_make_folds(tmp_path / "plan.json", items, n_folds=FOLDS)  # drawn
    with pytest.raises(FoldPlanMismatchError, match=r"holds drawn folds \(StratifiedGroupKFold\) but the items now "
                                                    r"carry their own folds"):
        load_or_make_folds(tmp_path / "plan.json", _with_folds(setup), n_folds=FOLDS)
    load_or_make_folds(tmp_path / "own.json", _with_folds(setup), n_folds=FOLDS)
    with pytest.raises(FoldPlanMismatchError, match=r"holds imported folds \(imported\) but the items now carry no"):
        load_or_make_folds(tmp_path / "own.json", items, n_folds=FOLDS)
    moved = _with_folds(setup)
    for it in moved:
        it["fold"] = (it["fold"] + 1) % FOLDS  # other imported folds behind the same images
    with pytest.raises(FoldPlanMismatchError, match="made for other data"):
        load_or_make_folds(tmp_path / "own.json", moved, n_folds=FOLDS)


def _val_groups(items: list[dict], per_class: int = 3) -> set[str]:
    """The first ``per_class`` groups of each class."""
    label_of = {it["group"]: it["label"] for it in items}
    return {g for c in (0, 1) for g in [g for g, y in label_of.items() if y == c][:per_class]}


def test_an_imported_validation_part_is_used_in_every_repeat(setup, tmp_path):
    items = _with_folds(setup)
    val_groups = _val_groups(items)
    items = [dict(it, split="val" if it["group"] in val_groups else "train") for it in items]
    task = _write_task(tmp_path / "task.json", items)
    for fixed in (True, False):  # the data set's validation part wins over either way of drawing one
        plan = experiment._plan_task(config(setup, tmp_path / f"out{fixed}", tasks={"knee": str(task)},
                                            fixed_splits=fixed), "knee")
        assert plan.imported_validation
        for f in range(FOLDS):
            expected = np.flatnonzero([it["split"] == "val" and it["fold"] != f for it in items])
            for r in range(REPEATS):
                train, val, test = plan.splits[(1.0, r, f)]
                assert np.array_equal(val, expected)
                assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(len(items)))
    bad = [dict(it, split="val" if it["label"] == 0 and it["group"] in val_groups else "train") for it in items]
    with pytest.raises(FoldPlanError, match=r"task knee .*: .*the validation part of fold 0 \(the data set's split: "
                                            r"val items outside the test fold: \d+ items\) has no sample of class 1"):
        experiment._plan_task(config(setup, tmp_path / "bad", tasks={"knee": str(_write_task(
            tmp_path / "bad.json", bad))}), "knee")


def test_the_report_names_imported_folds_and_validation(setup, tmp_path):
    items = _with_folds(setup)
    val_groups = _val_groups(items)
    items = [dict(it, split="val" if it["group"] in val_groups else "train") for it in items]
    cfg = config(setup, tmp_path / "out", tasks={"knee": str(_write_task(tmp_path / "t.json", items))}, modes=[],
                 logistic=True, alternative="greater")  # frozen features only: nothing trains
    run(cfg)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "test folds imported from the task datalist's own 'fold' values for knee" in md
    assert "knee: validation = the items the task datalist marks split: val" in md
    assert "imported folds: knee, imported validation parts: knee" in md
    assert "alternative = 'greater'" in md
    again = dataclasses.replace(cfg, fixed_splits=False)
    with pytest.raises(ExperimentError, match="fixed_splits: True -> False"):
        run(again)
