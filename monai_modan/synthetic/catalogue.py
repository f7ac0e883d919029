"""The classes of the synthetic pretraining corpus: RadImageNet's modality / anatomy / class folders, each drawn from
one phantom of :mod:`monai_modan.synthetic.phantoms` with or without one finding."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SyntheticClass", "RADIMAGENET_CLASSES"]


@dataclass(frozen=True)
class SyntheticClass:
    """One RadImageNet-like class.

    Args:
        modality: RadImageNet modality folder (``CT``, ``MR``, ``US``).
        region: RadImageNet anatomy folder (``lung``, ``mriabd`` ...); ``None`` for US, whose classes sit directly
            under ``US/``.
        folder: class folder, spelled as RadImageNet spells it (``Airspace_opacity``, ``ca++_tendinosis``, trailing
            ``_``).
        anatomy: canonical anatomy of the default vocabulary (ground truth for tests of the indexers).
        phantom: phantom drawn for it.
        finding: the visible variation that defines the class inside its anatomy (``None`` = normal).
    """

    modality: str
    region: str | None
    folder: str
    anatomy: str
    phantom: str
    finding: str | None = None

    @property
    def id(self) -> str:
        """Folder path below ``radiology_ai/``: ``"MR/knee/acl_pathology"``, ``"US/gb"``."""
        return "/".join(p for p in (self.modality, self.region, self.folder) if p)

    @property
    def label_text(self) -> str:
        """The CSV label as the RadImageNet split files write it: ``"knee-chondral abnormality"``, ``"US-gb"``."""
        name = self.folder.strip("_").replace("_", " ")
        return f"{self.region or self.modality}-{name}"


RADIMAGENET_CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass("CT", "abd", "liver_lesion", "abdomen", "abdomen", "liver_lesion"),
    SyntheticClass("CT", "abd", "normal", "abdomen", "abdomen"),
    SyntheticClass("CT", "lung", "Airspace_opacity", "chest", "chest_ct", "airspace"),
    SyntheticClass("CT", "lung", "interstitial_lung_disease", "chest", "chest_ct", "reticular"),
    SyntheticClass("CT", "lung", "normal", "chest", "chest_ct"),
    SyntheticClass("MR", "af", "achilles_pathology_", "ankle_foot", "ankle", "tendinopathy"),
    SyntheticClass("MR", "af", "normal", "ankle_foot", "ankle"),
    SyntheticClass("MR", "brain", "acute_infarct", "head", "brain", "infarct"),
    SyntheticClass("MR", "brain", "normal", "head", "brain"),
    SyntheticClass("MR", "hip", "labral_pathology", "hip", "hip", "labral_tear"),
    SyntheticClass("MR", "hip", "normal", "hip", "hip"),
    SyntheticClass("MR", "knee", "acl_pathology", "knee", "knee", "acl_tear"),
    SyntheticClass("MR", "knee", "chondral_abnormality", "knee", "knee", "chondral_defect"),
    SyntheticClass("MR", "knee", "normal", "knee", "knee"),
    SyntheticClass("MR", "mriabd", "liver_lesion", "abdomen", "abdomen", "liver_lesion"),
    SyntheticClass("MR", "mriabd", "normal", "abdomen", "abdomen"),
    SyntheticClass("MR", "shoulder", "ca++_tendinosis", "shoulder", "shoulder", "calcific_tendinosis"),
    SyntheticClass("MR", "shoulder", "supraspinatus_pathology", "shoulder", "shoulder", "cuff_tear"),
    SyntheticClass("MR", "spine", "disc_pathology", "spine", "spine", "disc_herniation"),
    SyntheticClass("MR", "spine", "normal", "spine", "spine"),
    SyntheticClass("US", None, "gb", "abdomen", "gallbladder_us"),
    SyntheticClass("US", None, "kidney", "abdomen", "kidney_us"),
    SyntheticClass("US", None, "liver", "abdomen", "liver_us"),
    SyntheticClass("US", None, "ovary", "pelvis", "ovary_us"),
    SyntheticClass("US", None, "thyroid", "thyroid", "thyroid_us"),
    SyntheticClass("US", None, "thyroid_nodule", "thyroid", "thyroid_us", "nodule"),
    SyntheticClass("US", None, "uterus", "pelvis", "uterus_us"),
)
