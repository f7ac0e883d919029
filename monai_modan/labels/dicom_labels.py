"""DICOM header -> labels: one generic rule for every group of the label space, plus non-image detection and redaction.

Every group of a :class:`~monai_modan.labels.vocabulary.LabelSpace` declares where its label is read from:

* ``dicom_tags``: exact (normalised) values, tried in order. A sequence tag (``AnatomicRegionSequence``) holds coded
  items: the code (``CodingSchemeDesignator`` + ``CodeValue``, e.g. ``SCT:51185008``; the retired designator ``SNM3``
  is looked up as ``SRT``) is tried first, then the item's ``CodeMeaning`` as text.
* ``free_text_tags``: whole-word search in descriptions (``StudyDescription``, ``SeriesDescription``,
  ``ProtocolName``), tried in order after the exact tags.

The first tag that yields exactly one class wins. A present value that maps to nothing is recorded in
:attr:`HeaderLabels.unmapped` and the search goes on (``BodyPartExamined`` ``EXTREMITY`` is deliberately unmapped, so
``"... distal tibia"`` in the study description decides); a value naming several classes is ambiguous, recorded in
:attr:`HeaderLabels.ambiguous`, and the search goes on too. The default YAML configures ``modality`` as
``dicom_tags: [Modality]`` and ``anatomy`` as ``[AnatomicRegionSequence, BodyPartExamined]`` then the three
descriptions; extra groups (laterality, manufacturer, ...) follow the same rule.

Enhanced multi-frame objects (Enhanced CT/MR/...) keep anatomy and laterality in functional-group macros
(``SharedFunctionalGroupsSequence > FrameAnatomySequence > AnatomicRegionSequence``); a keyword absent from the top
level is looked up there, and the source is still reported by its own keyword.

Privacy: labelling works on :func:`extract_header_values`, where every text value -- any VR but UIDs, numbers,
dates/times and ages; code strings (``CS``: ``BodyPartExamined``, ``Modality`` ...) and the items of coded sequences
(scheme, code value, meaning) included -- has already passed :func:`redact_identifiers`. So nothing this module
returns (``unmapped`` and ``ambiguous`` included) can carry a patient name, ID, birth date, accession number or
institution, even where a sender put one into a code string (``BodyPartExamined`` ``DOEJOHN``). A description word
or code string that happens to equal a patient-name component is redacted too, so it can no longer give a label
(``BodyPartExamined`` ``HEAD`` of the patient ``Head^Peter``): the conservative side of the trade.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from .privacy import (IDENTIFYING_TAGS, REDACTED, _redactor, _safe_get, _tag, identifier_pattern, identifier_strings,
                      redact_identifiers)
from .vocabulary import LabelGroup, LabelSpace

__all__ = [
    "HeaderLabels",
    "IDENTIFYING_TAGS",
    "NON_IMAGE_MODALITIES",
    "REDACTED",
    "extract_header_values",
    "header_tags",
    "identifier_pattern",
    "identifier_strings",
    "label_header",
    "label_values",
    "non_image_kind",
    "non_image_reason",
    "redact_identifiers",
]

# Modality (0008,0060) values of objects that are not images to learn from.
NON_IMAGE_MODALITIES = frozenset({
    "SR", "KO", "PR", "DOC", "REG", "FID", "SEG", "PLAN", "RWV", "SMR", "M3D", "ASMT", "POS",
    "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTSEGANN", "RTRAD",
    "ECG", "HD", "AU", "EPS", "RESP", "EEG", "EMG", "EOG", "BI",  # waveforms
    "AR", "KER", "LEN", "IOL", "SRF", "VA", "OAM", "OPV", "OPM",  # ophthalmic measurements
})

# SOP class names (pydicom's UID dictionary) of non-image objects -> short kind; first match wins. Only names without
# "Image Storage" are matched (so "RT Image Storage" stays an image).
_NON_IMAGE_SOP_CLASSES = tuple((re.compile(p), kind) for p, kind in (
    (r"\bSR\b|Procedure Log|Report", "SR"),
    (r"Key Object Selection", "KO"),
    (r"Presentation State", "PR"),
    (r"Waveform", "waveform"),
    (r"Encapsulated", "DOC"),
    (r"^RT Structure Set", "RTSTRUCT"),
    (r"^RT (Ion )?Plan", "RTPLAN"),
    (r"^RT Dose", "RTDOSE"),
    (r"Record", "RTRECORD"),
    (r"^RT |Radiation", "RT"),
    (r"Registration", "REG"),
    (r"Spatial Fiducials", "FID"),
    (r"Segmentation", "SEG"),
    (r"Raw Data", "raw data"),
    (r"Spectroscopy", "MR spectroscopy"),
    (r"Measurements|Calculations", "measurements"),
    (r"Media Storage Directory", "DICOMDIR"),
    (r"Protocol|Template|Annotation|Palette|Standalone|Tractography|Surface Scan|Stereometric|Real World Value"
     r"|Structured Display|Inventory|Assessment|Print|Commitment|AIT|Quadrupole", ""),  # "" = report the name
))

_CODE_SCHEME_ALIASES = {"SNM3": "SRT"}  # SNOMED 3 items use the same "T-D3000"-style codes as SNOMED-RT
# VRs whose values are not searched for identifiers: UIDs, numbers, dates/times, ages, tags. Code strings (CS) are
# searched: a sender can put anything into BodyPartExamined, and its value reaches the report and the cache.
_TEXT_EXEMPT_VRS = {"UI", "IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "DA", "TM", "DT", "AS", "AT"}

# value of one tag: a string, several strings (multi-valued), or coded items of a sequence
CodeItem = dict[str, str]
HeaderValue = str | list[str] | list[CodeItem]


@dataclass
class HeaderLabels:
    """What :func:`label_header` found.

    Attributes:
        labels: group -> canonical class, ``None`` when unknown.
        sources: group -> keyword of the tag that gave the label (``"Modality"``, ``"AnatomicRegionSequence"``,
            ``"BodyPartExamined"``, ``"StudyDescription"`` ...), ``None`` when unknown.
        unmapped: ``(group, tag, value)`` for present values that matched no class (redacted text).
        ambiguous: ``(group, tag, value, classes)`` for values naming several classes (redacted text).
    """

    labels: dict[str, str | None]
    sources: dict[str, str | None]
    unmapped: list[tuple[str, str, str]] = field(default_factory=list)
    ambiguous: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- header extraction
def header_tags(space: LabelSpace) -> list[str]:
    """DICOM keywords a label space reads (every group's ``dicom_tags`` then ``free_text_tags``, deduplicated)."""
    return list(dict.fromkeys(t for g in space.groups for t in [*g.dicom_tags, *g.free_text_tags]))


def _find(ds: Dataset, keyword: str) -> Any:
    """Top-level value of ``keyword``, else its value in the shared functional groups of an enhanced object."""
    value = _safe_get(ds, keyword)
    if value not in (None, ""):
        return value
    shared = _safe_get(ds, "SharedFunctionalGroupsSequence")
    for group_item in shared or []:
        for macro in group_item:
            if macro.VR == "SQ":
                for item in macro.value:
                    nested = _safe_get(item, keyword)
                    if nested not in (None, ""):
                        return nested
    return value


def extract_header_values(ds: Dataset, tags: Sequence[str],
                          identifiers: Sequence[str] | None = None) -> dict[str, HeaderValue]:
    """The (redacted) values of ``tags`` in ``ds``, as plain JSON-able data: the input of :func:`label_values`.

    A plain element gives a string; a multi-valued one a list of strings; a sequence a list of
    ``{"scheme", "code", "meaning"}`` items. Absent or empty tags are left out. Text values (everything but UIDs,
    numbers, dates/times and ages; code strings and every field of a coded item included) pass
    :func:`redact_identifiers`; ``identifiers``: the file's :func:`identifier_strings`, when the caller has them
    already.
    """
    redact = _redactor(ds, identifiers)
    out: dict[str, HeaderValue] = {}
    for keyword in tags:
        value = _find(ds, keyword)
        if value is None:
            continue
        if isinstance(value, pydicom.Sequence):
            items = []
            for item in value:
                code = {
                    "scheme": redact(str(_safe_get(item, "CodingSchemeDesignator") or "").strip()),
                    "code": redact(str(_safe_get(item, "CodeValue") or _safe_get(item, "LongCodeValue")
                                       or _safe_get(item, "URNCodeValue") or "").strip()),
                    "meaning": redact(str(_safe_get(item, "CodeMeaning") or "").strip()),
                }
                if any(code.values()):
                    items.append(code)
            if items:
                out[keyword] = items
            continue
        try:
            tag = _tag(keyword)
            vr = ds[tag].VR if tag in ds else dictionary_VR(tag)
        except (KeyError, TypeError):
            vr = "UN"
        clean = (lambda s: s) if vr in _TEXT_EXEMPT_VRS else redact
        values = [clean(str(v).strip()) for v in (value if isinstance(value, (MultiValue, list, tuple)) else [value])]
        values = [v for v in values if v]
        if len(values) == 1:
            out[keyword] = values[0]
        elif values:
            out[keyword] = values
    return out


# ----------------------------------------------------------------------------------------------------- labelling
def _code_class(group: LabelGroup, item: CodeItem) -> str | None:
    scheme, code = item.get("scheme", ""), item.get("code", "")
    if scheme and code:
        hit = group.canonical_code(scheme, code)
        alias = _CODE_SCHEME_ALIASES.get(scheme.upper())
        if hit is None and alias:
            hit = group.canonical_code(alias, code)
        if hit is not None:
            return hit
    return group.canonical(item.get("meaning"))


def _shown(value: HeaderValue) -> str:
    """Printable (already redacted) form of a value for ``unmapped``/``ambiguous``."""
    if isinstance(value, str):
        return value
    if value and isinstance(value[0], dict):
        return " | ".join(f"{i['scheme']}:{i['code']} {i['meaning']}".strip() for i in value)  # type: ignore[index]
    return "\\".join(value)  # type: ignore[arg-type]


def label_values(values: Mapping[str, HeaderValue], space: LabelSpace) -> HeaderLabels:
    """Apply the labelling rule (module docstring) to values from :func:`extract_header_values` (or a cache)."""
    result = HeaderLabels(labels={g: None for g in space.names}, sources={g: None for g in space.names})
    for group in space.groups:
        steps = [(t, False) for t in group.dicom_tags] + [(t, True) for t in group.free_text_tags]
        for tag, free_text in steps:
            value = values.get(tag)
            if not value:
                continue
            if free_text:
                classes = group.find_in_text(_shown(value))[1]
            elif isinstance(value, str):
                classes = [c] if (c := group.canonical(value)) else []
            else:
                lookup = (lambda v: _code_class(group, v)) if isinstance(value[0], dict) else group.canonical
                found = {lookup(v) for v in value} - {None}
                classes = sorted(found, key=group.classes.index)
            if len(classes) == 1:
                result.labels[group.name], result.sources[group.name] = classes[0], tag
                break
            if classes:
                result.ambiguous.append((group.name, tag, _shown(value), tuple(classes)))
            else:
                result.unmapped.append((group.name, tag, _shown(value)))
    return result


def label_header(ds: Dataset, space: LabelSpace) -> HeaderLabels:
    """Labels of every group of ``space`` from a DICOM header (see the module docstring for the rule).

    Example::

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found = label_header(ds, LabelSpace.default())
        found.labels   # {'modality': 'XR', 'anatomy': 'lower_limb'}
        found.sources  # {'modality': 'Modality', 'anatomy': 'StudyDescription'}
        found.unmapped # [('anatomy', 'BodyPartExamined', 'EXTREMITY')]
    """
    return label_values(extract_header_values(ds, header_tags(space)), space)


# -------------------------------------------------------------------------------------------- non-image detection
def non_image_kind(ds: Dataset) -> str | None:
    """Short kind (``"SR"``, ``"KO"``, ``"RTSTRUCT"``, ``"waveform"`` ...) of a non-image object, else ``None``.

    Decided by Modality (:data:`NON_IMAGE_MODALITIES`), then by the SOP class name in pydicom's UID dictionary.
    """
    modality = str(_safe_get(ds, "Modality") or "").strip().upper()
    if modality in NON_IMAGE_MODALITIES:
        return modality
    sop_class = _safe_get(ds, "SOPClassUID") or _safe_get(getattr(ds, "file_meta", Dataset()), "MediaStorageSOPClassUID")
    if sop_class:
        name = UID(str(sop_class)).name
        if "Image Storage" not in name:
            for pattern, kind in _NON_IMAGE_SOP_CLASSES:
                if pattern.search(name):
                    return kind or name.removesuffix(" Storage")
    return None


def non_image_reason(ds: Dataset) -> str | None:
    """Why ``ds`` is not an image to index (``"non-image object (SR)"``, ``"no pixel data"``), else ``None``."""
    kind = non_image_kind(ds)
    if kind is not None:
        return f"non-image object ({kind})"
    if not _safe_get(ds, "Rows") or not _safe_get(ds, "Columns"):
        return "no pixel data"
    return None
