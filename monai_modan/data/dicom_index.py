"""Index a PACS export: walk a folder of DICOM files, read headers only (in parallel, cached), label every image.

Each readable image file becomes one :class:`~monai_modan.data.records.ImageRecord`; everything else becomes a
:class:`~monai_modan.data.records.SkippedFile` with a short reason category (counted in the report):

============================  ==========================================================================
reason                        when
============================  ==========================================================================
``hidden file``/``folder``    the name starts with ``.`` (``.DS_Store``, partial downloads, this cache's temp files)
``DICOMDIR``                  a DICOMDIR media index (not an image)
``empty file``                0 bytes
``not DICOM``                 no ``DICM`` marker at byte 128 (read with ``force=False``) and the file does not
                              start like a bare data set (a group-0008 tag: old exports without meta header are
                              read with ``force=True``)
``unreadable file``           the OS refuses to open or stat it
``unreadable header``         pydicom fails on the header (the detail holds the error, values quoted out)
``truncated file``            the file is cut short: from right after the ``DICM`` marker to inside its Pixel Data
                              or an element after it (checked from the element lengths, without reading the
                              pixels); the detail reads like the image reader's ``truncated DICOM file (N bytes):
                              where``. Where pydicom stops quietly or fails on a cut value (a group length, a
                              transfer syntax, a tag), a walk of the element structure by the lengths tells the cut
                              from a broken file; a header cut exactly at an element boundary is told only when it
                              stops before a UID every object has (SOP class/instance, study, series)
``non-image object (SR)``     SR, KO, PR, RT objects, waveforms, encapsulated PDF, SEG ... (Modality or SOP class)
``no pixel data``             no Rows/Columns (for an image SOP class the detail adds the reader's hint that the file
                              may be cut at an element boundary before its Pixel Data, with the size)
============================  ==========================================================================

The walk is recursive and sorted; symbolic links to files are read, links to folders are not followed.

Multi-frame policy: a multi-frame file (cine US, Enhanced CT/MR, NM) is ONE record whose ``extra["frames"]`` holds
``NumberOfFrames``; the image reader picks the middle frame by default. One record per file keeps a 300-frame clip
from outweighing 300 single radiographs in a pretraining epoch.

Speed: headers are read with ``stop_before_pixels=True`` and ``specific_tags`` (only the tags the label space uses,
the image geometry and the identifiers needed for redaction), given as tag numbers: pydicom would look every keyword
up again for each file, and tag lookups instead of keyword lookups in the labelling cut the CPU time per header by
about 1.2x (0.63 against 0.76 ms per file in the page cache, measured interleaved, with the wider redaction and its
patterns compiled once per patient). ``specific_tags`` is not there for speed: the values of all other elements are
skipped, not decoded (unused identifying values never exist in memory, odd unrelated values cannot fail a file), and
pydicom seeks past skipped values, so a file cut inside one is seen (the position ends beyond the file). Files are
read by ``workers`` processes (default ``os.cpu_count()``; ``0`` or ``1`` reads in this process) in chunks.

Cache: ``cache=path`` keeps a JSON file (written atomically, for one indexed folder: it records the folder's keyed
hash and is ignored for another) that maps each file's relative path (a keyed hash), size, ``mtime_ns`` and
``ctime_ns`` (an in-place edit with the old mtime put back still changes the ctime) to the header values the
labelling rule needs (never the labels, so a changed vocabulary re-labels without re-reading) and the image
geometry. Text values, code strings included, are redacted before they are cached
(:func:`~monai_modan.labels.privacy.redact_identifiers`), so the cache holds no identifying value; each entry also
holds keyed digests of its file's identifying values (:func:`~monai_modan.labels.privacy.identifier_digests`, never
the values), which the paths of files without a header are checked against. The key is the link folder's secret
``link_dir/.key`` (without ``link_dir`` a hidden ``.<cache name>.key`` beside the cache), so a guessed path or
patient ID cannot be confirmed from the cache alone; a cache of another version or made with another key is
ignored and rebuilt with a note. Re-indexing a grown export reads only new or changed files;
:attr:`DicomIndexResult.files_read` and :attr:`DicomIndexResult.files_cached` (also in ``notes``) say how many.
A cache written for a label space that used fewer tags is refreshed for the image files.

Privacy: exports are often laid out by patient (``<PatientID>/<study>/...``, ``DOE_JOHN/...``), which would put
identifying values into every datalist, report and log that names a file. Each file's path relative to ``root`` is
checked against the file's own identifying values (:func:`path_names_identifier`); such files are counted in
``notes`` and, with ``link_dir`` (the CLI and the pretraining bundle always pass one), listed through pseudonymous
symbolic links ``link_dir/<keyed hash>.dcm`` instead (``readlink`` gives the real path; the links are local to the
machine and should not be shared). Without ``link_dir`` their paths are kept and a warning says so. The header
cache is keyed by a keyed hash of the relative path, so it holds no path at all. Every other file under a folder
named by a patient is linked too (also the files skipped before or while reading, which have no header to check),
and when the indexed folder's own path names a patient every path is linked and the root is withheld from the
result. A skipped file (not DICOM, unreadable, empty ...) is also linked when its path holds an identifier of ANY
header of the export (``12345678.zip``, ``DOE_JOHN_report.pdf`` beside the patient's folders), checked at the end
against the digests of every entry, cached ones included. Not covered: a folder named after an identifier that no
readable file of the export carries (e.g. another ID scheme); an image file whose path names another patient than
its own header (images are checked against their own identifiers only).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import struct
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from tqdm.auto import tqdm

from ..labels.dicom_labels import (
    extract_header_values,
    header_tags,
    label_values,
    non_image_kind,
    non_image_reason,
)
from ..labels.privacy import (
    IDENTIFYING_TAGS,
    identifier_digests,
    identifier_pattern,
    identifier_strings,
    keyed_digest,
    match_identifier_digests,
)
from ..labels.vocabulary import LabelSpace
from ..utils.io import OutputError, atomic_write_json
from .records import ImageRecord, IndexResult, SkippedFile

__all__ = ["DicomIndexError", "DicomIndexResult", "index_dicom_folder", "read_header_entry", "path_names_identifier",
           "CACHE_VERSION"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = "monai-modan/dicom-header-cache"
CACHE_VERSION = 5  # 2: keys are hashes of the relative paths, entries flag identifying paths; 3: wider redaction,
# the indexed root's hash, ctime in the freshness check, entries flag a root that names the patient; 4: keys and the
# root's hash keyed with the link folder's secret, code strings redacted, entries hold keyed identifier digests;
# 5: files cut short are told by a walk of their element structure (were 'no pixel data' or 'unreadable header')
_PATH_SUBSTRING_MIN = 6  # path checks: values with digits of >= 6 letters/digits are found inside a longer name
_PATH_MIN_LENGTH = 3  # path checks: values under 3 letters/digits are not looked for
_GEOMETRY_TAGS = ("Modality", "SOPClassUID", "Rows", "Columns", "NumberOfFrames", "PhotometricInterpretation",
                  "SharedFunctionalGroupsSequence")
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}  # Pixel Data, Float, Double Float
# (0008,xxxx) little / big endian, or (0002,xxxx): a file meta header written without the 128-byte preamble
_BARE_DATASET_STARTS = (b"\x08\x00", b"\x00\x08", b"\x02\x00")
_UNDEFINED = 0xFFFFFFFF
_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits (any script)
_LONG_LENGTH_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_DICM_END = 132  # the 128-byte preamble and the "DICM" marker
_ITEM, _ITEM_END, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_MAX_NESTING = 32  # sequences in sequences the structure walk follows


class DicomIndexError(ValueError):
    """The folder cannot be indexed at all (missing, not a folder, no files); the message names the folder."""


@dataclass
class DicomIndexResult(IndexResult):
    """:class:`IndexResult` plus how many headers were read from disk and how many came from the cache."""

    files_read: int = 0
    files_cached: int = 0


# ------------------------------------------------------------------------------------------------ reading one file
@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's validation warnings and log lines while reading: they quote raw values (UIDs, names)."""
    settings = pydicom.config.settings
    pydicom_logger = logging.getLogger("pydicom")
    mode, disabled = settings.reading_validation_mode, pydicom_logger.disabled
    settings.reading_validation_mode, pydicom_logger.disabled = pydicom.config.IGNORE, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode, pydicom_logger.disabled = mode, disabled


