"""Label-fraction curves: nested subsets, one folder per curve, rows identical to single-fraction runs, refusals
before any training, resume per fraction (also of folders written before the label_fraction column), and the
curve tables checked against an independent recomputation from results.csv (CPU, 32 px, 40 images, 3 x 3)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from monai_modan.evaluation import FoldPlan, FoldPlanError, make_folds, nested_subsets, subsample_training
from monai_modan.evaluation import experiment
from monai_modan.evaluation.experiment import ExperimentConfig, ExperimentError, run_experiment
from monai_modan.evaluation.finetune import repeat_seed
from monai_modan.networks import build_encoder, export_encoder
from monai_modan.synthetic import generate_downstream_task

SIZE, REPEATS, FOLDS = 32, 3, 3
FRACTIONS = (0.25, 0.5, 1.0)
RECIPE = {"epochs": 2, "image_size": SIZE}
MODES = ("linear_probing", "logistic")  # cheap modes: the fraction reaches every mode through the same split


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lf")
    task = generate_downstream_task("knee_acl", root, n_images=40, image_size=SIZE, images_per_case=2)
    torch.manual_seed(0)
    modan = export_encoder(build_encoder("conv7x7"), root / "modan.pt")
    return {"root": root, "task": task, "inits": {"scratch": None, "modan": str(modan)}}


def config(setup, out_dir, **overrides) -> ExperimentConfig:
    values = dict(tasks={"knee": str(setup["task"])}, inits=setup["inits"], out_dir=str(out_dir),
                  reference_init="scratch", repeats=REPEATS, folds=FOLDS, recipe=RECIPE, device="cpu",
                  modes=["linear_probing"], logistic=True,
                  # these tests pin the per-repeat redraw of the validation part and subsets (the split seed is the
                  # training seed); the default, splits fixed across repeats, is tested in test_paper_protocol.py
                  fixed_splits=False)
    values.update(overrides)
    return ExperimentConfig.from_dict(values)


class Recorder:
    """Wraps the runner's ``train_fold``: records the (init, mode, seed, train, val, test) of every trained fold."""

    def __init__(self):
        self.calls: list[tuple[str, str, int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.real_train = experiment.train_fold

    def train_fold(self, images, labels, split, init, mode, *args, **kwargs):
        self.calls.append((init.name, str(mode), args[1], *(np.asarray(p).copy() for p in split)))
        return self.real_train(images, labels, split, init, mode, *args, **kwargs)


def run(cfg: ExperimentConfig, recorder: Recorder | None = None) -> dict[str, Path]:
    recorder = recorder or Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "train_fold", recorder.train_fold)
        return run_experiment(cfg, progress=False)


def results(path: Path) -> dict[tuple, float]:
    with open(path, newline="") as f:
        return {(r["init"], r["mode"], r["task"], float(r["label_fraction"]), int(r["repeat"]), int(r["fold"])):
                float(r["auc"]) for r in csv.DictReader(f)}


def predictions(path: Path) -> dict[tuple, list[tuple[int, int, float]]]:
    out: dict[tuple, list] = {}
    with open(path, newline="") as f:
        for p in csv.DictReader(f):
            key = (p["init"], p["mode"], p["task"], float(p["label_fraction"]), int(p["repeat"]), int(p["fold"]))
            out.setdefault(key, []).append((int(p["index"]), int(p["label"]), float(p["score"])))
    return out


@pytest.fixture(scope="module")
def curve_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("curve") / "out"
    cfg = config(setup, out, label_fractions=list(FRACTIONS))
    recorder = Recorder()
    written = run(cfg, recorder)
    items = json.loads(Path(setup["task"]).read_text())["training"]
    return {"cfg": cfg, "out": out, "written": written, "calls": recorder.calls,
            "groups": np.asarray([it["group"] for it in items]), "labels": np.asarray([it["label"] for it in items]),
            "plan": FoldPlan.load(out / "folds" / "knee.json")}


# -- the subsets ------------------------------------------------------------------------------------------------------


def test_nested_subsets_are_nested_stratified_whole_groups_and_the_single_draws():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 4, 60)
    groups = np.repeat([f"g{i}" for i in range(60)], sizes)
    labels = np.repeat((np.arange(60) % 3 == 0).astype(int), sizes)  # pure groups, a third positive
    plan = make_folds(labels, groups, n_folds=5, seed=0)
    fractions = [0.05, 0.1, 0.25, 0.5, 1.0]
    for seed in (repeat_seed(0, r) for r in range(4)):
        for fold in range(5):
            train, _, _ = plan.split(fold, seed=seed)
            subsets = nested_subsets(train, labels, groups, fractions, seed)
            assert list(subsets) == fractions and np.array_equal(subsets[1.0], train)
            for small, large in zip(fractions, fractions[1:]):
                assert set(subsets[small]) <= set(subsets[large]), (seed, fold, small, large)
            for f, subset in subsets.items():
                assert np.array_equal(subset, subsample_training(train, labels, groups, f, seed))  # = one fraction
                assert np.array_equal(subset, plan.subsample_nested(train, [f], seed)[f])
                assert set(labels[subset]) == {0, 1}
                kept = set(groups[subset])
                assert set(np.flatnonzero(np.isin(groups, list(kept)))) == set(subset)  # whole groups
                for c in (0, 1):
                    n_c = len(set(groups[train][labels[train] == c]))
                    assert len(set(groups[subset][labels[subset] == c])) == max(1, math.floor(f * n_c + 0.5))
    # another seed draws other subsets (the nesting is not the trivial one of a single order for every seed)
    train, _, _ = plan.split(0, seed=1)
    assert not np.array_equal(nested_subsets(train, labels, groups, [0.25], 1)[0.25],
                              nested_subsets(train, labels, groups, [0.25], 2)[0.25])


