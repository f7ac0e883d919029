"""The README's path "From a PACS export to a deployed classifier", end to end on the embedded synthetic data: index
a DICOM export, pretrain on it, evaluate, deploy with a held-out fold, classify the held-out images (their AUC from
predictions.csv is the one deploy recorded, which is CV's fold-0 AUC) and new DICOM studies (no identifier in the
outputs), then MONAI's verify_net_in_out and ckpt_export on the deployed model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest
import torch
from monai.bundle import ckpt_export, run, verify_net_in_out
from sklearn.metrics import roc_auc_score

from monai_modan.__main__ import main
from monai_modan.evaluation.deploy import load_classifier
from monai_modan.synthetic import default_task_datalist, generate_pretraining_corpus

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "bundles" / "modan_pretrain"
TASK = REPO / "bundles" / "breast_us"
TINY = {"image_size": 32, "synthetic_images": 96, "folds": 2, "recipe#epochs": 2, "device": "cpu"}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task_bundle(out: Path, *overlays: str, **overrides) -> None:
    configs = TASK / "configs"
    files = [str(configs / "train.json")] + [str(configs / o) for o in overlays]
    run(config_file=files if len(files) > 1 else files[0], bundle_root=str(TASK),
        logging_file=str(configs / "logging.conf"), output_dir=str(out), **{**TINY, **overrides})


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_from_a_pacs_export_to_a_deployed_classifier(tmp_path, capsys):
    # a PACS-like export (fake patients), one study folder named after its patient as exports often are
    corpus = generate_pretraining_corpus(tmp_path / "corpus", images_per_class=2, image_size=32, layouts=("dicom",),
                                         progress=False)
    identifiers = json.loads((tmp_path / "corpus" / "manifest.json").read_text())["dicom"]["identifying_values"]
    export = corpus.dicom_root
    study = sorted(p for p in export.iterdir() if p.is_dir())[0]
    patient_id = str(pydicom.dcmread(next(p for p in sorted(study.rglob("*")) if p.is_file())).PatientID)
    study.rename(export / patient_id)

    # 1. index
    assert main(["index", str(export), "--out", str(tmp_path / "pacs.json"), "--quiet", "--workers", "0"]) == 0
    # 2. pretrain ModAn-MulSupCon on it
    runs = tmp_path / "runs"
    run(config_file=str(PRETRAIN / "configs" / "train.json"), bundle_root=str(PRETRAIN),
        logging_file=str(PRETRAIN / "configs" / "logging.conf"), datalist=str(tmp_path / "pacs.json"), image_size=32,
        batch_size=16, epochs=1, output_dir=str(runs / "mulsupcon"), model_file=str(runs / "mulsupcon.pt"))
    encoder = runs / "mulsupcon" / "encoder.pt"
    assert encoder.is_file()
    # 3. the labelled task: the embedded synthetic breast_us task, converted as a user's own datalist would be
    synthetic = default_task_datalist("breast_us", tmp_path / "labelled", n_images=96, image_size=32)
    assert main(["convert", synthetic, "--out", str(tmp_path / "task.json")]) == 0
    task = {"data_source": str(tmp_path / "task.json"), "pretrain_runs": str(runs)}
    # 4. evaluate: fine-tune the encoder under the CV protocol (one init, 2 folds: CI size)
    _task_bundle(tmp_path, **task)
    cv = {(r["repeat"], r["fold"]): float(r["auc"]) for r in _rows(tmp_path / "fine_tuning" / "results.csv")}
    # 5. deploy: the same init and recipe, test fold 0 held out
    models = tmp_path / "models"
    _task_bundle(tmp_path, "deploy.json", **task, holdout=True, model_dir=str(models))
    card = json.loads((models / "model.json").read_text())
    assert card["init"]["name"] == "mulsupcon" and card["init"]["weights"] == str(encoder)
    assert card["task"] == "breast_us" and card["image_size"] == 32
    assert card["holdout_auc"] == pytest.approx(cv[("0", "0")], abs=1e-12)  # deploy = CV's repeat 0, fold 0
    # 6. classify the held-out images: their AUC from predictions.csv is the one deploy recorded
    holdout = tmp_path / "deploy" / "holdout.json"
    _task_bundle(tmp_path, "inference.json", model_dir=str(models), images=str(holdout))
    rows = _rows(tmp_path / "inference" / "predictions.csv")
    assert len(rows) == card["n_holdout"]
    auc = roc_auc_score([int(r["true_label"]) for r in rows], [float(r["probability"]) for r in rows])
    assert abs(auc - card["holdout_auc"]) < 1e-6
    # 6'. classify new studies: the DICOM export itself, through the indexer
    out = tmp_path / "new"
    _task_bundle(out, "inference.json", model_dir=str(models), images=str(export))
    rows = _rows(out / "inference" / "predictions.csv")
    n_images = json.loads((tmp_path / "pacs.report.json").read_text())["images"]
    assert len(rows) == n_images and {r["label"] for r in rows} <= {"0", "1"}
    skipped = json.loads((out / "inference" / "skipped.json").read_text())["skipped"]
    assert sorted(s["reason"] for s in skipped) == ["non-image object (KO)", "non-image object (SR)", "not DICOM"]
    written = (out / "inference" / "predictions.csv").read_text() + json.dumps(skipped) + capsys.readouterr().out
    links = out / "inference" / "predictions.links"
    linked = [Path(r["image"]) for r in rows if Path(r["image"]).parent == links]
    in_patient_folder = [r for r in rows if (export / patient_id) in Path(r["image"]).resolve().parents]
    assert linked and len(linked) == len(in_patient_folder)  # the patient-named folder is never written out
    for value in identifiers:
        assert value not in written, value
    # 7. MONAI's bundle checks on the deployed classifier, and its TorchScript export
    configs = TASK / "configs"
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "train.json"), model_dir=str(models), device="cpu")
    ckpt_export(net_id="network_def", filepath=str(models / "model.ts"), ckpt_file=str(models / "model.pt"),
                meta_file=str(configs / "metadata.json"), config_file=str(configs / "train.json"),
                bundle_root=str(TASK), model_dir=str(models))
    scripted = torch.jit.load(str(models / "model.ts"))  # our own export, loaded here by the test alone
    model, _ = load_classifier(models / "model.pt")
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("bundle", ("breast_us", "thyroid_us", "acl_mrnet"))
def test_every_task_bundle_passes_monais_network_check_and_exports_its_classifier(bundle, tmp_path):
    """network_def is the deployed classifier ([B, 1, H, W] -> [B, 1] logits, as metadata.json says) with every
    config combination, before any deploy (default stem) and for a model.pt on disk (ckpt_export, no key needed)."""
    from monai.bundle import verify_metadata

    from monai_modan.evaluation.deploy import DeployedClassifier

    configs = REPO / "bundles" / bundle / "configs"
    meta = str(configs / "metadata.json")
    verify_metadata(meta_file=meta, filepath=str(REPO / "monai_modan" / "resources" / "bundle_meta_schema.json"))
    models = tmp_path / "models"
    for overlay in (None, "deploy.json", "inference.json", "evaluate.json"):
        files = [str(configs / "train.json")] + ([str(configs / overlay)] if overlay else [])
        verify_net_in_out(net_id="network_def", meta_file=meta, config_file=files, model_dir=str(models), device="cpu")
    torch.manual_seed(0)
    net = DeployedClassifier().eval()
    models.mkdir()
    torch.save(net.state_dict(), models / "model.pt")
    ckpt_export(net_id="network_def", filepath=str(models / "model.ts"), ckpt_file=str(models / "model.pt"),
                meta_file=meta, config_file=str(configs / "train.json"), bundle_root=str(REPO / "bundles" / bundle),
                model_dir=str(models))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(models / "model.ts"))(x), net(x))
    assert not (REPO / "bundles" / bundle / "models").exists(), "the checks wrote nothing into the bundle"