def _scrub(error: BaseException) -> str:
    """Exception text with every quoted value replaced, so a message cannot carry a header value."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", str(error))
    return f"{type(error).__name__}: {text}"[:300]


def _transfer_syntax(ds: pydicom.Dataset) -> pydicom.uid.UID | None:
    """The file's transfer syntax; for a file without meta header, the encoding pydicom found."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None:
        syntax = {(True, True): pydicom.uid.ImplicitVRLittleEndian, (False, True): pydicom.uid.ExplicitVRLittleEndian,
                  (False, False): pydicom.uid.ExplicitVRBigEndian}.get(getattr(ds, "original_encoding", None))
    return syntax


class _Cut(Exception):
    """The element structure runs past the end of the file; the message says where. ``in_tag``: only the 8-byte
    tag/VR/length header of a last element is cut (pydicom stops there quietly)."""

    def __init__(self, message: str, in_tag: bool = False) -> None:
        super().__init__(message)
        self.in_tag = in_tag


class _Lost(Exception):
    """The bytes do not parse as data elements: the structure walk gives no verdict."""


def _what(group: int, element: int) -> str:
    return "its Pixel Data" if (group, element) in _PIXEL_TAGS else f"element ({group:04X},{element:04X})"


def _hop_items(fp: BinaryIO, size: int, implicit: bool, little: bool, what: str, depth: int) -> None:
    """Hop over the items of an undefined-length element (a sequence, encapsulated Pixel Data) to its delimiter."""
    endian = "<" if little else ">"
    while True:
        head = fp.read(8)
        if len(head) < 8:
            raise _Cut(f"the file ends inside {what}, before the end of its items")
        group, element, length = struct.unpack(endian + "HHL", head)
        if (group, element) == _SEQUENCE_END:
            return
        if (group, element) != _ITEM:
            raise _Lost
        if length == _UNDEFINED:
            _hop_elements(fp, size, implicit, little, depth=depth + 1, inside=what)
        elif fp.tell() + length > size:
            raise _Cut(f"the file ends inside {what}: {fp.tell() + length - size} bytes are missing")
        else:
            fp.seek(length, os.SEEK_CUR)