def test_curve_subsets_are_nested_per_repeat_and_fold_and_shared_by_every_init(curve_run):
    plan, calls = curve_run["plan"], curve_run["calls"]
    assert len(calls) == 2 * len(FRACTIONS) * REPEATS * FOLDS  # linear probing: 2 inits x 3 fractions x R x folds
    by_unit: dict[tuple[int, bytes], set] = {}
    for _, _, seed, train, val, test in calls:
        by_unit.setdefault((seed, test.tobytes()), set()).add((train.tobytes(), val.tobytes()))
    assert len(by_unit) == REPEATS * FOLDS
    for (seed, test_bytes), parts in by_unit.items():
        assert len(parts) == len(FRACTIONS)  # one training subset per fraction, the same for both inits
        assert len({val for _, val in parts}) == 1  # the validation part is never subsampled
        trains = sorted((np.frombuffer(t, dtype=np.int64) for t, _ in parts), key=len)
        for small, large in zip(trains, trains[1:]):
            assert set(small) < set(large)  # nested
        fold = next(f for f, t in enumerate(plan.test_folds) if t.tobytes() == test_bytes)
        full_train, _, _ = plan.split(fold, seed=seed)
        assert np.array_equal(trains[-1], full_train)  # fraction 1: the whole training part
        for fraction, train in zip(FRACTIONS, trains):
            assert np.array_equal(train, subsample_training(full_train, plan.labels, plan.groups, fraction, seed))


def test_a_fraction_gives_the_rows_of_a_run_of_that_fraction_alone(curve_run, setup, tmp_path):
    curve_rows, curve_preds = results(curve_run["out"] / "results.csv"), predictions(curve_run["out"] /
                                                                                     "predictions.csv")
    assert {k[3] for k in curve_rows} == set(FRACTIONS) and len(curve_rows) == 2 * 2 * 3 * REPEATS * FOLDS
    for name, single in (("alias", {"label_fraction": 0.25}), ("list", {"label_fractions": [0.5]})):
        out = tmp_path / name
        run(config(setup, out, **single))
        rows, preds = results(out / "results.csv"), predictions(out / "predictions.csv")
        fraction = {k[3] for k in rows}
        assert len(fraction) == 1 and len(rows) == 2 * 2 * REPEATS * FOLDS
        assert rows == {k: v for k, v in curve_rows.items() if k[3] in fraction}  # exactly equal, not approximately
        assert preds == {k: v for k, v in curve_preds.items() if k[3] in fraction}
        assert "Label-fraction curves" not in (out / "report.md").read_text()
        assert not list(out.glob("auc_curve_*.png"))  # one fraction: the single-fraction report
        summary = json.loads((out / "summary.json").read_text())
        assert summary["protocol"]["label_fraction"] == fraction.pop() and summary["curves"] == {}


