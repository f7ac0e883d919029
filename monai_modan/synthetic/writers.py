"""The synthetic pretraining corpus on disk: the real RadImageNet tree and a PACS-like DICOM export of the same
classes, with a manifest that lets a later run reuse or safely replace it.

:func:`generate_pretraining_corpus` writes the classes of :data:`~monai_modan.synthetic.catalogue.RADIMAGENET_CLASSES`
in two layouts: the RadImageNet tree (``radiology_ai/CT/{abd,lung}/<class>``, ``radiology_ai/MR/<anatomy>/<class>``,
``radiology_ai/US/<class>`` -- US is flat -- plus ``RadiologyAI_{train,val,test}.csv``) and a PACS-like DICOM export
written with pydicom (studies, series, instances; anatomy sometimes only in free text or nowhere; non-image SR/KO
objects and a README to skip). :func:`ensure_pretraining_corpus` regenerates only when the manifest does not match.

Everything is deterministic: each image has its own ``numpy.random.SeedSequence`` entropy (seed, layout, class,
index), so the same arguments give byte-identical files regardless of generation order.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from tqdm.auto import tqdm

from ..utils.defaults import IMAGE_SIZE
from ..utils.io import atomic_path, atomic_write_json, atomic_write_text
from .catalogue import RADIMAGENET_CLASSES, SyntheticClass
from .phantoms import render_phantom
from .physics import to_display

__all__ = [
    "SyntheticCorpus",
    "SyntheticCorpusError",
    "generate_pretraining_corpus",
    "ensure_pretraining_corpus",
    "save_png",
    "GENERATOR",
    "LAYOUTS",
    "MANIFEST_NAME",
    "MIN_IMAGE_SIZE",
]

MANIFEST_NAME = "manifest.json"
# The generator's identity, written into every manifest and task datalist and mixed into every DICOM UID. It is the
# module's path before the generator became the monai_modan.synthetic package, and stays: another value would change
# the UIDs (so the files) of a given seed and leave corpora written before unrecognised (regenerated, not reused).
GENERATOR = "monai_modan.data.synthetic"
FORMAT_VERSION = 1
LAYOUTS = ("radimagenet", "dicom")
_LAYOUT_DIRS = {"radimagenet": "radimagenet", "dicom": "dicom_export"}
MIN_IMAGE_SIZE = 32  # pixels: the smallest image side the generators accept


class SyntheticCorpusError(ValueError):
    """Bad generator arguments, or an output folder that holds data this generator did not write."""


_CT_WINDOWS = {"chest_ct": (-600.0, 1500.0), "abdomen": (40.0, 400.0)}
_PNG_PREFIX = {"CT": "ctn", "MR": "mrn", "US": "usn"}
_SPLIT_FRACTIONS = (("val", 0.10), ("test", 0.15))  # the rest is train (RadImageNet: 75/10/15)

# DICOM text per phantom: (BodyPartExamined, anatomy words of a free-text description, image plane)
_DICOM_ANATOMY = {
    "chest_ct": ("CHEST", "CHEST", "axial"),
    "abdomen": ("ABDOMEN", "ABDOMEN PELVIS", "axial"),
    "brain": ("HEAD", "BRAIN", "axial"),
    "knee": ("KNEE", "KNEE LT", "sagittal"),
    "ankle": ("ANKLE", "ANKLE RT", "sagittal"),
    "hip": ("HIP", "HIP LT", "coronal"),
    "shoulder": ("SHOULDER", "SHOULDER RT", "coronal"),
    "spine": ("LSPINE", "LUMBAR SPINE", "sagittal"),
    "thyroid_us": ("THYROID", "THYROID", None),
    "liver_us": ("ABDOMEN", "ABDOMEN COMPLETE", None),
    "gallbladder_us": ("GALLBLADDER", "RUQ GALLBLADDER", None),
    "kidney_us": ("KIDNEY", "RENAL", None),
    "ovary_us": ("PELVIS", "PELVIS TRANSVAGINAL", None),
    "uterus_us": ("PELVIS", "PELVIS", None),
    "breast_us": ("BREAST", "BREAST LT", None),
}
_DICOM_PROCEDURE = {"CT": ("CT", "W/O CONTRAST", "AX 5MM", "ROUTINE"),
                    "MR": ("MRI", "W/O", "SAG PD FS", "T2 FSE"),
                    "US": ("US", "", "TRANSVERSE", "GENERAL")}
_ORIENTATION = {"axial": [1, 0, 0, 0, 1, 0], "sagittal": [0, 1, 0, 0, 0, -1], "coronal": [1, 0, 0, 0, 0, -1]}
_MANUFACTURERS = ("GE MEDICAL SYSTEMS", "SIEMENS", "Philips Medical Systems", "TOSHIBA")
# How a study tells its anatomy, cycled over studies: the tag that carries it, or None (anatomy unknowable).
_LABEL_MODES = ("BodyPartExamined", "StudyDescription", "BodyPartExamined", "SeriesDescription", None,
                "BodyPartExamined", "ProtocolName", None)
_IMAGES_PER_STUDY = 4
_SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4", "US": "1.2.840.10008.5.1.4.1.1.6.1",
              "SR": "1.2.840.10008.5.1.4.1.1.88.11", "KO": "1.2.840.10008.5.1.4.1.1.88.59"}


@dataclass
class SyntheticCorpus:
    """What :func:`generate_pretraining_corpus` wrote.

    Attributes:
        root: ``out_dir``.
        radimagenet_root: folder holding ``radiology_ai/`` and ``RadiologyAI_{train,val,test}.csv`` (or ``None``).
        dicom_root: the DICOM export folder (or ``None``).
        manifest_path: ``root/manifest.json`` (arguments, classes, per-file DICOM ground truth).
        classes: class ids (``"MR/knee/acl_pathology"``) in class-index order.
        counts: ``{"png": n, "dicom_images": n, "dicom_non_image": n, "other_files": n}``.
    """

    root: Path
    radimagenet_root: Path | None
    dicom_root: Path | None
    manifest_path: Path
    seed: int
    image_size: int
    images_per_class: int
    classes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    @classmethod
    def from_manifest(cls, path: str | Path) -> SyntheticCorpus:
        path = Path(path)
        m = _read_manifest(path.parent, path.name)
        if m is None or not m.get("complete"):
            raise SyntheticCorpusError(f"{path} is not the manifest of a complete corpus written by {GENERATOR}")
        root = path.parent
        return cls(
            root=root,
            radimagenet_root=root / m["radimagenet"]["root"] if m.get("radimagenet") else None,
            dicom_root=root / m["dicom"]["root"] if m.get("dicom") else None,
            manifest_path=path,
            seed=m["args"]["seed"],
            image_size=m["args"]["image_size"],
            images_per_class=m["args"]["images_per_class"],
            classes=[c["id"] for c in m["classes"]],
            counts=dict(m["counts"]),
        )


def _read_manifest(out_dir: Path, name: str = MANIFEST_NAME) -> dict[str, Any] | None:
    """Our manifest in ``out_dir``, or ``None`` when absent / not ours / unreadable."""
    try:
        m = json.loads((out_dir / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("generator") == GENERATOR else None


def _check_args(images_per_class: int, image_size: int, seed: int, layouts: Sequence[str]) -> tuple[str, ...]:
    if int(images_per_class) < 1:
        raise SyntheticCorpusError(f"images_per_class must be >= 1, got {images_per_class}")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise SyntheticCorpusError(f"image_size must be >= {MIN_IMAGE_SIZE} pixels, got {image_size}")
    if int(seed) < 0:
        raise SyntheticCorpusError(f"seed must be a non-negative integer, got {seed}")
    if isinstance(layouts, str):
        layouts = (layouts,)
    unknown = set(layouts) - set(LAYOUTS)
    if unknown or not layouts:
        raise SyntheticCorpusError(f"layouts must be a non-empty subset of {LAYOUTS}, got {tuple(layouts)}")
    return tuple(lay for lay in LAYOUTS if lay in layouts)


def _args(images_per_class: int, image_size: int, seed: int, layouts: tuple[str, ...]) -> dict[str, Any]:
    return {"images_per_class": int(images_per_class), "image_size": int(image_size), "seed": int(seed),
            "layouts": list(layouts)}


def save_png(path: Path, pixels: np.ndarray) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def _split_sizes(n: int) -> dict[str, int]:
    sizes = {name: (max(1, round(frac * n)) if n >= 3 else 0) for name, frac in _SPLIT_FRACTIONS}
    return {"train": n - sum(sizes.values()), **sizes}


def _write_radimagenet(root: Path, args: dict[str, Any], tick: Callable[[], None]) -> dict[str, Any]:
    """``root/radiology_ai/...`` PNGs and ``root/RadiologyAI_{train,val,test}.csv``."""
    n, size, seed = args["images_per_class"], args["image_size"], args["seed"]
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    counters = dict.fromkeys(_PNG_PREFIX, 0)
    for ci, cls in enumerate(RADIMAGENET_CLASSES):
        order = np.random.default_rng([seed, 1, ci]).permutation(n)  # which images go to which split
        split_of = np.empty(n, dtype=object)
        start = 0
        for split, k in _split_sizes(n).items():
            split_of[order[start:start + k]] = split
            start += k
        for i in range(n):
            counters[cls.modality] += 1
            rel = f"radiology_ai/{cls.id}/{_PNG_PREFIX[cls.modality]}{counters[cls.modality]:06d}.png"
            entropy = [seed, 1, ci, i]
            gain = float(np.random.default_rng(entropy + [3]).uniform(0.8, 1.25)) if cls.modality == "US" else None
            signal = render_phantom(cls.phantom, cls.modality, cls.finding, size, entropy, gain=gain)
            save_png(root / rel, to_display(cls.modality, signal, window=_CT_WINDOWS.get(cls.phantom)))
            rows[split_of[i]].append((rel, cls.label_text))
            tick()
    for split, items in rows.items():
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["filename", "label"])
        writer.writerows(items)
        atomic_write_text(root / f"RadiologyAI_{split}.csv", buf.getvalue())
    return {"root": root.name, "n_images": sum(len(v) for v in rows.values()),
            "splits": {k: len(v) for k, v in rows.items()}}


def _free_text(cls: SyntheticClass, mode: str | None) -> dict[str, str]:
    """Study/series/protocol text; the anatomy words appear only in the tag named by ``mode``."""
    prefix, suffix, series, protocol = _DICOM_PROCEDURE[cls.modality]
    words = _DICOM_ANATOMY[cls.phantom][1]
    text = {"StudyDescription": " ".join(p for p in (prefix, suffix) if p),
            "SeriesDescription": series, "ProtocolName": protocol}
    if mode == "BodyPartExamined" or mode == "StudyDescription":
        text["StudyDescription"] = " ".join(p for p in (prefix, words, suffix) if p)
    elif mode == "SeriesDescription":
        text["SeriesDescription"] = f"{words} {series}"
    elif mode == "ProtocolName":
        text["ProtocolName"] = f"{words} {protocol}"
    return text


def _dicom_base(study: dict[str, Any], modality: str, sop_class: str, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.Modality = modality
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "InstitutionName",
                "ReferringPhysicianName", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "Manufacturer"):
        setattr(ds, key, study[key])
    return ds


def _save_dicom(path: Path, ds: Dataset) -> None:
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _write_dicom(root: Path, args: dict[str, Any], tick: Callable[[], None]) -> dict[str, Any]:
    """``root/<study uid>/<series>/<n>[.dcm]``: a PACS-like export of the same classes, plus SR/KO objects and a
    README to skip. Returns the manifest section, with per-file ground truth."""
    n, size, seed = args["images_per_class"], args["image_size"], args["seed"]
    uid = lambda *parts: generate_uid(entropy_srcs=[GENERATOR, str(seed), *map(str, parts)])  # noqa: E731
    files: list[dict[str, Any]] = []
    non_image: list[dict[str, Any]] = []
    phi: set[str] = set()
    study_index = 0
    for ci, cls in enumerate(RADIMAGENET_CLASSES):
        body_part, _, plane = _DICOM_ANATOMY[cls.phantom]
        for first in range(0, n, _IMAGES_PER_STUDY):
            study_index += 1
            p = study_index
            mode = _LABEL_MODES[(study_index - 1) % len(_LABEL_MODES)]
            study = {"PatientName": f"SYNTH^PATIENT{p:04d}", "PatientID": f"SYN{p:04d}",
                     "PatientBirthDate": f"19{40 + p % 50:02d}0{1 + p % 9}15", "PatientSex": "MF"[p % 2],
                     "AccessionNumber": f"SYNACC{p:06d}", "InstitutionName": "SYNTHETIC GENERAL HOSPITAL",
                     "ReferringPhysicianName": "SYNTH^REFERRER", "StudyInstanceUID": uid("study", p),
                     "StudyDate": f"2024{1 + p % 12:02d}{1 + p % 28:02d}", "StudyTime": "120000",
                     "StudyID": f"{p}", "Manufacturer": _MANUFACTURERS[p % len(_MANUFACTURERS)]}
            phi.update(str(study[k]) for k in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                                               "InstitutionName", "ReferringPhysicianName"))
            text = _free_text(cls, mode)
            series_uid = uid("series", p, 1)
            study_dir = root / study["StudyInstanceUID"] / "SE001"
            for i in range(first, min(first + _IMAGES_PER_STUDY, n)):
                instance = i - first + 1
                entropy = [seed, 2, ci, i]
                gain = float(np.random.default_rng(entropy + [3]).uniform(0.8, 1.25)) if cls.modality == "US" else None
                signal = render_phantom(cls.phantom, cls.modality, cls.finding, size, entropy, gain=gain)
                sop_uid = uid("image", p, 1, instance)
                ds = _dicom_base(study, cls.modality, _SOP_CLASS[cls.modality], sop_uid)
                ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 1, instance
                ds.FrameOfReferenceUID = uid("for", p)
                for key, value in text.items():
                    setattr(ds, key, value)
                if mode == "BodyPartExamined":
                    ds.BodyPartExamined = body_part
                ds.PixelSpacing = [f"{240 / size:.4f}"] * 2
                if cls.modality == "US":
                    ds.set_pixel_data(to_display("US", signal), "MONOCHROME2", 8, generate_instance_uid=False)
                else:
                    ds.SliceThickness = "3"
                    ds.ImageOrientationPatient = _ORIENTATION[plane]
                    ds.ImagePositionPatient = [-120, -120, 3.0 * instance]
                    if cls.modality == "CT":
                        stored = np.clip(np.round(signal + 1024), 0, 4095).astype(np.uint16)
                        ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
                        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
                        ds.KVP = "120"
                        centre, width = _CT_WINDOWS[cls.phantom]
                        ds.WindowCenter, ds.WindowWidth = f"{centre:g}", f"{width:g}"
                    else:
                        stored = np.clip(np.round(signal * 2000), 0, 4095).astype(np.uint16)
                        ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
                        ds.MagneticFieldStrength = "1.5"
                        if p % 2:  # some MR series carry a display window, others not
                            ds.WindowCenter, ds.WindowWidth = "1000", "2000"
                name = f"{instance}.dcm" if p % 2 else f"{instance}"
                path = study_dir / name
                _save_dicom(path, ds)
                files.append({"path": path.relative_to(root.parent).as_posix(), "class": cls.id,
                              "modality": cls.modality, "anatomy_truth": cls.anatomy,
                              "anatomy_expected": cls.anatomy if mode else None, "anatomy_tag": mode})
                tick()
            if first == 0 and ci in (0, len(RADIMAGENET_CLASSES) // 2):  # one SR, one KO
                kind = "SR" if not non_image else "KO"
                ds = _dicom_base(study, kind, _SOP_CLASS[kind], uid("doc", p, kind))
                ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = uid("series", p, 900), 900, 1
                ds.StudyDescription = text["StudyDescription"]
                _fill_document(ds, kind)
                path = root / study["StudyInstanceUID"] / "SE900" / "1.dcm"
                _save_dicom(path, ds)
                non_image.append({"path": path.relative_to(root.parent).as_posix(), "kind": kind})
    readme = root / "README.txt"
    atomic_write_text(readme, "Synthetic PACS-like DICOM export written by monai-modan for tests and demos.\n"
                              "No patient data: every name and identifier is fake (SYNTH^..., SYN...).\n")
    return {"root": root.name, "n_images": len(files), "files": files, "non_image": non_image,
            "other_files": [readme.relative_to(root.parent).as_posix()], "identifying_values": sorted(phi)}


def _fill_document(ds: Dataset, kind: str) -> None:
    """Minimal Basic Text SR / Key Object Selection content (no pixel data)."""

    def code(value: str, scheme: str, meaning: str) -> Dataset:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
        return c

    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    if kind == "SR":
        ds.ConceptNameCodeSequence = [code("11528-7", "LN", "Radiology Report")]
        item.ConceptNameCodeSequence = [code("121071", "DCM", "Finding")]
        item.TextValue = "Synthetic report. No acute abnormality."
    else:
        ds.ConceptNameCodeSequence = [code("113000", "DCM", "Of Interest")]
        item.ConceptNameCodeSequence = [code("113012", "DCM", "Key Object Description")]
        item.TextValue = "Synthetic key images."
    ds.ContentSequence = [item]


def _prepare_out_dir(out_dir: Path, layouts: tuple[str, ...]) -> None:
    """Remove what an earlier run of this generator wrote; refuse to touch foreign data."""
    previous = _read_manifest(out_dir)
    if previous is None and (out_dir / MANIFEST_NAME).exists():
        raise SyntheticCorpusError(f"{out_dir / MANIFEST_NAME} exists and was not written by this generator; choose "
                                   "an empty out_dir")
    owned = {previous[sec]["root"] for sec in ("radimagenet", "dicom") if previous and previous.get(sec)}
    if previous and not previous.get("complete", True):  # an interrupted run owns every layout folder
        owned |= set(_LAYOUT_DIRS.values())
    for layout, name in _LAYOUT_DIRS.items():
        folder = out_dir / name
        if name in owned and folder.exists():
            shutil.rmtree(folder)
        elif layout in layouts and folder.exists() and any(folder.iterdir()):
            raise SyntheticCorpusError(
                f"{folder} already exists and was not written by this generator (no matching {MANIFEST_NAME} in "
                f"{out_dir}); choose an empty out_dir so no foreign data is overwritten")


def generate_pretraining_corpus(out_dir: str | Path, *, images_per_class: int = 8, image_size: int = IMAGE_SIZE, seed: int = 0,
                                layouts: Sequence[str] = LAYOUTS, progress: bool = True) -> SyntheticCorpus:
    """Write a miniRIN-like synthetic corpus (always regenerates; see :func:`ensure_pretraining_corpus`).

    Layouts:
        ``"radimagenet"``: ``out_dir/radimagenet/radiology_ai/{CT,MR}/<anatomy>/<class>/*.png`` and
        ``radiology_ai/US/<class>/*.png`` (8-bit grayscale, ``image_size`` square) plus
        ``out_dir/radimagenet/RadiologyAI_{train,val,test}.csv`` (``filename,label``; 75/10/15 % per class).
        ``"dicom"``: ``out_dir/dicom_export/<StudyInstanceUID>/SE001/<n>`` (``.dcm`` on every other study), one
        synthetic patient per study of up to four images; CT uint16 with RescaleIntercept -1024 (HU), MR uint16,
        US uint8. The anatomy is in BodyPartExamined, only in one free-text tag, or nowhere (cycled over studies;
        per-file ground truth is in the manifest). Also one Basic Text SR, one Key Object Selection document
        and a ``README.txt``.

    Args:
        out_dir: output folder (created). Folders of a layout that exist but were not written by this generator are
            never overwritten.
        images_per_class: images per class and layout.
        image_size: side length in pixels (>= 32).
        seed: master seed; the same arguments give byte-identical files.
        layouts: subset of :data:`LAYOUTS`.
        progress: show a tqdm progress bar.

    Returns:
        :class:`SyntheticCorpus`; ``out_dir/manifest.json`` is written last, atomically.
    """
    layouts = _check_args(images_per_class, image_size, seed, layouts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = _args(images_per_class, image_size, seed, layouts)
    _prepare_out_dir(out_dir, layouts)
    manifest: dict[str, Any] = {"generator": GENERATOR, "format_version": FORMAT_VERSION, "complete": False,
                                "args": args}
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)  # claims the folders before writing into them

    total = len(RADIMAGENET_CLASSES) * images_per_class * len(layouts)
    with tqdm(total=total, desc="synthetic corpus", unit="img", disable=not progress) as bar:
        tick = lambda: bar.update(1)  # noqa: E731
        if "radimagenet" in layouts:
            manifest["radimagenet"] = _write_radimagenet(out_dir / _LAYOUT_DIRS["radimagenet"], args, tick)
        if "dicom" in layouts:
            manifest["dicom"] = _write_dicom(out_dir / _LAYOUT_DIRS["dicom"], args, tick)
    manifest["classes"] = [{"id": c.id, "modality": c.modality, "region": c.region, "folder": c.folder,
                            "anatomy": c.anatomy, "label": c.label_text, "finding": c.finding}
                           for c in RADIMAGENET_CLASSES]
    dicom = manifest.get("dicom") or {}
    manifest["counts"] = {"png": (manifest.get("radimagenet") or {}).get("n_images", 0),
                          "dicom_images": dicom.get("n_images", 0),
                          "dicom_non_image": len(dicom.get("non_image", [])),
                          "other_files": len(dicom.get("other_files", []))}
    manifest["complete"] = True
    atomic_write_json(out_dir / MANIFEST_NAME, manifest, indent=1)
    return SyntheticCorpus.from_manifest(out_dir / MANIFEST_NAME)


def _corpus_intact(out_dir: Path, m: dict[str, Any]) -> bool:
    """The files a complete manifest lists still exist (counted, not hashed)."""
    if m.get("radimagenet"):
        root = out_dir / m["radimagenet"]["root"]
        if sum(1 for _ in root.glob("radiology_ai/**/*.png")) != m["radimagenet"]["n_images"]:
            return False
        if not all((root / f"RadiologyAI_{s}.csv").is_file() for s in ("train", "val", "test")):
            return False
    if m.get("dicom"):
        listed = [f["path"] for f in m["dicom"]["files"]] + [f["path"] for f in m["dicom"]["non_image"]]
        if not all((out_dir / p).is_file() for p in listed):
            return False
    return True


def ensure_pretraining_corpus(out_dir: str | Path, *, images_per_class: int = 8, image_size: int = IMAGE_SIZE, seed: int = 0,
                              layouts: Sequence[str] = LAYOUTS, progress: bool = True) -> SyntheticCorpus:
    """Return the corpus in ``out_dir``, generating it only if absent, incomplete or made with other arguments."""
    layouts = _check_args(images_per_class, image_size, seed, layouts)
    out_dir = Path(out_dir)
    m = _read_manifest(out_dir)
    if (m is not None and m.get("complete") and m.get("format_version") == FORMAT_VERSION
            and m.get("args") == _args(images_per_class, image_size, seed, layouts) and _corpus_intact(out_dir, m)):
        return SyntheticCorpus.from_manifest(out_dir / MANIFEST_NAME)
    return generate_pretraining_corpus(out_dir, images_per_class=images_per_class, image_size=image_size, seed=seed,
                                       layouts=layouts, progress=progress)