def _hop_elements(fp: BinaryIO, size: int, implicit: bool, little: bool, *, depth: int = 0, inside: str = "",
                  after: str = "") -> int | None:
    """Hop over data elements from ``fp`` by their lengths (values are skipped, never read) to the end of the file,
    or -- ``inside`` an undefined-length item -- to the item's delimiter; the last element's tag (``None``: none).
    Raises :class:`_Cut` where the file ends inside an element (``after``: what the first element follows, for the
    message), :class:`_Lost` when the bytes do not parse as elements."""
    if depth > _MAX_NESTING:
        raise _Lost
    endian = "<" if little else ">"
    last = None
    while True:
        if fp.tell() >= size:
            if inside:
                raise _Cut(f"the file ends inside {inside}, before the end of its items")
            return last
        head = fp.read(8)
        if len(head) < 8:
            where = inside or f"the header of the element that follows {after or 'the file meta header'}"
            raise _Cut(f"the file ends inside {where}", in_tag=not inside)
        group, element = struct.unpack(endian + "HH", head[:4])
        if inside and (group, element) == _ITEM_END:
            return last
        what, vr = _what(group, element), head[4:6]
        item_implicit, item_little = implicit, little
        if implicit or group == 0xFFFE:  # items and delimiters have no VR
            (length,) = struct.unpack(endian + "L", head[4:8])
        elif not (vr.isalpha() and vr.isupper()):
            raise _Lost
        elif vr in _LONG_LENGTH_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                raise _Cut(f"the file ends inside the header of {what}")
            (length,) = struct.unpack(endian + "L", extra)
            if vr == b"UN":  # an undefined-length UN holds implicit little-endian items
                item_implicit, item_little = True, True
        else:
            (length,) = struct.unpack(endian + "H", head[6:8])
        if length == _UNDEFINED:
            _hop_items(fp, size, item_implicit, item_little, what, depth)
        elif fp.tell() + length > size:
            raise _Cut(f"the file ends inside {what}: {fp.tell() + length - size} of its {length} bytes are missing")
        else:
            fp.seek(length, os.SEEK_CUR)
        after, last = what, group << 16 | element


def _hop_meta(fp: BinaryIO, size: int) -> str | None:
    """Hop over the file meta header (explicit VR little endian, group 0002) from ``fp``; its Transfer Syntax UID."""
    start, meta_end = fp.tell(), size + 1
    head = fp.read(12)
    if head[:6] == b"\x02\x00\x00\x00UL" and len(head) == 12:  # the group length says where the meta header ends
        meta_end = start + 12 + struct.unpack("<L", head[8:12])[0]
        if meta_end > size:
            raise _Cut(f"the file ends inside its file meta header, which needs {meta_end} bytes")
    fp.seek(start)
    syntax = None
    while fp.tell() < size:
        at = fp.tell()
        head = fp.read(8)
        if len(head) < 8:
            raise _Cut("the file ends inside the header of the first element of its data set" if at >= meta_end else
                       "the file ends inside its file meta header")
        group, element = struct.unpack("<HH", head[:4])
        if group != 0x0002:
            fp.seek(-8, os.SEEK_CUR)
            break
        vr = head[4:6]
        if not (vr.isalpha() and vr.isupper()):
            raise _Lost
        if vr in _LONG_LENGTH_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                raise _Cut("the file ends inside its file meta header")
            (length,) = struct.unpack("<L", extra)
        else:
            (length,) = struct.unpack("<H", head[6:8])
        if length == _UNDEFINED:
            raise _Lost
        if fp.tell() + length > size:
            raise _Cut(f"the file ends inside its file meta header: {fp.tell() + length - size} bytes are missing")
        if element == 0x0010:
            syntax = fp.read(length).rstrip(b"\0 ").decode("ascii", "replace")
        else:
            fp.seek(length, os.SEEK_CUR)
    else:  # the file ends with its meta header
        raise _Cut("the file ends right after its file meta header (no data set)" if syntax else
                   "the file ends inside its file meta header (no Transfer Syntax UID)")
    return syntax


def _structure_end(fp: BinaryIO, size: int, encoding: tuple[bool, bool] | None = None) -> tuple[str | None, int | None]:
    """``(problem, last tag)``: where the file is cut short, from a walk of its whole element structure by the
    element lengths (no value is read but the Transfer Syntax UID) -- ``None`` when the structure ends with the file
    or cannot be followed (not DICOM, a deflated data set) -- and the tag of the data set's last element when it
    ends with the file. ``encoding``: ``(implicit VR, little endian)`` of a file without a transfer syntax
    (pydicom's guess); without it, guessed from the first tag. Called only for files pydicom fails on or finds no
    image in (one small read per element)."""
    try:
        fp.seek(0)
        first = fp.read(_DICM_END)
        if first[128:132] == b"DICM" or first[:2] == b"\x02\x00":
            if size == _DICM_END:
                return "the file ends right after the 128-byte preamble and the 'DICM' marker", None
            fp.seek(_DICM_END if first[128:132] == b"DICM" else 0)
            syntax = _hop_meta(fp, size)
        else:
            fp.seek(0)
            syntax = None
        if syntax:
            uid = pydicom.uid.UID(syntax)
            if not uid.is_transfer_syntax or uid.is_deflated:
                return None, None  # an unknown encoding, or deflated offsets that are not file offsets
            implicit, little = uid.is_implicit_VR, uid.is_little_endian
        elif encoding is not None:
            implicit, little = encoding
        else:  # a group number reads smaller in its own byte order; explicit VRs are two capitals
            start = fp.tell()
            tag = fp.read(6)
            fp.seek(start)
            if len(tag) < 6:
                return None, None
            little = struct.unpack("<H", tag[:2])[0] <= struct.unpack(">H", tag[:2])[0]
            implicit = not (tag[4:6].isalpha() and tag[4:6].isupper())
        return None, _hop_elements(fp, size, implicit, little)
    except _Cut as cut:
        return str(cut), None
    except (_Lost, ValueError, OSError, struct.error):
        return None, None


