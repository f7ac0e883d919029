"""The experiment runner's leakage check: an encoder whose config.json names its pretraining datalist is audited
against every task before anything trains; exact leaks are refused unless allowed, and the report states the count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from monai_modan.data.datalist import write_datalist
from monai_modan.data.records import ImageRecord, IndexResult
from monai_modan.evaluation.experiment import ExperimentConfig, run_experiment
from monai_modan.evaluation.leakage import LeakageError, check_leakage, pretraining_datalist
from monai_modan.labels import LabelSpace
from monai_modan.networks import build_encoder, export_encoder
from monai_modan.networks.weights import InitSpec
from monai_modan.synthetic import generate_downstream_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A task of 24 images, a 'pretraining corpus' holding 3 of them (and 6 images of another task), and an encoder
    run folder whose config.json names that corpus."""
    root = tmp_path_factory.mktemp("leak")
    task = generate_downstream_task("knee_acl", root, n_images=24, image_size=SIZE, images_per_case=1)
    other = generate_downstream_task("thyroid_us", root, n_images=6, image_size=SIZE, images_per_case=1)
    fresh = generate_downstream_task("breast_us", root, n_images=6, image_size=SIZE, images_per_case=1)
    task_items = json.loads(Path(task).read_text())["training"]
    other_items = json.loads(Path(other).read_text())["training"]
    leaked = [str(Path(task).parent / it["image"]) if not Path(it["image"]).is_absolute() else it["image"]
              for it in task_items[:3]]
    copies = []
    for i, image in enumerate(leaked):  # the same files under other names: the corpus' own copies
        copies.append(str(root / f"corpus_{i}{Path(image).suffix}"))
        shutil.copy(image, copies[-1])
    images = copies + [it["image"] if Path(it["image"]).is_absolute() else str(Path(other).parent / it["image"])
                       for it in other_items]
    space = LabelSpace.default()
    corpus = write_datalist(IndexResult("test", str(root), [ImageRecord(i, {"modality": "MR", "anatomy": "knee"})
                                                            for i in images]), space, root / "corpus.json",
                            report=False)
    run_dir = root / "runs" / "mulsupcon"
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    encoder = export_encoder(build_encoder("conv7x7"), run_dir / "encoder.pt")
    (run_dir / "config.json").write_text(json.dumps({"method": "mulsupcon", "datalist": str(corpus)}))
    old = root / "runs" / "simclr"
    old.mkdir()
    old_encoder = export_encoder(build_encoder("conv7x7"), old / "encoder.pt")
    (old / "config.json").write_text(json.dumps({"method": "simclr"}))  # a run from before datalists were recorded
    return {"root": root, "task": task, "fresh": fresh, "encoder": encoder, "old": old_encoder, "corpus": corpus}


def _config(setup, out, **overrides):
    values = dict(tasks={"knee": str(setup["task"])}, inits={"mulsupcon": str(setup["encoder"]), "scratch": None},
                  out_dir=str(out), repeats=1, folds=2, modes=["linear_probing"],
                  recipe={"epochs": 1, "image_size": SIZE}, device="cpu")
    values.update(overrides)
    return ExperimentConfig.from_dict(values)


def test_the_config_json_of_a_run_names_its_corpus(setup):
    assert pretraining_datalist(setup["encoder"]) == (Path(setup["corpus"]), "")
    path, why = pretraining_datalist(setup["old"])
    assert path is None and "names no pretraining datalist" in why
    path, why = pretraining_datalist(setup["root"] / "elsewhere" / "encoder.pt")
    assert path is None and "no config.json" in why


def test_a_task_image_seen_in_pretraining_is_refused_before_training(setup, tmp_path):
    with pytest.raises(LeakageError, match=r"task knee: 3 of 24 images are also pretraining images .*mulsupcon.*"
                                           r"--allow-leakage"):
        run_experiment(_config(setup, tmp_path / "out"), progress=False)
    assert not (tmp_path / "out" / "results.csv").exists()  # refused in the planning step: nothing trained


def test_allowed_leakage_runs_and_the_report_states_it(setup, tmp_path):
    inits = {"mulsupcon": str(setup["encoder"]), "simclr": str(setup["old"]), "scratch": None}
    files = run_experiment(_config(setup, tmp_path / "out", allow_leakage=True, inits=inits), progress=False)
    report = Path(files["report.md"]).read_text()
    assert "task knee: 3 of 24 test images are also pretraining images (exact duplicates)" in report
    assert "Allowed by allow_leakage" in report
    assert "init simclr not checked" in report


def test_no_leak_no_refusal_and_bad_flag(setup):
    specs = {"mulsupcon": InitSpec.parse("mulsupcon", str(setup["encoder"])),
             "scratch": InitSpec.parse("scratch", None)}
    lines = check_leakage({"breast": str(setup["fresh"])}, specs)
    assert len(lines) == 1 and "0 of 6 test images are also pretraining images" in lines[0]
    with pytest.raises(Exception, match="allow_leakage must be true or false"):
        _config(setup, setup["root"] / "x", allow_leakage="no")
