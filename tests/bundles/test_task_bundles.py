"""Downstream bundles (breast_us, thyroid_us, acl_mrnet): metadata verifies offline, and train / linear-probe /
evaluate run on the embedded synthetic tasks (CPU, 32 px, tiny protocol) writing a complete report."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from monai.bundle import run, verify_metadata

from monai_modan.networks import ResNet18Encoder

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "monai_modan" / "resources" / "bundle_meta_schema.json"
TASK_BUNDLES = ("breast_us", "thyroid_us", "acl_mrnet")
TINY = {"image_size": 32, "synthetic_images": 96, "folds": 3, "recipe#epochs": 1, "device": "cpu"}


@pytest.mark.parametrize("bundle", (*TASK_BUNDLES, "modan_pretrain"))
def test_metadata_verifies_offline(bundle):
    verify_metadata(meta_file=str(REPO / "bundles" / bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_task_bundles_differ_only_in_their_task():
    """Each bundle folder is self-contained (model-zoo users copy one), so the configs are copies; the logic they wire
    lives in the package (monai_modan.evaluation.configure), and the copies must not drift apart."""
    import json

    configs = [REPO / "bundles" / b / "configs" for b in TASK_BUNDLES]
    for name in ("evaluate.json", "linear_probe.json", "deploy.json", "inference.json", "logging.conf"):
        assert len({(c / name).read_bytes() for c in configs}) == 1, name
    trains = [json.loads((c / "train.json").read_text()) for c in configs]
    assert [t.pop("task") for t in trains] == list(TASK_BUNDLES)
    assert all(t == trains[0] for t in trains)


@pytest.mark.parametrize("overlay", [None, "linear_probe.json", "evaluate.json"])
def test_configs_only_override_and_the_defaults_come_from_the_package(overlay, tmp_path):
    """A key a bundle leaves null is the dataclass default; the bundle sets only what it changes."""
    from monai.bundle import ConfigParser

    from monai_modan.evaluation.experiment import ExperimentConfig
    from monai_modan.evaluation.finetune import Recipe

    encoder = tmp_path / "runs" / "mulsupcon" / "encoder.pt"
    encoder.parent.mkdir(parents=True)
    torch.save(ResNet18Encoder().state_dict(), encoder)
    configs = REPO / "bundles" / "breast_us" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json")] + ([str(configs / overlay)] if overlay else []))
    parser.update({"bundle_root": str(REPO / "bundles" / "breast_us"), "output_dir": str(tmp_path),
                   "pretrain_runs": str(tmp_path / "runs"), "task_datalist": str(tmp_path / "task.json")})
    config = parser.get_parsed_content("experiment")
    # train / linear probe: the MulSupCon encoder alone; evaluate: every encoder found, against scratch
    assert config.inits == {"mulsupcon": str(encoder), **({"scratch": None} if overlay == "evaluate.json" else {})}
    defaults = ExperimentConfig(tasks={"t": "t.json"}, inits={"mulsupcon": str(encoder)}, out_dir=".")
    assert config.recipe == Recipe() == defaults.recipe and config.tasks == {"breast_us": str(tmp_path / "task.json")}
    for name in ("reference_init", "folds", "fold_seed", "seed", "label_fraction", "label_fractions", "knn", "logistic",
                 "umap_datalist", "device", "workers", "fixed_splits", "alternative"):
        assert getattr(config, name) == getattr(defaults, name), name
    run_name, modes, repeats = {None: ("fine_tuning", ("fine_tuning",), 1),
                                "linear_probe.json": ("linear_probing", ("linear_probing",), 1),
                                "evaluate.json": ("evaluate", defaults.modes, defaults.repeats)}[overlay]
    assert (config.out_dir, config.modes, config.repeats) == (str(tmp_path / run_name), modes, repeats)
    assert config.title == f"breast_us ({', '.join(modes)})"



@pytest.mark.parametrize("bundle", TASK_BUNDLES)
def test_label_fractions_key_gives_a_curve_and_bad_values_are_named(bundle, tmp_path):
    """``label_fractions`` (null = the package default, one fraction 1.0) reaches the experiment of every bundle."""
    from monai.bundle import ConfigParser

    from monai_modan.evaluation.experiment import ExperimentError

    configs = REPO / "bundles" / bundle / "configs"

    def parsed(**values):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
        parser.update({"bundle_root": str(REPO / "bundles" / bundle), "output_dir": str(tmp_path),
                       "inits": {"scratch": None}, "task_datalist": str(tmp_path / "task.json"), **values})
        return parser.get_parsed_content("experiment")

    assert parsed().label_fractions == (1.0,)
    assert parsed(label_fractions=[0.1, 0.5, 1.0]).label_fractions == (0.1, 0.5, 1.0)
    assert parsed(label_fraction=0.25).label_fractions == (0.25,)
    with pytest.raises(Exception) as info:  # MONAI wraps the component's error; the cause is ours
        parsed(label_fractions=[0.5, 0])
    cause = info.value
    while cause is not None and not isinstance(cause, ExperimentError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None and "label_fractions: entry 0 is outside (0, 1]" in str(cause)


@pytest.mark.parametrize("bundle", TASK_BUNDLES)
def test_alternative_and_fixed_splits_keys_reach_the_experiment(bundle, tmp_path):
    """``alternative`` and ``fixed_splits`` (null = the package defaults: two-sided, splits fixed across repeats as
    in the paper) reach the experiment of every bundle; an unknown alternative is named."""
    from monai.bundle import ConfigParser

    from monai_modan.evaluation.experiment import ExperimentError

    configs = REPO / "bundles" / bundle / "configs"

    def parsed(**values):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json")])
        parser.update({"bundle_root": str(REPO / "bundles" / bundle), "output_dir": str(tmp_path),
                       "inits": {"scratch": None}, "task_datalist": str(tmp_path / "task.json"), **values})
        return parser.get_parsed_content("experiment")

    default = parsed()
    assert (default.alternative, default.fixed_splits) == ("two-sided", True)
    chosen = parsed(alternative="greater", fixed_splits=False)
    assert (chosen.alternative, chosen.fixed_splits) == ("greater", False)
    with pytest.raises(Exception) as info:  # MONAI wraps the component's error; the cause is ours
        parsed(alternative="one-sided")
    cause = info.value
    while cause is not None and not isinstance(cause, ExperimentError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None and "unknown alternative 'one-sided'" in str(cause)


@pytest.fixture(scope="module")
def pretrain_runs(tmp_path_factory):
    """A modan_pretrain-like runs folder with a (randomly initialised) mulsupcon encoder."""
    from monai_modan.networks import build_encoder, export_encoder

    runs = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    export_encoder(build_encoder(), runs / "mulsupcon" / "encoder.pt")
    return runs


def _run(bundle: str, out: Path, *overlays: str, **overrides):
    configs = REPO / "bundles" / bundle / "configs"
    files = [str(configs / "train.json")] + [str(configs / o) for o in overlays]
    run(config_file=files if len(files) > 1 else files[0], bundle_root=str(REPO / "bundles" / bundle),
        logging_file=str(configs / "logging.conf"), output_dir=str(out), **{**TINY, **overrides})


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_breast_us_train_fine_tunes_the_pretrained_encoder(tmp_path, pretrain_runs, rows_match_their_predictions):
    _run("breast_us", tmp_path, pretrain_runs=str(pretrain_runs))
    rows = _rows(tmp_path / "fine_tuning" / "results.csv")
    assert len(rows) == 3 and {r["init"] for r in rows} == {"mulsupcon"} and {r["mode"] for r in rows} == {"fine_tuning"}
    aucs = rows_match_their_predictions(tmp_path / "fine_tuning")
    assert sum(aucs.values()) / 3 == pytest.approx(0.4934, abs=0.03)  # seeded (CPU, torch 2.13, 2026-12-03)
    assert (tmp_path / "fine_tuning" / "report.md").is_file()


def test_thyroid_us_without_an_encoder_stops_naming_where_it_looked(tmp_path):
    """No silent fall-back to scratch: a missing encoder is an error naming the folder searched."""
    from monai_modan.evaluation.inits import NoPretrainedEncoderError
    from monai_modan.utils.errors import user_error

    with pytest.raises(Exception) as info:
        _run("thyroid_us", tmp_path, "linear_probe.json", pretrain_runs=str(tmp_path / "none"))
    found = user_error(info.value)
    assert isinstance(found, NoPretrainedEncoderError), repr(info.value)
    assert f"mulsupcon/encoder.pt under {(tmp_path / 'none').resolve()}" in str(found)
    assert not (tmp_path / "linear_probing" / "results.csv").exists()


def test_thyroid_us_linear_probe_overlay_from_scratch_when_asked(tmp_path):
    _run("thyroid_us", tmp_path, "linear_probe.json", inits={"scratch": None})
    rows = _rows(tmp_path / "linear_probing" / "results.csv")
    assert {r["init"] for r in rows} == {"scratch"} and {r["mode"] for r in rows} == {"linear_probing"}
    assert all(math.isfinite(float(r["auc"])) for r in rows)


def test_acl_mrnet_evaluate_runs_the_whole_protocol(tmp_path, pretrain_runs):
    _run("acl_mrnet", tmp_path, "evaluate.json", pretrain_runs=str(pretrain_runs), repeats=2)
    out = tmp_path / "evaluate"
    rows = _rows(out / "results.csv")
    # 2 inits x 2 modes x 2 repeats x 3 folds
    assert len(rows) == 24 and {r["init"] for r in rows} == {"mulsupcon", "scratch"}
    report = (out / "report.md").read_text()
    assert "Table 4" in report and "Table 5" in report and "scratch" in report
    for name in ("summary.csv", "summary.json", "roc_acl-mrnet-fine-tuning.png", "folds/acl_mrnet.json"):
        assert (out / name).is_file(), name