# -- bad fractions ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "message"), [
    ({"label_fractions": [0.1, 0.0]}, r"label_fractions: entry 0\.0 is outside \(0, 1\]"),
    ({"label_fractions": [1.5]}, r"label_fractions: entry 1\.5 is outside \(0, 1\]"),
    ({"label_fractions": [-0.1, 0.5]}, r"entry -0\.1 is outside"),
    ({"label_fractions": [float("nan")]}, r"entry nan is outside"),
    ({"label_fractions": [0.1, "abc"]}, r"label_fractions: entry 'abc' is not a number"),
    ({"label_fractions": ["0.5"]}, r"entry '0\.5' is not a number"),
    ({"label_fractions": [True]}, r"entry True is not a number"),
    ({"label_fractions": [0.1, 0.25, 0.1]}, r"label_fractions: 0\.1 listed more than once in \[0\.1, 0\.25, 0\.1\]"),
    ({"label_fractions": []}, r"label_fractions is empty"),
    ({"label_fractions": "0.1 0.5"}, r"label_fractions must be a list .*'0\.1 0\.5'"),
    ({"label_fraction": 2}, r"label_fraction 2 is outside \(0, 1\]"),
    ({"label_fraction": "half"}, r"label_fraction 'half' is not a number"),
    ({"label_fraction": 0.5, "label_fractions": [0.1, 0.5]},
     r"not both: label_fraction 0\.5, label_fractions \[0\.1, 0\.5\]"),
])
def test_bad_label_fractions_are_named(setup, tmp_path, values, message):
    with pytest.raises(ExperimentError, match=message):
        config(setup, tmp_path, **values)


def test_label_fraction_is_the_one_element_spelling_of_label_fractions(setup, tmp_path):
    alias, listed, bare = (config(setup, tmp_path, **v) for v in (
        {"label_fraction": 0.25}, {"label_fractions": [0.25]}, {"label_fractions": 0.25}))
    assert alias == listed == bare and alias.label_fractions == (0.25,) and alias.label_fraction == 0.25
    assert config(setup, tmp_path).label_fractions == (1.0,) and config(setup, tmp_path).label_fraction == 1.0
    curve = config(setup, tmp_path, label_fractions=[0.5, 0.1, 1])
    assert curve.label_fractions == (0.5, 0.1, 1.0) and curve.label_fraction is None
    for cfg in (alias, curve):
        assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert config(setup, tmp_path, label_fraction=0.5, label_fractions=[0.5]).label_fractions == (0.5,)


def _mixed_group_task(setup, path: Path) -> Path:
    """6 groups of 1 positive + 2 negative knee images, then 12 negative images alone: class 1 lives only in groups
    whose majority is class 0, so a subset keeps it only when it happens to draw one of those groups."""
    data = json.loads(Path(setup["task"]).read_text())
    positives = [it for it in data["training"] if it["label"] == 1]
    negatives = [it for it in data["training"] if it["label"] == 0]
    data["training"] = [*(dict(it, group=f"m{i}") for i in range(6)
                          for it in (positives[i], *negatives[2 * i: 2 * i + 2])),
                        *(dict(it, group=f"n{i}") for i, it in enumerate(negatives[12:24]))]
    path.write_text(json.dumps(data))
    return path


