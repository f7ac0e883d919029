"""The DICOM folder indexer on the 40 real files of ../shared/data/dicom, on broken files, and its header cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import os
import shutil
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monai_modan.data import dicom_index
from monai_modan.data.dicom_index import DicomIndexError, index_dicom_folder
from monai_modan.data.readers import ImageLoadError, load_grayscale
from monai_modan.labels import LabelSpace

PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped in the pydicom wheel

# Read by hand from each header (pydicom, see /work/shared/data/README.md), labelled by the rules of the shipped YAML:
# relative path -> (modality, anatomy, anatomy source tag). Modality always comes from "Modality" (CR -> XR).
EXPECTED = {
    "pydicom_data/693_UNCR.dcm": ("CT", None, None),  # SeriesDescription "5/5mm Plain" only
    "pydicom_data/JPEG2000_UNC.dcm": ("NM", "whole_body", "BodyPartExamined"),  # WHOLE BODY
    "pydicom_data/JPGLosslessP14SV1_1s_1f_8b.dcm": ("US", None, None),  # descriptions empty
    "pydicom_data/MR2_UNCR.dcm": ("MR", "shoulder", "StudyDescription"),  # StudyDescription SHOULDER
    "pydicom_data/OBXXXX1A.dcm": ("US", None, None),  # no anatomy tag at all
    "pydicom_data/RG1_J2KI.dcm": ("XR", "chest", "BodyPartExamined"),  # CR, CHEST
    "pydicom_data/RG3_J2KR.dcm": ("XR", "lower_limb", "StudyDescription"),  # EXTREMITY -> "...distal tibia"
    "pydicom_data/US1_UNCR.dcm": ("US", None, None),
    "pydicom_data/bad_sequence.dcm": ("CT", "neck", "BodyPartExamined"),  # NECK; the UN-encoded SQ is not read
    "pydicom_data/color-pl.dcm": ("US", "heart", "StudyDescription"),  # "Echocardiogram"
    "pydicom_data/eCT_Supplemental.dcm": ("CT", "head", "AnatomicRegionSequence"),  # shared FG: SNM3 T-A0100 Brain
    "pydicom_data/emri_small.dcm": ("MR", "head", "BodyPartExamined"),  # HEAD
    "pydicom_data/explicit_VR-UN.dcm": ("CT", "abdomen", "BodyPartExamined"),  # PANCREAS
    "pydicom_data/gdcm-US-ALOKA-16.dcm": ("US", None, None),
    "pydicom_test_files/CT_small.dcm": ("CT", None, None),  # StudyDescription "e+1"
    "pydicom_test_files/ExplVR_BigEnd.dcm": ("US", None, None),
    "pydicom_test_files/J2K_pixelrep_mismatch.dcm": ("CT", "head", "BodyPartExamined"),  # HEAD
    "pydicom_test_files/JPGExtended.dcm": ("NM", "whole_body", "BodyPartExamined"),  # WHOLE BODY
    "pydicom_test_files/MR_small.dcm": ("MR", None, None),
    "pydicom_test_files/MR_small_RLE.dcm": ("MR", None, None),
    "pydicom_test_files/MR_small_bigendian.dcm": ("MR", None, None),
    "pydicom_test_files/MR_small_implicit.dcm": ("MR", None, None),
    "pydicom_test_files/MR_small_jp2klossless.dcm": ("MR", None, None),
    "pydicom_test_files/MR_small_jpeg_ls_lossless.dcm": ("MR", None, None),
    "pydicom_test_files/dicomdirtests/77654033/CR1/6154": ("XR", "spine", "BodyPartExamined"),  # CSPINE
    "pydicom_test_files/dicomdirtests/77654033/CR2/6247": ("XR", "spine", "BodyPartExamined"),
    "pydicom_test_files/dicomdirtests/77654033/CR3/6278": ("XR", "spine", "BodyPartExamined"),
    "pydicom_test_files/dicomdirtests/77654033/CT2/17106": ("CT", "head", "BodyPartExamined"),  # HEAD
    "pydicom_test_files/dicomdirtests/77654033/CT2/17136": ("CT", "head", "BodyPartExamined"),
    "pydicom_test_files/dicomdirtests/77654033/CT2/17166": ("CT", "head", "BodyPartExamined"),
    "pydicom_test_files/dicomdirtests/77654033/CT2/17196": ("CT", "head", "BodyPartExamined"),
    "pydicom_test_files/dicomdirtests/98892001/CT2N/6293": ("CT", None, None),  # "Scout"
    "pydicom_test_files/dicomdirtests/98892001/CT2N/6924": ("CT", None, None),
    "pydicom_test_files/dicomdirtests/98892001/CT5N/2062": ("CT", "heart", "SeriesDescription"),  # "SmartScore - Gated 0.5 sec"
    "pydicom_test_files/dicomdirtests/98892001/CT5N/2392": ("CT", "heart", "SeriesDescription"),
    "pydicom_test_files/dicomdirtests/98892001/CT5N/2693": ("CT", "heart", "SeriesDescription"),
    "pydicom_test_files/dicomdirtests/98892001/CT5N/3023": ("CT", "heart", "SeriesDescription"),
    "pydicom_test_files/dicomdirtests/98892001/CT5N/3353": ("CT", "heart", "SeriesDescription"),
    "pydicom_test_files/examples_overlay.dcm": ("MR", "abdomen", "BodyPartExamined"),  # ABDOMEN
    "pydicom_test_files/examples_ybr_color.dcm": ("US", None, None),
}
MULTI_FRAME = {"pydicom_data/eCT_Supplemental.dcm": 2, "pydicom_data/emri_small.dcm": 10,
               "pydicom_test_files/examples_ybr_color.dcm": 30}
EXPECTED_UNMAPPED = {
    ("anatomy", "SeriesDescription"): {"Scout": 2, "5/5mm Plain": 1},
    ("anatomy", "BodyPartExamined"): {"EXTREMITY": 1},
    ("anatomy", "StudyDescription"): {"e+1": 1},
}


@pytest.fixture(scope="module")
def space() -> LabelSpace:
    return LabelSpace.default()


@pytest.fixture(scope="module")
def real_index(dicom_dir, space, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    cache = out / "headers.json"
    return index_dicom_folder(dicom_dir, space, workers=0, cache=cache, link_dir=out / "links", progress=False), cache


def relative(result, path: str) -> str:
    """A record's path relative to the export (through its pseudonymous link, if it has one)."""
    return Path(os.path.realpath(path)).relative_to(result.root).as_posix()


