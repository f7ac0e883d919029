"""DICOM header -> labels: one test per rule, on synthetic pydicom headers built here."""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset

from monai_modan.labels import LabelSpace
from monai_modan.labels.dicom_labels import (
    REDACTED,
    extract_header_values,
    header_tags,
    label_header,
    label_values,
    non_image_kind,
    non_image_reason,
    redact_identifiers,
)


def header(**elements) -> Dataset:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def code(scheme: str, value: str, meaning: str) -> Dataset:
    return header(CodingSchemeDesignator=scheme, CodeValue=value, CodeMeaning=meaning)


@pytest.fixture(scope="module")
def space() -> LabelSpace:
    return LabelSpace.default()


# ------------------------------------------------------------------------------------------------------- modality
@pytest.mark.parametrize(
    "raw, expected",
    [("CT", "CT"), ("CR", "XR"), ("DX", "XR"), ("MA", "MR"), ("MS", "MR"), ("EC", "US"), ("CD", "US"), ("DD", "US"),
     ("PT", "PT"), ("MG", "MG")],
)
def test_modality_codes_and_retired_synonyms(space, raw, expected):
    found = label_header(header(Modality=raw), space)
    assert found.labels["modality"] == expected
    assert found.sources["modality"] == "Modality"
    assert found.unmapped == []


@pytest.mark.parametrize("raw", ["OT", "SC"])
def test_secondary_capture_modality_stays_unknown_and_is_reported(space, raw):
    found = label_header(header(Modality=raw, BodyPartExamined="CHEST"), space)
    assert found.labels == {"modality": None, "anatomy": "chest"}
    assert found.sources["modality"] is None
    assert ("modality", "Modality", raw) in found.unmapped


def test_absent_values_are_unknown_not_unmapped(space):
    found = label_header(header(Modality="", StudyDescription="  "), space)
    assert found.labels == {"modality": None, "anatomy": None}
    assert found.sources == {"modality": None, "anatomy": None}
    assert found.unmapped == [] and found.ambiguous == []


# -------------------------------------------------------------------------------------------------------- anatomy
@pytest.mark.parametrize(
    "item, expected",
    [
        # meanings that are no synonym, so only the code can decide
        (code("SCT", "51185008", "Thoracic structure"), "chest"),
        (code("SRT", "T-D3000", "Chest structure"), "chest"),
        (code("SNM3", "T-A0100", "Encephalon"), "head"),  # retired designator, same code as SRT
        (code("SCT", "72696002", "Knee region structure"), "knee"),
    ],
)
def test_anatomic_region_code_beats_body_part_and_text(space, item, expected):
    ds = header(Modality="CT", AnatomicRegionSequence=[item], BodyPartExamined="PELVIS", StudyDescription="CT HIP")
    found = label_header(ds, space)
    assert found.labels["anatomy"] == expected
    assert found.sources["anatomy"] == "AnatomicRegionSequence"


def test_unknown_code_falls_back_to_code_meaning(space):
    found = label_header(header(AnatomicRegionSequence=[code("99LOCAL", "X17", "Knee")], BodyPartExamined="HIP"), space)
    assert (found.labels["anatomy"], found.sources["anatomy"]) == ("knee", "AnatomicRegionSequence")


def test_unmapped_code_is_reported_and_body_part_decides(space):
    found = label_header(header(AnatomicRegionSequence=[code("99LOCAL", "X17", "Region 17")],
                                BodyPartExamined="HIP"), space)
    assert (found.labels["anatomy"], found.sources["anatomy"]) == ("hip", "BodyPartExamined")
    assert found.unmapped == [("anatomy", "AnatomicRegionSequence", "99LOCAL:X17 Region 17")]


def test_body_part_beats_free_text(space):
    found = label_header(header(BodyPartExamined="KNEE", StudyDescription="CT HEAD", SeriesDescription="Shoulder"), space)
    assert (found.labels["anatomy"], found.sources["anatomy"]) == ("knee", "BodyPartExamined")
    assert found.unmapped == []


