"""Evaluation protocol: fixed folds, validation and label-fraction splits, AUC statistics, report and embeddings."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
from scipy.stats import wilcoxon
from sklearn.metrics import roc_auc_score

from monai_modan.evaluation import (
    AucRow,
    FoldPlan,
    FoldPlanError,
    FoldPlanMismatchError,
    compare_inits,
    fold_auc,
    format_cell,
    knn_auc,
    load_or_make_folds,
    logistic_auc,
    make_folds,
    pair_colours,
    paired_wilcoxon,
    read_results_csv,
    repeat_results,
    subsample_training,
    umap_panels,
    write_report,
)


def grouped_task(n_groups: int = 40, per_group: int = 3, positive: float = 0.3, seed: int = 0):
    """``[N]`` labels and group ids: ``n_groups`` cases of ``per_group`` images sharing the case's label."""
    rng = np.random.default_rng(seed)
    group_label = (rng.random(n_groups) < positive).astype(int)
    group_label[:5], group_label[5:10] = 1, 0  # enough groups of each class for 5 folds
    groups = np.repeat([f"case{g:03d}" for g in range(n_groups)], per_group)
    return np.repeat(group_label, per_group), groups


# -- folds ------------------------------------------------------------------------------------------------------------

def test_folds_stratified_within_one_sample():
    labels = np.r_[np.ones(17, int), np.zeros(36, int)]
    np.random.default_rng(1).shuffle(labels)
    plan = make_folds(labels, None, n_folds=5, seed=3)
    assert plan.method == "StratifiedKFold" and plan.n_folds == 5
    assert np.array_equal(np.sort(np.concatenate(plan.test_folds)), np.arange(labels.size))  # a partition
    for c in (0, 1):
        per_fold = [int((labels[f] == c).sum()) for f in plan.test_folds]
        assert max(per_fold) - min(per_fold) <= 1, per_fold
        assert sum(per_fold) == int((labels == c).sum())


def test_grouped_folds_keep_groups_whole_and_stratify_groups():
    labels, groups = grouped_task()
    plan = make_folds(labels, groups, n_folds=5, seed=0)
    assert plan.method == "StratifiedGroupKFold"
    fold_of_group: dict[str, int] = {}
    for k, test in enumerate(plan.test_folds):
        for g in set(groups[test]):
            assert fold_of_group.setdefault(g, k) == k, f"group {g} split over folds"
    group_label = dict(zip(groups, labels))
    for c in (0, 1):
        per_fold = [sum(group_label[g] == c for g in set(groups[test])) for test in plan.test_folds]
        assert max(per_fold) - min(per_fold) <= 1, per_fold


def test_same_seed_same_folds_other_seed_other_folds():
    labels, groups = grouped_task()
    a, b = make_folds(labels, groups, seed=7), make_folds(labels, groups, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a.test_folds, b.test_folds))
    c = make_folds(labels, groups, seed=8)
    assert not all(np.array_equal(x, y) for x, y in zip(a.test_folds, c.test_folds))


def test_fold_plan_json_round_trip(tmp_path):
    labels, groups = grouped_task()
    plan = make_folds(labels, groups, seed=2, ids=[f"img{i}.png" for i in range(labels.size)])
    path = plan.save(tmp_path / "folds.json")
    text = path.read_text()
    assert "case0" not in text  # raw group ids (patient/case numbers) are not stored, only codes
    loaded = FoldPlan.load(path)
    assert loaded.fingerprint == plan.fingerprint and loaded.seed == 2 and loaded.method == plan.method
    assert all(np.array_equal(x, y) for x, y in zip(loaded.test_folds, plan.test_folds))
    assert np.array_equal(loaded.labels, plan.labels) and np.array_equal(loaded.groups, plan.groups)
    for fold in range(plan.n_folds):
        assert all(np.array_equal(x, y) for x, y in zip(loaded.split(fold), plan.split(fold)))
    json.loads(text)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(FoldPlanError, match="not a fold plan"):
        FoldPlan.load(tmp_path / "bad.json")