def key(rel: str, cache: Path, links: Path | None = None) -> str:
    """The cache key of ``rel``: keyed with the link folder's secret (``links/.key``), without one with the hidden
    ``.<cache name>.key`` beside the cache."""
    return dicom_index._cache_key(rel, dicom_index._secret_path(cache, links).read_bytes())


def write_dicom(path: Path, sop_class, *, pixels: bool = True, **elements) -> Path:
    """A small valid DICOM file written with pydicom (8x8 uint8 image when ``pixels``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if pixels:
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(range(64))
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------------------------------- real files
def test_real_export_labels_match_the_hand_table(real_index):
    result, _ = real_index
    got = {relative(result, r.image): (r.labels["modality"], r.labels["anatomy"], r.label_sources["anatomy"])
           for r in result.records}
    assert got == EXPECTED
    assert all(r.label_sources["modality"] == "Modality" for r in result.records)
    assert [relative(result, r.image) for r in result.records] == sorted(EXPECTED)  # deterministic order
    assert [(relative(result, s.path), s.reason) for s in result.skipped] == [("dicom_index.csv", "not DICOM")]


def test_real_export_geometry_and_multi_frame_policy(real_index):
    result, _ = real_index
    by_path = {relative(result, r.image): r for r in result.records}
    for rel, record in by_path.items():
        assert record.extra["frames"] == MULTI_FRAME.get(rel, 1), rel
        assert record.extra["source"] == "dicom"
        assert Path(record.image).is_absolute()
    assert by_path["pydicom_data/RG1_J2KI.dcm"].extra == {
        "frames": 1, "rows": 1955, "columns": 1841, "photometric": "MONOCHROME1",
        "transfer_syntax": "JPEG 2000 Image Compression", "source": "dicom"}
    assert by_path["pydicom_test_files/examples_ybr_color.dcm"].extra["photometric"] == "YBR_FULL_422"
    assert by_path["pydicom_test_files/MR_small_bigendian.dcm"].extra["transfer_syntax"] == "Explicit VR Big Endian"


def test_real_export_unmapped_values_are_counted(real_index):
    result, _ = real_index
    assert {k: dict(v) for k, v in result.unmapped.items()} == EXPECTED_UNMAPPED


def test_parallel_equals_serial(dicom_dir, space, real_index):
    serial, cache = real_index
    parallel = index_dicom_folder(dicom_dir, space, workers=2, link_dir=cache.parent / "links", progress=False)
    assert [r.to_item(space) for r in parallel.records] == [r.to_item(space) for r in serial.records]
    assert parallel.skipped == serial.skipped
    assert parallel.unmapped == serial.unmapped
    assert (parallel.files_read, parallel.files_cached) == (41, 0)


def _identifiers(path: Path) -> set[str]:
    """PatientName (and components), PatientID, AccessionNumber, PatientBirthDate of one file, 3+ characters
    (shorter values such as AccessionNumber "2" occur in any text and cannot be checked meaningfully)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    values = {str(ds.get(k) or "") for k in ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate")}
    values |= set(str(ds.get("PatientName") or "").split("^"))
    return {v.strip() for v in values if len(v.strip()) >= 3}


_HEX = re.compile(r"[0-9a-f]{16,64}")
_LINK_NAME = re.compile(r"/[0-9a-f]{16,64}(?=\.dcm$|$)")
_DIGEST = re.compile(r"(s\d+|w):[0-9a-f]{16,64}")


def _strings(obj, skip_keys=()) -> list[str]:
    """Every string in a JSON-like object (file paths included: the export's patient-ID folder is linked away)."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() if k not in skip_keys for s in _strings(v, skip_keys)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v, skip_keys)]
    return []


def test_no_identifying_value_in_result_or_cache(dicom_dir, space, real_index):
    result, cache = real_index
    cache_data = json.loads(cache.read_text(encoding="utf-8"))
    dumped = json.loads(json.dumps({
        "records": [r.to_item(space) for r in result.records],
        "skipped": [dataclasses.asdict(s) for s in result.skipped],
        "unmapped": [[g, t, dict(c)] for (g, t), c in result.unmapped.items()],
        "notes": result.notes,
    }))
    everything = _strings(dumped) + [k for (g, t), c in result.unmapped.items() for k in c]
    # keyed digests (the root's hash, the key id, each entry's "ids") are random hex: a short numeric ID turns up in
    # them by chance, which is no leak; they are checked to be digests and left out of the search
    opaque = {k: v for k, v in cache_data.items() if k != "files" and isinstance(v, str) and _HEX.fullmatch(v)}
    digests = [d for entry in cache_data["files"].values() for d in entry.get("ids", ())]
    assert digests and all(_DIGEST.fullmatch(d) for d in digests)
    cached_text = (_strings({k: v for k, v in cache_data.items() if k != "files" and k not in opaque})
                   + _strings(list(cache_data["files"].values()), skip_keys=("ids",)))
    all_ids = set()
    for rel in EXPECTED:
        ids = _identifiers(dicom_dir / rel)
        all_ids |= ids
        own = _strings(next(r.to_item(space) for r in result.records if relative(result, r.image) == rel))
        own += _strings(cache_data["files"][key(rel, cache, cache.parent / "links")], skip_keys=("ids",))
        leaks = [(i, s) for i in ids for s in own if i.lower() in s.lower()]
        assert leaks == [], rel
    assert len(all_ids) > 30
    # a pseudonymous link's name is a random-looking hex digest, where a short numeric ID turns up by chance (as in
    # the digests above): the name is checked to be one and left out of the search
    searched = [_LINK_NAME.sub("/<link>", s) for s in everything + cached_text]
    leaks = [(i, s) for i in all_ids for s in searched if i in s]
    assert leaks == []


def test_header_values_in_the_cache_are_only_the_label_space_tags(real_index, space):
    _, cache = real_index
    data = json.loads(cache.read_text(encoding="utf-8"))
    assert data["tags"] == sorted(["Modality", "AnatomicRegionSequence", "BodyPartExamined", "StudyDescription",
                                   "SeriesDescription", "ProtocolName"])
    links = cache.parent / "links"
    assert set(data["files"]) == {key(rel, cache, links) for rel in [*EXPECTED, "dicom_index.csv"]}
    for rel, entry in data["files"].items():
        if "values" in entry:
            assert set(entry["values"]) <= set(data["tags"]), rel
    assert data["files"][key("pydicom_data/RG3_J2KR.dcm", cache, links)]["values"] == {
        "Modality": "CR", "BodyPartExamined": "EXTREMITY", "StudyDescription": "Non-ossifying fibroma of distal tibia"}


# --------------------------------------------------------------------------------------------------- bad inputs
def test_broken_and_foreign_files_are_skipped_with_reasons(tmp_path, dicom_dir, space):
    export = tmp_path / "export"
    (export / "series").mkdir(parents=True)
    ct = (dicom_dir / "pydicom_test_files/CT_small.dcm").read_bytes()  # native pixels start at byte 6288
    jpeg = (dicom_dir / "pydicom_test_files/examples_ybr_color.dcm").read_bytes()  # encapsulated, 30 frames
    (export / "series/ct_half").write_bytes(ct[: len(ct) // 2])
    (export / "series/ct_cut_in_header").write_bytes(ct[:5000])
    (export / "series/jpeg_cut").write_bytes(jpeg[: int(len(jpeg) * 0.6)])
    shutil.copy(dicom_dir / "pydicom_test_files/CT_small.dcm", export / "series/ct_ok")
    shutil.copy(PYDICOM_TEST_FILES / "MR_truncated.dcm", export / "MR_truncated.dcm")  # real truncated file
    shutil.copy(PYDICOM_TEST_FILES / "rtstruct.dcm", export / "rtstruct.dcm")  # real RTSTRUCT without preamble
    (export / "notes.txt").write_text("Patient list: not an image\n", encoding="utf-8")
    (export / "empty.dcm").write_bytes(b"")
    (export / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (export / "DICOMDIR").write_bytes(ct[:200])
    write_dicom(export / "report.dcm", pydicom.uid.ComprehensiveSRStorage, pixels=False, Modality="SR")
    write_dicom(export / "key_objects", pydicom.uid.KeyObjectSelectionDocumentStorage, pixels=False, Modality="KO")
    # a whole image header (its study and series UIDs, which every object has) without Rows/Columns
    write_dicom(export / "no_pixels.dcm", pydicom.uid.CTImageStorage, pixels=False, Modality="CT",
                StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid())
    write_dicom(export / "series/tiny.dcm", pydicom.uid.CTImageStorage, Modality="CT", BodyPartExamined="KNEE")

    result = index_dicom_folder(export, space, workers=0, progress=False)
    reasons = {relative(result, s.path): s.reason for s in result.skipped}
    assert reasons == {
        ".DS_Store": "hidden file",
        "DICOMDIR": "DICOMDIR",
        "empty.dcm": "empty file",
        "notes.txt": "not DICOM",
        "MR_truncated.dcm": "truncated file",
        "series/ct_half": "truncated file",
        "series/ct_cut_in_header": "truncated file",
        "series/jpeg_cut": "truncated file",
        "rtstruct.dcm": "non-image object (RTSTRUCT)",
        "report.dcm": "non-image object (SR)",
        "key_objects": "non-image object (KO)",
        "no_pixels.dcm": "no pixel data",
    }
    details = {relative(result, s.path): s.detail for s in result.skipped}
    # Pixel Data tag at byte 6288, 12-byte OW header, 32768 bytes of pixels
    assert details["series/ct_half"] == (f"truncated DICOM file ({len(ct) // 2} bytes): the file ends inside its Pixel "
                                         f"Data: {6288 + 12 + 32768 - len(ct) // 2} of its 32768 bytes are missing")
    assert details["series/jpeg_cut"] == (f"truncated DICOM file ({int(len(jpeg) * 0.6)} bytes): the file ends inside "
                                          "its encapsulated Pixel Data")
    assert details["no_pixels.dcm"].startswith("no Rows/Columns in the header although it is a CT Image Storage")
    assert {relative(result, r.image): r.labels for r in result.records} == {
        "series/ct_ok": {"modality": "CT", "anatomy": None},
        "series/tiny.dcm": {"modality": "CT", "anatomy": "knee"},
    }


# real files of several encodings: explicit/implicit VR, big endian, native and encapsulated (JPEG) pixels, multi-frame
CUT_FILES = ("pydicom_test_files/CT_small.dcm", "pydicom_test_files/MR_small_implicit.dcm",
             "pydicom_test_files/MR_small_bigendian.dcm", "pydicom_test_files/examples_ybr_color.dcm",
             "pydicom_data/emri_small.dcm", "pydicom_data/JPGLosslessP14SV1_1s_1f_8b.dcm")
CUT_SIZES = (130, 132, 200, 300, 600, 2000, 5000)  # 130: inside "DICM"; 132: right after it; 200/300: meta header


def test_every_cut_of_a_real_file_is_truncated_with_its_size(tmp_path, dicom_dir, space):
    """A file cut anywhere from the 'DICM' marker to inside its pixels is 'truncated file' with the file size, worded
    like the image reader (which refuses the same cut as 'truncated DICOM file (N bytes)'); was 'no pixel data'
    (cuts inside the meta header, inside an element's tag), 'unreadable header' (a cut group length or transfer
    syntax) or a detail without the size. Whole files without pixels keep their own reasons."""
    export = tmp_path / "export"
    export.mkdir()
    ct = (dicom_dir / CUT_FILES[0]).read_bytes()
    (export / "CT_small_cut530.dcm").write_bytes(ct[:530])  # right after (0008,0018), the SOP Instance UID
    (export / "CT_small_cut2834.dcm").write_bytes(ct[:2834])  # right after (0025,1010), before Rows (0028,0010)
    expected = {}
    for rel in CUT_FILES:
        data = (dicom_dir / rel).read_bytes()
        with open(dicom_dir / rel, "rb") as f:
            pydicom.dcmread(f, stop_before_pixels=True)
            pixels = f.tell()  # where its Pixel Data element starts
        for size in (*CUT_SIZES, pixels + (len(data) - pixels) // 2):  # the last: in the middle of the pixels
            name = f"{Path(rel).stem}_cut{size}.dcm"
            (export / name).write_bytes(data[:size])
            expected[name] = size
    shutil.copy(PYDICOM_TEST_FILES / "rtstruct.dcm", export / "rtstruct.dcm")  # real, without preamble
    shutil.copy(PYDICOM_TEST_FILES / "test-SR.dcm", export / "test-SR.dcm")  # real structured report
    write_dicom(export / "no_pixels.dcm", pydicom.uid.CTImageStorage, pixels=False, Modality="CT",
                StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid())

    result = index_dicom_folder(export, space, workers=0, progress=False)
    assert result.records == []
    skipped = {relative(result, s.path): s for s in result.skipped}
    for name, size in expected.items():
        assert skipped[name].reason == "truncated file", (name, skipped[name])
        assert skipped[name].detail.startswith(f"truncated DICOM file ({size} bytes): the file ends "), skipped[name]
        if size > 130:  # the reader refuses the same cut as truncated, with the size
            with pytest.raises(ImageLoadError, match=rf"truncated.*\b{size} bytes"):
                load_grayscale(export / name)
    assert skipped["CT_small_cut132.dcm"].detail.endswith("right after the 128-byte preamble and the 'DICM' marker")
    assert skipped["CT_small_cut200.dcm"].detail.endswith("inside its file meta header, which needs 336 bytes")
    assert skipped["CT_small_cut5000.dcm"].detail.endswith("inside element (0043,1029): 1016 of its 2068 bytes are "
                                                           "missing")
    # a cut exactly at an element boundary is a shorter valid file: truncated while it stops before a UID that
    # every object has; after the series UID and before Rows it looks like a whole header without Rows/Columns
    assert skipped["CT_small_cut530.dcm"].detail == ("truncated DICOM file (530 bytes): the data set ends before its "
                                                     "Study Instance UID, which every DICOM object has (cut at an "
                                                     "element boundary)")
    assert (skipped["CT_small_cut2834.dcm"].reason, skipped["CT_small_cut2834.dcm"].detail) == (
        "no pixel data", "no Rows/Columns in the header although it is a CT Image Storage object (truncated before "
                         "its Pixel Data? 2834 bytes)")
    assert skipped["rtstruct.dcm"].reason == "non-image object (RTSTRUCT)"
    assert skipped["test-SR.dcm"].reason == "non-image object (SR)"
    assert skipped["no_pixels.dcm"].reason == "no pixel data"


def test_folder_of_only_bad_files_gives_zero_records(tmp_path, space):
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "b.dcm").write_bytes(b"\0" * 300)
    result = index_dicom_folder(tmp_path, space, workers=0, progress=False)
    assert result.records == []
    assert sorted(s.reason for s in result.skipped) == ["not DICOM", "not DICOM"]


def test_empty_or_missing_folder_is_a_clear_error(tmp_path, space):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DicomIndexError, match="no files found in .*empty"):
        index_dicom_folder(tmp_path / "empty", space, progress=False)
    with pytest.raises(DicomIndexError, match="does not exist"):
        index_dicom_folder(tmp_path / "nope", space, progress=False)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(DicomIndexError, match="not a folder"):
        index_dicom_folder(tmp_path / "file", space, progress=False)


def test_patient_name_in_a_description_never_reaches_result_or_cache(tmp_path, space):
    export = tmp_path / "export"
    export.mkdir()
    write_dicom(export / "a.dcm", pydicom.uid.MRImageStorage, Modality="MR", PatientName="Quixley^Bartholomew",
                PatientID="QX-55102", StudyDescription="Quixley Bartholomew QX-55102 research",
                SeriesDescription="bartholomew quixley left knee")
    cache = tmp_path / "cache.json"
    result = index_dicom_folder(export, space, workers=0, cache=cache, progress=False)
    assert result.records[0].labels == {"modality": "MR", "anatomy": "knee"}
    assert dict(result.unmapped[("anatomy", "StudyDescription")]) == {"*** *** research": 1}
    text = json.dumps([str(result.unmapped), result.notes, [r.to_item(space) for r in result.records]])
    text += cache.read_text(encoding="utf-8")
    for secret in ["quixley", "bartholomew", "55102"]:
        assert secret not in text.lower()


# -------------------------------------------------------------------------------------------------------- caching
@pytest.fixture()
def counted_reads(monkeypatch):
    """Names of the files whose headers are read from disk (the in-process reader is wrapped)."""
    calls: list[str] = []
    real = dicom_index.read_header_entry

    def counting(path, tags, rel=None, root=None, **kwargs):
        calls.append(Path(path).relative_to(export_root[0]).as_posix())
        return real(path, tags, rel, root, **kwargs)

    export_root: list[Path] = []
    monkeypatch.setattr(dicom_index, "read_header_entry", counting)
    return calls, export_root


def test_cache_reads_only_new_or_changed_files(tmp_path, dicom_dir, space, counted_reads):
    calls, export_root = counted_reads
    export, cache = tmp_path / "export", tmp_path / "cache" / "headers.json"
    export_root.append(export)
    small = [dicom_dir / "pydicom_test_files/dicomdirtests" / rel for rel in (
        "77654033/CR1/6154", "77654033/CT2/17106", "98892001/CT2N/6293", "98892001/CT5N/2062", "98892001/CT5N/2392",
        "77654033/CT2/17136", "98892001/CT5N/2693", "77654033/CR2/6247", "98892001/CT2N/6924")]
    for p in small[:6]:
        dst = export / p.relative_to(dicom_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
    run = lambda s=space: index_dicom_folder(export, s, workers=0, cache=cache, progress=False)  # noqa: E731

    first = run()
    assert len(calls) == 6 and (first.files_read, first.files_cached) == (6, 0)
    assert "DICOM headers: 6 read, 0 from cache" in first.notes

    calls.clear()
    again = run()
    assert calls == [] and (again.files_read, again.files_cached) == (0, 6)
    assert [r.to_item(space) for r in again.records] == [r.to_item(space) for r in first.records]

    calls.clear()  # the export grows: only the new files are read
    new = []
    for p in small[6:9]:
        dst = export / p.relative_to(dicom_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
        new.append(dst.relative_to(export).as_posix())
    grown = run()
    assert sorted(calls) == sorted(new) and (grown.files_read, grown.files_cached) == (3, 6)
    assert len(grown.records) == 9

    calls.clear()  # a touched file is re-read
    touched = export / new[0]
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    run()
    assert calls == [new[0]]

    calls.clear()  # a vocabulary change with the same tags re-labels from the cache, without reading
    before = {r.image: r.labels["anatomy"] for r in run().records}
    yaml = tmp_path / "scout.yaml"
    yaml.write_text("groups:\n  anatomy:\n    classes:\n      whole_body: [SCOUT]\n", encoding="utf-8")
    calls.clear()
    relabelled = run(LabelSpace.default(user_yaml=yaml))
    assert calls == []
    changed = {r.image: r.labels["anatomy"] for r in relabelled.records if r.labels["anatomy"] != before[r.image]}
    assert changed and set(changed.values()) == {"whole_body"}
    assert all("Scout" in str(pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription) for p in changed)

    calls.clear()  # a label space reading more tags re-reads the images
    wider = run(LabelSpace.default(extra_groups=["laterality"]))
    assert len(calls) == 9 and any("new tags" in n for n in wider.notes)

    calls.clear()  # a deleted file leaves the cache
    (export / new[1]).unlink()
    run(LabelSpace.default(extra_groups=["laterality"]))
    assert calls == [] and key(new[1], cache) not in json.loads(cache.read_text(encoding="utf-8"))["files"]


def one_ct_export(tmp_path, dicom_dir, counted_reads):
    """An export of one real CT file, its header cache path, and the counted reads."""
    calls, export_root = counted_reads
    export = tmp_path / "export"
    export.mkdir()
    export_root.append(export)
    shutil.copy(dicom_dir / "pydicom_test_files/CT_small.dcm", export / "ct.dcm")
    return calls, export_root, export, tmp_path / "headers.json"


def test_corrupt_cache_is_rebuilt_not_fatal(tmp_path, dicom_dir, space, counted_reads):
    calls, export_root, export, cache = one_ct_export(tmp_path, dicom_dir, counted_reads)
    cache.write_text('{"format": "monai-modan/dicom-header-cache", "version": 1, "files": {', encoding="utf-8")
    result = index_dicom_folder(export, space, workers=0, cache=cache, progress=False)
    assert len(result.records) == 1 and calls == ["ct.dcm"]
    assert any("ignored and rebuilt" in n for n in result.notes)
    assert json.loads(cache.read_text(encoding="utf-8"))["files"][key("ct.dcm", cache)]["values"]["Modality"] == "CT"


def test_cache_inside_the_export_is_not_indexed(tmp_path, dicom_dir, space):
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(dicom_dir / "pydicom_test_files/CT_small.dcm", export / "ct.dcm")
    for _ in range(2):
        result = index_dicom_folder(export, space, workers=0, cache=export / "index_cache.json", progress=False)
        assert len(result.records) == 1 and result.skipped == []


def test_paths_holding_their_own_identifiers_are_listed_through_links(dicom_dir, space, real_index, tmp_path,
                                                                      caplog):
    """dicomdirtests/77654033/ is named by the PatientID of its 7 files, and 4 of pydicom's files are named by theirs
    (MR2_UNCR.dcm: PatientID "MR2"): these 11 are listed through pseudonymous links with unchanged labels; without a
    link folder their paths stay and a warning says so."""
    linked, cache = real_index
    links = cache.parent / "links"
    in_links = sorted(relative(linked, r.image) for r in linked.records if Path(r.image).parent == links)
    assert len(in_links) == 11
    assert sum(rel.startswith("pydicom_test_files/dicomdirtests/77654033/") for rel in in_links) == 7
    assert [rel for rel in in_links if rel.startswith("pydicom_data/")] == [
        "pydicom_data/MR2_UNCR.dcm", "pydicom_data/RG1_J2KI.dcm", "pydicom_data/RG3_J2KR.dcm",
        "pydicom_data/US1_UNCR.dcm"]
    assert not any("77654033" in r.image or "MR2_UNCR" in r.image for r in linked.records)
    assert any(n.startswith("privacy: 11 file path(s)") and str(links) in n for n in linked.notes)
    # 98892001/ is not the PatientID of its files (98890234): nothing to find there
    assert sum("98892001" in r.image for r in linked.records) == 7

    with caplog.at_level("WARNING", logger="monai_modan.data.dicom_index"):
        plain = index_dicom_folder(dicom_dir, space, workers=0, progress=False)
    assert sum("77654033" in r.image for r in plain.records) == 7
    assert any("their paths are written as they are" in n for n in plain.notes)
    assert "11 DICOM file path(s)" in caplog.text and "77654033" not in caplog.text
    by_file = {relative(plain, r.image): r.labels for r in plain.records}
    assert all(by_file[relative(linked, r.image)] == r.labels for r in linked.records)

    # re-indexing reuses the links; a links folder inside the export is not indexed
    again = index_dicom_folder(dicom_dir, space, workers=0, cache=cache, link_dir=links, progress=False)
    assert [r.image for r in again.records] == [r.image for r in linked.records] and again.files_read == 0
    export = tmp_path / "export"
    shutil.copytree(dicom_dir / "pydicom_test_files" / "dicomdirtests", export)
    first = index_dicom_folder(export, space, workers=0, link_dir=export / "links", progress=False)
    second = index_dicom_folder(export, space, workers=0, link_dir=export / "links", progress=False)
    assert len(first.records) == len(second.records) == 14 and (export / "links").is_dir()


@pytest.mark.parametrize("rel, identifiers, expected", [
    ("77654033/CT2/17106", ["77654033"], True),  # a folder named by PatientID
    ("DOE_JOHN/study/1.dcm", ["DOE^JOHN", "DOE", "JOHN", "DOE JOHN"], True),  # person-name components as words
    ("export/P77654033_ct/1.dcm", ["77654033"], True),  # a long ID inside a name
    ("scans/19700101/1.dcm", ["19700101", "1970-01-01"], True),  # birth date
    ("Müller/1.dcm", ["Müller"], True),  # any script
    ("export123/1.dcm", ["123"], False),  # a short value only as a whole word
    ("study_2/1.dcm", ["2"], False),  # values below 3 characters are not looked for
    ("johnson/1.dcm", ["JOHN"], False),  # a name component inside a longer word is not a match
    ("CT2/17106", ["77654033"], False),
    ("JohnDoe/1.dcm", ["DOE JOHN", "JOHN DOE"], True),  # both name orders, joined
    ("Doe, John/1.dcm", ["DOE JOHN"], True),
    ("LiYu/1.dcm", ["LI YU", "YU LI"], True),  # short name parts together
    ("77654/1.dcm", ["0077654", "77654"], True),  # an ID without its leading zeros
])
def test_path_names_identifier(rel, identifiers, expected):
    assert dicom_index.path_names_identifier(rel, identifiers) is expected


def test_a_patient_named_folder_hides_the_root_and_every_path_beside_it(tmp_path, space):
    """The indexed folder itself named by the patient: the root is withheld from datalist, report and logs, and every
    path goes through a link; a corrupt file in a patient-named subfolder is reported through a link as well."""
    from monai_modan.data.datalist import report_dict

    root = tmp_path / "DOE_JOHN_0077654"
    (root / "s1").mkdir(parents=True)
    write_dicom(root / "s1" / "im1.dcm", CTImageStorage, Modality="CT", PatientName="DOE^JOHN", PatientID="0077654")
    result = index_dicom_folder(root, space, workers=0, link_dir=tmp_path / "links", progress=False)
    assert result.root.startswith("(withheld") and all("DOE" not in r.image for r in result.records)
    assert any(n.startswith("privacy: the indexed folder's own path names a patient") for n in result.notes)

    export = tmp_path / "export"
    (export / "Doe, John" / "s2").mkdir(parents=True)
    write_dicom(export / "Doe, John" / "s2" / "im1.dcm", CTImageStorage, Modality="CT", PatientName="DOE^JOHN")
    (export / "Doe, John" / "s2" / "im2.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)  # unreadable
    (export / "Doe, John" / "notes.txt").write_text("not DICOM")
    (export / "other").mkdir()
    write_dicom(export / "other" / "im1.dcm", CTImageStorage, Modality="CT", PatientName="ROE^JANE")
    result = index_dicom_folder(export, space, workers=0, link_dir=tmp_path / "links2", progress=False)
    assert result.root == str(export.resolve())
    shown = [r.image for r in result.records] + [s.path for s in result.skipped]
    assert len(result.skipped) == 2 and not any("Doe" in p for p in shown), shown
    assert any("other/im1.dcm" in p for p in shown)  # unrelated folders keep their paths
    assert "Doe" not in json.dumps(report_dict(result, space))


def test_cache_of_another_folder_or_a_touched_file_is_not_trusted(tmp_path, dicom_dir, space, counted_reads):
    calls, export_root, export, cache = one_ct_export(tmp_path, dicom_dir, counted_reads)
    index_dicom_folder(export, space, workers=0, cache=cache, progress=False)
    index_dicom_folder(export, space, workers=0, cache=cache, progress=False)
    assert calls == ["ct.dcm"]  # the second run came from the cache
    stamp = (export / "ct.dcm").stat()
    data = (export / "ct.dcm").read_bytes()
    time.sleep(0.05)  # file times tick coarsely (a few ms): let the edit fall in a later tick
    (export / "ct.dcm").write_bytes(data)  # edited in place, same size ...
    os.utime(export / "ct.dcm", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # ... and the old mtime put back
    index_dicom_folder(export, space, workers=0, cache=cache, progress=False)
    assert calls == ["ct.dcm", "ct.dcm"]  # ctime changed: read again
    other = tmp_path / "other"
    shutil.copytree(export, other)
    export_root[0] = other
    result = index_dicom_folder(other, space, workers=0, cache=cache, progress=False)
    assert calls[-1] == "ct.dcm" and len(calls) == 3
    assert any("another folder" in n for n in result.notes)


def test_a_meta_header_without_preamble_is_read(tmp_path, space):
    (tmp_path / "x").mkdir()
    path = write_dicom(tmp_path / "x" / "im.dcm", CTImageStorage, Modality="CT")
    (tmp_path / "x" / "im.dcm").write_bytes(path.read_bytes()[132:])  # no preamble, no "DICM": starts at (0002,0000)
    result = index_dicom_folder(tmp_path / "x", space, workers=0, progress=False)
    assert len(result.records) == 1 and result.records[0].labels["modality"] == "CT"


def test_link_names_are_keyed_hashes_stable_per_link_folder(tmp_path):
    target = tmp_path / "77654033" / "im1.dcm"
    first = dicom_index._pseudonymous_link(tmp_path / "links", target)
    assert dicom_index._pseudonymous_link(tmp_path / "links", target) == first  # stable: the key is kept
    assert os.readlink(first) == str(target)
    other = dicom_index._pseudonymous_link(tmp_path / "links2", target)
    assert other.name != first.name  # another folder, another key: a name cannot be recomputed from a guessed path
    assert hashlib.sha256(str(target).encode()).hexdigest()[:24] not in first.name
    assert (tmp_path / "links" / ".key").stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------------------------ PHI: an attacker's export
PATIENT = {"PatientName": "DOE^JOHN", "PatientID": "12345678", "PatientBirthDate": "19740523",
           "AccessionNumber": "ACC2024555"}


def phi_export(root: Path) -> list[pydicom.Dataset]:
    """An export whose identifiers sit in folder names, in the names of non-DICOM files, in free text and in a code
    string; returns its DICOM data sets (the source of the spellings to look for)."""
    study = root / "DOE_JOHN" / "ACC2024555"
    study.mkdir(parents=True)
    (root / "12345678").mkdir()
    (root / "other").mkdir()
    paths = [
        write_dicom(study / "ct1.dcm", CTImageStorage, Modality="CT", BodyPartExamined="DOEJOHN",
                    StudyDescription="DOE JOHN knee 12345678 born 23.05.1974", **PATIENT),
        write_dicom(study / "ct2.dcm", CTImageStorage, Modality="CT", BodyPartExamined="CHEST",
                    SeriesDescription="follow-up of John Doe, acc ACC2024555", **PATIENT),
        write_dicom(root / "12345678" / "mr1.dcm", pydicom.uid.MRImageStorage, Modality="MR", BodyPartExamined="KNEE",
                    **PATIENT),
        write_dicom(root / "other" / "ct.dcm", CTImageStorage, Modality="CT", BodyPartExamined="HEAD",
                    PatientName="ROE^JANE", PatientID="87654321"),
    ]
    (study / "notes_19740523.txt").write_text("not DICOM", encoding="utf-8")
    for name in ("12345678.zip", "DOE_JOHN_report.pdf", "1974-05-23_consent.txt", "ACC2024555.xml",
                 "Roe, Jane.txt"):
        (root / name).write_bytes(b"PK\x03\x04 not DICOM")  # top level: no header of their own names them
    (root / "readme.txt").write_text("an unrelated file", encoding="utf-8")
    (root / "empty_87654321.dcm").write_bytes(b"")
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def spellings(datasets) -> set[str]:
    """Every spelling of every identifier of ``datasets`` (identifier_strings), also joined by '_', '-' or nothing;
    searched case-insensitively."""
    from monai_modan.labels.privacy import identifier_strings

    found = set()
    for ds in datasets:
        for s in identifier_strings(ds):
            tokens = [t for t in "".join(c if c.isalnum() else " " for c in s).split()]
            found |= {s, "".join(tokens), "_".join(tokens), "-".join(tokens)}
    return {s for s in found if len(s) >= 3}


def leaks(text: str, spelled: set[str]) -> list[str]:
    """The spellings found in ``text``, case-insensitively (short names as whole words: "does" is no "DOE")."""
    import re

    out = []
    for s in spelled:
        pattern = rf"(?<![a-z]){re.escape(s)}(?![a-z])" if s.isalpha() and len(s) < 6 else re.escape(s)
        if re.search(pattern, text, re.IGNORECASE):
            out.append(s)
    return out


def everything_written(out_dir: Path) -> str:
    """Every name under ``out_dir`` (link names included, links not followed) and every file's text but the secret
    key (random bytes)."""
    parts = []
    for folder, dirs, files in os.walk(out_dir):
        for name in dirs + files:
            path = Path(folder) / name
            parts.append(str(path.relative_to(out_dir)))
            if name in files and not path.is_symlink() and name != ".key":
                parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def test_no_spelling_of_any_identifier_reaches_any_output(tmp_path, capsys, caplog):
    """End to end through the CLI (report printed, header cache, link folder), three runs: headers read by worker
    processes, then from the cache, then from the cache with a new patient-named PDF beside them: no spelling of
    PatientName, PatientID, birth date or accession number in any file written, any file or link name, the printed
    output, the log or a warning; files named by a patient are listed through links, unrelated ones keep their
    names, and the labels survive (the code string CHEST labels, the one holding the name is redacted)."""
    import logging
    import warnings

    from monai_modan.__main__ import main

    export, out_dir = tmp_path / "export", tmp_path / "out"
    out_dir.mkdir()
    spelled = spellings(phi_export(export))
    assert {"12345678", "DOE JOHN", "JOHN", "1974-05-23", "23.05.1974", "ACC2024555", "87654321"} <= spelled
    printed = []
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for run, workers in enumerate(["2", "0", "0"]):
            if run == 2:
                (export / "12345678_2.pdf").write_bytes(b"%PDF-1.4")  # new, beside headers known only from the cache
            assert main(["index", str(export), "--out", str(out_dir / "dl.json"), "--workers", workers]) == 0
            captured = capsys.readouterr()
            printed += [captured.out, captured.err]
            report = json.loads((out_dir / "dl.report.json").read_text(encoding="utf-8"))
            assert report["images"] == 4 and report["skipped"] == 8 + (run == 2), run
    assert "DICOM headers: 1 read, 11 from cache" in printed[-2]  # only the new PDF was read
    written = everything_written(out_dir)
    for where, text in [("files", written), ("printed", "\n".join(printed)), ("log", caplog.text),
                        ("warnings", "\n".join(str(w.message) for w in caught))]:
        assert leaks(text, spelled) == [], where

    data = json.loads((out_dir / "dl.json").read_text(encoding="utf-8"))
    labels = {Path(os.path.realpath(it["image"])).name: it["anatomy"] for it in data["training"]}
    assert labels == {"ct1.dcm": "knee", "ct2.dcm": "chest", "mr1.dcm": "knee", "ct.dcm": "head"}
    assert any(u["tag"] == "BodyPartExamined" and u["value"] == "***" for u in report["unmapped"])
    links = out_dir / "dl.links"
    targets = sorted(Path(os.readlink(p)).relative_to(export.resolve()).as_posix() for p in links.iterdir()
                     if p.is_symlink())
    assert targets == sorted([
        "DOE_JOHN/ACC2024555/ct1.dcm", "DOE_JOHN/ACC2024555/ct2.dcm", "DOE_JOHN/ACC2024555/notes_19740523.txt",
        "12345678/mr1.dcm", "12345678.zip", "12345678_2.pdf", "DOE_JOHN_report.pdf", "1974-05-23_consent.txt",
        "ACC2024555.xml", "Roe, Jane.txt", "empty_87654321.dcm"])
    assert "other/ct.dcm" in written  # unrelated files keep their names (readme.txt is not among the links either)


def test_cache_keys_are_keyed_with_the_link_folder_secret(tmp_path, space, counted_reads):
    """A guessed path (``12345678/mr1.dcm``) or folder cannot be confirmed from the cache: its keys and the root's
    hash are HMACs with the link folder's ``.key``; a cache of the older version (plain SHA-256 keys) or one made
    with another key is discarded with a note and rebuilt, never trusted or fatal."""
    calls, export_root = counted_reads
    export, cache, links = tmp_path / "export", tmp_path / "headers.json", tmp_path / "links"
    export_root.append(export)
    (export / "12345678").mkdir(parents=True)
    write_dicom(export / "12345678" / "mr1.dcm", pydicom.uid.MRImageStorage, Modality="MR", **PATIENT)

    def run():
        return index_dicom_folder(export, space, workers=0, cache=cache, link_dir=links, progress=False)

    run()
    data = json.loads(cache.read_text(encoding="utf-8"))
    plain = lambda text: hashlib.sha256(text.encode()).hexdigest()[:32]  # noqa: E731
    assert plain("12345678/mr1.dcm") not in data["files"] and data["root"] != plain(str(export.resolve()))
    assert list(data["files"]) == [key("12345678/mr1.dcm", cache, links)]
    assert (links / ".key").stat().st_mode & 0o777 == 0o600
    assert not any("12345678" in s for s in _strings(data))

    old = {**data, "version": 3, "root": plain(str(export.resolve())),
           "files": {plain("12345678/mr1.dcm"): data["files"][key("12345678/mr1.dcm", cache, links)]}}
    old.pop("key")
    cache.write_text(json.dumps(old), encoding="utf-8")
    calls.clear()
    result = run()
    assert calls == ["12345678/mr1.dcm"] and len(result.records) == 1
    assert any("ignored and rebuilt" in n and f"version-{dicom_index.CACHE_VERSION}" in n for n in result.notes)

    assert run().files_cached == 1
    (links / ".key").unlink()  # a new link folder secret: the old keys mean nothing
    calls.clear()
    result = run()
    assert calls == ["12345678/mr1.dcm"] and any("another key" in n for n in result.notes)

    cache2 = tmp_path / "c2.json"  # without a link folder: a hidden owner-only key beside the cache
    index_dicom_folder(export, space, workers=0, cache=cache2, progress=False)
    assert (tmp_path / ".c2.json.key").stat().st_mode & 0o777 == 0o600
    assert list(json.loads(cache2.read_text(encoding="utf-8"))["files"]) == [key("12345678/mr1.dcm", cache2)]
