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
     ("groups:\n  anatomy:\n    clases: {}\n", "unknown key"),
     # class names: non-empty text, each once; synonyms: text, not blank
     ('groups:\n  anatomy:\n    classes:\n      "": [JAWBONE]\n', r"group 'anatomy': class name '' must be non-empty"),
     ("groups:\n  anatomy:\n    classes:\n      ~: [JAWBONE]\n", r"group 'anatomy': class name None is not text"),
     ("groups:\n  anatomy:\n    classes:\n      yes: [JAWBONE]\n", r"class name True is not text .*quote it"),
     ("groups:\n  anatomy:\n    classes:\n      jaw/bone: [JAWBONE]\n", r"class name 'jaw/bone' .*without '/'"),
     ("groups:\n  anatomy:\n    classes:\n      jaw: [JAWBONE]\n      jaw: [MANDIBLE]\n",
      r"key 'jaw' appears twice under groups > anatomy > classes \(lines 4 and 5\)"),
     ("groups:\n  anatomy:\n    classes:\n      jaw: [A]\n  anatomy:\n    classes:\n      lip: [B]\n",
      r"key 'anatomy' appears twice under groups"),
     ('groups:\n  anatomy:\n    classes:\n      jaw: [JAWBONE, ""]\n', r"group 'anatomy': class 'jaw' has a blank synonym ''"),
     ('groups:\n  anatomy:\n    classes:\n      jaw: [JAWBONE, "--"]\n', r"class 'jaw' has a blank synonym '--'"),
     ("groups:\n  anatomy:\n    classes:\n      jaw: [JAWBONE, ~]\n", r"synonym None of class 'jaw' is not text"),
     ("groups:\n  anatomy:\n    classes:\n      jaw: [JAWBONE, NO]\n", r"synonym False of class 'jaw' is not text"),
     ("groups:\n  anatomy:\n    classes:\n      jaw: [JAWBONE]\n      mandible: [JAWBONE]\n",
      "synonym 'JAWBONE' of anatomy/mandible already means anatomy/jaw"),
     ('extra_groups:\n  "":\n    dicom_tags: [Manufacturer]\n    classes:\n      a: [A]\n', "a group name must be non-empty"),
     ("groups: [1]\n", "'groups:' must map group name"),
     ("- a\n- b\n", "top level must be a mapping .*not list"),
     ("0\n", "top level must be a mapping .*not int")],
)
def test_user_yaml_errors_name_file_and_entry(space, tmp_path, text, match):
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    with pytest.raises(VocabularyError, match=match) as e:
        space.extended(p)
    assert "mine.yaml" in str(e.value)


def test_binary_or_non_utf8_vocabulary_is_named_with_the_byte(space, tmp_path):
    png = tmp_path / "logo.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(VocabularyError, match=r"logo.yaml: vocabulary file is not UTF-8 text \(byte 0x89 at offset 0, line 1\)"):
        space.extended(png)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"groups:\n  anatomy:\n    classes:\n      knee: [GENOU, " + "pi\xe9d]\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match=r"latin1.yaml: .*not UTF-8 text \(byte 0xe9 at offset 54, line 4\)"):
        space.extended(latin1)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"groups: {}\n\x00\x01")  # valid UTF-8, but a binary file: one line naming it
    with pytest.raises(VocabularyError, match=r"nul.yaml: not valid YAML \(unacceptable character #x0000") as e:
        space.extended(nul)
    assert "\n" not in str(e.value)


def test_shipped_contrast_no_is_without_contrast():
    """The shipped vocabulary's bare YES/NO were read by YAML as booleans ("TRUE"/"FALSE"), so a
    ContrastBolusAgent of "NO" fell to the "*" class: with_contrast."""
    contrast = LabelSpace.default(extra_groups=["contrast"])["contrast"]
    assert contrast.canonical("NO") == "without_contrast" and contrast.canonical("no") == "without_contrast"
    assert contrast.canonical("YES") == "with_contrast" and "FALSE" not in contrast.synonyms


@pytest.mark.parametrize(
    "stored, match",
    [("garbage", r"must be a mapping with 'groups.*got str"),
     ({}, "no 'groups'"),
     ({"groups": [1]}, r"'groups' = list"),
     ({"groups": {}}, "no groups"),
     ({"groups": {"modality": "x"}}, r"group 'modality' must be a mapping with 'classes"),
     ({"groups": {"modality": {"classes": {"CT": "CT"}}}}, r"group 'modality': class 'CT' must be a mapping"),
     ({"groups": {"modality": {"classes": {"": {"synonyms": [], "codes": []}}}}}, "class name '' must be non-empty"),
     ({"groups": {"modality": {"classes": {"CT": {"synonyms": ["CT"], "codes": []}}, "dicom_tags": "Modality"}}},
      "'dicom_tags' must be a list"),
     ({"groups": {"modality": {"classes": {"CT": {"synonyms": [], "codes": []}}}}, "class_names": ["modality/MR"]},
      "'class_names' disagree with its groups")],
)
def test_label_space_from_dict_rejects_what_to_dict_cannot_write(stored, match):
    with pytest.raises(VocabularyError, match=match) as e:
        LabelSpace.from_dict(stored, source="dl.json: 'label_space'")
    assert str(e.value).startswith("dl.json: 'label_space'")


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