def test_body_part_synonym_thorax(space):
    assert label_header(header(BodyPartExamined="THORAX"), space).labels["anatomy"] == "chest"


def test_extremity_falls_through_to_free_text(space):
    ds = header(Modality="CR", BodyPartExamined="EXTREMITY", StudyDescription="Non-ossifying fibroma of distal tibia")
    found = label_header(ds, space)
    assert found.labels == {"modality": "XR", "anatomy": "lower_limb"}
    assert found.sources["anatomy"] == "StudyDescription"
    assert found.unmapped == [("anatomy", "BodyPartExamined", "EXTREMITY")]


def test_free_text_order_study_then_series_then_protocol(space):
    found = label_header(header(StudyDescription="Routine", SeriesDescription="AX 5mm", ProtocolName="T1W/Abdomen"),
                         space)
    assert (found.labels["anatomy"], found.sources["anatomy"]) == ("abdomen", "ProtocolName")
    assert found.unmapped == [("anatomy", "StudyDescription", "Routine"), ("anatomy", "SeriesDescription", "AX 5mm")]
    found = label_header(header(StudyDescription="Routine", SeriesDescription="Sag knee PD"), space)
    assert (found.labels["anatomy"], found.sources["anatomy"]) == ("knee", "SeriesDescription")


def test_ambiguous_free_text_is_unknown_from_that_tag_and_search_continues(space):
    found = label_header(header(StudyDescription="XR knee and hip", SeriesDescription="Left knee AP"), space)
    assert (found.labels["anatomy"], found.sources["anatomy"]) == ("knee", "SeriesDescription")
    assert found.ambiguous == [("anatomy", "StudyDescription", "XR knee and hip", ("hip", "knee"))]
    only = label_header(header(StudyDescription="XR knee and hip"), space)
    assert only.labels["anatomy"] is None and only.sources["anatomy"] is None
    assert only.unmapped == []  # ambiguous is not "matched nothing"


@pytest.mark.parametrize(
    "text, expected",
    [("Headache protocol", None), ("C-Spine 3 views", "spine"), ("ALARM test", None), ("R ARM", "upper_limb"),
     ("Kneecap", None), ("abdomen^liver", "abdomen")],
)
def test_free_text_needs_word_boundaries(space, text, expected):
    assert label_header(header(SeriesDescription=text), space).labels["anatomy"] == expected


def test_enhanced_object_anatomy_in_shared_functional_groups(space):
    anatomy = header(AnatomicRegionSequence=[code("SNM3", "T-A0100", "Brain")], FrameLaterality="U")
    ds = header(Modality="CT", SharedFunctionalGroupsSequence=[header(FrameAnatomySequence=[anatomy])])
    found = label_header(ds, space)
    assert found.labels == {"modality": "CT", "anatomy": "head"}
    assert found.sources["anatomy"] == "AnatomicRegionSequence"


# --------------------------------------------------------------------------------------------------- extra groups
def test_extra_group_laterality_uses_its_tags_in_order():
    space = LabelSpace.default(extra_groups=["laterality"])
    assert label_header(header(ImageLaterality="L", Laterality="R"), space).sources["laterality"] == "ImageLaterality"
    found = label_header(header(ImageLaterality="L", Laterality="R"), space)
    assert found.labels["laterality"] == "left"
    found = label_header(header(Laterality="R"), space)
    assert (found.labels["laterality"], found.sources["laterality"]) == ("right", "Laterality")
    found = label_header(header(ImageLaterality="U", Laterality="B"), space)
    assert (found.labels["laterality"], found.sources["laterality"]) == ("bilateral", "Laterality")
    assert ("laterality", "ImageLaterality", "U") in found.unmapped