# the type-1 UIDs of every DICOM object (SOP Common, General Study and General Series modules), in tag order
_EVERY_OBJECT_HAS = ((0x00080016, "SOP Class UID"), (0x00080018, "SOP Instance UID"),
                     (0x0020000D, "Study Instance UID"), (0x0020000E, "Series Instance UID"))


def _incomplete_header(last: int | None) -> str | None:
    """Why a data set whose structure ends with the file, at its element ``last``, is not a whole DICOM object: it
    stops before a UID that every object has, so the file was cut at an element boundary (elements are stored in
    tag order; a file that merely lacks one has later elements). ``None`` otherwise."""
    missing = next((name for tag, name in _EVERY_OBJECT_HAS if last is not None and last < tag), None)
    if missing is None:
        return None
    return f"the data set ends before its {missing}, which every DICOM object has (cut at an element boundary)"


def _truncation(fp: BinaryIO, ds: pydicom.Dataset, size: int) -> str | None:
    """Where the file is cut short, checked from element lengths only (no pixel bytes are read); ``None`` if complete.

    ``fp`` stands where ``dcmread(..., stop_before_pixels=True, specific_tags=...)`` left it: at the Pixel Data tag,
    at the end of the file, or past it when pydicom skipped an unrequested element that the file cuts short. A
    deflated transfer syntax cannot be checked cheaply and passes. The elements after a whole Pixel Data (padding,
    signatures) are hopped over too: the image reader refuses a file cut inside one of them.
    """
    syntax = _transfer_syntax(ds)
    if syntax is not None and syntax.is_deflated:
        return None
    start = fp.tell()
    if start > size or any(
        isinstance(e, RawDataElement) and e.length != _UNDEFINED and e.value_tell + e.length > size
        for e in ds.elements()
    ):
        problem, _ = _structure_end(fp, size, getattr(ds, "original_encoding", None))
        return problem or "the file ends inside its header"
    head = fp.read(8)
    if len(head) < 8:  # no Pixel Data element: fine for a header-only object, not for an image header
        return "the file ends before its Pixel Data" if ds.get("Rows") and ds.get("Columns") else None
    implicit, little = getattr(ds, "original_encoding", None) or (syntax.is_implicit_VR, syntax.is_little_endian)
    endian = "<" if little else ">"
    if struct.unpack(endian + "HH", head[:4]) not in _PIXEL_TAGS:
        return None  # pydicom stopped elsewhere; nothing to check
    vr = head[4:6]
    if implicit or not (vr.isalpha() and vr.isupper()):
        (length,), header = struct.unpack(endian + "L", head[4:8]), 8
    elif vr in _LONG_LENGTH_VRS:
        extra = fp.read(4)
        if len(extra) < 4:
            return "the file ends inside the header of its Pixel Data"
        (length,), header = struct.unpack(endian + "L", extra), 12
    else:
        (length,), header = struct.unpack(endian + "H", head[6:8]), 8
    if length != _UNDEFINED:
        missing = start + header + length - size
        if missing > 0:
            return f"the file ends inside its Pixel Data: {missing} of its {length} bytes are missing"
        fp.seek(start + header + length)
    else:  # encapsulated: hop over the fragment items (8-byte headers) to the sequence delimiter
        while True:
            item = fp.read(8)
            if len(item) < 8:
                return "the file ends inside its encapsulated Pixel Data"
            group, element, item_length = struct.unpack("<HHL", item)
            if (group, element) == _SEQUENCE_END:
                break
            if (group, element) != _ITEM:
                return f"unexpected tag ({group:04X},{element:04X}) inside the encapsulated Pixel Data"
            if fp.tell() + item_length > size:
                return "the file ends inside its encapsulated Pixel Data"
            fp.seek(item_length, os.SEEK_CUR)
    try:  # what follows the pixels: usually nothing, or a few elements
        _hop_elements(fp, size, implicit, little, after="its Pixel Data")
    except _Cut as cut:
        return None if cut.in_tag else str(cut)  # a cut tag after the pixels: pydicom (and the reader) stop there
    except (_Lost, struct.error):
        return None
    return None


def _truncated(size: int, problem: str) -> dict[str, str]:
    """A truncated file's entry, worded as the image reader words it."""
    return {"skip": "truncated file", "detail": f"truncated DICOM file ({size} bytes): {problem}"}


def path_names_identifier(rel: str, identifiers: Sequence[str]) -> bool:
    """Whether the path ``rel`` contains one of ``identifiers`` (a file's own identifying values,
    :func:`~monai_modan.labels.privacy.identifier_strings`), case-insensitively, as
    :func:`~monai_modan.labels.privacy.identifier_pattern` matches text: token by token with any separators
    (``DOE_JOHN/``, ``JohnDoe/``, ``Doe, John/`` for ``DOE^JOHN``; ``77654033/``), and -- for values with digits or
    non-Latin letters of >= 6 letters/digits (IDs, accession numbers, dates) -- also inside a longer name
    (``P77654033_CT``). Values under 3 letters/digits are ignored here (a study ID ``4`` is no reason to hide
    ``series 4/``)."""
    pattern = identifier_pattern([i for i in identifiers if len("".join(_WORD.findall(str(i)))) >= _PATH_MIN_LENGTH],
                                 substring_min=_PATH_SUBSTRING_MIN)
    return pattern is not None and pattern.search(rel) is not None


@lru_cache(maxsize=8)
def _wanted_tags(tags: tuple[str, ...]) -> list[int]:
    """The tags a header read keeps: ``tags``, the geometry and the identifiers, as numbers (pydicom would look each
    keyword up again for every file)."""
    return [tag_for_keyword(k) for k in dict.fromkeys([*tags, *_GEOMETRY_TAGS, *IDENTIFYING_TAGS])]