def test_load_or_make_reuses_and_refuses_other_data(tmp_path):
    labels, groups = grouped_task()
    items = [{"image": f"/data/img{i}.png", "label": int(y), "group": g}
             for i, (y, g) in enumerate(zip(labels, groups))]
    path = tmp_path / "task" / "folds.json"
    made = load_or_make_folds(path, items, n_folds=5, seed=1)
    assert path.is_file()
    again = load_or_make_folds(path, items, n_folds=5, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(made.test_folds, again.test_folds))
    flipped = [dict(it) for it in items]
    flipped[4]["label"] = 1 - flipped[4]["label"]
    with pytest.raises(FoldPlanMismatchError, match="other data"):
        load_or_make_folds(path, flipped, n_folds=5, seed=1)
    with pytest.raises(FoldPlanMismatchError, match="other data"):
        load_or_make_folds(path, items[::-1], n_folds=5, seed=1)  # same images, other order: indices differ
    with pytest.raises(FoldPlanMismatchError, match="5 folds with seed 1"):
        load_or_make_folds(path, items, n_folds=4, seed=1)
    half = [dict(it) for it in items]
    del half[0]["group"]
    with pytest.raises(FoldPlanError, match="item 0 .* has no 'group'"):
        load_or_make_folds(tmp_path / "other.json", half)


@pytest.mark.parametrize("grouped", [True, False])
def test_validation_split_is_leakage_free_and_stratified(grouped):
    labels, groups = grouped_task(n_groups=60)
    plan = make_folds(labels, groups if grouped else None, n_folds=5, seed=0)
    for fold in range(plan.n_folds):
        train, val, test = plan.split(fold, val_fraction=0.2, seed=5)
        assert np.array_equal(test, plan.test_folds[fold])
        assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(labels.size))
        parts = [set(groups[p]) for p in (train, val, test)]
        if grouped:
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
            assert abs(len(parts[1]) - 0.2 * (len(parts[0]) + len(parts[1]))) <= 2  # ~1/5 of the groups
        else:
            assert val.size == math.ceil(0.2 * (train.size + val.size))  # train_test_split rounds the test size up
        for part in (train, val):
            assert set(labels[part]) == {0, 1}
        assert all(np.array_equal(x, y) for x, y in zip((train, val, test), plan.split(fold, 0.2, seed=5)))
    assert not np.array_equal(plan.split(0, seed=5)[1], plan.split(0, seed=6)[1])
    train, val, _ = plan.split(0, val_fraction=0.0)
    assert val.size == 0 and train.size == labels.size - plan.test_folds[0].size


def test_group_leakage_is_refused():
    labels, groups = grouped_task()
    plan = make_folds(labels, groups)
    codes = plan.groups.copy()
    codes[plan.test_folds[0][0]] = codes[plan.test_folds[1][0]]  # one group now in two test folds
    with pytest.raises(AssertionError, match="groups are in both test fold 0 and test fold 1"):
        FoldPlan(plan.test_folds, plan.labels, codes, plan.fingerprint, plan.seed, plan.method)


def test_label_fraction_sizes_nesting_and_classes():
    labels = np.r_[np.ones(12, int), np.zeros(48, int)]
    train = np.arange(0, 60, 1)
    previous = set(train.tolist())
    for fraction in (1.0, 0.5, 0.25, 0.1):
        subset = subsample_training(train, labels, None, fraction, seed=3)
        assert int((labels[subset] == 1).sum()) == max(1, round(fraction * 12))
        assert int((labels[subset] == 0).sum()) == max(1, round(fraction * 48))
        assert set(subset.tolist()) <= previous  # nested: 10 % inside 25 % inside 50 %
        previous = set(subset.tolist())
    rare = np.r_[np.ones(2, int), np.zeros(40, int)]
    assert set(rare[subsample_training(np.arange(42), rare, None, 0.1, seed=0)]) == {0, 1}

    g_labels, groups = grouped_task(n_groups=50)
    plan = make_folds(g_labels, groups)
    train, _, _ = plan.split(0)
    subset = plan.subsample(train, 0.25, seed=1)
    assert set(subset) <= set(train) and set(g_labels[subset]) == {0, 1}
    kept = set(groups[subset])
    assert set(np.flatnonzero(np.isin(groups, list(kept)))) == set(subset)  # whole groups only
    for c in (0, 1):
        n_c = len({g for g in groups[train] if g_labels[groups == g][0] == c})
        assert sum(g_labels[groups == g][0] == c for g in kept) == max(1, round(0.25 * n_c))
    with pytest.raises(FoldPlanError, match="fraction"):
        subsample_training(train, g_labels, groups, 0.0, seed=0)


