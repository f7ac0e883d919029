"""Label space: canonical vocabularies, synonyms, user extension, multi-hot encode/decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_modan.labels import LabelSpace, VocabularyError, normalise_text


@pytest.fixture(scope="module")
def space() -> LabelSpace:
    return LabelSpace.default()


def test_default_groups_and_width(space):
    assert space.names == ["modality", "anatomy"]
    assert space.width == len(space["modality"]) + len(space["anatomy"])
    assert space.class_names[0] == "modality/CT"
    assert space.slices["anatomy"].start == len(space["modality"])


@pytest.mark.parametrize(
    "raw, canonical",
    [("CT", "CT"), ("MR", "MR"), ("MA", "MR"), ("MS", "MR"), ("EC", "US"), ("CD", "US"), ("DD", "US"),
     ("CR", "XR"), ("DX", "XR"), ("mg", "MG"), ("PT", "PT"), ("XA", "XA"), ("OT", None), ("SC", None), ("", None)],
)
def test_modality_synonyms_and_retired_codes(space, raw, canonical):
    assert space["modality"].canonical(raw) == canonical


@pytest.mark.parametrize(
    "raw, canonical",
    [("CHEST", "chest"), ("THORAX", "chest"), ("LUNG", "chest"), ("HEAD", "head"), ("BRAIN", "head"), ("SKULL", "head"),
     ("CSPINE", "spine"), ("TSPINE", "spine"), ("LSPINE", "spine"), ("C-Spine", "spine"), ("c_spine", "spine"),
     ("KNEE", "knee"), ("HIP", "hip"), ("SHOULDER", "shoulder"), ("BREAST", "breast"), ("NECK", "neck"),
     ("THYROID", "thyroid"), ("ABDOMEN", "abdomen"), ("PANCREAS", "abdomen"), ("PELVIS", "pelvis"),
     ("WHOLE BODY", "whole_body"), ("ANKLE", "ankle_foot"), ("EXTREMITY", None), ("LEFT KNEE PAIN", None)],
)
def test_anatomy_exact_values(space, raw, canonical):
    # exact match only: a sentence is not a BodyPartExamined value
    assert space["anatomy"].canonical(raw) == canonical


def test_coded_concepts(space):
    a = space["anatomy"]
    assert a.canonical_code("SRT", "T-D3000") == "chest"
    assert a.canonical_code("sct", " 51185008 ") == "chest"
    assert a.canonical_code("SCT", "72696002") == "knee"
    assert a.canonical_code("SCT", "999") is None


@pytest.mark.parametrize(
    "text, canonical, found",
    [("CT  HEAD/BRAIN WO CONTRAST", "head", ["head"]),
     ("XR C Spine Comp Min 4 Views", "spine", ["spine"]),
     ("CT ABDOMEN PELVIS W CONTRAST", "abdomen", ["abdomen"]),  # nested PELVIS inside the longer synonym is dropped
     ("abdomen^liver", "abdomen", ["abdomen"]),
     ("CHEST and ABDOMEN", None, ["chest", "abdomen"]),  # ambiguous -> unknown, both reported
     ("Routine Brain", "head", ["head"]),
     ("e+1", None, []),
     ("SmartScore - Gated 0.5 sec", "heart", ["heart"]),  # coronary calcium scoring
     ("KNEEL", None, []),  # whole words only
     ("PETER", None, [])],
)
def test_free_text_whole_word(space, text, canonical, found):
    assert space["anatomy"].find_in_text(text) == (canonical, found)


def test_unicode_word_boundaries(space):
    ext = _extended(space, "groups:\n  anatomy:\n    classes:\n      ankle_foot: [PÉ]\n")
    g = ext["anatomy"]
    assert g.find_in_text("RM PÉ ESQUERDO") == ("ankle_foot", ["ankle_foot"])
    assert g.find_in_text("PET CT") == (None, [])
    assert space["modality"].find_in_text("PÉ") == (None, [])


def test_normalise_text():
    assert normalise_text("  c_spine ") == "C SPINE"
    assert normalise_text("ca++_tendinosis") == "CA++ TENDINOSIS"
    assert normalise_text("abdomen^liver") == "ABDOMEN LIVER"


def test_encode_decode_round_trip(space):
    y = space.encode({"modality": "CR", "anatomy": "THORAX"})
    assert y.dtype == np.float32 and y.shape == (space.width,)
    assert y.sum() == 2
    assert y[space.class_names.index("modality/XR")] == 1
    assert y[space.class_names.index("anatomy/chest")] == 1
    assert space.decode(y) == {"modality": "XR", "anatomy": "chest"}
    assert space.decode(torch.from_numpy(y)) == {"modality": "XR", "anatomy": "chest"}
    assert space.decode(y.tolist()) == {"modality": "XR", "anatomy": "chest"}


def test_unknown_is_all_zero_never_invented(space):
    y = space.encode({"modality": "OT", "anatomy": "EXTREMITY"})
    assert y.sum() == 0
    assert space.decode(y) == {"modality": None, "anatomy": None}
    y = space.encode({"modality": "MR"})  # missing group = unknown
    assert y[space.slices["anatomy"]].sum() == 0


def test_encode_decode_errors(space):
    with pytest.raises(KeyError, match="laterality"):
        space.encode({"laterality": "L"})
    with pytest.raises(ValueError, match="width"):
        space.decode([1, 0, 0])
    bad = np.zeros(space.width)
    bad[:2] = 1
    with pytest.raises(ValueError, match="modality"):
        space.decode(bad)


def test_shipped_extra_groups():
    space = LabelSpace.default(extra_groups=["laterality", "contrast"])
    assert space.names == ["modality", "anatomy", "laterality", "contrast"]
    assert space["laterality"].dicom_tags == ["ImageLaterality", "Laterality", "FrameLaterality"]
    assert space["contrast"].canonical("Omnipaque 350") == "with_contrast"  # '*' = any other non-empty value
    assert space["contrast"].canonical("NONE") == "without_contrast"
    assert space["contrast"].canonical("") is None
    with pytest.raises(VocabularyError, match="unknown extra group 'colour'"):
        LabelSpace.default(extra_groups=["colour"])


def _extended(space: LabelSpace, text: str, tmp_path_factory=None) -> LabelSpace:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "extra.yaml"
        p.write_text(text)
        return space.extended(p)


def test_user_yaml_extends_existing_group_and_adds_group(space):
    ext = _extended(
        space,
        """