def _entry(fp: BinaryIO, tags: Sequence[str], rel: str | None = None, root: str | None = None,
           id_key: bytes | None = None) -> dict[str, Any]:
    size = os.fstat(fp.fileno()).st_size
    wanted = _wanted_tags(tuple(tags))
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=wanted)
    except InvalidDicomError:
        # old exports hold bare data sets without preamble/meta header; they start with a group-0008 tag
        fp.seek(0)
        start = fp.read(_DICM_END)
        if start[:2] not in _BARE_DATASET_STARTS:
            if len(start) > 128 and b"DICM".startswith(start[128:]):
                return _truncated(size, "the file ends inside the 'DICM' marker after the 128-byte preamble")
            return {"skip": "not DICOM", "detail": "no 'DICM' marker after the 128-byte preamble, no bare data set"}
        fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=wanted, force=True)
    problem = _truncation(fp, ds, size)  # first: it needs the elements still raw (unconverted)
    identifiers = identifier_strings(ds)  # once, for the redaction of values and the check of the path
    entry = _truncated(size, problem) if problem else _describe(ds, tags, identifiers, size)
    if "skip" in entry and not problem:
        # no image in a header pydicom read without complaint: a whole non-image object, or a file cut short
        # (pydicom stops quietly at the end of the file, also inside an element's tag or a sequence); an image
        # header without Rows/Columns may also be cut at an element boundary before its study/series UIDs
        problem, last = _structure_end(fp, size, getattr(ds, "original_encoding", None))
        if problem is None and entry["skip"] == "no pixel data":
            problem = _incomplete_header(last)
        if problem:
            entry = _truncated(size, problem)
    if id_key is not None and (digests := identifier_digests(identifiers, id_key, substring_min=_PATH_SUBSTRING_MIN,
                                                             min_length=_PATH_MIN_LENGTH)):
        entry["ids"] = digests  # keyed digests only: the paths of files without a header are checked against them
    if rel is not None and path_names_identifier(rel, identifiers):
        entry["path_identifies"] = True  # a flag only: the value itself is never stored
        folders = rel.split("/")[:-1]
        depth = next((d for d in range(1, len(folders) + 1)
                      if path_names_identifier("/".join(folders[:d]), identifiers)), None)
        if depth is not None:  # the shallowest folder named by the patient: its other files are hidden too
            entry["named_folder_depth"] = depth
    # the indexed folder itself: only whole names and values with digits count, a lone name part such as "Test"
    # of "Test^Phantom" in ".../test_run/" is too common a word to withhold a root for
    strong = [i for i in identifiers if len(_WORD.findall(i)) >= 2 or any(c.isdigit() for c in i)]
    if root is not None and path_names_identifier(root, strong):
        entry["root_identifies"] = True
    return entry


def _describe(ds: pydicom.Dataset, tags: Sequence[str], identifiers: Sequence[str], size: int) -> dict[str, Any]:
    kind = non_image_kind(ds)
    if kind is not None:
        return {"skip": f"non-image object ({kind})", "detail": f"Modality/SOP class says {kind}"}
    if non_image_reason(ds) is not None:
        sop = ds.get("SOPClassUID")
        name = pydicom.uid.UID(str(sop)).name if sop else ""
        # a whole file and one cut at an element boundary before Rows look the same: the reader's hint
        hint = (f" although it is a {name} object (truncated before its Pixel Data? {size} bytes)"
                if "Image Storage" in name else "")
        return {"skip": "no pixel data", "detail": f"no Rows/Columns in the header{hint}"}
    try:
        frames = max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        frames = 1
    syntax = _transfer_syntax(ds)
    return {
        "values": extract_header_values(ds, tags, identifiers),
        "image": {
            "frames": frames,
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "photometric": str(ds.get("PhotometricInterpretation", "")).strip(),
            "transfer_syntax": syntax.name if syntax is not None else "",
        },
    }


def read_header_entry(path: str | Path, tags: Sequence[str], rel: str | None = None,
                      root: str | None = None, id_key: bytes | None = None) -> dict[str, Any]:
    """Read one file's header (no pixels) into a JSON-able cache entry; never raises for a bad file.

    Returns ``{"values": {tag: redacted value}, "image": {"frames", "rows", "columns", "photometric",
    "transfer_syntax"}}`` for an image, or ``{"skip": reason, "detail": text}``; with ``rel`` (the path relative to
    the indexed folder) also ``"path_identifies": True`` when :func:`path_names_identifier` finds one of the file's
    identifying values in it; with ``root`` (the indexed folder) also ``"root_identifies": True`` when that
    folder's path holds one; with ``id_key`` also ``"ids"``, keyed digests of the identifying values
    (:func:`~monai_modan.labels.privacy.identifier_digests`; never the values).
    """
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below; open errors are told apart from parser errors
    except OSError as e:
        return {"skip": "unreadable file", "detail": e.strerror or _scrub(e)}
    with fp, _quiet_pydicom():
        try:
            return _entry(fp, tags, rel, root, id_key)
        except Exception as e:  # noqa: BLE001 - any parser failure of one file is counted, never fatal
            # pydicom fails on a value the end of the file cuts short (a group length, a transfer syntax UID, a
            # tag): the element structure tells a truncated file from a broken one
            size = os.fstat(fp.fileno()).st_size
            problem, _ = _structure_end(fp, size)
            return _truncated(size, problem) if problem else {"skip": "unreadable header", "detail": _scrub(e)}


