"""Privacy: the DICOM attributes that identify a patient, and their removal from any text.

One home for what counts as identifying (:data:`IDENTIFYING_TAGS`) and for how it is found in a text (every
spelling of :func:`identifier_strings`, matched by :func:`identifier_pattern`; or, where the values may not be kept,
through keyed digests: :func:`identifier_digests` and :func:`match_identifier_digests`). The labelling rules
(:mod:`~monai_modan.labels.dicom_labels`), the vocabulary check that no identifying tag is a label source
(:mod:`~monai_modan.labels.vocabulary`) and the indexer all read it from here.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cache, lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

__all__ = ["IDENTIFYING_TAGS", "REDACTED", "identifier_digests", "identifier_pattern", "identifier_strings",
           "keyed_digest", "match_identifier_digests", "redact_identifiers"]

REDACTED = "***"

# Values that identify a patient (or narrow one down), removed from every text value before it is used or stored.
IDENTIFYING_TAGS = (
    "PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientID", "OtherPatientIDs",
    "OtherPatientIDsSequence", "IssuerOfPatientID", "PatientBirthDate", "PatientAddress", "PatientTelephoneNumbers",
    "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ConsultingPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord",
    "OperatorsName", "RequestingPhysician", "ResponsiblePerson", "OrderEnteredBy",
)
_ID_TAGS = {"PatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "AccessionNumber"}
_MIN_SUBSTRING = 3  # identifiers shorter than this ("2", "R7") are removed only as whole words, not inside words
_TOKEN = re.compile(r"[^\W_]+")  # runs of letters/digits (any script)
_SEPARATORS = r"[\W_]*"  # what may stand between the tokens of an identifier: "DOE^JOHN" ~ "Doe, John" ~ "DOEJOHN"
_ALONE_BEFORE, _ALONE_AFTER = r"(?<![^\W_])", r"(?![^\W_])"  # no letter/digit touching it

@cache
def _tag(keyword: str) -> int | None:
    return tag_for_keyword(keyword)


@cache
def _vr(keyword: str) -> str:
    return dictionary_VR(keyword)


def _safe_get(ds: Dataset, keyword: str) -> Any:
    """The value of the DICOM keyword in ``ds``, ``None`` when absent or when pydicom cannot convert it (malformed
    element). Looked up by tag number: ``ds.get(keyword)`` resolves the keyword again on every call."""
    tag = _tag(keyword)
    try:
        return ds[tag].value if tag is not None and tag in ds else None
    except Exception:  # noqa: BLE001 - a malformed element must not stop labelling from the other tags
        return None


def identifier_strings(ds: Dataset) -> list[str]:
    """The identifying values of ``ds`` (:data:`IDENTIFYING_TAGS`) as text, with the spellings redaction looks for.

    Person names: the whole value; each component of >= 3 characters (>= 2 for non-Latin scripts, where
    two-character family and given names are common: ``山田``); family and given name together in both orders
    (``"DOE JOHN"`` and ``"JOHN DOE"``, which :func:`identifier_pattern` also matches as ``"Doe, John"`` or
    ``"JohnDoe"``), for each of the alphabetic, ideographic and phonetic groups. Birth date: also as ISO, European,
    US and slashed/dotted/dashed forms. Patient IDs and accession numbers: also without leading zeros.
    """
    found: list[str] = []
    for keyword in IDENTIFYING_TAGS:
        value = _safe_get(ds, keyword)
        if value is None:
            continue
        if keyword == "OtherPatientIDsSequence":
            values = [str(item.get("PatientID", "")) for item in value]
        else:
            values = value if isinstance(value, (MultiValue, list, tuple)) else [value]
        for v in values:
            text = str(v).strip()
            found.append(text)
            if _vr(keyword) == "PN":
                found += _name_forms(text)
            if keyword == "PatientBirthDate" and re.fullmatch(r"\d{8}", text):
                y, m, d = text[:4], text[4:6], text[6:]
                found += [f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}",
                          f"{d}-{m}-{y}", f"{m}/{d}/{y}", f"{m}-{d}-{y}"]
            if keyword in _ID_TAGS and len(text.lstrip("0")) >= _MIN_SUBSTRING:
                found.append(text.lstrip("0"))
    return [s for s in dict.fromkeys(found) if _TOKEN.search(s)]


def _name_forms(text: str) -> list[str]:
    """Spellings of one person name (``Family^Given^Middle^Prefix^Suffix``, groups separated by ``=``)."""
    forms: list[str] = []
    for group in text.split("="):
        parts = [p.strip() for p in group.split("^") if p.strip()]
        forms += [p for p in parts if len(p) >= _MIN_SUBSTRING or (len(p) >= 2 and not p.isascii())]
        if len(parts) >= 2:
            forms += [f"{parts[0]} {parts[1]}", f"{parts[1]} {parts[0]}", " ".join(parts)]
    return forms


def identifier_pattern(identifiers: Sequence[str], substring_min: int = _MIN_SUBSTRING) -> re.Pattern | None:
    """One case-insensitive pattern matching any of ``identifiers`` (:func:`identifier_strings`) in a text.

    An identifier is matched token by token (runs of letters/digits), with any punctuation, spaces or nothing
    between its tokens, so ``DOE^JOHN`` also finds ``"Doe, John"``, ``"DOE_JOHN"`` and ``"DoeJohn"``. Values with
    digits or non-Latin letters (IDs, dates, ``山田``) of at least ``substring_min`` letters/digits are found inside
    words too (``P0077654_CT``, ``山田太郎``); the others only where no letter or digit touches them, so the
    patient ``RAY^ABD`` does not turn ``"ABDOMEN"`` into ``"***OMEN"`` (but ``"X-RAY"`` still loses ``RAY``).
    ``None`` when there is nothing to match.
    """
    return _compiled_pattern(tuple(dict.fromkeys(str(i) for i in identifiers)), substring_min)


@lru_cache(maxsize=512)  # the files of one patient share their identifiers: compile once per patient, not per file
def _compiled_pattern(identifiers: tuple[str, ...], substring_min: int) -> re.Pattern | None:
    alternatives = []
    for identifier in sorted(identifiers, key=len, reverse=True):
        tokens = _TOKEN.findall(str(identifier))
        if not tokens:
            continue
        body = _SEPARATORS.join(re.escape(t) for t in tokens)
        compact = "".join(tokens)
        inside_words = len(compact) >= substring_min and (any(c.isdigit() for c in compact) or not compact.isascii())
        alternatives.append(body if inside_words else f"{_ALONE_BEFORE}{body}{_ALONE_AFTER}")
    return re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None


def _redactor(ds: Dataset, identifiers: Sequence[str] | None = None) -> Callable[[str], str]:
    """A function removing every identifying value of ``ds`` (or the given ``identifier_strings(ds)``) from a text
    (case-insensitive, :func:`identifier_pattern`)."""
    pattern = identifier_pattern(identifier_strings(ds) if identifiers is None else identifiers)
    if pattern is None:
        return lambda text: text
    return lambda text: pattern.sub(REDACTED, text)


def redact_identifiers(text: str, ds: Dataset) -> str:
    """Remove from ``text`` every occurrence of an identifying value of ``ds``, case-insensitively.

    Identifying values are those of :data:`IDENTIFYING_TAGS` in the spellings of :func:`identifier_strings`
    (patient and other person names, their components and both name orders, patient IDs with and without leading
    zeros, birth date in common spellings, accession number, study ID, institution, addresses and telephone
    numbers), matched as :func:`identifier_pattern` describes. Each removal is replaced by ``"***"``.
    """
    return _redactor(ds)(str(text))


# ------------------------------------------------------------------------------------ matching without the values
_MAX_JOINED = 128  # longest run of joined tokens tried as one whole-word identifier


def keyed_digest(key: bytes, text: str) -> str:
    """A keyed one-way digest of ``text`` (BLAKE2b keyed with ``key``, 80 bits as hex): without the key a guessed
    value cannot be confirmed against it."""
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), key=key[:64], digest_size=10).hexdigest()


def _compact(text: str) -> str:
    return "".join(_TOKEN.findall(str(text))).lower()


def identifier_digests(identifiers: Iterable[str], key: bytes, *, substring_min: int = _MIN_SUBSTRING,
                       min_length: int = _MIN_SUBSTRING) -> list[str]:
    """Keyed digests of ``identifiers`` (:func:`identifier_strings`) that :func:`match_identifier_digests` finds in
    a text the way :func:`identifier_pattern` (with the same ``substring_min``) finds the values themselves, so a
    file can be checked later against identifiers that are no longer at hand (a header read in an earlier run)
    without storing them. Each identifier is reduced to its letters/digits, lower-cased (``DOE^JOHN`` ->
    ``doejohn``); values under ``min_length`` letters/digits are left out. ``"w:<digest>"``: matched as a whole word
    (no letter/digit touching it); ``"s<n>:<digest>"``: a value with digits or non-Latin letters of ``n >=
    substring_min`` letters/digits, matched inside words too (the length is kept to find it quickly)."""
    found = set()
    for identifier in identifiers:
        compact = _compact(identifier)
        if len(compact) < min_length:
            continue
        inside = len(compact) >= substring_min and (any(c.isdigit() for c in compact) or not compact.isascii())
        found.add(f"s{len(compact)}:{keyed_digest(key, compact)}" if inside else f"w:{keyed_digest(key, compact)}")
    return sorted(found)


def match_identifier_digests(digests: Iterable[str], key: bytes) -> Callable[[str], bool]:
    """A test whether a text holds one of the identifiers behind ``digests`` (:func:`identifier_digests`, same
    ``key``), case-insensitively, with any separators or none between tokens: every run of consecutive tokens of the
    text is tried as a whole-word identifier, every stretch of its letters/digits of a kept length as one found
    inside words (a little wider than :func:`identifier_pattern`: the separators may fall anywhere)."""
    words: set[str] = set()
    inside: dict[int, set[str]] = defaultdict(set)
    for d in digests:
        kind, _, digest = str(d).partition(":")
        if kind == "w":
            words.add(digest)
        elif kind[:1] == "s" and kind[1:].isdigit():
            inside[int(kind[1:])].add(digest)
    if not words and not inside:
        return lambda text: False

    def matches(text: str) -> bool:
        tokens = [t.lower() for t in _TOKEN.findall(str(text))]
        if words:
            for i in range(len(tokens)):
                joined = ""
                for token in tokens[i:]:
                    joined += token
                    if len(joined) > _MAX_JOINED:
                        break
                    if keyed_digest(key, joined) in words:
                        return True
        compact = "".join(tokens)
        return any(keyed_digest(key, compact[i:i + n]) in wanted
                   for n, wanted in inside.items() for i in range(len(compact) - n + 1))

    return matches