def test_fold_errors_name_the_counts():
    with pytest.raises(FoldPlanError, match=r"one class only \(class 1, 10 samples\)"):
        make_folds(np.ones(10, int))
    labels = np.r_[np.ones(9, int), np.zeros(30, int)]
    groups = np.r_[np.repeat(["a", "b", "c"], 3), [f"n{i}" for i in range(30)]]
    with pytest.raises(FoldPlanError, match="folds too small to stratify: class 1 has 3 groups for 5 folds"):
        make_folds(labels, groups, n_folds=5)
    with pytest.raises(FoldPlanError, match="folds too small to stratify: class 1 has 4 samples for 5 folds"):
        make_folds(np.r_[np.ones(4, int), np.zeros(30, int)])
    with pytest.raises(FoldPlanError, match=r"must be 0/1, found values \[0, 1, 2\]"):
        make_folds([0, 1, 2, 1, 0])
    with pytest.raises(FoldPlanError, match="groups has 3 entries for 5 labels"):
        make_folds([0, 1, 0, 1, 0], ["a", "b", "c"], n_folds=2)


# -- statistics -------------------------------------------------------------------------------------------------------

def test_fold_auc_matches_sklearn_and_hand_value():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = rng.normal(size=50) + y
    assert fold_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ranked right
    assert fold_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert fold_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    with pytest.raises(ValueError, match=r"only class 1 \(3 samples\)"):
        fold_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_paired_wilcoxon_exact_values():
    ref = np.linspace(0.80, 0.85, 10)
    # all 10 differences positive: the exact two-sided p is 2 * (1/2)**10
    assert paired_wilcoxon(ref, ref + 0.01 * np.arange(1, 11)).p_value == 2 / 1024
    assert paired_wilcoxon(ref, ref - 0.01 * np.arange(1, 11)).p_value == 2 / 1024
    # ranks 1..4 positive, rank 5 negative: W = 5; #{subsets of 1..5 with sum <= 5} = 10 -> p = 2 * 10/32
    d = np.array([0.01, 0.02, 0.03, 0.04, -0.05])
    res = paired_wilcoxon(np.zeros(5), d)
    assert res.p_value == pytest.approx(20 / 32) and res.statistic == 5
    rng = np.random.default_rng(4)
    a, b = rng.random(12), rng.random(12)
    assert paired_wilcoxon(a, b).p_value == pytest.approx(wilcoxon(b - a).pvalue, rel=1e-12)
    zeros = np.array([0.0, 0.02, -0.01, 0.03, 0.04, 0.05])  # one zero difference, dropped ("wilcox")
    res = paired_wilcoxon(np.zeros(6), zeros)
    assert res.n_nonzero == 5 and "1 zero differences dropped" in res.note
    assert res.p_value == pytest.approx(wilcoxon(zeros, zero_method="wilcox").pvalue, rel=1e-12)


def test_paired_wilcoxon_all_equal_and_bad_input():
    ref = np.array([0.8, 0.82, 0.85, 0.9])
    res = paired_wilcoxon(ref, ref.copy())
    assert res.p_value == 1.0 and res.n_nonzero == 0 and "zero" in res.note
    with pytest.raises(ValueError, match="equal"):
        paired_wilcoxon([0.1, 0.2], [0.1])


def test_no_test_where_the_repeats_cannot_carry_one():
    # a deterministic evaluation repeated 10 times: 10 copies of one difference would give p = 2/1024
    copies = paired_wilcoxon(np.full(10, 0.70), np.full(10, 0.71))
    assert math.isnan(copies.p_value) and "copies of one measurement" in copies.note
    single = paired_wilcoxon([0.70], [0.75])
    assert math.isnan(single.p_value) and "one repeat" in single.note
    # one side varying is a real paired sample again
    assert paired_wilcoxon(np.full(10, 0.70), 0.71 + 0.001 * np.arange(10)).p_value == 2 / 1024
    summary = compare_inits([AucRow(i, "knn", "t", r, 0, a) for r in range(5)
                             for i, a in (("ref", 0.7), ("other", 0.8))], "ref")
    other = next(s for s in summary if s.init == "other")
    assert format_cell(other) == "0.800 ± 0.000 (no test)" and "copies" in other.note