# ------------------------------------------------------------------------------------------------------- the walk
def _walk(root: Path, exclude: set[Path]) -> tuple[list[tuple[str, int, int, int]], list[SkippedFile]]:
    """``[(relative posix path, size, mtime_ns, ctime_ns)]`` of candidate files (sorted) and the files skipped on
    sight; ``exclude``: files and folders (absolute, resolved) not to walk, e.g. this index's own cache and links."""
    found: list[tuple[str, int, int, int]] = []
    skipped: list[SkippedFile] = []

    def on_error(e: OSError) -> None:
        skipped.append(SkippedFile(str(e.filename), "unreadable folder", e.strerror or str(e)))

    for folder, dirs, files in os.walk(root, onerror=on_error):
        for d in sorted(d for d in dirs if d.startswith(".")):
            skipped.append(SkippedFile(os.path.join(folder, d), "hidden folder", "names starting with '.' are skipped"))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(folder) / d not in exclude)
        for name in sorted(files):
            path = Path(folder) / name
            if path in exclude:
                continue
            if name.startswith("."):
                skipped.append(SkippedFile(str(path), "hidden file", "names starting with '.' are skipped"))
                continue
            if name.upper() == "DICOMDIR":
                skipped.append(SkippedFile(str(path), "DICOMDIR", "a media index, not an image"))
                continue
            try:
                st = path.stat()
            except OSError as e:
                skipped.append(SkippedFile(str(path), "unreadable file", e.strerror or str(e)))
                continue
            if st.st_size == 0:
                skipped.append(SkippedFile(str(path), "empty file", "0 bytes"))
                continue
            found.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    found.sort()
    return found, skipped


# ----------------------------------------------------------------------------------------------- the secret key
_LINK_KEY = ".key"


def _make_secret(path: Path) -> bytes:
    """The 32 random bytes in ``path`` (made once, owner-only; several processes may race to make it)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # another process may be making it too
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def _link_key(link_dir: Path) -> bytes:
    """The link folder's secret (32 random bytes in ``link_dir/.key``, made once, owner-only): link names are keyed
    hashes of the target paths, so holding a datalist and a list of candidate paths (``/pacs/<guessed ID>/...``) is
    not enough to confirm which patient a link stands for. The header cache's keys use it too."""
    return _make_secret(link_dir / _LINK_KEY)


def _secret_path(cache: Path | None, link_dir: Path | None) -> Path | None:
    """Where this index keeps its secret: the link folder's ``.key``; without a link folder a hidden
    ``.<cache name>.key`` beside the cache; ``None`` (a key for this run only) without either."""
    if link_dir is not None:
        return link_dir / _LINK_KEY
    return cache.with_name(f".{cache.name}.key") if cache is not None else None


def _index_secret(cache: Path | None, link_dir: Path | None, notes: list[str]) -> tuple[bytes, bool]:
    """``(key, kept)``: the secret of :func:`_secret_path`, or a key for this run only (``kept`` False: the cache
    cannot be used with it) when there is no place for one or it cannot be made (with a note)."""
    path = _secret_path(cache, link_dir)
    if path is not None:
        try:
            key = _make_secret(path)
            if len(key) >= 16:
                return key, True
            notes.append(f"key file {path} is damaged (delete it to make a new one); the header cache is not used")
        except OSError as e:
            notes.append(f"cannot make the key file {path} ({e.strerror or e}); the header cache is not used")
    return secrets.token_bytes(32), False


# ------------------------------------------------------------------------------------------------------ the cache
def _root_key(root: Path, key: bytes) -> str:
    """The indexed folder's keyed hash (a guessed folder ``/pacs/DOE_JOHN`` cannot be confirmed from the cache)."""
    return hmac.new(key, str(root).encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:32]


def _key_id(key: bytes) -> str:
    """Tells which key a cache was made with (without giving the key away)."""
    return keyed_digest(key, CACHE_FORMAT)


def _cache_key(rel: str, key: bytes) -> str:
    """The header cache's key of a file: a keyed hash (HMAC-SHA-256 with the index's secret) of its relative path,
    so the cache holds no path, and a guessed path (``12345678/1.dcm``) cannot be confirmed from it."""
    return hmac.new(key, rel.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:32]


def _usable_entry(entry: Any) -> bool:
    """A cache entry of the expected shape (a damaged or hand-edited cache must not crash the run)."""
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), int) for k in ("size", "mtime_ns", "ctime_ns")):
        return False
    ids = entry.get("ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return False
    if "skip" in entry:
        return isinstance(entry["skip"], str)
    image = entry.get("image")
    return isinstance(entry.get("values"), dict) and isinstance(image, dict) and all(
        k in image for k in ("frames", "rows", "columns", "photometric", "transfer_syntax"))


def _load_cache(path: Path | None, tags: Sequence[str], root: Path, key: bytes, notes: list[str]) -> dict[str, dict]:
    """Cached entries usable with ``tags`` for ``root``; an unreadable or foreign cache, one of another version, one
    made with another key or for another folder is ignored (and rewritten) with a note; damaged entries are read
    again."""
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != CACHE_FORMAT or data.get("version") != CACHE_VERSION:
            raise ValueError(f"not a version-{CACHE_VERSION} {CACHE_FORMAT} file")
        files = data["files"]
        cached_tags = set(data["tags"])
        if data.get("key") != _key_id(key):
            raise ValueError("it was made with another key (the link folder or its .key changed)")
        if data.get("root") != _root_key(root, key):
            raise ValueError("it was made for another folder")
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        notes.append(f"cache {path} ignored and rebuilt ({type(e).__name__}: {e})")
        return {}
    files = {k: entry for k, entry in files.items() if _usable_entry(entry)}
    if not set(tags) <= cached_tags:  # the label space reads tags the cache lacks: image entries must be re-read
        notes.append(f"cache {path}: the label space reads new tags {sorted(set(tags) - cached_tags)}; images re-read")
        files = {k: e for k, e in files.items() if "values" not in e}
    return files


def _save_cache(path: Path, tags: Sequence[str], root: Path, key: bytes, entries: dict[str, dict],
                notes: list[str]) -> None:
    try:
        atomic_write_json(path, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "tags": sorted(tags),
                                 "key": _key_id(key), "root": _root_key(root, key), "files": entries}, indent=None)
    except OutputError as e:  # the index itself is fine; losing it for a cache problem would be worse
        notes.append(f"cache not written: {e}")
        logger.warning("DICOM header cache not written: %s", e)