groups:
  anatomy:
    classes:
      lower_limb: [EXTREMITY LOWER, JAMBE]
      jaw: {synonyms: [MANDIBLE, TMJ], codes: ["SCT:91609006"]}
extra_groups:
  scanner:
    dicom_tags: [ManufacturerModelName]
    classes:
      aquilion: [AQUILION, AQUILION ONE]
""",
    )
    assert ext.names == ["modality", "anatomy", "scanner"]
    assert ext["anatomy"].canonical("jambe") == "lower_limb"
    assert ext["anatomy"].classes[-1] == "jaw" and ext["anatomy"].canonical_code("SCT", "91609006") == "jaw"
    assert ext.width == space.width + 1 + 1
    # the original is untouched
    assert "jaw" not in space["anatomy"].classes and "scanner" not in space


@pytest.mark.parametrize(
    "text, match",
    [("groups:\n  colour:\n    classes:\n      red: [RED]\n", "unknown group 'colour'"),
     ("extra_groups:\n  scanner:\n    classes:\n      a: [A]\n", "needs 'dicom_tags'"),
     ("extra_groups:\n  scanner:\n    dicom_tags: [NotAKeyword]\n    classes:\n      a: [A]\n", "not DICOM keywords"),
     ("extra_groups:\n  age:\n    dicom_tags: [PatientBirthDate]\n    classes:\n      a: [A]\n",
      r"\['PatientBirthDate'\] identify the patient"),
     ("groups:\n  anatomy:\n    classes:\n      knee: 5\n", "class 'knee'"),
     ("groups:\n  anatomy:\n    classes:\n      knee: [CHEST]\n", "already means anatomy/chest"),
     ("groups: [1, 2\n", "not valid YAML"),
     ("anatomy: {}\n", "unknown top-level key"),
     ("groups:\n  anatomy:\n    classes:\n      jaw: {codes: [91609006]}\n", "must look like 'SCT:"),
     ("groups:\n  anatomy:\n    clases: {}\n", "unknown key")],
)
def test_user_yaml_errors_name_file_and_entry(space, tmp_path, text, match):
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    with pytest.raises(VocabularyError, match=match) as e:
        space.extended(p)
    assert "mine.yaml" in str(e.value)


def test_missing_user_yaml(space, tmp_path):
    with pytest.raises(VocabularyError, match="cannot read vocabulary file .*nope.yaml"):
        space.extended(tmp_path / "nope.yaml")


def test_dict_round_trip_preserves_everything():
    space = LabelSpace.default(extra_groups=["contrast"])
    again = LabelSpace.from_dict(space.to_dict())
    assert again == space
    assert again["anatomy"].free_text_tags == ["StudyDescription", "SeriesDescription", "ProtocolName"]
    assert again["contrast"].canonical("Gadovist") == "with_contrast"
    assert again["anatomy"].find_in_text("MRI LEFT KNEE") == ("knee", ["knee"])
