"""Command line: index on real DICOM, auto-detection, clear one-line errors for user mistakes (no traceback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monai_modan.__main__ import SourceType, detect_source, main
from monai_modan.data.datalist import load_datalist


def test_index_real_dicom_writes_datalist_and_report(dicom_dir, tmp_path, capsys):
    out = tmp_path / "pacs.json"
    assert main(["index", str(dicom_dir), "--out", str(out), "--quiet", "--workers", "0"]) == 0
    data = load_datalist(out)
    items = data.items("training")
    assert len(items) == 40 and data.source == "dicom"
    assert all(len(it["label"]) == data.space.width for it in items)
    # every entry says which tag produced each label
    by_name = {Path(it["image"]).resolve().name: it for it in items}  # through the pseudonymous links
    assert by_name["RG1_J2KI.dcm"]["modality"] == "XR" and by_name["RG1_J2KI.dcm"]["anatomy"] == "chest"
    assert by_name["RG3_J2KR.dcm"]["label_source"] == {"modality": "Modality", "anatomy": "StudyDescription"}
    report = (tmp_path / "pacs.report.md").read_text()
    assert "| modality |" in report and "EXTREMITY" in report and "not DICOM" in report
    rep = json.loads((tmp_path / "pacs.report.json").read_text())
    assert rep["images"] == 40 and rep["skipped_by_reason"]["not DICOM"]["count"] == 1
    assert "wrote" in capsys.readouterr().out


def test_no_identifier_reaches_any_output(dicom_dir, tmp_path):
    import re

    import pydicom

    out = tmp_path / "pacs.json"
    main(["index", str(dicom_dir), "--out", str(out), "--quiet", "--workers", "0"])
    # everything written, file paths included: the export's folder named by PatientID (dicomdirtests/77654033)
    # reaches the datalist and report only through pseudonymous links in pacs.links/
    data = json.loads(out.read_text())
    report = json.loads((tmp_path / "pacs.report.json").read_text())
    cache = json.loads((tmp_path / "pacs.dicom-cache.json").read_text())
    written = (out.read_text() + (tmp_path / "pacs.report.md").read_text() + json.dumps(report)
               + json.dumps(cache))
    linked = [Path(it["image"]) for it in data["training"] if Path(it["image"]).parent == tmp_path / "pacs.links"]
    # 7 files in the PatientID folder, 4 files named by their PatientID (pydicom's MR2_UNCR.dcm: PatientID "MR2")
    assert len(linked) == 11
    assert sum(p.resolve().parent.parent.name == "77654033" for p in linked) == 7
    identifiers = set()
    for f in dicom_dir.rglob("*"):
        if f.is_file() and f.suffix != ".csv":
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            for kw in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName"):
                v = str(ds.get(kw, "") or "").strip()
                if len(v) >= 3:
                    identifiers.add(v)
    assert len(identifiers) > 5, "the real files do carry identifiers"
    leaked = {v for v in identifiers if re.search(rf"(?<![\w]){re.escape(v)}(?![\w])", written)}
    assert not leaked


def test_detect_source(tmp_path, medmnist_dir):
    (tmp_path / "radiology_ai" / "CT" / "lung" / "normal").mkdir(parents=True)
    (tmp_path / "radiology_ai" / "CT" / "lung" / "normal" / "a.png").write_bytes(b"x")
    assert detect_source(tmp_path) == SourceType.RADIMAGENET
    assert detect_source(medmnist_dir / "breastmnist.npz") == SourceType.MEDMNIST
    assert detect_source(medmnist_dir) == SourceType.MEDMNIST
    (tmp_path / "dcm").mkdir()
    assert detect_source(tmp_path / "dcm") == SourceType.DICOM


@pytest.mark.parametrize(
    "argv_tail, message",
    [(["/nonexistent/folder"], "no such file or folder"),
     (["{empty}"], "no files found"),
     (["{junk}"], "no usable image found"),
     (["{dicom}", "--vocab", "{badyaml}"], "unknown group 'colour'"),
     (["{dicom}", "--groups", "colour"], "unknown extra group 'colour'")],
)
def test_user_mistakes_give_one_clear_line(tmp_path, dicom_dir, capsys, argv_tail, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not an image")
    (tmp_path / "bad.yaml").write_text("groups:\n  colour:\n    classes:\n      red: [RED]\n")
    fill = {"{empty}": str(tmp_path / "empty"), "{junk}": str(tmp_path / "junk"), "{dicom}": str(dicom_dir / "pydicom_test_files"),
            "{badyaml}": str(tmp_path / "bad.yaml")}
    argv = ["index", *[fill.get(a, a) for a in argv_tail], "--out", str(tmp_path / "o.json"), "--quiet", "--workers", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("error: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(tmp_path, dicom_dir, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert main(["index", str(dicom_dir / "pydicom_test_files"), "--out", str(locked / "x.json"), "--quiet"]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_unwritable_output_as_root_too(tmp_path, dicom_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert main(["index", str(dicom_dir / "pydicom_test_files"), "--out", str(blocker / "x.json"), "--quiet", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "x.json" in err


def test_help_explains_every_command():
    out = subprocess.run([sys.executable, "-m", "monai_modan", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("index", "synth", "minirin"):
        assert cmd in out
    out = subprocess.run([sys.executable, "-m", "monai_modan", "index", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--vocab" in out and "--source" in out and "patient-identifying" in out


def _commands() -> dict:
    import argparse

    from monai_modan.__main__ import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_and_shows_its_default():
    import argparse

    commands = _commands()
    assert {"index", "synth", "minirin", "convert", "experiment", "pack"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help text"
    text = commands["experiment"].format_help()
    for shown in ("(default: 10)", "(default: 5)", "(default: 64)", "(default: outputs/experiment)"):
        assert shown in text, shown


@pytest.mark.parametrize("command", ["synth", "pack"])
def test_image_size_is_one_name_and_size_is_a_hidden_deprecated_alias(command, capsys):
    parser = _commands()[command]
    positional = ["x"] if command == "synth" else ["x", "--out", "y"]
    assert "--image-size" in parser.format_help() and "--size" not in parser.format_help()
    assert parser.parse_args([*positional, "--image-size", "32"]).image_size == 32
    assert capsys.readouterr().err == ""
    assert parser.parse_args(positional).image_size == 64
    assert parser.parse_args([*positional, "--size", "48"]).image_size == 48
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--size is deprecated" in err and "--image-size" in err


def test_experiment_options_build_the_config_the_bundles_build(tmp_path, monkeypatch):
    """The CLI's experiment command goes through configure_experiment, and unset options are the dataclass defaults."""
    from monai_modan.evaluation import configure, experiment
    from monai_modan.evaluation.finetune import Recipe

    seen = {}
    real = configure.configure_experiment

    def spy(*args, **kwargs):
        seen["config"] = real(*args, **kwargs)
        return seen["config"]

    monkeypatch.setattr(configure, "configure_experiment", spy)
    monkeypatch.setattr(experiment, "run_experiment", lambda config, progress=True: {"report.md": "r.md"})
    assert main(["experiment", "--out", str(tmp_path), "--task", "breast_us", "--image-size", "32",
                 "--synthetic-images", "24", "--scratch-only", "--quiet"]) == 0
    config = seen["config"]
    defaults = experiment.ExperimentConfig(tasks={"t": "t.json"}, inits={"scratch": None}, out_dir=".")
    assert config.recipe == Recipe(image_size=32) and config.out_dir == str(tmp_path)
    assert (config.repeats, config.folds, config.modes) == (defaults.repeats, defaults.folds, defaults.modes)
    assert list(config.tasks) == ["breast_us"] and config.inits == {"scratch": None}



