"""Label space: named groups of canonical classes with synonyms, and the multi-hot encoding built from them.

The multi-hot target of an image is the concatenation of one one-hot block per group (default: ``modality`` then
``anatomy``). A value that maps to no class leaves its block all-zero: unknown is never turned into a class.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from pydicom.datadict import tag_for_keyword

from ..utils.io import parse_yaml_text, read_yaml_file
from .privacy import IDENTIFYING_TAGS

__all__ = ["LabelGroup", "LabelSpace", "VocabularyError", "normalise_text", "DEFAULT_GROUPS"]

DEFAULT_GROUPS = ("modality", "anatomy")
ANY_VALUE = "*"  # synonym meaning "any non-empty value not matched by another class"
_QUOTE_HINT = ("YAML reads bare yes/no/on/off/true/false as booleans, numbers as numbers and an empty value as null; "
               "quote it, e.g. \"NO\"")


class VocabularyError(ValueError):
    """A vocabulary YAML (shipped or user-supplied) is malformed; the message names the file and the entry."""


def normalise_text(value: object) -> str:
    """Upper-case, accent-preserving normal form used for every comparison.

    Separators that DICOM and folder names use interchangeably (``_ - ^ / \\ , . ( ) : ;`` and repeated blanks)
    become one space, so ``"C-Spine"``, ``"C_SPINE"`` and ``"c spine"`` compare equal. ``+`` is kept because it is
    meaningful in folder names such as ``ca++_tendinosis``.
    """
    text = unicodedata.normalize("NFC", str(value)).upper()
    text = re.sub(r"[\s_\-^/\\,.():;]+", " ", text)
    return text.strip()


@dataclass
class LabelGroup:
    """One one-hot block of the target.

    Args:
        name: group name, e.g. ``"anatomy"``.
        classes: canonical class names, in block order.
        synonyms: normalised synonym -> canonical class (each canonical name is its own synonym).
        codes: coded concept (``"SCT:51185008"``) -> canonical class.
        dicom_tags: DICOM keywords read (in order) to label this group from a header.
        free_text_tags: DICOM keywords searched by whole-word match when ``dicom_tags`` give nothing.
        any_value_class: class given to any non-empty value that matches nothing else (``"*"`` synonym).
    """

    name: str
    classes: list[str]
    synonyms: dict[str, str] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    dicom_tags: list[str] = field(default_factory=list)
    free_text_tags: list[str] = field(default_factory=list)
    any_value_class: str | None = None
    _pattern: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, canonical: str) -> int:
        try:
            return self.classes.index(canonical)
        except ValueError:
            raise KeyError(f"{canonical!r} is not a class of group {self.name!r}; classes: {self.classes}") from None

    def canonical(self, value: object) -> str | None:
        """Exact (normalised) match of a whole value, e.g. a BodyPartExamined; ``None`` when unknown."""
        if value is None:
            return None
        key = normalise_text(value)
        if not key:
            return None
        hit = self.synonyms.get(key) or self.synonyms.get(key.replace(" ", ""))
        return hit if hit is not None else self.any_value_class

    def canonical_code(self, scheme: str, code: str) -> str | None:
        """Coded concept lookup, e.g. ``("SCT", "51185008")`` or ``("SRT", "T-D3000")``."""
        return self.codes.get(f"{str(scheme).strip().upper()}:{str(code).strip().upper()}")

    def find_in_text(self, text: object) -> tuple[str | None, list[str]]:
        """Whole-word synonym search in free text (descriptions, protocol names).

        Returns ``(canonical, matched_classes)``. Matches nested inside a longer match are dropped (``"ABDOMEN
        PELVIS"`` is one abdomen match, not abdomen + pelvis); if the remaining matches name more than one class the
        text is ambiguous and ``canonical`` is ``None``. Word boundaries are Unicode-aware, so ``"PÉ"`` does not match
        inside ``"PET"`` and ``"PET"`` does not match inside ``"PETER"``.
        """
        if text is None:
            return None, []
        norm = normalise_text(text)
        if not norm:
            return None, []
        spans = [(m.start(), m.end(), self.synonyms[m.group(1)]) for m in self._text_pattern().finditer(norm)]
        kept = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0]) for o in spans)]
        found = sorted({c for _, _, c in kept}, key=self.classes.index)
        return (found[0] if len(found) == 1 else None), found

    def _text_pattern(self) -> re.Pattern:
        if self._pattern is None:
            # longest first so the regex prefers "ABDOMEN PELVIS" over "ABDOMEN"; lookarounds give Unicode word edges
            alternatives = sorted(self.synonyms, key=len, reverse=True)
            body = "|".join(re.escape(a) for a in alternatives) or r"(?!x)x"
            self._pattern = re.compile(rf"(?<![\w+])({body})(?![\w+])")
        return self._pattern

    def add_class(self, canonical: str, synonyms: Iterable[str] = (), codes: Iterable[str] = (), source: str = "") -> None:
        """Add (or extend) a class.

        Raises:
            VocabularyError: (naming ``source``, the group and the value) a class name that is not text, is blank,
                has blanks around it or holds ``/`` (``group/class`` names a class); a synonym that is not text or is
                blank once normalised (it would match every text); a synonym already owned by another class (it
                would be ambiguous); a code not like ``SCT:51185008``.
        """
        where = f"{source or 'vocabulary'}: group {self.name!r}"
        if not isinstance(canonical, str):
            raise VocabularyError(f"{where}: class name {canonical!r} is not text ({_QUOTE_HINT})")
        if not normalise_text(canonical) or canonical != canonical.strip() or "/" in canonical:
            raise VocabularyError(f"{where}: class name {canonical!r} must be non-empty text without blanks around it "
                                  f"and without '/' (class names are written {self.name}/<class>)")
        synonyms, codes = list(synonyms), list(codes)
        for raw in synonyms:
            if not isinstance(raw, str):
                raise VocabularyError(f"{where}: synonym {raw!r} of class {canonical!r} is not text ({_QUOTE_HINT})")
            if raw.strip() != ANY_VALUE and not normalise_text(raw):
                raise VocabularyError(f"{where}: class {canonical!r} has a blank synonym {raw!r} (nothing is left once "
                                      "separators are dropped; it would match any text); remove it")
        if canonical not in self.classes:
            self.classes.append(canonical)
        for raw in [canonical, *synonyms]:
            if raw.strip() == ANY_VALUE:
                self.any_value_class = canonical
                continue
            key = normalise_text(raw)
            owner = self.synonyms.get(key)
            if owner is not None and owner != canonical:
                raise VocabularyError(
                    f"{source or 'vocabulary'}: synonym {raw!r} of {self.name}/{canonical} already means {self.name}/{owner}"
                )
            self.synonyms[key] = canonical
        for code in codes:
            scheme, sep, value = code.partition(":") if isinstance(code, str) else ("", "", "")
            if not sep or not value:
                raise VocabularyError(f"{source or 'vocabulary'}: code {code!r} of {self.name}/{canonical} must look like 'SCT:51185008'")
            self.codes[f"{scheme.strip().upper()}:{value.strip().upper()}"] = canonical
        self._pattern = None

    def to_dict(self) -> dict:
        by_class: dict[str, dict] = {c: {"synonyms": [], "codes": []} for c in self.classes}
        for syn, c in sorted(self.synonyms.items()):
            by_class[c]["synonyms"].append(syn)
        for code, c in sorted(self.codes.items()):
            by_class[c]["codes"].append(code)
        if self.any_value_class:
            by_class[self.any_value_class]["synonyms"].append(ANY_VALUE)
        return {"dicom_tags": list(self.dicom_tags), "free_text_tags": list(self.free_text_tags), "classes": by_class}


def _read_yaml(path: str | Path | None) -> tuple[dict, str]:
    if path is None:
        source = "monai_modan/resources/vocabulary.yaml"
        text = resources.files("monai_modan.resources").joinpath("vocabulary.yaml").read_text(encoding="utf-8")
        data = parse_yaml_text(text, source, VocabularyError)
    else:
        source = str(path)
        data = read_yaml_file(path, "vocabulary file", VocabularyError)
    if data is None:  # an empty file
        data = {}
    if not isinstance(data, dict):
        raise VocabularyError(f"{source}: top level must be a mapping with 'groups:' and/or 'extra_groups:', "
                              f"not {type(data).__name__}")
    for key in ("groups", "extra_groups"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise VocabularyError(f"{source}: '{key}:' must map group name -> {{classes: ...}}, "
                                  f"not {type(data[key]).__name__}")
    return data, source


def _parse_group(name: str, spec: object, source: str, group: LabelGroup | None = None) -> LabelGroup:
    where = f"{source}: group {name!r}"
    if not isinstance(name, str) or not name.strip() or name != name.strip() or "/" in name:
        raise VocabularyError(f"{where}: a group name must be non-empty text without blanks around it and without "
                              f"'/' (class names are written <group>/<class>)" +
                              ("" if isinstance(name, str) else f"; {_QUOTE_HINT}"))
    if not isinstance(spec, dict):
        raise VocabularyError(f"{where} must be a mapping with 'classes:'")
    unknown_keys = set(spec) - {"classes", "dicom_tags", "free_text_tags", "description"}
    if unknown_keys:
        raise VocabularyError(f"{where} has unknown key(s) {sorted(unknown_keys)}; allowed: classes, dicom_tags, free_text_tags")
    classes = spec.get("classes", {})
    if not isinstance(classes, dict):
        raise VocabularyError(f"{where}: 'classes' must map class name -> {{synonyms: [...], codes: [...]}}")
    if group is None:
        group = LabelGroup(name=name, classes=[])
    for key in ("dicom_tags", "free_text_tags"):
        if key in spec:
            tags = spec[key]
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise VocabularyError(f"{where}: '{key}' must be a list of DICOM keywords")
            _check_keywords(tags, where)
            setattr(group, key, list(tags))
    for cname, cspec in classes.items():
        if cspec is None:
            cspec = {}
        if isinstance(cspec, list):  # shorthand: class: [syn, syn]
            cspec = {"synonyms": cspec}
        if not isinstance(cspec, dict) or set(cspec) - {"synonyms", "codes"}:
            raise VocabularyError(f"{where}: class {cname!r} must be a list of synonyms or a mapping with 'synonyms'/'codes'")
        syns, codes = cspec.get("synonyms", []) or [], cspec.get("codes", []) or []
        if not isinstance(syns, list) or not isinstance(codes, list):
            raise VocabularyError(f"{where}: class {cname!r}: 'synonyms' and 'codes' must be lists")
        group.add_class(cname, syns, codes, source=source)
    if not group.classes:
        raise VocabularyError(f"{where} defines no classes")
    return group


def _check_keywords(tags: Sequence[str], where: str) -> None:
    bad = [t for t in tags if tag_for_keyword(t) is None]
    if bad:
        raise VocabularyError(f"{where}: {bad} are not DICOM keywords (write e.g. 'BodyPartExamined', 'ImageLaterality')")
    identifying = [t for t in tags if t in IDENTIFYING_TAGS]
    if identifying:  # their values would reach the datalist, the report and the cache
        raise VocabularyError(f"{where}: {identifying} identify the patient and cannot be label sources")


class LabelSpace:
    """Ordered label groups and the multi-hot encoding over them.

    ``encode`` maps ``{group: value}`` to a float32 vector of length :attr:`width` (one one-hot block per group,
    all-zero for an unknown value); ``decode`` maps a vector (or a ``[K]`` tensor) back to ``{group: class | None}``.

    Example::

        space = LabelSpace.default()
        y = space.encode({"modality": "CT", "anatomy": "THORAX"})   # THORAX is a synonym of chest
        space.decode(y)  # {'modality': 'CT', 'anatomy': 'chest'}
    """

    def __init__(self, groups: Sequence[LabelGroup]):
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise VocabularyError(f"duplicate group names: {names}")
        if not groups:
            raise VocabularyError("a label space needs at least one group")
        self.groups: list[LabelGroup] = list(groups)

    # construction --------------------------------------------------------------------------------------------
    @classmethod
    def default(cls, extra_groups: Sequence[str] = (), user_yaml: str | Path | Sequence[str | Path] | None = None) -> LabelSpace:
        """Package vocabulary (modality, anatomy), plus optional shipped extra groups, plus user YAML file(s)."""
        data, source = _read_yaml(None)
        groups = [_parse_group(n, s, source) for n, s in data["groups"].items()]
        shipped_extra = data.get("extra_groups", {})
        for name in extra_groups:
            if name not in shipped_extra:
                raise VocabularyError(f"unknown extra group {name!r}; shipped extra groups: {sorted(shipped_extra)}")
            groups.append(_parse_group(name, shipped_extra[name], source))
        space = cls(groups)
        if user_yaml is not None:
            paths = [user_yaml] if isinstance(user_yaml, (str, Path)) else list(user_yaml)
            for p in paths:
                space = space.extended(p)
        return space

    def extended(self, user_yaml: str | Path) -> LabelSpace:
        """A copy extended by a user YAML.

        ``groups:`` may only name existing groups (adds classes or synonyms); ``extra_groups:`` defines new groups and
        must give their ``dicom_tags``. Anything else is a :class:`VocabularyError` naming the file and the entry.
        """
        data, source = _read_yaml(user_yaml)
        unknown_top = set(data) - {"groups", "extra_groups"}
        if unknown_top:
            raise VocabularyError(f"{source}: unknown top-level key(s) {sorted(unknown_top)}; use 'groups:' or 'extra_groups:'")
        space = LabelSpace.from_dict(self.to_dict())
        for name, spec in (data.get("groups") or {}).items():
            if name not in space.names:
                raise VocabularyError(
                    f"{source}: unknown group {name!r} under 'groups:' (known: {space.names}); "
                    "define a new group under 'extra_groups:' with its 'dicom_tags'"
                )
            _parse_group(name, spec, source, group=space[name])
        for name, spec in (data.get("extra_groups") or {}).items():
            if name in space.names:
                raise VocabularyError(f"{source}: extra group {name!r} already exists; extend it under 'groups:'")
            if not isinstance(spec, dict) or not spec.get("dicom_tags"):
                raise VocabularyError(f"{source}: extra group {name!r} needs 'dicom_tags' (the header fields it is read from)")
            space.groups.append(_parse_group(name, spec, source))
        return space

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "label_space") -> LabelSpace:
        """Inverse of :meth:`to_dict` (the form stored in every datalist).

        Raises:
            VocabularyError: (naming ``source`` and the entry) ``data`` is not of that form, or its ``class_names``
                disagree with its groups (the file was edited).
        """
        def kind(value: object) -> str:
            return "null" if value is None else type(value).__name__

        if not isinstance(data, Mapping) or not isinstance(data.get("groups"), Mapping):
            got = (kind(data) if not isinstance(data, Mapping) else "no 'groups'" if "groups" not in data
                   else f"'groups' = {kind(data['groups'])}")
            raise VocabularyError(f"{source}: must be a mapping with 'groups: {{name: {{classes: ...}}}}' "
                                  f"(as LabelSpace.to_dict() writes it), got {got}")
        groups = []
        for name, spec in data["groups"].items():
            where = f"{source}: group {name!r}"
            if not isinstance(spec, Mapping) or not isinstance(spec.get("classes"), Mapping):
                raise VocabularyError(f"{where} must be a mapping with 'classes: {{name: {{synonyms, codes}}}}', "
                                      f"got {kind(spec) if not isinstance(spec, Mapping) else kind(spec.get('classes'))}")
            tags = {k: spec.get(k, []) for k in ("dicom_tags", "free_text_tags")}
            for key, value in tags.items():
                if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                    raise VocabularyError(f"{where}: '{key}' must be a list of DICOM keywords, got {value!r}")
            if not isinstance(name, str) or not name.strip() or "/" in name:
                raise VocabularyError(f"{where}: a group name must be non-empty text without '/'")
            g = LabelGroup(name=name, classes=[], **{k: list(v) for k, v in tags.items()})
            for cname, cspec in spec["classes"].items():
                lists = {k: cspec.get(k, []) for k in ("synonyms", "codes")} if isinstance(cspec, Mapping) else None
                if lists is None or not all(isinstance(v, list) for v in lists.values()):
                    raise VocabularyError(f"{where}: class {cname!r} must be a mapping with 'synonyms' and 'codes' "
                                          f"lists, got {cspec!r}")
                g.add_class(cname, lists["synonyms"], lists["codes"], source=source)
            if not g.classes:
                raise VocabularyError(f"{where} has no classes")
            groups.append(g)
        if not groups:
            raise VocabularyError(f"{source}: no groups (a label space needs at least one)")
        space = cls(groups)
        stored = data.get("class_names")
        if stored is not None and stored != space.class_names:
            raise VocabularyError(f"{source}: 'class_names' disagree with its groups ({space!r}); it was edited")
        return space

    def to_dict(self) -> dict:
        return {"groups": {g.name: g.to_dict() for g in self.groups}, "class_names": self.class_names}

    # encoding ------------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    @property
    def width(self) -> int:
        """Length K of the multi-hot vector."""
        return sum(len(g) for g in self.groups)

    @property
    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for g in self.groups:
            out[g.name] = slice(start, start + len(g))
            start += len(g)
        return out

    @property
    def class_names(self) -> list[str]:
        """``group/class`` for every position of the multi-hot vector."""
        return [f"{g.name}/{c}" for g in self.groups for c in g.classes]

    def __getitem__(self, name: str) -> LabelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group {name!r} in label space (groups: {self.names})")

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSpace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return "LabelSpace(" + ", ".join(f"{g.name}[{len(g)}]" for g in self.groups) + f"; width={self.width})"

    def encode(self, values: Mapping[str, object | None]) -> np.ndarray:
        """``{group: raw value or canonical class or None}`` -> float32 ``[K]`` multi-hot. Missing groups are unknown."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise KeyError(f"groups {sorted(unknown)} are not in the label space (groups: {self.names})")
        out = np.zeros(self.width, dtype=np.float32)
        for g, sl in zip(self.groups, self.slices.values()):
            canonical = g.canonical(values.get(g.name))
            if canonical is not None:
                out[sl.start + g.index(canonical)] = 1.0
        return out

    def decode(self, vector: Sequence[float] | np.ndarray) -> dict[str, str | None]:
        """``[K]`` multi-hot (list, array or tensor) -> ``{group: class or None}``; a block with several ones is an error."""
        v = np.asarray(vector.detach().cpu() if hasattr(vector, "detach") else vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.width:
            raise ValueError(f"label vector has length {v.shape[0]}, label space {self!r} has width {self.width}")
        out: dict[str, str | None] = {}
        for g, sl in zip(self.groups, self.slices.values()):
            hot = np.flatnonzero(v[sl] > 0.5)
            if len(hot) > 1:
                raise ValueError(f"group {g.name!r} has {len(hot)} active classes {[g.classes[i] for i in hot]}; expected one-hot")
            out[g.name] = g.classes[hot[0]] if len(hot) else None
        return out