def test_a_fraction_leaving_a_class_out_is_refused_before_any_training(setup, tmp_path):
    mixed = _mixed_group_task(setup, tmp_path / "mixed.json")
    items = json.loads(mixed.read_text())["training"]
    labels, groups = np.asarray([it["label"] for it in items]), [it["group"] for it in items]
    plan = make_folds(labels, groups, n_folds=FOLDS)  # the folds themselves are fine: only a subset fails
    # the first (repeat, fold) whose 0.3 subset has no positive, found directly (seed 4: repeat 0 is fine)
    first = None
    for r in range(REPEATS):
        for f in range(FOLDS):
            try:
                subsample_training(plan.train_test(f)[0], labels, groups, 0.3, repeat_seed(4, r))
            except FoldPlanError:
                first = first or (r, f)
    assert first == (1, 0)
    recipe = {**RECIPE, "val_fraction": 0.0}  # no validation part: the subsets are what fails
    # the bad task comes second: its splits are planned before the first task trains
    cfg = config(setup, tmp_path / "out", tasks={"knee": str(setup["task"]), "mixed": str(mixed)},
                 label_fractions=[1.0, 0.3], seed=4, recipe=recipe)
    recorder = Recorder()
    with pytest.raises(FoldPlanError, match=rf"task mixed \(.*mixed\.json\), repeat 1 \(split seed "
                                            rf"{repeat_seed(4, 1)}\), "
                                            r"fold 0: the label fraction 0\.3 subset of the training part has no "
                                            r"sample of class 1: .*use a larger label fraction"):
        run(cfg, recorder)
    assert recorder.calls == []
    assert not (tmp_path / "out" / "results.csv").exists()
    cfg = config(setup, tmp_path / "out2", tasks={"mixed": str(mixed)}, label_fractions=[1.0], seed=4,
                 recipe=recipe, modes=[], logistic=True)
    run(cfg)  # fraction 1 keeps every image: accepted


# -- resume ----------------------------------------------------------------------------------------------------------


