"""RadImageNet folder paths -> modality/anatomy labels and class ids.

RadImageNet (Mei et al., Radiology: AI 2022) is stored as::

    radiology_ai/CT/{abd,lung}/<class>/<image>.png
    radiology_ai/MR/{af,brain,hip,knee,mriabd,shoulder,spine}/<class>/<image>.png
    radiology_ai/US/<class>/<image>.png          # no anatomy level: the class folder is the organ

The modality label is the modality folder looked up in the label space's ``modality`` group; the anatomy label comes
from the anatomy folder (CT, MR) or the class folder (US) through the maps in ``resources/radimagenet.yaml``, which a
user YAML can extend. A name no rule knows stays unknown and is reported as unmapped; it is never guessed.

A RadImageNet *class* is ``(modality, anatomy folder, class folder)`` -- ``normal`` exists in nine anatomies -- and
its id is the folder path as on disk, e.g. ``"MR/knee/acl"`` or ``"US/gb"``. Ids keep the folders' quirks (case,
trailing ``_``, ``ca++_tendinosis``) so they always point at the disk; :func:`class_key` gives the normalised form
used to *match* ids (case-insensitive, trailing ``_`` ignored).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePath
from typing import NamedTuple

from enum import StrEnum

from ..utils.io import parse_yaml_text, read_yaml_file
from .vocabulary import LabelSpace, VocabularyError, normalise_text

__all__ = [
    "RADIMAGENET_DIR",
    "FolderLayout",
    "ClassLabels",
    "RadImageNetRules",
    "RadImageNetPathError",
    "class_id",
    "class_key",
    "split_class_id",
    "radimagenet_labels",
]

RADIMAGENET_DIR = "radiology_ai"  # the top folder of the RadImageNet release
_YAML_KEYS = ("modality_folders", "anatomy_folders", "flat_classes")


class RadImageNetPathError(ValueError):
    """A path does not follow the RadImageNet layout; the message names the path and the layout expected."""


class FolderLayout(StrEnum):
    """How the folders below a modality folder are organised."""

    ANATOMY = "anatomy"  # <modality>/<anatomy folder>/<class folder>/<image>
    FLAT = "flat"  # <modality>/<class folder>/<image> (the class folder names the organ)


class ClassLabels(NamedTuple):
    """Labels of one RadImageNet class.

    ``labels``/``sources`` map every group of the label space to a class / a source like ``"path:MR/knee"`` (``None``
    when unknown); ``unmapped`` lists ``(group, tag, value)`` for each name no rule knew, e.g.
    ``("anatomy", "path:US", "appendix_x")`` -- the form of :meth:`IndexResult.count_unmapped`.
    """

    labels: dict[str, str | None]
    sources: dict[str, str | None]
    unmapped: list[tuple[str, str, str]]


def class_id(modality: str, anatomy_folder: str | None, class_folder: str) -> str:
    """``"MR/knee/acl"``, or ``"US/gb"`` when ``anatomy_folder`` is empty (flat layout). Folder names are kept as is."""
    parts = [modality, anatomy_folder, class_folder] if anatomy_folder else [modality, class_folder]
    for p in parts:
        if not p or "/" in p or "\\" in p:
            raise RadImageNetPathError(f"invalid RadImageNet folder name {p!r} in class {parts}")
    return "/".join(parts)


def split_class_id(cid: str) -> tuple[str, str | None, str]:
    """Inverse of :func:`class_id`: ``"MR/knee/acl"`` -> ``("MR", "knee", "acl")``, ``"US/gb"`` -> ``("US", None, "gb")``."""
    parts = str(cid).split("/")
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    if len(parts) == 2 and all(parts):
        return parts[0], None, parts[1]
    raise RadImageNetPathError(f"{cid!r} is not a RadImageNet class id (expected 'MR/knee/acl' or 'US/gb')")


def _key(name: str) -> str:
    return normalise_text(name)  # upper case, "_"/"-"/blanks as one space, trimmed: trailing "_" is gone


def class_key(cid: str) -> str:
    """Normalised class id for matching: ``class_key("CT/lung/Airspace_opacity_") == class_key("ct/lung/airspace_opacity")``."""
    return "/".join(_key(p) for p in str(cid).split("/"))


@dataclass(frozen=True)
class RadImageNetRules:
    """The folder-name maps of ``resources/radimagenet.yaml`` (optionally extended by user YAML files).

    Args:
        modality_folders: normalised modality folder -> :class:`FolderLayout`.
        anatomy_folders: normalised anatomy folder -> anatomy class (or synonym) of the label space.
        flat_classes: normalised class folder of a flat modality -> anatomy class.
        flat_patterns: ``(normalised glob, anatomy)`` tried in order after ``flat_classes``, e.g. ``THYROID*``.
        sources: the YAML files these rules were read from (named in error messages).
    """

    modality_folders: dict[str, FolderLayout]
    anatomy_folders: dict[str, str]
    flat_classes: dict[str, str]
    flat_patterns: tuple[tuple[str, str], ...] = ()
    sources: tuple[str, ...] = field(default=())

    @classmethod
    def load(cls, user_yaml: str | Path | None = None) -> RadImageNetRules:
        """Shipped rules, extended (and overridden entry by entry) by ``user_yaml`` when given."""
        rules = _default_rules()
        return rules if user_yaml is None else rules.extended(user_yaml)

    def extended(self, user_yaml: str | Path) -> RadImageNetRules:
        path = Path(user_yaml)
        return self._merged(read_yaml_file(path, "RadImageNet rules file", VocabularyError), str(path))

    def _merged(self, data: object, source: str) -> RadImageNetRules:
        data = data or {}
        if not isinstance(data, dict) or set(data) - set(_YAML_KEYS):
            raise VocabularyError(f"{source}: top level must be a mapping with keys among {list(_YAML_KEYS)}")
        maps = {}
        for key in _YAML_KEYS:
            entries = data.get(key) or {}
            if not isinstance(entries, dict) or not all(isinstance(v, str) and v for v in entries.values()):
                raise VocabularyError(f"{source}: '{key}' must map folder name -> name, e.g. 'af: ankle_foot'")
            for k in entries:
                if not isinstance(k, str) or not _key(k):
                    raise VocabularyError(f"{source}: '{key}' has the folder name {k!r}: a folder name must be "
                                          "non-empty text (YAML reads bare yes/no/on/off, numbers and an empty key "
                                          "as booleans, numbers and null; quote it)")
            maps[key] = dict(entries)
        modality_folders = dict(self.modality_folders)
        for folder, layout in maps["modality_folders"].items():
            if layout not in {m.value for m in FolderLayout}:
                raise VocabularyError(
                    f"{source}: modality_folders[{folder!r}] = {layout!r}; layout must be one of {[m.value for m in FolderLayout]}"
                )
            modality_folders[_key(folder)] = FolderLayout(layout)
        anatomy_folders = {**self.anatomy_folders, **{_key(k): v for k, v in maps["anatomy_folders"].items()}}
        flat_classes, user_patterns = dict(self.flat_classes), []
        for name, anatomy in maps["flat_classes"].items():
            if any(c in name for c in "*?["):
                user_patterns.append((_key(name), anatomy))
            else:
                flat_classes[_key(name)] = anatomy
        # patterns are tried in order: a user's patterns come first so they override the shipped ones
        mine = {p for p, _ in user_patterns}
        patterns = tuple(user_patterns) + tuple((p, a) for p, a in self.flat_patterns if p not in mine)
        return RadImageNetRules(modality_folders, anatomy_folders, flat_classes, patterns, (*self.sources, source))

    # lookups ------------------------------------------------------------------------------------------------
    def layout(self, modality_folder: str) -> FolderLayout | None:
        """Layout below a modality folder; ``None`` for a folder the rules do not know."""
        return self.modality_folders.get(_key(modality_folder))

    def _anatomy_rule(self, layout: FolderLayout, name: str) -> tuple[str | None, str]:
        """(target named by a rule or None, which rule) for an anatomy folder (layout anatomy) or class folder (flat)."""
        key = _key(name)
        if layout is FolderLayout.ANATOMY:
            return self.anatomy_folders.get(key), f"anatomy_folders[{name!r}]"
        if key in self.flat_classes:
            return self.flat_classes[key], f"flat_classes[{name!r}]"
        for pattern, anatomy in self.flat_patterns:
            if fnmatch.fnmatchcase(key, pattern):
                return anatomy, f"flat_classes[{pattern.lower()!r}]"
        return None, ""

    def labels_for_class(self, cid: str, space: LabelSpace) -> ClassLabels:
        """Labels of the class ``cid`` (``"MR/knee/acl"``, ``"US/gb"``) in ``space``.

        Raises:
            RadImageNetPathError: ``cid`` does not fit the layout of its modality folder (or the folder is unknown).
            VocabularyError: a rule names an anatomy the label space does not have.
        """
        modality_folder, anatomy_folder, class_folder = split_class_id(cid)
        layout = self.layout(modality_folder)
        if layout is None:
            raise RadImageNetPathError(
                f"class {cid!r}: modality folder {modality_folder!r} is not in the RadImageNet rules "
                f"(known: {sorted(self.modality_folders)}); add it under 'modality_folders:' with its layout"
            )
        if (layout is FolderLayout.ANATOMY) != (anatomy_folder is not None):
            expected = "<modality>/<anatomy>/<class>" if layout is FolderLayout.ANATOMY else "<modality>/<class>"
            raise RadImageNetPathError(f"class {cid!r} does not fit the {layout.value!r} layout of {modality_folder} ({expected})")

        labels: dict[str, str | None] = {g: None for g in space.names}
        sources: dict[str, str | None] = {g: None for g in space.names}
        unmapped: list[tuple[str, str, str]] = []
        if "modality" in space:
            modality = space["modality"].canonical(modality_folder)
            if modality is None:
                unmapped.append(("modality", f"path:{RADIMAGENET_DIR}", modality_folder))
            else:
                labels["modality"], sources["modality"] = modality, f"path:{modality_folder}"
        if "anatomy" in space:
            named = anatomy_folder if layout is FolderLayout.ANATOMY else class_folder
            target, rule = self._anatomy_rule(layout, named)
            if target is not None:
                anatomy = space["anatomy"].canonical(target)
                if anatomy is None:
                    raise VocabularyError(
                        f"{' + '.join(self.sources) or 'RadImageNet rules'}: {rule} -> {target!r} is not an anatomy "
                        f"class of the label space (classes: {space['anatomy'].classes})"
                    )
            else:  # no rule: the name itself may be an anatomy synonym of the vocabulary (exact, whole value)
                anatomy = space["anatomy"].canonical(named)
            if anatomy is None:
                unmapped.append(("anatomy", f"path:{modality_folder}", named))
            else:
                labels["anatomy"], sources["anatomy"] = anatomy, f"path:{modality_folder}/{named}"
        return ClassLabels(labels, sources, unmapped)

    def class_of_path(self, path: str | PurePath) -> tuple[str, str]:
        """``(class id, file name)`` of an image path.

        ``path`` is relative to the folder that contains ``radiology_ai/`` (``radiology_ai/MR/knee/acl/x.png``, the
        form of the split CSVs), relative to ``radiology_ai/`` itself (``MR/knee/acl/x.png``), or any path with a
        ``radiology_ai`` component. Backslashes are accepted as separators.
        """
        text = str(path).replace("\\", "/")
        parts = [p for p in text.split("/") if p not in ("", ".")]
        tops = [i for i, p in enumerate(parts) if p.casefold() == RADIMAGENET_DIR]
        if tops:
            parts = parts[tops[-1] + 1 :]
        layout = self.layout(parts[0]) if parts else None
        if layout is None:
            raise RadImageNetPathError(
                f"{text!r} is not a RadImageNet image path: expected [{RADIMAGENET_DIR}/]<modality>/... with a modality "
                f"folder among {sorted(self.modality_folders)}"
            )
        depth = 4 if layout is FolderLayout.ANATOMY else 3
        if len(parts) != depth:
            expected = "<modality>/<anatomy>/<class>/<image>" if depth == 4 else "<modality>/<class>/<image>"
            raise RadImageNetPathError(f"{text!r} does not follow the RadImageNet layout {RADIMAGENET_DIR}/{expected}")
        return class_id(parts[0], parts[1] if depth == 4 else None, parts[-2]), parts[-1]


@lru_cache(maxsize=1)
def _default_rules() -> RadImageNetRules:
    text = resources.files("monai_modan.resources").joinpath("radimagenet.yaml").read_text(encoding="utf-8")
    source = "monai_modan/resources/radimagenet.yaml"
    return RadImageNetRules({}, {}, {})._merged(parse_yaml_text(text, source, VocabularyError), source)


def radimagenet_labels(
    relative_path: str | PurePath, space: LabelSpace, rules: RadImageNetRules | None = None
) -> tuple[dict[str, str | None], dict[str, str | None], str]:
    """Labels of one RadImageNet image from its path.

    Args:
        relative_path: e.g. ``"radiology_ai/MR/af/Plantar_fascia_pathology/x.png"`` (see
            :meth:`RadImageNetRules.class_of_path` for the accepted forms).
        space: label space whose ``modality`` and ``anatomy`` groups receive the labels.
        rules: folder-name maps; default the shipped ``resources/radimagenet.yaml``.

    Returns:
        ``(labels, sources, class_id)``, e.g. ``({"modality": "MR", "anatomy": "ankle_foot"},
        {"modality": "path:MR", "anatomy": "path:MR/af"}, "MR/af/Plantar_fascia_pathology")``; an unknown label is
        ``None`` with source ``None``.
    """
    rules = rules or RadImageNetRules.load()
    cid, _ = rules.class_of_path(relative_path)
    labels, sources, _ = rules.labels_for_class(cid, space)
    return labels, sources, cid