def test_user_extra_group_with_free_text_tags(tmp_path):
    yaml = tmp_path / "weighting.yaml"
    yaml.write_text(
        "extra_groups:\n"
        "  weighting:\n"
        "    dicom_tags: [SequenceName]\n"
        "    free_text_tags: [SeriesDescription, ProtocolName]\n"
        "    classes:\n"
        "      t1: [T1, T1W]\n"
        "      t2: [T2, T2W]\n"
        "      flair: [FLAIR]\n",
        encoding="utf-8",
    )
    space = LabelSpace.default(user_yaml=yaml)
    found = label_header(header(SequenceName="*tse2d1_15", SeriesDescription="AX T2 FLAIR",
                                ProtocolName="T1W/SE/1024"), space)
    assert (found.labels["weighting"], found.sources["weighting"]) == ("t1", "ProtocolName")
    assert ("weighting", "SequenceName", "*tse2d1_15") in found.unmapped
    assert found.ambiguous == [("weighting", "SeriesDescription", "AX T2 FLAIR", ("t2", "flair"))]


def test_contrast_any_value_class():
    space = LabelSpace.default(extra_groups=["contrast"])
    assert label_header(header(ContrastBolusAgent="Ultravist 370"), space).labels["contrast"] == "with_contrast"
    assert label_header(header(Modality="CT"), space).labels["contrast"] is None


def test_values_round_trip_through_json(space):
    """The indexer caches extract_header_values as JSON and labels later: the result must be identical."""
    ds = header(Modality="CR", BodyPartExamined="EXTREMITY", StudyDescription="distal tibia",
                AnatomicRegionSequence=[code("99X", "1", "Region")], ImageType=["ORIGINAL", "PRIMARY"])
    values = extract_header_values(ds, header_tags(space))
    assert label_values(json.loads(json.dumps(values)), space) == label_header(ds, space)


