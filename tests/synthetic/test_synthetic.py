"""Synthetic corpora: determinism, the real RadImageNet / PACS layouts, modality physics, downstream task design."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

from monai_modan.synthetic import (
    MANIFEST_NAME,
    RADIMAGENET_CLASSES,
    SyntheticCorpusError,
    SyntheticTask,
    Tissue,
    ct_signal,
    default_pretraining_datalist,
    default_task_datalist,
    ensure_pretraining_corpus,
    generate_downstream_task,
    generate_pretraining_corpus,
    mr_signal,
    phantom_tissue_map,
    render_phantom,
    render_task_image,
    speckle_field,
    to_display,
    ultrasound_fan_mask,
    ultrasound_signal,
)
from monai_modan.labels import LabelSpace

SIZE = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_pretraining_corpus(tmp_path_factory.mktemp("corpus"), images_per_class=5, image_size=SIZE,
                                       seed=3, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ---------------------------------------------------------------------------------------------------- determinism
def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a = generate_pretraining_corpus(tmp_path / "a", images_per_class=2, seed=7, progress=False)
    b = generate_pretraining_corpus(tmp_path / "b", images_per_class=2, seed=7, progress=False)
    c = generate_pretraining_corpus(tmp_path / "c", images_per_class=2, seed=8, progress=False)
    files_a, files_b, files_c = _files(a.root), _files(b.root), _files(c.root)
    assert files_a == files_b  # every PNG, CSV, DICOM file and the manifest
    pngs = [k for k in files_a if k.endswith(".png")]
    assert len(pngs) == 2 * len(RADIMAGENET_CLASSES)
    assert set(pngs) <= set(files_c)  # same names ...
    differing = sum(not np.array_equal(_png(a.root / k), _png(c.root / k)) for k in pngs)
    assert differing == len(pngs)  # ... but every image differs
    assert a.manifest["dicom"]["files"][0]["path"] != c.manifest["dicom"]["files"][0]["path"]  # seeded UIDs


def test_argument_validation(tmp_path):
    with pytest.raises(SyntheticCorpusError, match="image_size"):
        generate_pretraining_corpus(tmp_path, image_size=16, progress=False)
    with pytest.raises(SyntheticCorpusError, match="layouts"):
        generate_pretraining_corpus(tmp_path, layouts=("nifti",), progress=False)
    with pytest.raises(SyntheticCorpusError, match="images_per_class"):
        generate_pretraining_corpus(tmp_path, images_per_class=0, progress=False)


# ---------------------------------------------------------------------------------------------------- RadImageNet
def test_radimagenet_layout_matches_the_real_tree(corpus):
    top = corpus.radimagenet_root / "radiology_ai"
    assert sorted(p.name for p in top.iterdir()) == ["CT", "MR", "US"]
    assert sorted(p.name for p in (top / "CT").iterdir()) == ["abd", "lung"]
    assert sorted(p.name for p in (top / "MR").iterdir()) == ["af", "brain", "hip", "knee", "mriabd", "shoulder", "spine"]
    # CT/MR: <modality>/<anatomy>/<class>/<png>; US is flat: US/<class>/<png>
    depth = Counter((p.relative_to(top).parts[0], len(p.relative_to(top).parts)) for p in top.rglob("*.png"))
    assert set(depth) == {("CT", 4), ("MR", 4), ("US", 3)}
    assert not list((top / "US").glob("*/*/*.png"))
    folders = {p.relative_to(top).as_posix() for p in top.glob("*/*/*") if p.is_dir()} | {
        p.relative_to(top).as_posix() for p in (top / "US").iterdir()}
    assert {"CT/lung/Airspace_opacity", "MR/shoulder/ca++_tendinosis", "MR/af/achilles_pathology_",
            "US/thyroid_nodule", "US/gb", "US/liver", "US/kidney", "US/ovary", "US/uterus"} <= folders
    normal_in = {f.split("/")[1] for f in folders if f.endswith("/normal")}
    assert len(normal_in) >= 5
    assert sorted(folders) == sorted(c.id for c in RADIMAGENET_CLASSES)
    for png in list(top.rglob("*.png"))[::17]:
        im = Image.open(png)
        assert im.mode == "L" and im.size == (SIZE, SIZE)


def test_radimagenet_csvs(corpus):
    root = corpus.radimagenet_root
    all_pngs = {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    seen: dict[str, str] = {}
    per_split = {}
    for split in ("train", "val", "test"):
        with open(root / f"RadiologyAI_{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["filename", "label"]
        per_split[split] = len(rows) - 1
        for filename, label in rows[1:]:
            assert filename.startswith("radiology_ai/") and (root / filename).is_file()
            assert filename not in seen  # each image in exactly one split
            seen[filename] = label
    assert set(seen) == all_pngs
    assert per_split["train"] > per_split["test"] >= per_split["val"] > 0
    by_folder = {Path(f).parent.as_posix(): label for f, label in seen.items()}
    assert by_folder["radiology_ai/MR/knee/chondral_abnormality"] == "knee-chondral abnormality"
    assert by_folder["radiology_ai/US/gb"] == "US-gb"
    assert by_folder["radiology_ai/MR/af/achilles_pathology_"] == "af-achilles pathology"
    assert all(label != Path(folder).name for folder, label in by_folder.items())
    assert len(set(by_folder.values())) == len(by_folder)  # label text identifies the class (normal x several)


def test_classes_use_the_vocabulary():
    space = LabelSpace.default()
    for c in RADIMAGENET_CLASSES:
        assert space["modality"].canonical(c.modality) == c.modality
        assert c.anatomy in space["anatomy"].classes
    assert len({c.id for c in RADIMAGENET_CLASSES}) == len(RADIMAGENET_CLASSES)


# ---------------------------------------------------------------------------------------------------- DICOM export
def _anatomy_from_header(ds, group) -> str | None:
    if "BodyPartExamined" in ds:
        return group.canonical(ds.BodyPartExamined)
    for tag in group.free_text_tags:
        found, _ = group.find_in_text(ds.get(tag))
        if found:
            return found
    return None


def test_dicom_export_is_pacs_like_and_labels_are_recoverable(corpus):
    manifest = corpus.manifest["dicom"]
    anatomy = LabelSpace.default()["anatomy"]
    files = manifest["files"]
    assert len(files) == corpus.counts["dicom_images"] == 5 * len(RADIMAGENET_CLASSES)
    names = [Path(f["path"]).name for f in files]
    assert any(n.endswith(".dcm") for n in names) and any(n.isdigit() for n in names)
    tag_modes = Counter(f["anatomy_tag"] for f in files)
    assert {"BodyPartExamined", "StudyDescription", "SeriesDescription", None} <= set(tag_modes)
    patients = set()
    for f in files:
        ds = pydicom.dcmread(corpus.root / f["path"])
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == f["modality"] and ds.PhotometricInterpretation == "MONOCHROME2"
        assert str(ds.PatientName).startswith("SYNTH^PATIENT") and ds.PatientID.startswith("SYN")
        assert str(ds.PatientName) in manifest["identifying_values"]
        patients.add(ds.PatientID)
        assert ds.pixel_array.shape == (SIZE, SIZE)
        if f["anatomy_tag"] != "BodyPartExamined":
            assert "BodyPartExamined" not in ds
        assert _anatomy_from_header(ds, anatomy) == f["anatomy_expected"]
        if f["anatomy_expected"] is None:  # anatomy absent everywhere
            assert all(anatomy.find_in_text(ds.get(t)) == (None, []) for t in anatomy.free_text_tags)
        if ds.Modality == "CT":
            assert ds.pixel_array.dtype == np.uint16 and float(ds.RescaleIntercept) == -1024
            hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
            assert hu.min() < -900 and hu.max() > 300  # air around the body, bone inside
        if ds.Modality == "US":
            assert ds.BitsAllocated == 8
    assert len(patients) > 10
    assert any("WindowCenter" in pydicom.dcmread(corpus.root / f["path"], stop_before_pixels=True) for f in files)
    kinds = set()
    for doc in manifest["non_image"]:
        ds = pydicom.dcmread(corpus.root / doc["path"])
        assert "PixelData" not in ds and ds.Modality == doc["kind"]
        kinds.add(ds.SOPClassUID.name)
    assert kinds == {"Basic Text SR Storage", "Key Object Selection Document Storage"}
    readme = corpus.dicom_root / "README.txt"
    assert readme.is_file()
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(readme)


# ---------------------------------------------------------------------------------------------------- physics
def test_speckle_is_rayleigh_and_compounding_divides_cov():
    rayleigh_cov = stats.rayleigh.std() / stats.rayleigh.mean()
    rng = np.random.default_rng(0)
    for looks in (1, 3):
        s = speckle_field((512, 512), rng, grain_px=0.7, looks=looks)
        assert s.mean() == pytest.approx(1.0, abs=0.02)
        assert s.std() / s.mean() == pytest.approx(rayleigh_cov / np.sqrt(looks), rel=0.05)


def test_mr_noise_is_rician_and_bias_is_low_frequency():
    rng = np.random.default_rng(1)
    background = mr_signal(np.full((256, 256), Tissue.AIR), rng, noise=0.05)
    # zero signal: magnitude of complex Gaussian noise is Rayleigh(scale = noise)
    assert background.mean() == pytest.approx(stats.rayleigh.mean(scale=0.05), rel=0.03)
    assert background.mean() / background.std() == pytest.approx(stats.rayleigh.mean() / stats.rayleigh.std(), rel=0.05)
    uniform = mr_signal(np.full((SIZE, SIZE), Tissue.MUSCLE), rng, noise=0.0)
    smooth = ndimage.gaussian_filter(uniform, 3)
    assert uniform.max() / uniform.min() > 1.2  # a visible shading ...
    assert np.abs(uniform - smooth)[8:-8, 8:-8].max() < 0.02 * uniform.mean()  # ... that is low-frequency
    ct = ct_signal(np.full((SIZE, SIZE), Tissue.MUSCLE), rng)
    assert ndimage.gaussian_filter(ct, 3).std() < 0.1 * ndimage.gaussian_filter(uniform / uniform.mean() * 50, 3).std()


def test_ct_is_piecewise_constant_hu():
    rng = np.random.default_rng(2)
    fat = ct_signal(np.full((128, 128), Tissue.FAT), rng, noise_hu=8.0)
    assert fat.mean() == pytest.approx(-100, abs=1) and fat.std() == pytest.approx(8.0, rel=0.05)


def test_ultrasound_fan_and_speckle_versus_ct(corpus):
    fan = ultrasound_fan_mask(SIZE)
    assert 0.3 < fan.mean() < 0.8
    us_pngs = [_png(p) for p in sorted((corpus.radimagenet_root / "radiology_ai" / "US").rglob("*.png"))]
    assert all((im[~fan] == 0).all() and im[fan].mean() > 40 for im in us_pngs)
    # the same tissue (liver parenchyma) as written to the PNGs: speckle makes US far less uniform than CT
    us_cov, ct_cov = [], []
    for case in range(6):
        liver_us = ndimage.binary_erosion(phantom_tissue_map("liver_us", None, SIZE, [case]) == Tissue.ORGAN, iterations=2)
        us = to_display("US", render_phantom("liver_us", "US", None, SIZE, [case])).astype(float)[liver_us & fan]
        liver_ct = ndimage.binary_erosion(phantom_tissue_map("abdomen", None, SIZE, [case]) == Tissue.ORGAN, iterations=2)
        ct = to_display("CT", render_phantom("abdomen", "CT", None, SIZE, [case])).astype(float)[liver_ct]
        us_cov.append(us.std() / us.mean())
        ct_cov.append(ct.std() / ct.mean())
    assert min(us_cov) > 2 * max(ct_cov)
    # physics level: uniform organ, US envelope CoV ~ compounded Rayleigh, CT tiny; nothing outside the fan
    rng = np.random.default_rng(3)
    organ = np.full((SIZE, SIZE), Tissue.ORGAN)
    amplitude = ultrasound_signal(organ, rng)
    attenuation = ct_signal(organ, rng) + 1000  # HU has an arbitrary zero: CoV of the attenuation
    assert amplitude[fan].std() / amplitude[fan].mean() > 0.2 > 10 * attenuation.std() / attenuation.mean()
    assert (amplitude[~fan] == 0).all()


def test_classes_differ_visibly_within_an_anatomy():
    """Same anatomy seed, with and without the finding: the tissue maps differ in a local region."""
    for cls in RADIMAGENET_CLASSES:
        if cls.finding is None:
            continue
        normal = phantom_tissue_map(cls.phantom, None, SIZE, [0, 1])
        finding = phantom_tissue_map(cls.phantom, cls.finding, SIZE, [0, 1])
        changed = (normal != finding).mean()
        assert 0.001 < changed < 0.2, (cls.id, changed)


# ---------------------------------------------------------------------------------------------------- ensure
def test_ensure_reuses_regenerates_and_protects_foreign_data(tmp_path):
    out = tmp_path / "c"
    first = ensure_pretraining_corpus(out, images_per_class=2, layouts=("radimagenet",), progress=False)
    png = next(first.radimagenet_root.rglob("*.png"))
    stamp = png.stat().st_mtime_ns
    again = ensure_pretraining_corpus(out, images_per_class=2, layouts=("radimagenet",), progress=False)
    assert png.stat().st_mtime_ns == stamp and again.counts == first.counts  # skipped
    bigger = ensure_pretraining_corpus(out, images_per_class=3, layouts=("radimagenet",), progress=False)
    assert bigger.counts["png"] == 3 * len(RADIMAGENET_CLASSES)
    assert len(list(out.rglob("*.png"))) == bigger.counts["png"]
    assert json.loads((out / MANIFEST_NAME).read_text())["args"]["images_per_class"] == 3
    png = next(out.rglob("*.png"))
    png.unlink()  # a damaged corpus is regenerated
    ensure_pretraining_corpus(out, images_per_class=3, layouts=("radimagenet",), progress=False)
    assert png.is_file()
    foreign = tmp_path / "f"
    (foreign / "radimagenet" / "radiology_ai").mkdir(parents=True)
    (foreign / "radimagenet" / "radiology_ai" / "mine.png").write_bytes(b"x")
    with pytest.raises(SyntheticCorpusError, match="not written by this generator"):
        ensure_pretraining_corpus(foreign, images_per_class=1, progress=False)
    assert (foreign / "radimagenet" / "radiology_ai" / "mine.png").read_bytes() == b"x"
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / MANIFEST_NAME).write_text('{"someone": "else"}')
    with pytest.raises(SyntheticCorpusError, match="not written by this generator"):
        generate_pretraining_corpus(tmp_path / "g", images_per_class=1, progress=False)


# ---------------------------------------------------------------------------------------------------- downstream
def _load(datalist: Path):
    d = json.loads(datalist.read_text())
    items = d["training"]
    images = np.stack([_png(i["image"]).astype(float) for i in items])
    return d, images, np.array([i["label"] for i in items]), [i["group"] for i in items]


@pytest.mark.parametrize("task", list(SyntheticTask))
def test_downstream_task_is_balanced_grouped_and_not_separable_by_global_statistics(task, tmp_path):
    d, images, y, groups = _load(generate_downstream_task(task, tmp_path, n_images=240, seed=0))
    assert d["task"] == task.value and images.shape == (240, SIZE, SIZE)
    assert y.sum() == round(0.4 * 240)
    by_group = defaultdict(set)
    for g, label in zip(groups, y):
        by_group[g].add(int(label))
    assert all(len(v) == 1 for v in by_group.values()) and len(by_group) == 60  # 4 images per case, one label
    features = np.stack([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    proba = cross_val_predict(LogisticRegression(), features, y, groups=groups, cv=cv, method="predict_proba")[:, 1]
    assert roc_auc_score(y, proba) < 0.65
    for column in features.T:
        assert abs(roc_auc_score(y, column) - 0.5) < 0.12


@pytest.mark.parametrize("task, phantom, lesion", [
    (SyntheticTask.KNEE_ACL, "knee", (Tissue.LIGAMENT,)),
    (SyntheticTask.BREAST_US, "breast_us", (Tissue.LESION,)),
    (SyntheticTask.THYROID_US, "thyroid_us", (Tissue.LESION, Tissue.CALCIFICATION)),
])
def test_downstream_label_lives_in_local_detail(task, phantom, lesion):
    from monai_modan.synthetic.tasks import _TASKS

    spec = _TASKS[task]
    for case in range(5):
        negative = render_task_image(task, 0, SIZE, [9, case], [9, case, 1]).astype(int)
        positive = render_task_image(task, 1, SIZE, [9, case], [9, case, 1]).astype(int)
        differ = np.abs(positive - negative) > 0
        assert 0 < differ.mean() < 0.06  # a small region ...
        assert np.abs(positive - negative).max() > 40  # ... with a clearly visible change
        t0 = phantom_tissue_map(phantom, spec.negative, SIZE, [9, case], [9, case, 1])
        t1 = phantom_tissue_map(phantom, spec.positive, SIZE, [9, case], [9, case, 1])
        assert np.isin(t1, lesion).sum() == pytest.approx(np.isin(t0, lesion).sum(), rel=0.1)  # same lesion area
        near = ndimage.binary_dilation(t0 != t1, iterations=3)
        assert differ[~near].sum() == 0  # the images differ only around the changed tissue


def test_downstream_determinism_and_errors(tmp_path):
    a = generate_downstream_task("breast_us", tmp_path / "a", n_images=20, seed=4, positive_fraction=0.25)
    b = generate_downstream_task("breast_us", tmp_path / "b", n_images=20, seed=4, positive_fraction=0.25)
    c = generate_downstream_task("breast_us", tmp_path / "c", n_images=20, seed=5, positive_fraction=0.25)
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert sum(i["label"] for i in da["training"]) == 5
    for x, y in zip(da["training"], db["training"]):
        assert Path(x["image"]).read_bytes() == Path(y["image"]).read_bytes()
    dc = json.loads(c.read_text())
    assert not np.array_equal(_png(da["training"][0]["image"]), _png(dc["training"][0]["image"]))
    smaller = generate_downstream_task("breast_us", tmp_path / "a", n_images=8, seed=4)
    assert len(list((smaller.parent / "images").glob("*.png"))) == 8  # stale images of the larger run removed
    with pytest.raises(SyntheticCorpusError, match="both classes"):
        generate_downstream_task("knee_acl", tmp_path, n_images=10, positive_fraction=0.0)
    with pytest.raises(ValueError):
        generate_downstream_task("knee_mri", tmp_path)


# ---------------------------------------------------------------------------------------------------- defaults
def test_default_pretraining_datalist_reuses_and_follows_the_corpus(tmp_path):
    """The corpus the entry layer uses without data: generated and indexed once, re-indexed when regenerated."""
    path = Path(default_pretraining_datalist(tmp_path, images_per_class=2, image_size=32))
    assert path == tmp_path / "synthetic" / "datalist.json"
    stamp = path.stat().st_mtime_ns
    assert default_pretraining_datalist(tmp_path, images_per_class=2, image_size=32) == str(path)
    assert path.stat().st_mtime_ns == stamp  # corpus and index reused
    default_pretraining_datalist(tmp_path, images_per_class=3, image_size=32)  # another corpus: a new index
    images = [item["image"] for item in json.loads(path.read_text())["training"]]
    assert len(images) == len(RADIMAGENET_CLASSES) and all(Path(i).is_file() for i in images)


def test_default_task_datalist_maps_bundle_tasks_and_regenerates_on_other_arguments(tmp_path):
    path = Path(default_task_datalist("acl_mrnet", tmp_path, n_images=8, image_size=32))
    assert path == tmp_path / "synthetic" / "knee_acl" / "datalist.json"
    stamp = path.stat().st_mtime_ns
    default_task_datalist("acl_mrnet", tmp_path, n_images=8, image_size=32)
    assert path.stat().st_mtime_ns == stamp  # same arguments: reused
    default_task_datalist("acl_mrnet", tmp_path, n_images=12, image_size=32)
    assert json.loads(path.read_text())["n_images"] == 12
    with pytest.raises(ValueError, match="no embedded synthetic data for task 'busi'"):
        default_task_datalist("busi", tmp_path)


def test_without_data_the_engine_and_the_task_preparation_refuse(tmp_path):
    """Only the entry layer chooses the synthetic data; below it, missing data is an error."""
    from monai_modan.data.downstream.prepare import prepare_task
    from monai_modan.engines.pretrain import prepare_pretraining_datalist

    with pytest.raises(ValueError, match="give datalist or dataset_dir"):
        prepare_pretraining_datalist(tmp_path)
    with pytest.raises(ValueError, match="no data source for task 'breast_us'"):
        prepare_task("breast_us", tmp_path, None)
    assert not any(tmp_path.iterdir())  # nothing generated