def hand_rows():
    """Two inits, three repeats of two folds; repeat means A = 0.85, 0.80, 0.90; B = 0.75, 0.70, 0.80."""
    folds = {"A": [(0.8, 0.9), (0.7, 0.9), (0.9, 0.9)], "B": [(0.7, 0.8), (0.6, 0.8), (0.8, 0.8)]}
    return [AucRow(init, "fine_tuning", "busi", r, f, auc)
            for init, reps in folds.items() for r, pair in enumerate(reps) for f, auc in enumerate(pair)]


def test_summary_mean_sd_and_p_on_hand_rows():
    reps = repeat_results(hand_rows())
    assert [round(r.mean_auc, 12) for r in reps] == [0.85, 0.8, 0.9, 0.75, 0.7, 0.8]
    a, b = compare_inits(hand_rows(), reference_init="A")
    assert (a.init, a.reference, a.p_value) == ("A", True, None)
    assert a.mean == pytest.approx(0.85) and a.sd == pytest.approx(0.05)  # sqrt((0 + .05² + .05²) / 2)
    assert b.mean == pytest.approx(0.75) and b.sd == pytest.approx(0.05)
    assert b.n_repeats == 3 and b.n_folds == 2
    # three equal differences (-0.1): all 2**3 sign patterns equally likely, only ---/+++ as extreme -> p = 2/8
    assert b.p_value == pytest.approx(0.25)


def test_result_rows_are_checked():
    rows = hand_rows()
    with pytest.raises(ValueError, match="duplicate result"):
        repeat_results(rows + [rows[0]])
    with pytest.raises(ValueError, match="repeat 2 has folds \\[0\\]"):
        repeat_results(rows[:-1])
    with pytest.raises(ValueError, match="reference init 'C' has no results"):
        compare_inits(rows, "C")
    with pytest.raises(ValueError, match="AUC must be a number in"):
        AucRow.coerce({"init": "A", "mode": "m", "task": "t", "repeat": 0, "fold": 0, "auc": 1.5})


# -- embeddings -------------------------------------------------------------------------------------------------------

def clustered_embedding(seed: int, n_per_pair: int = 15):
    """``[N, 16]`` features with one tight cluster per (modality, anatomy) pair, plus their labels."""
    pairs = [("CT", "chest"), ("MR", "knee"), ("US", "thyroid"), ("MR", None)]
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(pairs), 16)) * 5
    x = np.concatenate([c + rng.normal(scale=0.3, size=(n_per_pair, 16)) for c in centres])
    return x, [m for m, _ in pairs for _ in range(n_per_pair)], [a for _, a in pairs for _ in range(n_per_pair)]


def test_pair_colours_fixed():
    pairs = [("MR", "knee"), ("CT", "chest"), ("US", "thyroid"), ("CT", "chest")]
    colours = pair_colours(pairs)
    assert colours == pair_colours(pairs[::-1])
    from matplotlib import colormaps

    assert list(colours) == [("CT", "chest"), ("MR", "knee"), ("US", "thyroid")]  # sorted
    assert colours[("MR", "knee")] == tuple(colormaps["tab20"](1))
    many = pair_colours((f"M{i:02d}", "x") for i in range(70))
    assert len(set(many.values())) == 70  # tab20, tab20b, tab20c, then golden-angle hues: all distinct
    assert pair_colours([("MR", None), ("MR", "")]) == pair_colours([("MR", "unknown")])