def _write_rows(path: Path, rows: list[dict], fields: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _train_fraction(curve_run, seed: int, train: np.ndarray, test: np.ndarray, fractions=FRACTIONS) -> float:
    """The fraction whose planned subset ``train`` is (recomputed from the saved fold plan; the fractions' subsets
    of this task are distinct, which the nesting test checks)."""
    plan = curve_run["plan"]
    fold = next(f for f, t in enumerate(plan.test_folds) if np.array_equal(t, test))
    full, _, _ = plan.split(fold, seed=seed)
    return next(f for f in fractions if np.array_equal(train, plan.subsample(full, f, seed=seed)))


def test_resume_per_fraction_trains_only_the_missing_rows(curve_run, setup, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(curve_run["out"], out)
    fields, rows = _read(out / "results.csv")
    drop = {("scratch", "linear_probing", 0.25, 1, 2), ("modan", "linear_probing", 1.0, 0, 0),
            ("modan", "logistic", 0.5, 2, 1)}
    kept = [r for r in rows if (r["init"], r["mode"], float(r["label_fraction"]), int(r["repeat"]), int(r["fold"]))
            not in drop]
    assert len(kept) == len(rows) - 3
    _write_rows(out / "results.csv", kept, fields)  # killed half-way: these rows were never written
    recorder = Recorder()
    run(dataclasses.replace(curve_run["cfg"], out_dir=str(out)), recorder)
    trained = sorted((init, _train_fraction(curve_run, seed, train, test), seed)
                     for init, _, seed, train, _, test in recorder.calls)
    assert trained == sorted([("scratch", 0.25, repeat_seed(0, 1)), ("modan", 1.0, repeat_seed(0, 0))])
    assert results(out / "results.csv") == results(curve_run["out"] / "results.csv")
    assert predictions(out / "predictions.csv") == predictions(curve_run["out"] / "predictions.csv")

    # a fraction added later extends the folder: only its rows are trained, the others are kept
    extended = dataclasses.replace(curve_run["cfg"], out_dir=str(out), label_fractions=(0.1, *FRACTIONS))
    recorder = Recorder()
    run(extended, recorder)
    assert len(recorder.calls) == 2 * REPEATS * FOLDS
    assert {_train_fraction(curve_run, seed, train, test, (0.1,)) for _, _, seed, train, _, test in recorder.calls
            } == {0.1}
    now = results(out / "results.csv")
    assert {k: v for k, v in now.items() if k[3] != 0.1} == results(curve_run["out"] / "results.csv")
    assert json.loads((out / "experiment.json").read_text())["label_fractions"] == [0.1, *FRACTIONS]
    # a fraction removed while its rows are there is refused, naming the fraction
    with pytest.raises(ExperimentError, match=r"rows outside this configuration .*label fraction 0\.1"):
        run(dataclasses.replace(curve_run["cfg"], out_dir=str(out)))


def _make_legacy(single: Path, dst: Path, fraction: float) -> Path:
    """``single`` (a one-fraction folder) as release 0.1 wrote it: no label_fraction column in results.csv and
    predictions.csv, one ``label_fraction`` in experiment.json."""
    shutil.copytree(single, dst)
    for name in ("results.csv", "predictions.csv"):
        fields, rows = _read(dst / name)
        _write_rows(dst / name, rows, [f for f in fields if f != "label_fraction"])
    record = json.loads((dst / "experiment.json").read_text())
    del record["label_fractions"]
    record["label_fraction"] = fraction
    (dst / "experiment.json").write_text(json.dumps(record))
    return dst


def test_a_folder_without_the_label_fraction_column_resumes_as_its_single_fraction(curve_run, setup, tmp_path):
    """A folder of release 0.1 resumes: nothing is trained again, a fraction added trains only its rows, the logs
    gain the column; a changed fraction is refused."""
    single = tmp_path / "single"
    run(config(setup, single, label_fraction=0.5))
    legacy = _make_legacy(single, tmp_path / "legacy", 0.5)
    fields, rows = _read(legacy / "results.csv")
    assert "label_fraction" not in fields
    last = max(i for i, r in enumerate(rows) if r["mode"] == "linear_probing")
    _write_rows(legacy / "results.csv", rows[:last] + rows[last + 1:], fields)  # and one fold is missing

    recorder = Recorder()
    run(config(setup, legacy, label_fraction=0.5), recorder)
    assert [(init, seed) for init, _, seed, *_ in recorder.calls] == [(rows[last]["init"],
                                                                        repeat_seed(0, int(rows[last]["repeat"])))]
    assert results(legacy / "results.csv") == results(single / "results.csv")
    assert predictions(legacy / "predictions.csv") == predictions(single / "predictions.csv")
    assert _read(legacy / "predictions.csv")[0] == _read(single / "predictions.csv")[0]  # upgraded header
    assert json.loads((legacy / "experiment.json").read_text())["label_fractions"] == [0.5]

    curve = _make_legacy(single, tmp_path / "curve", 0.5)  # the same old folder, extended to a curve
    recorder = Recorder()
    run(config(setup, curve, label_fractions=[0.25, 0.5]), recorder)
    assert len(recorder.calls) == 2 * REPEATS * FOLDS
    assert {_train_fraction(curve_run, seed, train, test) for _, _, seed, train, _, test in recorder.calls} == {0.25}
    expected = {k: v for k, v in results(curve_run["out"] / "results.csv").items() if k[3] in (0.25, 0.5)}
    assert results(curve / "results.csv") == expected

    other = _make_legacy(single, tmp_path / "other", 0.5)  # its rows are 0.5 rows: another fraction is refused
    with pytest.raises(ExperimentError, match=r"rows outside this configuration .*label fraction 0\.5"):
        run(config(setup, other, label_fraction=1.0))
    assert "label_fraction" not in _read(other / "results.csv")[0]  # refused: nothing rewritten
    # a column-less log whose record lists several fractions cannot be read
    fields, rows = _read(curve / "results.csv")
    _write_rows(curve / "results.csv", rows, [f for f in fields if f != "label_fraction"])
    with pytest.raises(ExperimentError, match=r"results\.csv has no label_fraction column .*does not say which"):
        run(config(setup, curve, label_fractions=[0.25, 0.5]))


# -- the report -----------------------------------------------------------------------------------------------------


def markdown_table(md: str, heading: str) -> list[list[str]]:
    block = md.split(heading + "\n", 1)[1].split("\n#", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()
            if line.startswith("|")]


def _oracle(results_csv: Path, reference: str) -> dict[tuple, tuple[float, float, float | None]]:
    """(mode, task, fraction, init) -> (mean, sd, p) recomputed from results.csv alone: repeat score = mean of its
    fold AUCs; mean and sample sd (ddof 1) of the repeat scores; p = two-sided scipy Wilcoxon of the paired repeat
    scores against the reference at the same fraction (1 when every difference is zero)."""
    folds: dict[tuple, dict[int, list[float]]] = {}
    with open(results_csv, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["mode"], r["task"], float(r["label_fraction"]), r["init"])
            folds.setdefault(key, {}).setdefault(int(r["repeat"]), []).append(float(r["auc"]))
    scores = {k: [float(np.mean(v[rep])) for rep in sorted(v)] for k, v in folds.items()}
    out = {}
    for (mode, task, fraction, init), s in scores.items():
        p = None
        if init != reference:
            d = np.asarray(s) - np.asarray(scores[(mode, task, fraction, reference)])
            p = 1.0 if np.all(np.abs(d) < 1e-12) else float(wilcoxon(d).pvalue)
        out[(mode, task, fraction, init)] = (float(np.mean(s)), float(np.std(s, ddof=1)), p)
    return out


def test_curve_tables_and_plots_match_an_independent_recomputation(curve_run):
    from PIL import Image

    out, written = curve_run["out"], curve_run["written"]
    oracle = _oracle(out / "results.csv", "scratch")
    assert len(oracle) == 2 * 2 * len(FRACTIONS)
    md = (out / "report.md").read_text()
    assert "## Label-fraction curves" in md and "- Label fractions: 0.25, 0.5, 1 of each training part" in md
    # training images per fold, mean over repeats and folds, from the subsets the runner trained on
    sizes: dict[float, list[int]] = {}
    for init, _, seed, train, _, test in curve_run["calls"]:
        if init == "scratch":
            sizes.setdefault(_train_fraction(curve_run, seed, train, test), []).append(len(train))
    n_train = {f: float(np.mean(v)) for f, v in sizes.items()}
    assert n_train[0.25] < n_train[0.5] < n_train[1.0]
    summary = json.loads((out / "summary.json").read_text())
    for mode, title in (("linear_probing", "Linear probing (cf. ModAn paper, Table 5)"),
                        ("logistic", "Logistic regression on standardised frozen features (not in the ModAn paper)")):
        table = markdown_table(md, f"### knee – {title}")
        assert table[0] == ["Initialisation", *(f"{f:g} (n = {n_train[f]:.1f})" for f in FRACTIONS)]
        assert [row[0] for row in table[2:]] == ["scratch (reference)", "modan"]
        for row in table[2:]:
            init = row[0].split()[0]
            for fraction, cell in zip(FRACTIONS, row[1:]):
                mean, sd, p = oracle[(mode, "knee", fraction, init)]
                expected = f"{mean:.3f} ± {sd:.3f}"
                if p is not None:
                    expected += f" (p = {p:.3f})"
                assert cell == expected, (mode, init, fraction)
        curve = summary["curves"][mode]["knee"]
        assert curve["label_fractions"] == list(FRACTIONS) and curve["n_train"] == pytest.approx(
            [n_train[f] for f in FRACTIONS])
        name = f"auc_curve_{mode.replace('_', '-')}_knee.png"
        assert curve["figure"] == name and f"]({name})" in md and name in written
        with Image.open(out / name) as im:
            pixels = np.asarray(im.convert("L"), dtype=float)
        assert im.size[0] >= 300 and im.size[1] >= 200 and pixels.std() > 5
        # the table by mode is the largest fraction's
        main = markdown_table(md, f"## {title}")
        mean, sd, p = oracle[(mode, "knee", 1.0, "modan")]
        assert main[3] == ["modan", f"{mean:.3f} ± {sd:.3f} (p = {p:.3f})"]
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(oracle)
    for r in rows:
        mean, sd, p = oracle[(r["mode"], r["task"], float(r["label_fraction"]), r["init"])]
        assert float(r["mean_auc"]) == pytest.approx(mean, abs=1e-12)
        assert float(r["sd_auc"]) == pytest.approx(sd, abs=1e-12)
        assert (r["p_value"] == "") if p is None else float(r["p_value"]) == pytest.approx(p, abs=1e-12)
        assert float(r["n_train"]) == pytest.approx(n_train[float(r["label_fraction"])])
    assert summary["label_fractions"] == list(FRACTIONS) and summary["protocol"]["label_fractions"] == list(FRACTIONS)
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link
    assert {n for n in written if n.startswith("roc_")} == {"roc_knee-linear-probing.png"}  # the largest fraction
    assert summary["tables"]["linear_probing"]["label_fraction"] == 1.0
