"""Metadata -> labels: the label space and the rules that read modality/anatomy from DICOM headers and paths."""

from .vocabulary import DEFAULT_GROUPS, LabelGroup, LabelSpace, VocabularyError, normalise_text