# ------------------------------------------------------------------------------------------------------ non-image
@pytest.mark.parametrize("modality", ["SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "SEG", "DOC", "ECG", "HD"])
def test_non_image_by_modality(modality):
    ds = header(Modality=modality, Rows=16, Columns=16)
    assert non_image_kind(ds) == modality
    assert non_image_reason(ds) == f"non-image object ({modality})"


@pytest.mark.parametrize(
    "sop_class, kind",
    [
        (pydicom.uid.ComprehensiveSRStorage, "SR"),
        (pydicom.uid.BasicTextSRStorage, "SR"),
        (pydicom.uid.XRayRadiationDoseSRStorage, "SR"),
        (pydicom.uid.KeyObjectSelectionDocumentStorage, "KO"),
        (pydicom.uid.GrayscaleSoftcopyPresentationStateStorage, "PR"),
        (pydicom.uid.TwelveLeadECGWaveformStorage, "waveform"),
        (pydicom.uid.EncapsulatedPDFStorage, "DOC"),
        (pydicom.uid.RTStructureSetStorage, "RTSTRUCT"),
        (pydicom.uid.RTPlanStorage, "RTPLAN"),
        (pydicom.uid.RTIonPlanStorage, "RTPLAN"),
        (pydicom.uid.RTDoseStorage, "RTDOSE"),
        (pydicom.uid.RTBeamsTreatmentRecordStorage, "RTRECORD"),
        (pydicom.uid.SegmentationStorage, "SEG"),
        (pydicom.uid.SpatialRegistrationStorage, "REG"),
        (pydicom.uid.SpatialFiducialsStorage, "FID"),
        (pydicom.uid.RawDataStorage, "raw data"),
        (pydicom.uid.HangingProtocolStorage, "Hanging Protocol"),
    ],
)
def test_non_image_by_sop_class_when_modality_says_nothing(sop_class, kind):
    ds = header(Modality="OT", SOPClassUID=sop_class, Rows=16, Columns=16)
    assert non_image_kind(ds) == kind
    assert non_image_reason(ds) == f"non-image object ({kind})"


def test_every_image_storage_sop_class_is_an_image():
    image_classes = [uid for uid, (name, kind, *_) in UID_dictionary.items()
                     if kind == "SOP Class" and "Image Storage" in name]
    assert len(image_classes) > 50
    flagged = [pydicom.uid.UID(u).name for u in image_classes
               if non_image_kind(header(SOPClassUID=u, Rows=8, Columns=8)) is not None]
    assert flagged == []
    assert non_image_reason(header(Modality="RTIMAGE", SOPClassUID=pydicom.uid.RTImageStorage, Rows=8, Columns=8)) is None


def test_image_header_without_rows_has_no_pixel_data():
    assert non_image_reason(header(Modality="CT", SOPClassUID=pydicom.uid.CTImageStorage, Rows=16, Columns=16)) is None
    assert non_image_reason(header(Modality="CT", SOPClassUID=pydicom.uid.CTImageStorage)) == "no pixel data"


# -------------------------------------------------------------------------------------------------------- privacy
def identified_header(**elements) -> Dataset:
    return header(PatientName="Smith^Johnathan", PatientID="PID-4711", AccessionNumber="ACC99812",
                  PatientBirthDate="19500112", InstitutionName="St. Elsewhere Clinic",
                  ReferringPhysicianName="House^Gregory", OtherPatientIDs=["OLD-123", "OLDER-456"], **elements)


def test_redact_identifiers_removes_names_ids_dates_case_insensitively():
    ds = identified_header()
    text = ("JOHNATHAN SMITH (pid-4711) acc99812, born 1950-01-12, ref. Gregory House at ST. ELSEWHERE CLINIC; "
            "old ids OLD-123 older-456, smith^johnathan")
    out = redact_identifiers(text, ds)
    for secret in ["johnathan", "smith", "4711", "99812", "1950", "gregory", "house", "elsewhere", "old-123", "456"]:
        assert secret not in out.lower(), (secret, out)
    assert out == "*** (***) ***, born ***, ref. *** at ***; old ids *** ***, ***"  # only the identifiers go


def test_short_identifiers_are_removed_only_as_whole_words():
    ds = header(PatientName="Li^Yu", PatientID="7")
    assert redact_identifiers("T2 7 slices, 17 mm, Li Yu", ds) == f"T2 {REDACTED} slices, 17 mm, {REDACTED}"
    assert redact_identifiers("Linear", ds) == "Linear"  # "Li" (2 chars) is not cut out of words


@pytest.mark.parametrize("elements, text, expected", [
    ({"PatientName": "LI^YU"}, "YU LI chest; Li, Yu; LIYU", "*** chest; ***; ***"),  # both orders, any separator
    ({"PatientName": "Yamada^Tarou=山田^太郎"}, "山田太郎 胸部CT; 山田 様; tarou yamada", "*** 胸部CT; *** 様; ***"),
    ({"PatientBirthDate": "19700102"}, "1970/01/02 02-01-1970 01/02/1970", "*** *** ***"),
    ({"PatientID": "0077654"}, "ID 77654, 0077654", "ID ***, ***"),  # with and without leading zeros
    ({"ConsultingPhysicianName": "Grey^Meredith"}, "seen by Meredith Grey", "seen by ***"),
    ({"PatientName": "RAY^ABD"}, "X-RAY ABDOMEN", "X-*** ABDOMEN"),  # names as whole words, not inside words
    ({"PatientName": "JOHN^DOE"}, "JOHNSON knee", "JOHNSON knee"),
])
def test_redaction_finds_common_spellings(elements, text, expected):
    assert redact_identifiers(text, header(**elements)) == expected


def test_unmapped_free_text_never_carries_the_patient_name(space):
    ds = identified_header(Modality="MR", StudyDescription="Smith Johnathan follow-up PID-4711",
                           SeriesDescription="johnathan SMITH knee")
    found = label_header(ds, space)
    assert (found.labels["anatomy"], found.sources["anatomy"]) == ("knee", "SeriesDescription")
    dumped = json.dumps([found.unmapped, found.ambiguous, found.labels, found.sources]).lower()
    for secret in ["smith", "johnathan", "4711"]:
        assert secret not in dumped
    assert found.unmapped == [("anatomy", "StudyDescription", f"{REDACTED} follow-up {REDACTED}")]  # "Family Given" is one
    values = json.dumps(extract_header_values(ds, header_tags(space))).lower()
    assert "smith" not in values and "johnathan" not in values


def test_redaction_happens_before_labelling(space):
    """A description word or code string equal to a patient-name component is redacted, so it cannot label
    (documented trade-off); another patient's files keep the label."""
    ds = header(PatientName="Head^Peter", StudyDescription="Head CT")
    assert label_header(ds, space).labels["anatomy"] is None
    ds.BodyPartExamined = "HEAD"
    found = label_header(ds, space)
    assert found.labels["anatomy"] is None
    assert ("anatomy", "BodyPartExamined", REDACTED) in found.unmapped
    ds.PatientName = "Roe^Jane"
    assert label_header(ds, space).labels["anatomy"] == "head"


@pytest.mark.parametrize("body_part, expected", [("CHEST", "chest"), ("KNEE", "knee"), ("CSPINE", "spine")])
def test_code_strings_are_redacted_but_still_label(space, body_part, expected):
    """A sender can put anything into a code string: BodyPartExamined "DOEJOHN" (the patient DOE^JOHN) reaches
    neither the unmapped values nor the extracted (cacheable) values; ordinary code strings still label."""
    ds = header(PatientName="DOE^JOHN", PatientID="12345678", Modality="CT", BodyPartExamined="DOEJOHN")
    found = label_header(ds, space)
    assert found.labels == {"modality": "CT", "anatomy": None}
    assert found.unmapped == [("anatomy", "BodyPartExamined", REDACTED)]
    assert extract_header_values(ds, header_tags(space))["BodyPartExamined"] == REDACTED
    ds.BodyPartExamined = "12345678"  # an ID as a code string, and in a coded item
    ds.AnatomicRegionSequence = [Dataset()]
    ds.AnatomicRegionSequence[0].CodingSchemeDesignator = "DOE"
    ds.AnatomicRegionSequence[0].CodeValue = "12345678"
    ds.AnatomicRegionSequence[0].CodeMeaning = "John Doe"
    found = label_header(ds, space)
    dumped = json.dumps([found.unmapped, extract_header_values(ds, header_tags(space))]).lower()
    assert "12345678" not in dumped and "doe" not in dumped and "john" not in dumped, dumped
    ds.BodyPartExamined = body_part
    del ds.AnatomicRegionSequence
    assert label_header(ds, space).labels == {"modality": "CT", "anatomy": expected}


@pytest.mark.parametrize("text, identifiers, expected", [
    ("12345678.zip", ["12345678"], True),
    ("DOE_JOHN_report.pdf", ["DOE^JOHN", "DOE", "JOHN", "DOE JOHN", "JOHN DOE"], True),
    ("JohnDoe notes.txt", ["DOE JOHN", "JOHN DOE"], True),
    ("scan_P12345678x.txt", ["12345678"], True),  # a long ID inside a name
    ("1980-01-01.txt", ["1980-01-01"], True),
    ("johnson.txt", ["JOHN"], False),  # a name only as a whole word
    ("export123.txt", ["123"], False),  # a short value only as a whole word
    ("x/12/notes.txt", ["12"], False),  # below 3 letters/digits: not looked for
    ("readme.txt", ["12345678", "DOE"], False),
])
def test_identifier_digests_match_like_the_pattern(text, identifiers, expected):
    """Keyed digests find identifiers in a text as identifier_pattern does (substring_min 6 as for paths), without the
    values; another key finds nothing."""
    from monai_modan.labels.privacy import identifier_digests, identifier_pattern, match_identifier_digests

    key = b"k" * 32
    digests = identifier_digests(identifiers, key, substring_min=6)
    assert not any(i.lower() in d for i in identifiers for d in digests if len(i) >= 3)
    assert match_identifier_digests(digests, key)(text) is expected
    wanted = [i for i in identifiers if len(i.replace("-", "")) >= 3]
    pattern = identifier_pattern(wanted, substring_min=6)
    assert (pattern is not None and pattern.search(text) is not None) is expected
    if expected:
        assert match_identifier_digests(digests, b"x" * 32)(text) is False