def test_experiment_label_fractions_reach_the_config_and_bad_ones_are_named(tmp_path, monkeypatch, capsys):
    """--label-fractions gives one config of several fractions (--label-fraction stays its one-element spelling); a
    bad value fails in one line naming it, before any task is converted or generated."""
    from monai_modan.evaluation import configure, experiment

    seen = []
    real = configure.configure_experiment
    monkeypatch.setattr(configure, "configure_experiment", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    monkeypatch.setattr(experiment, "run_experiment", lambda config, progress=True: {"report.md": "r.md"})
    base = ["experiment", "--out", str(tmp_path / "out"), "--task", "breast_us", "--image-size", "32",
            "--synthetic-images", "24", "--scratch-only", "--quiet"]
    assert main([*base, "--label-fractions", "0.05", "0.1", "0.25", "0.5", "1.0"]) == 0
    assert seen[-1].label_fractions == (0.05, 0.1, 0.25, 0.5, 1.0) and seen[-1].label_fraction is None
    assert main([*base, "--label-fraction", "0.5"]) == 0
    assert seen[-1].label_fractions == (0.5,) and seen[-1].label_fraction == 0.5
    assert main(base) == 0
    assert seen[-1].label_fractions == (1.0,)
    capsys.readouterr()
    for bad, message in ((["--label-fractions", "0.1", "0"], "label_fractions: entry 0.0 is outside (0, 1]"),
                         (["--label-fractions", "0.1", "1.5"], "entry 1.5 is outside (0, 1]"),
                         (["--label-fractions", "0.1", "0.1"], "label_fractions: 0.1 listed more than once"),
                         (["--label-fraction", "0.5", "--label-fractions", "0.1"], "not both")):
        out = tmp_path / "bad"
        assert main([*base[:1], "--out", str(out), *base[3:], *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not out.exists()  # refused before the synthetic task was written
    with pytest.raises(SystemExit):
        main([*base, "--label-fractions", "0.1", "half"])
    assert "invalid float value: 'half'" in capsys.readouterr().err


def test_convert_breastmnist_and_option_errors(medmnist_dir, tmp_path, capsys):
    out = tmp_path / "breast.json"
    assert main(["convert", str(medmnist_dir / "breastmnist.npz"), "--out", str(out)]) == 0
    assert "210 positive (malignant), 570 negative" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert sum(it["label"] for it in data["training"]) == 210
    assert main(["convert", str(medmnist_dir / "breastmnist.npz"), "--out", str(out), "--option", "foo=1"]) == 2
    assert "does not take option(s) ['foo']" in capsys.readouterr().err
    assert main(["convert", str(medmnist_dir / "breastmnist.npz"), "--out", str(out), "--option", "nonsense"]) == 2
    assert "write key=value" in capsys.readouterr().err


def test_pack_command(tmp_path, capsys):
    from monai_modan.data.packed import PackedCorpus
    from monai_modan.synthetic import generate_pretraining_corpus

    corpus = generate_pretraining_corpus(tmp_path / "c", images_per_class=2, image_size=32, layouts=("radimagenet",),
                                         progress=False)
    assert main(["index", str(corpus.radimagenet_root), "--out", str(tmp_path / "dl.json"), "--quiet"]) == 0
    assert main(["pack", str(tmp_path / "dl.json"), "--out", str(tmp_path / "packed"), "--image-size", "32",
                 "--quiet", "--workers", "0"]) == 0
    packed = PackedCorpus.open(tmp_path / "packed")
    n_training = len(load_datalist(tmp_path / "dl.json").items("training"))
    assert len(packed) == n_training and packed.image_size == 32


def test_index_outputs_written_into_the_export_are_not_indexed_next_time(dicom_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(dicom_dir / "pydicom_test_files" / "dicomdirtests" / "98892001", export)
    out = export / "index.json"
    reports = []
    for _ in range(2):
        assert main(["index", str(export), "--out", str(out), "--quiet", "--workers", "0"]) == 0
        reports.append(json.loads((export / "index.report.json").read_text()))
    assert reports[1]["skipped"] == reports[0]["skipped"] and reports[1]["images"] == reports[0]["images"]


def test_experiment_finds_the_encoders_from_any_folder_or_stops(tmp_path, monkeypatch, capsys):
    """The default --pretrain-runs is this checkout's, not one relative to the current folder; finding no encoder
    is an error naming where it looked; scratch-only is asked for with --scratch-only."""
    from monai_modan.evaluation import configure, experiment
    from monai_modan.evaluation.inits import NoPretrainedEncoderError

    seen = {}
    monkeypatch.setattr(experiment, "run_experiment", lambda config, progress=True: {"report.md": "r.md"})
    real = configure.configure_experiment
    monkeypatch.setattr(configure, "configure_experiment",
                        lambda tasks, inits, *a, **k: seen.setdefault("inits", inits) and real(tasks, inits, *a, **k))
    monkeypatch.chdir(tmp_path)  # anywhere but the repository root
    args = ["experiment", "--task", "breast_us", "--synthetic-images", "40", "--image-size", "32", "--out",
            str(tmp_path / "out")]
    assert main([*args, "--pretrain-runs", "/nonexistent/runs"]) == 2 and "inits" not in seen
    err = capsys.readouterr().err
    assert err.startswith("error: no pretrained encoder found: looked for mulsupcon/encoder.pt") and \
        "under /nonexistent/runs" in err and err.count("\n") == 1
    with pytest.raises(NoPretrainedEncoderError):
        main(["--debug", *args, "--pretrain-runs", "/nonexistent/runs"])
    assert main([*args, "--scratch-only"]) == 0 and seen["inits"] == {"scratch": None}
    parser_default = next(a.default for a in _experiment_parser()._actions if a.dest == "pretrain_runs")
    assert Path(parser_default).is_absolute() and Path(parser_default).parent.name == "modan_pretrain"


def _experiment_parser():
    import argparse

    from monai_modan.__main__ import _parser

    subcommands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subcommands.choices["experiment"]


def test_experiment_alternative_and_fixed_splits_reach_the_config(tmp_path, monkeypatch, capsys):
    """--alternative and --fixed-splits / --no-fixed-splits reach the config (unset: two-sided, fixed as in the
    paper); an unknown alternative fails in one line before any task is converted or generated."""
    from monai_modan.evaluation import configure, experiment

    seen = []
    real = configure.configure_experiment
    monkeypatch.setattr(configure, "configure_experiment", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    monkeypatch.setattr(experiment, "run_experiment", lambda config, progress=True: {"report.md": "r.md"})
    base = ["experiment", "--out", str(tmp_path / "out"), "--task", "breast_us", "--image-size", "32",
            "--synthetic-images", "24", "--scratch-only", "--quiet"]
    assert main(base) == 0 and (seen[-1].alternative, seen[-1].fixed_splits) == ("two-sided", True)
    assert main([*base, "--alternative", "greater", "--no-fixed-splits"]) == 0
    assert (seen[-1].alternative, seen[-1].fixed_splits) == ("greater", False)
    capsys.readouterr()
    out = tmp_path / "bad"
    assert main(["experiment", "--out", str(out), *base[3:], "--alternative", "one-sided"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: unknown alternative 'one-sided'; known: ['two-sided', 'greater', 'less'] (greater = the "
                   "reference init is better)\n")
    assert not out.exists()  # refused before the synthetic task was written


@pytest.mark.parametrize("argv", [["--help"], ["experiment", "--help"]])
def test_help_imports_neither_torch_nor_monai(argv):
    """Building the parser imports no heavy module (it took ~6 s a call when it imported the experiment runner):
    the child's own import log (-X importtime) lists every module it imported."""
    child = subprocess.run([sys.executable, "-X", "importtime", "-m", "monai_modan", *argv], capture_output=True,
                           text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in child.stderr.splitlines()
                if line.startswith("import time:")}
    assert "monai_modan.utils.defaults" in imported  # the log does list the package's imports
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "monai", "numpy", "pydicom"))
    assert not heavy, heavy[:5]
    assert "usage: python -m monai_modan" in child.stdout


def test_experiment_option_defaults_are_the_package_defaults():
    """The defaults --help shows come from utils.defaults, the home ExperimentConfig and Recipe read them from."""
    from monai_modan.evaluation.experiment import ExperimentConfig
    from monai_modan.evaluation.finetune import Recipe
    from monai_modan.evaluation.stats import EvalMode

    shown = {a.dest: a.default for a in _experiment_parser()._actions}
    config = ExperimentConfig(tasks={"t": "t.json"}, inits={"scratch": None}, out_dir=".")
    assert (shown["repeats"], shown["folds"], shown["workers"]) == (config.repeats, config.folds, config.workers)
    assert tuple(shown["modes"]) == config.modes == tuple(EvalMode(m).value for m in shown["modes"])
    assert (shown["epochs"], shown["image_size"]) == (Recipe().epochs, Recipe().image_size)
    text = _experiment_parser().format_help()
    assert "(default: fine_tuning linear_probing)" in text and text.count("(default:") >= 8


def test_old_mode_spelling_works_with_one_warning_line(tmp_path, monkeypatch, capsys):
    from monai_modan.evaluation import configure, experiment

    seen = []
    real = configure.configure_experiment
    monkeypatch.setattr(configure, "configure_experiment", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    monkeypatch.setattr(experiment, "run_experiment", lambda config, progress=True: {"report.md": "r.md"})
    assert main(["experiment", "--out", str(tmp_path), "--task", "breast_us", "--image-size", "32",
                 "--synthetic-images", "24", "--scratch-only", "--quiet", "--modes", "linear_probe"]) == 0
    assert seen[-1].modes == ("linear_probing",)
    warned = [line for line in capsys.readouterr().err.splitlines() if "linear_probe" in line]
    assert warned == ["warning: mode 'linear_probe' is deprecated and will be removed in the next release; write "
                      "'linear_probing'"]


def test_experiment_resumes_with_absolute_or_relative_out(tmp_path, monkeypatch, capsys):
    """`--out out` then `--out $PWD/out`: the second run trains nothing (settings compared by meaning)."""
    from monai_modan.evaluation import experiment

    calls = []
    real = experiment.train_fold
    monkeypatch.setattr(experiment, "train_fold", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    monkeypatch.chdir(tmp_path)
    args = ["experiment", "--task", "acl_mrnet", "--synthetic-images", "40", "--image-size", "32", "--scratch-only",
            "--modes", "linear_probing", "--repeats", "1", "--folds", "3", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", "out"]) == 0 and len(calls) == 3
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert len(calls) == 3  # nothing trained again