def test_umap_panels_stable_colours_and_coordinates(tmp_path):
    from PIL import Image

    a, b = clustered_embedding(0), clustered_embedding(1)
    first = umap_panels({"modan": a, "simclr": b}, tmp_path / "u1.png", seed=0)
    second = umap_panels({"simclr": b, "modan": a}, tmp_path / "u2.png", seed=0)
    assert first.colours == second.colours and ("MR", "unknown") in first.colours
    for name in ("modan", "simclr"):
        assert first.coords[name].shape == (60, 2)
        assert np.array_equal(first.coords[name], second.coords[name])  # seeded: same run, same map
    # well-separated clusters stay apart: every point's nearest other point has its pair
    xy, labels = first.coords["modan"], np.repeat(np.arange(4), 15)
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(60) * 1e9
    assert (labels[dist.argmin(1)] == labels).mean() > 0.95
    with Image.open(first.path) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
    with pytest.raises(ValueError, match="N >= 4"):
        umap_panels({"x": (np.zeros((3, 4)), ["a"] * 3, ["b"] * 3)}, tmp_path / "u3.png")


def test_knn_auc_matches_hand_computed_cosine_knn():
    rng = np.random.default_rng(2)
    train_y, test_y = rng.integers(0, 2, 80), rng.integers(0, 2, 30)
    direction = rng.normal(size=8)
    train_X = rng.normal(size=(80, 8)) + 0.8 * np.outer(train_y, direction)
    test_X = rng.normal(size=(30, 8)) + 0.8 * np.outer(test_y, direction)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    cosine = 1 - unit(test_X) @ unit(train_X).T
    neighbours = np.argsort(cosine, axis=1, kind="stable")[:, :7]
    expected = roc_auc_score(test_y, train_y[neighbours].mean(1))
    assert knn_auc(train_X, train_y, test_X, test_y, k=7) == pytest.approx(expected)
    with pytest.raises(ValueError, match="both classes"):
        knn_auc(train_X, np.zeros(80, int), test_X, test_y)


