"""The deployable classifier (monai_modan.evaluation.deploy): a held-out deploy is CV's repeat 0, fold 0; inference
reproduces the recorded AUC from predictions.csv; the threshold is Youden's J on the validation part; bad input gives
one-line errors or counted skips; DICOM folders go through the indexer and no identifier reaches an output."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sklearn.metrics import roc_auc_score

from monai_modan.data.downstream.task import load_task_datalist
from monai_modan.data.readers import LoadGrayscaleImage
from monai_modan.evaluation.configure import configure_experiment
from monai_modan.evaluation.deploy import (
    CONFIG_NAME,
    MODEL_NAME,
    DeployError,
    classifier_network,
    classify,
    deploy_classifier,
    load_classifier,
    youden_threshold,
)
from monai_modan.evaluation.experiment import run_experiment
from monai_modan.evaluation.finetune import repeat_seed
from monai_modan.evaluation.folds import FoldPlan
from monai_modan.networks import CheckpointError
from monai_modan.synthetic import default_task_datalist

SIZE = 32
RECIPE = {"epochs": 2}
FOLDS = 2
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> str:
    return default_task_datalist("breast_us", tmp_path_factory.mktemp("task"), n_images=96, image_size=SIZE)


@pytest.fixture(scope="module")
def held_out(task, tmp_path_factory):
    """A scratch model deployed with test fold 0 of a 2-fold plan held out."""
    root = tmp_path_factory.mktemp("deploy")
    outputs = deploy_classifier("breast_us", task, {"scratch": None}, root / "models", root / "run", holdout=True,
                                image_size=SIZE, recipe=RECIPE, folds=FOLDS, device="cpu", progress=False)
    return outputs, json.loads(outputs["config"].read_text())


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_held_out_deploy_is_the_cross_validation_model_of_repeat_0_fold_0(task, held_out, tmp_path):
    """Same recipe, same model selection, same split and seed as CV: the experiment's AUC of repeat 0, fold 0 (an
    independent run through run_experiment) is the held-out AUC deploy recorded."""
    outputs, card = held_out
    config = configure_experiment({"breast_us": task}, {"scratch": None}, tmp_path, image_size=SIZE, recipe=RECIPE,
                                  modes=["fine_tuning"], repeats=1, folds=FOLDS, device="cpu")
    run_experiment(config, progress=False)
    fold0 = [r for r in _rows(tmp_path / "results.csv") if r["repeat"] == "0" and r["fold"] == "0"]
    assert len(fold0) == 1
    assert card["holdout_auc"] == pytest.approx(float(fold0[0]["auc"]), abs=1e-12)
    # the held-out images are the experiment's test fold 0
    plan = FoldPlan.load(tmp_path / "folds" / "breast_us.json")
    items, _ = load_task_datalist(task)
    held, _ = load_task_datalist(outputs["holdout"])
    assert [it["image"] for it in held] == [items[i]["image"] for i in plan.test_folds[0]]
    assert card["n_holdout"] == len(held) and card["n_train"] + card["n_val"] + len(held) == len(items)


def test_predictions_on_the_held_out_part_reproduce_the_recorded_auc(held_out, tmp_path, capsys):
    outputs, card = held_out
    result = classify(outputs["model"], outputs["holdout"], tmp_path / "predictions.csv", task="breast_us",
                      device="cpu", progress=False)
    rows = _rows(result.predictions)
    held, _ = load_task_datalist(outputs["holdout"])
    assert [r["image"] for r in rows] == [it["image"] for it in held]
    assert [int(r["true_label"]) for r in rows] == [it["label"] for it in held]
    y, p = np.array([int(r["true_label"]) for r in rows]), np.array([float(r["probability"]) for r in rows])
    assert abs(roc_auc_score(y, p) - card["holdout_auc"]) < 1e-6
    labels = np.array([int(r["label"]) for r in rows])
    assert np.array_equal(labels, (p >= card["threshold"]).astype(int))
    assert {r["class"] for r in rows} <= {"positive", "not positive"}
    assert labels[y == 1].mean() == pytest.approx(card["holdout_sensitivity"])
    assert (1 - labels[y == 0]).mean() == pytest.approx(card["holdout_specificity"])
    assert json.loads(result.skipped.read_text())["skipped"] == []
    assert f"classified {len(rows)} images" in capsys.readouterr().out


def _brute_force_youden(y: np.ndarray, p: np.ndarray) -> float:
    """Every distinct probability as a threshold (>= is positive); the highest of those with the largest J."""
    best, best_t = -np.inf, None
    for t in sorted(set(p.tolist()), reverse=True):
        j = (p[y == 1] >= t).mean() - (p[y == 0] >= t).mean()
        if j > best + 1e-15:
            best, best_t = j, t
    return best_t


def test_youden_threshold_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(4, 40))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        p = np.round(rng.random(n), 1 if trial % 2 else 6)  # with and without ties
        t, sensitivity, specificity = youden_threshold(y, p)
        assert t == _brute_force_youden(y, p)
        assert sensitivity == pytest.approx((p[y == 1] >= t).mean(), abs=1e-12)
        assert specificity == pytest.approx((p[y == 0] < t).mean(), abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold([1, 1], [0.2, 0.3])


def test_the_threshold_and_the_validation_auc_come_from_the_validation_part(task, held_out):
    """Recompute independently: the validation part CV draws for repeat 0, fold 0, the saved model's probabilities on
    it, a brute-force Youden search."""
    outputs, card = held_out
    plan = FoldPlan.load(outputs["holdout"].parent / "folds" / "breast_us.json")
    _, val, _ = plan.split(0, 0.2, seed=repeat_seed(0, 0))
    items, _ = load_task_datalist(task)
    model, _ = load_classifier(outputs["model"], task="breast_us")
    loader = LoadGrayscaleImage(spatial_size=SIZE)
    x = torch.stack([loader(items[i]["image"]).as_tensor() for i in val])
    with torch.no_grad():
        p = torch.sigmoid(model(x).reshape(-1).double()).numpy()
    y = np.array([items[i]["label"] for i in val])
    assert card["n_val"] == val.size and card["val_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert card["threshold"] == pytest.approx(_brute_force_youden(y, p), abs=1e-9)
    assert card["best_epoch"] == 1 + int(np.argmin(card["val_loss_curve"]))


def test_model_pt_is_a_plain_state_dict_with_its_config(held_out):
    outputs, card = held_out
    state = torch.load(outputs["model"], weights_only=True)
    assert {k for k in state if not k.startswith("encoder.")} == {"head.weight", "head.bias", "input_mean", "input_std"}
    net = classifier_network(outputs["config"])
    net.load_state_dict(state, strict=True)  # what MONAI's ckpt_export does with network_def
    model, config = load_classifier(outputs["model"])
    x = torch.rand(3, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), model(x)) and model(x).shape == (3, 1)
    assert (config.task, config.positive, config.image_size, config.stem) == ("breast_us", "positive", SIZE, "conv3x3")
    assert card["init"] == {"name": "scratch", "kind": "scratch", "weights": None, "sha256": None}
    assert card["recipe"]["epochs"] == 2 and card["classes"] == {"0": "not positive", "1": "positive"}
    assert 0 < card["threshold"] < 1 and "Youden" in card["threshold_rule"]


def test_a_final_deploy_trains_on_every_image_but_the_validation_part(task, tmp_path):
    """holdout off: training = everything outside a stratified, grouped validation part (no case in both);
    items that carry split use their own val part."""
    out = deploy_classifier("breast_us", task, {"scratch": None}, tmp_path / "models", tmp_path / "run",
                            image_size=SIZE, recipe={"epochs": 1}, device="cpu", progress=False)
    card = json.loads(out["config"].read_text())
    items, _ = load_task_datalist(task)
    assert card["holdout"] is False and card["holdout_auc"] is None and "holdout" not in out
    assert card["n_train"] + card["n_val"] == len(items) and 0.1 < card["n_val"] / len(items) < 0.3

    marked = json.loads(Path(task).read_text())
    for i, item in enumerate(marked["training"]):  # whole cases, both classes
        item["split"] = "val" if int(str(item["group"]).lstrip("case") or 0) % 4 == 0 else "train"
        item["image"] = str(Path(task).parent / item["image"])
    marked_path = tmp_path / "marked.json"
    marked_path.write_text(json.dumps(marked))
    n_val = sum(it["split"] == "val" for it in marked["training"])
    assert 0 < n_val < len(items)
    out = deploy_classifier("breast_us", marked_path, {"scratch": None}, tmp_path / "m2", tmp_path / "r2",
                            image_size=SIZE, recipe={"epochs": 1}, device="cpu", progress=False)
    assert json.loads(out["config"].read_text())["n_val"] == n_val


def test_deploy_refuses_several_inits_and_a_recipe_without_validation_before_training(task, tmp_path):
    with pytest.raises(DeployError, match="one initialisation, got \\['a', 'scratch'\\]"):
        deploy_classifier("breast_us", task, {"a": None, "scratch": None}, tmp_path / "m", tmp_path / "r")
    with pytest.raises(DeployError, match="val_fraction is 0"):
        deploy_classifier("breast_us", task, {"scratch": None}, tmp_path / "m", tmp_path / "r",
                          recipe={"val_fraction": 0.0})
    assert not (tmp_path / "m").exists()


# -- inference on bad input -----------------------------------------------------------------------------------------


def _write_dicom(path: Path, *, modality: str = "MR", pixels: bool = True, **elements) -> Path:
    meta = FileMetaDataset()
    sop = MRImageStorage if pixels else "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, modality
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if pixels:
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.random.default_rng(len(str(path))).integers(0, 255, (16, 16), dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_inference_refuses_an_empty_folder_a_missing_source_and_non_image_dicom(held_out, tmp_path):
    outputs, _ = held_out
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="empty folder"):
        classify(outputs["model"], tmp_path / "empty", tmp_path / "p.csv", progress=False)
    with pytest.raises(DeployError, match="no images to classify"):
        classify(outputs["model"], None, tmp_path / "p.csv", progress=False)
    with pytest.raises(DeployError, match="images_kind 'png' is not one of"):
        classify(outputs["model"], tmp_path / "empty", tmp_path / "p.csv", kind="png", progress=False)
    _write_dicom(tmp_path / "sr" / "report.dcm", modality="SR", pixels=False)
    with pytest.raises(DeployError, match=r"no image to classify \(1 skipped: 1 x non-image object \(SR\)"):
        classify(outputs["model"], tmp_path / "sr", tmp_path / "p.csv", workers=0, progress=False)
    assert not (tmp_path / "p.csv").exists()


def test_inference_goes_past_unreadable_files_counting_and_naming_them(task, held_out, tmp_path):
    outputs, _ = held_out
    folder = tmp_path / "new"
    folder.mkdir()
    items, _ = load_task_datalist(task)
    for item in items[:3]:
        shutil.copy(item["image"], folder / Path(item["image"]).name)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image")
    result = classify(outputs["model"], folder, tmp_path / "out" / "predictions.csv", progress=False)
    assert result.n_classified == 3 and len(_rows(result.predictions)) == 3
    skipped = {Path(s["image"]).name: s["reason"] for s in json.loads(result.skipped.read_text())["skipped"]}
    assert set(skipped) == {"broken.png", "notes.txt"} and skipped["notes.txt"] == "not an image file"
    assert "broken.png" in skipped["broken.png"]  # the reader's message names the file


def test_images_of_another_size_or_channel_count_are_read_as_training_reads_them(task, held_out, tmp_path):
    """Resized to the model's size and converted to one grey channel by the training reader, not refused: the same
    picture stored 2x larger, or as RGB with equal channels, gets the probability of the original."""
    outputs, _ = held_out
    items, _ = load_task_datalist(task)
    grey = np.asarray(Image.open(items[0]["image"]))
    assert grey.shape == (SIZE, SIZE)
    folder = tmp_path / "variants"
    folder.mkdir()
    Image.fromarray(grey).save(folder / "a_original.png")
    Image.fromarray(np.kron(grey, np.ones((2, 2), dtype=np.uint8))).save(folder / "b_twice_as_large.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / "c_rgb.png")
    Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], axis=-1)).save(folder / "d_rgba.png")
    rows = _rows(classify(outputs["model"], folder, tmp_path / "p.csv", progress=False).predictions)
    p = [float(r["probability"]) for r in rows]
    assert len(p) == 4 and max(p) - min(p) < 1e-5, p


def test_weights_of_another_task_or_stem_or_replaced_weights_are_refused(held_out, tmp_path):
    outputs, card = held_out
    model, config = tmp_path / MODEL_NAME, tmp_path / CONFIG_NAME
    shutil.copy(outputs["model"], model)
    shutil.copy(outputs["config"], config)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in" / "x.png")
    with pytest.raises(DeployError, match="classifies task 'breast_us' .*not 'thyroid_us'"):
        classify(model, tmp_path / "in", tmp_path / "p.csv", task="thyroid_us", progress=False)
    # a config saying another stem than the weights have
    config.write_text(json.dumps({**card, "stem": "conv7x7"}))
    with pytest.raises(CheckpointError, match="weights have the conv3x3 stem, conv7x7 was requested"):
        classify(model, tmp_path / "in", tmp_path / "p.csv", progress=False)
    # weights replaced after deploy (e.g. another deploy's model.pt beside this model.json)
    config.write_text(json.dumps(card))
    state = torch.load(model, weights_only=True)
    torch.save({**state, "head.bias": state["head.bias"] + 1}, model)
    with pytest.raises(DeployError, match="is not the model .* describes \\(SHA-256"):
        classify(model, tmp_path / "in", tmp_path / "p.csv", progress=False)
    # a TorchScript export is never loaded by the inference (it runs code on load)
    net = classifier_network(config)
    net.load_state_dict(state)
    torch.jit.save(torch.jit.script(net.eval()), str(tmp_path / "model.ts"))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        classify(tmp_path / "model.ts", tmp_path / "in", tmp_path / "p.csv", model_config=config, progress=False)
    with pytest.raises(FileNotFoundError, match="no classifier config"):
        classify(model, tmp_path / "in", tmp_path / "p.csv", model_config=tmp_path / "none.json", progress=False)


def test_a_dicom_folder_goes_through_the_indexer_and_no_identifier_reaches_an_output(held_out, tmp_path, capsys):
    """A patient-named folder is listed by pseudonymous links; non-image objects and other files are counted skips;
    no spelling of an identifier is in predictions.csv, skipped.json, a file name or the printed lines."""
    outputs, _ = held_out
    export = tmp_path / "export"
    patient = {"PatientName": "QUIXLEY^BARTHOLOMEW", "PatientID": "80411937", "PatientBirthDate": "19610704"}
    _write_dicom(export / "80411937" / "im1.dcm", **patient)
    _write_dicom(export / "80411937" / "im2", **patient)  # no suffix
    _write_dicom(export / "study2" / "im1.dcm", PatientName="ROE^JANE", PatientID="55512")
    _write_dicom(export / "study2" / "sr.dcm", modality="SR", pixels=False, PatientName="ROE^JANE", PatientID="55512")
    (export / "study2" / "notes.txt").write_text("not DICOM")
    out = tmp_path / "inference" / "predictions.csv"
    result = classify(outputs["model"], export, out, workers=0, progress=False)
    rows = _rows(out)
    assert result.n_classified == 3 == len(rows)
    linked = [r["image"] for r in rows if Path(r["image"]).parent == out.with_name("predictions.links")]
    assert len(linked) == 2 and all(Path(p).resolve().parent.name == "80411937" for p in linked)
    assert [Path(r["image"]).name for r in rows if r["image"] not in linked] == ["im1.dcm"]
    reasons = sorted(s["reason"] for s in json.loads(result.skipped.read_text())["skipped"])
    assert reasons == ["non-image object (SR)", "not DICOM"]
    written = out.read_text() + result.skipped.read_text() + capsys.readouterr().out
    written += " ".join(str(p) for p in (tmp_path / "inference").rglob("*"))
    for value in ("QUIXLEY", "BARTHOLOMEW", "80411937", "19610704"):
        assert value not in written, value
    # an images folder with DICOM in it is refused without naming the files
    with pytest.raises(DeployError, match="holds DICOM files: classify it as a DICOM folder") as info:
        classify(outputs["model"], export, out, kind="images", progress=False)
    assert "80411937" not in str(info.value)