# pretraining datalists: every item checked against the label space stored with it ------------------------------
def _pretraining_datalist(tmp_path, change=None):
    import json

    space = LabelSpace.default()
    data = {"format": "monai-modan/datalist/1", "source": "test", "label_space": space.to_dict(),
            "training": [{"image": "/data/a.png", "label": space.encode({"modality": "CT"}).astype(int).tolist()},
                         {"image": "/data/b.png", "label": space.encode({"modality": "MR"}).astype(int).tolist()}],
            "validation": [{"image": "/data/c.png", "label": [0] * space.width}]}
    if change is not None:
        change(data)
    path = tmp_path / "dl.json"
    path.write_text(json.dumps(data))
    return path


def _set(split, i, key, value):
    return lambda d: d[split][i].__setitem__(key, value)


def _set_entry(j, value):
    return lambda d: d["training"][1]["label"].__setitem__(j, value)


@pytest.mark.parametrize(
    "change, match",
    [(_set("training", 1, "label", 3), r"training\[1\] has 'label' = int 3, but its label space has width 27 .*b.png"),
     (_set("training", 1, "label", None), r"training\[1\] has 'label' = null, .*image /data/b.png"),
     (_set("training", 1, "label", "0,1"), r"training\[1\] has 'label' = str '0,1'"),
     (_set("training", 1, "label", [0, 1]), r"training\[1\] has a label of width 2, but its label space has width 27"),
     (lambda d: d["training"][1].pop("label"), r"training\[1\] has no 'label', .*image /data/b.png"),
     (_set_entry(0, 2), r"training\[1\] \(/data/b.png\): label is not multi-hot: label\[0\] \(modality/CT\) is 2"),
     (_set_entry(0, "1"), r"training\[1\] \(/data/b.png\): label is not multi-hot: label\[0\] .* is '1'"),
     (_set_entry(3, None), r"training\[1\] \(/data/b.png\): label is not multi-hot: label\[3\] .* is None"),
     (_set_entry(3, 0.5), r"label\[3\] .* is 0.5"),
     (_set_entry(3, [1]), r"label\[3\] .* is \[1\]"),
     (_set_entry(0, 1), r"training\[1\] \(/data/b.png\): label has 2 classes of group 'modality' \(CT, MR\)"),
     (_set("validation", 0, "image", 7), r"validation\[0\] has 'image' = int 7, not a path"),
     (_set("validation", 0, "image", " "), r"validation\[0\] has 'image' = str ' ', not a path"),
     (lambda d: d["validation"][0].pop("image"), r"validation\[0\] has no 'image'"),
     (lambda d: d.__setitem__("training", ["/data/a.png", "/data/b.png"]),
      r"training\[0\] is not an item \{'image': ..., 'label': \[...\]\}: got str '/data/a.png'"),
     (lambda d: d.__setitem__("training", {"image": "/data/a.png"}), "'training' must be a list of items, got dict"),
     (lambda d: d.__setitem__("training", None), "'training' must be a list of items, got null"),
     (lambda d: d.__setitem__("test", "none"), "'test' must be a list of items, got str 'none'"),
     (lambda d: d.__setitem__("label_space", "garbage"), r"'label_space': must be a mapping with 'groups.*re-index"),
     (lambda d: d.__setitem__("label_space", {}), r"'label_space': .*no 'groups'"),
     (lambda d: d["label_space"]["groups"]["anatomy"]["classes"].pop("knee"), "'class_names' disagree"),
     (lambda d: d.__setitem__("classes", "CT/abd/normal"), "'classes' must be a list of class names"),
     (lambda d: d.__setitem__("format", "monai-modan/task/1"), "is not a pretraining datalist")],
)
def test_pretraining_datalist_errors_name_file_item_and_cause(tmp_path, change, match):
    from monai_modan.data.datalist import DatalistError, load_datalist

    path = _pretraining_datalist(tmp_path, change)
    with pytest.raises(DatalistError, match=match) as e:
        load_datalist(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_pretraining_datalist_accepts_what_the_writer_writes_and_plain_numbers(tmp_path):
    from monai_modan.data.datalist import load_datalist

    data = load_datalist(_pretraining_datalist(tmp_path))
    assert [len(data.items(s)) for s in ("training", "validation", "test")] == [2, 1, 0]
    floats = load_datalist(_pretraining_datalist(tmp_path, _set_entry(1, 1.0)))  # 1.0 and true are 1
    assert floats.items()[1]["label"][1] == 1.0


def test_non_utf8_datalist_names_the_byte(tmp_path):
    from monai_modan.data.datalist import DatalistError, load_datalist

    path = tmp_path / "dl.json"
    path.write_bytes(b'{"training": [{"image": "/data/caf\xe9.png"}]}')
    with pytest.raises(DatalistError, match=r"dl.json: datalist is not UTF-8 text \(byte 0xe9 at offset 34, line 1\)"):
        load_datalist(path)