# --------------------------------------------------------------------------------------------------- the indexer
def _read_entry(path: str, rel: str, tags: tuple[str, ...], root: str, id_key: bytes) -> dict:
    return read_header_entry(path, tags, rel, root, id_key=id_key)


def _read_all(root: Path, rels: list[str], tags: tuple[str, ...], workers: int, progress: bool,
              id_key: bytes) -> list[dict]:
    read = partial(_read_entry, tags=tags, root=str(root), id_key=id_key)
    paths = [str(root / rel) for rel in rels]
    with tqdm(total=len(paths), disable=not progress, desc="reading DICOM headers", unit="file") as bar:
        if workers <= 1:
            out = []
            for p, rel in zip(paths, rels):
                out.append(read(p, rel))
                bar.update()
            return out
        chunk = max(1, min(64, len(paths) // (4 * workers)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            out = []
            for entry in pool.map(read, paths, rels, chunksize=chunk):
                out.append(entry)
                bar.update()
            return out


def _shown_root(root: Path, identifies: bool) -> str:
    """The indexed folder as outputs and logs may show it."""
    return "(withheld: the indexed folder's path names a patient)" if identifies else str(root)


def _pseudonymous_link(link_dir: Path, target: Path) -> Path:
    """``link_dir/<keyed hash of target>.dcm`` -> ``target`` (created or replaced atomically; reused when it points
    there)."""
    try:
        key = _link_key(link_dir)
    except OSError as e:
        raise DicomIndexError(f"cannot write the link folder {link_dir} ({e.strerror or e}): a file path holds an "
                              "identifying value of a DICOM header and may not be written as it is") from None
    digest = hmac.new(key, str(target).encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:24]
    link = link_dir / f"{digest}.dcm"
    if link.is_symlink() and os.readlink(link) == str(target):
        return link
    tmp = link_dir / f".{link.name}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as e:
        raise DicomIndexError(f"cannot write the pseudonymous link {link} ({e.strerror or e}): a file path holds an "
                              "identifying value of a DICOM header and may not be written as it is") from None
    return link


def index_dicom_folder(
    root: str | Path,
    space: LabelSpace,
    *,
    workers: int | None = None,
    cache: str | Path | None = None,
    link_dir: str | Path | None = None,
    exclude: Sequence[str | Path] = (),
    progress: bool = True,
) -> DicomIndexResult:
    """Index every DICOM file under ``root`` (recursively, with or without ``.dcm``) with labels from ``space``.

    Args:
        root: the export folder.
        space: label space; every group is labelled from its ``dicom_tags``/``free_text_tags``.
        workers: reader processes; ``None`` = ``os.cpu_count()``, ``0``/``1`` = read in this process.
        cache: optional JSON file of header values (see the module docstring); created or refreshed.
        link_dir: folder for pseudonymous links to files whose path holds one of their identifying values (see the
            module docstring) and home of the secret ``.key`` that also keys the header cache; created when a link
            or, with ``cache``, the key is needed. ``None`` keeps such paths and warns (the cache's key is then a
            hidden ``.<cache name>.key`` beside the cache).
        exclude: further files or folders not to index (the caller's own outputs, e.g. a datalist and its report
            written into the export); the cache and ``link_dir`` are always excluded.
        progress: show a progress bar (counts only, never names).

    Returns:
        a :class:`DicomIndexResult`: records sorted by path, skipped files with reasons, unmapped values
        (redacted) counted per ``(group, tag)``, and notes (cache use, ambiguous descriptions).

    Raises:
        DicomIndexError: ``root`` is missing, not a folder, or holds no files at all. A folder of only bad files is
            not an error: the result has zero records and the caller decides.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DicomIndexError(f"DICOM folder {root} does not exist")
    if not root.is_dir():
        raise DicomIndexError(f"{root} is not a folder (index_dicom_folder needs the export's top folder)")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0 (0 or 1 = in-process), got {workers}")
    root = root.resolve()
    cache_path = Path(cache).expanduser().resolve() if cache is not None else None
    link_dir = Path(link_dir).expanduser().resolve() if link_dir is not None else None

    secret_path = _secret_path(cache_path, link_dir) if cache_path is not None else None
    own = {Path(p).expanduser().resolve() for p in exclude} | {
        p for p in (cache_path, link_dir, secret_path) if p is not None}
    candidates, skipped = _walk(root, exclude=own)
    if not candidates and not skipped:
        raise DicomIndexError(f"no files found in {root}")

    tags = tuple(header_tags(space))
    result = DicomIndexResult(source="dicom", root=str(root), skipped=skipped)
    # the secret keys the cache (its file keys, the root's hash) and the identifier digests of the entries; without
    # a cache it need not outlive the run
    secret, kept = _index_secret(cache_path, link_dir, result.notes) if cache_path is not None else (
        secrets.token_bytes(32), False)
    if not kept:
        cache_path = None
    cached = _load_cache(cache_path, tags, root, secret, result.notes)
    entries: dict[str, dict] = {}
    todo: list[str] = []
    for rel, *stamp in candidates:
        hit = cached.get(_cache_key(rel, secret))
        # ctime too: an in-place edit restored with `touch -r` / `cp -p` keeps size and mtime, never ctime
        if hit is not None and [hit.get("size"), hit.get("mtime_ns"), hit.get("ctime_ns")] == stamp:
            entries[rel] = hit
        else:
            todo.append(rel)
    n_workers = min((os.cpu_count() or 1) if workers is None else workers, len(todo))
    fresh = _read_all(root, todo, tags, n_workers, progress, secret)
    stat = {rel: stamp for rel, *stamp in candidates}
    for rel, entry in zip(todo, fresh):
        entries[rel] = {"size": stat[rel][0], "mtime_ns": stat[rel][1], "ctime_ns": stat[rel][2], **entry}
    result.files_read, result.files_cached = len(todo), len(candidates) - len(todo)
    result.notes.append(f"DICOM headers: {result.files_read} read, {result.files_cached} from cache")

    ambiguous: dict[tuple[str, str], Counter] = defaultdict(Counter)
    # paths that must not be written as they are: a file's own path naming its patient, every path when the indexed
    # folder itself does, and the files next to such a file (a bad file has no header to check its path against)
    root_identifies = any(e.get("root_identifies") for e in entries.values())
    named = {tuple(rel.split("/")[:e["named_folder_depth"]]) for rel, e in entries.items()
             if isinstance(e.get("named_folder_depth"), int)}

    def hidden(rel: str) -> bool:  # one set lookup per folder level, not one test per named folder
        folders = rel.split("/")[:-1]
        return root_identifies or entries.get(rel, {}).get("path_identifies", False) or any(
            tuple(folders[:depth]) in named for depth in range(1, len(folders) + 1))

    # a skipped file (not DICOM, unreadable, empty ...) has no header of its own to check its path against, but an
    # export names its zips and PDFs after patients the other headers identify (12345678.zip, DOE_JOHN_report.pdf):
    # its path is checked against the identifiers of every header of the export (keyed digests, cached ones too)
    named_by_export = match_identifier_digests({d for e in entries.values() for d in e.get("ids", ())}, secret)

    identifying = 0
    for i, skip in enumerate(result.skipped):  # skipped on sight by the walk (hidden, empty, DICOMDIR ...)
        rel = os.path.relpath(skip.path, root).replace(os.sep, "/")
        if hidden(rel) or named_by_export(rel):
            identifying += 1
            if link_dir is not None:
                result.skipped[i] = SkippedFile(str(_pseudonymous_link(link_dir, root / rel)), skip.reason,
                                                skip.detail)
    for rel, *_ in candidates:
        entry, path = entries[rel], str(root / rel)
        if hidden(rel) or ("skip" in entry and named_by_export(rel)):
            identifying += 1
            if link_dir is not None:
                path = str(_pseudonymous_link(link_dir, root / rel))
        if "skip" in entry:
            result.skipped.append(SkippedFile(path, entry["skip"], entry.get("detail", "")))
            continue
        found = label_values(entry["values"], space)
        for group, tag, value in found.unmapped:
            result.count_unmapped(group, tag, value)
        for group, tag, value, classes in found.ambiguous:
            ambiguous[(group, tag)][f"{value!r} ({', '.join(classes)})"] += 1
        result.records.append(ImageRecord(image=path, labels=found.labels, label_sources=found.sources,
                                          extra={**entry["image"], "source": "dicom"}))
    for (group, tag), counter in sorted(ambiguous.items()):
        examples = "; ".join(f"{v} x{n}" for v, n in counter.most_common(3))
        result.notes.append(f"{group}/{tag}: {sum(counter.values())} ambiguous value(s) left unknown, e.g. {examples}")

    if identifying:
        where = (f"they are listed through pseudonymous links in {link_dir} (readlink gives the real path; keep that "
                 "folder local)" if link_dir is not None else
                 "their paths are written as they are: index with a link folder, or rename the folders, before "
                 "sharing the datalist, its report or logs")
        if root_identifies:
            result.notes.append(f"privacy: the indexed folder's own path names a patient (patient name or ID, birth "
                                f"date ...): it is withheld from the outputs, and all {identifying} file paths: "
                                f"{where}")
        else:
            result.notes.append(f"privacy: {identifying} file path(s) contain an identifying value of their own DICOM "
                                "header (patient name or ID, birth date, accession number ...) or lie in a folder "
                                "named by one, or (skipped files: not DICOM, unreadable ...) of any header of the "
                                f"export; {where}")
        if link_dir is None:
            logger.warning("%d DICOM file path(s) under %s contain identifying header values; see the index notes",
                           identifying, _shown_root(root, root_identifies))
    if root_identifies:
        result.root = _shown_root(root, root_identifies)
    if cache_path is not None:
        _save_cache(cache_path, tags, root, secret, {_cache_key(rel, secret): e for rel, e in entries.items()},
                    result.notes)
    logger.info("indexed %s: %d images, %d skipped, %d headers read, %d cached", _shown_root(root, root_identifies),
                len(result.records), len(result.skipped), result.files_read, result.files_cached)
    return result