def test_logistic_auc_is_the_penalised_maximum_likelihood_fit_on_standardised_features():
    """Oracle: the same objective minimised directly with SciPy (L-BFGS on the summed log-loss + ||w||^2 / 2C)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    rng = np.random.default_rng(5)
    train_y, test_y = rng.integers(0, 2, 120), rng.integers(0, 2, 50)
    direction = rng.normal(size=6)
    scales = np.array([1e-3, 1.0, 50.0, 1.0, 3e2, 0.2])  # wildly different feature scales: standardisation matters
    train_X = (rng.normal(size=(120, 6)) + 0.7 * np.outer(train_y, direction)) * scales
    test_X = (rng.normal(size=(50, 6)) + 0.7 * np.outer(test_y, direction)) * scales
    mean, sd = train_X.mean(0), train_X.std(0)
    z_train, z_test = (train_X - mean) / sd, (test_X - mean) / sd
    sign = 2.0 * train_y - 1.0
    c = 0.5

    def objective(params):
        w, b = params[:-1], params[-1]
        margin = sign * (z_train @ w + b)
        grad_margin = -expit(-margin) * sign
        value = np.logaddexp(0.0, -margin).sum() + w @ w / (2 * c)
        return value, np.append(z_train.T @ grad_margin + w / c, grad_margin.sum())

    fit = minimize(objective, np.zeros(7), jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "maxiter": 10_000})
    expected = roc_auc_score(test_y, z_test @ fit.x[:-1] + fit.x[-1])
    assert logistic_auc(train_X, train_y, test_X, test_y, c=c) == pytest.approx(expected, abs=1e-9)
    # a feature rescaled by 1000 changes nothing (standardised); unlike the paper's Adam head on raw features
    rescaled_train, rescaled_test = train_X.copy(), test_X.copy()
    rescaled_train[:, 2] *= 1e3
    rescaled_test[:, 2] *= 1e3
    assert logistic_auc(rescaled_train, train_y, rescaled_test, test_y, c=c) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="both classes"):
        logistic_auc(train_X, np.ones(120, int), test_X, test_y)
    with pytest.raises(ValueError, match="c must be > 0"):
        logistic_auc(train_X, train_y, test_X, test_y, c=0)


# -- report -----------------------------------------------------------------------------------------------------------

def report_rows():
    """3 inits x 2 modes x 2 tasks x 4 repeats x 3 folds with distinct AUCs; "modan" is best."""
    rng = np.random.default_rng(0)
    base = {"modan": 0.86, "imagenet": 0.80, "random": 0.70}
    return [AucRow(init, mode, task, r, f, float(np.clip(mu + rng.normal(scale=0.02), 0, 1)))
            for mode in ("linear_probing", "fine_tuning") for task in ("busi", "ddti")
            for init, mu in base.items() for r in range(4) for f in range(3)]


def markdown_table(md: str, heading: str) -> list[list[str]]:
    block = md.split(heading, 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()
            if line.startswith("|")]


def test_write_report_files_tables_and_figures(tmp_path):
    from PIL import Image

    rows = report_rows()
    rng = np.random.default_rng(1)
    roc = {"busi": {init: [(y, y * 0.8 + rng.random(20)) for y in [np.r_[np.zeros(10), np.ones(10)]] * 3]
                    for init in ("modan", "imagenet")}}
    out = tmp_path / "report"
    written = write_report(rows, out, "modan", roc_data=roc, embeddings={"modan": clustered_embedding(0)},
                           protocol={"fold_seed": 0, "repeat_seeds": [0, 1, 2, 3], "val_fraction": 0.2,
                                     "label_fraction": 0.25}, init_order=["random", "imagenet", "modan"])
    expected = {"results.csv", "summary.csv", "summary.json", "report.md", "roc_busi.png", "umap.png"} | {
        f"auc_box_{m}_{t}.png" for m in ("fine-tuning", "linear-probing") for t in ("busi", "ddti")}
    assert set(written) == expected and all((out / name).is_file() for name in expected)
    assert not list(out.glob(".*"))  # no temporary files left

    assert read_results_csv(out / "results.csv") == rows
    with open(out / "summary.csv", newline="") as f:
        summary_csv = list(csv.DictReader(f))
    assert len(summary_csv) == 12 and {r["p_value"] for r in summary_csv if r["init"] == "modan"} == {""}

    md = (out / "report.md").read_text()
    cell = re.compile(r"^\d\.\d{3} ± \d\.\d{3} \(p (=|<) \d\.\d{3}\)$")
    ref_cell = re.compile(r"^\d\.\d{3} ± \d\.\d{3}$")
    summaries = {(s.mode, s.task, s.init): s for s in compare_inits(rows, "modan")}
    # fine-tuning (Table 4) comes before linear probing (Table 5), whatever the row order
    assert md.index("Fine-tuning (cf. ModAn paper, Table 4)") < md.index("Linear probing (cf. ModAn paper, Table 5)")
    for heading, mode in (("## Fine-tuning", "fine_tuning"), ("## Linear probing", "linear_probing")):
        table = markdown_table(md, heading)
        assert table[0] == ["Initialisation", "busi", "ddti"] and len(table) == 2 + 3
        assert [r[0] for r in table[2:]] == ["random", "imagenet", "modan (reference)"]
        for row in table[2:]:
            assert all((ref_cell if row[0].endswith("(reference)") else cell).match(c) for c in row[1:]), row
        s = summaries[(mode, "ddti", "random")]
        assert table[2][2] == f"{s.mean:.3f} ± {s.sd:.3f} (p = {s.p_value:.3f})"
        # 4 repeats, every random repeat below modan: exact two-sided p = 2/16
        assert s.p_value == pytest.approx(0.125)
    assert "- Cross-validation: 3 fixed stratified folds" in md
    assert "repeat seeds 0, 1, 2, 3" in md and "25% of each training part" in md and "val_fraction = 0.2;" in md
    assert "smallest attainable p is 2 / 2^R (here 0.125 for R = 4)" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link
    assert len(re.findall(r"!\[[^\]]*\]\(auc_box_", md)) == 4

    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference_init"] == "modan" and summary["modes"] == ["fine_tuning", "linear_probing"]
    assert summary["tables"]["fine_tuning"]["rows"]["random"]["ddti"] == table_cell(summaries, "fine_tuning")
    for name in expected:
        if name.endswith(".png"):
            with Image.open(out / name) as im:
                pixels = np.asarray(im.convert("L"), dtype=float)
            assert im.size[0] >= 200 and im.size[1] >= 200 and pixels.std() > 5, name


def table_cell(summaries, mode):
    s = summaries[(mode, "ddti", "random")]
    return f"{s.mean:.3f} ± {s.sd:.3f} (p = {s.p_value:.3f})"


def test_write_report_refuses_incomplete_results(tmp_path):
    rows = [r for r in report_rows() if not (r.init == "modan" and r.task == "ddti" and r.mode == "fine_tuning")]
    with pytest.raises(ValueError, match="reference init 'modan' has no results for mode='fine_tuning' task='ddti'"):
        write_report(rows, tmp_path / "r", "modan")
    assert not (tmp_path / "r" / "report.md").exists()


def test_rows_of_several_label_fractions_are_analysed_per_fraction_and_drawn_as_curves(tmp_path):
    """Each fraction is its own cell, paired with the reference at that fraction; the report gains a table and a
    plot per (mode, task) (x axis: the fraction, without train_sizes); the same fold at two fractions is no
    duplicate, the same fold twice at one fraction is."""
    from PIL import Image

    rng = np.random.default_rng(3)
    gain = {0.1: 0.10, 0.5: 0.02, 1.0: -0.01}  # modan better with few labels only
    rows = [AucRow(init, mode, "busi", r, f, float(np.clip(0.7 + (gain[lf] if init == "modan" else 0.0)
                                                           + rng.normal(scale=0.01), 0, 1)), label_fraction=lf)
            for mode in ("fine_tuning", "linear_probing") for lf in (0.1, 0.5, 1.0) for init in ("random", "modan")
            for r in range(5) for f in range(3)]
    written = write_report(rows, tmp_path, "random")
    assert {"auc_curve_fine-tuning_busi.png", "auc_curve_linear-probing_busi.png"} <= set(written)
    md = (tmp_path / "report.md").read_text()
    table = markdown_table(md, "### busi – Fine-tuning")
    assert table[0] == ["Initialisation", "0.1", "0.5", "1"]
    for lf, cell in zip((0.1, 0.5, 1.0), table[3][1:]):  # modan: oracle from the rows of that fraction only
        means = {init: [np.mean([r.auc for r in rows if (r.init, r.mode, r.label_fraction, r.repeat) ==
                                 (init, "fine_tuning", lf, k)]) for k in range(5)] for init in ("random", "modan")}
        p = wilcoxon(np.subtract(means["modan"], means["random"])).pvalue
        assert cell == f"{np.mean(means['modan']):.3f} ± {np.std(means['modan'], ddof=1):.3f} (p = {p:.3f})"
    assert markdown_table(md, "## Fine-tuning")[3][1] == table[3][3]  # the table by mode: the largest fraction
    with open(tmp_path / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 12 and {r["n_train"] for r in summary} == {""}
    assert [float(r["label_fraction"]) for r in summary[:6]] == [0.1, 0.1, 0.5, 0.5, 1.0, 1.0]
    assert read_results_csv(tmp_path / "results.csv") == rows
    with Image.open(tmp_path / "auc_curve_fine-tuning_busi.png") as im:
        assert np.asarray(im.convert("L"), dtype=float).std() > 5
    with pytest.raises(ValueError, match="duplicate result .*label_fraction=0.5 repeat=0 fold=0"):
        write_report(rows + [rows[30]], tmp_path / "dup", "random")  # 0.5, random, repeat 0, fold 0
    with pytest.raises(ValueError, match=r"train_sizes\['busi'\]\[0\.1\] must be a number > 0, got 0"):
        write_report(rows, tmp_path / "bad", "random", train_sizes={"busi": {0.1: 0}})


def test_results_csv_without_the_label_fraction_column_is_read_as_one_fraction(tmp_path):
    (tmp_path / "old.csv").write_text("init,mode,task,repeat,fold,auc\nmodan,fine_tuning,busi,0,1,0.75\n")
    assert read_results_csv(tmp_path / "old.csv") == [AucRow("modan", "fine_tuning", "busi", 0, 1, 0.75)]
    assert read_results_csv(tmp_path / "old.csv", label_fraction=0.25)[0].label_fraction == 0.25
    (tmp_path / "bad.csv").write_text("init,mode,task,label_fraction,repeat,fold,auc\nm,fine_tuning,b,0,0,1,0.7\n")
    with pytest.raises(ValueError, match=r"bad\.csv: .*label fraction 0\.0 is outside \(0, 1\]"):
        read_results_csv(tmp_path / "bad.csv")
