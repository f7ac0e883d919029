"""Metadata -> labels: the label space and the rules that read modality/anatomy from DICOM headers and paths."""

from .vocabulary import DEFAULT_GROUPS, LabelGroup, LabelSpace, VocabularyError, normalise_text
from .radimagenet import (
    RADIMAGENET_DIR,
    ClassLabels,
    FolderLayout,
    RadImageNetPathError,
    RadImageNetRules,
    class_id,
    class_key,
    radimagenet_labels,
    split_class_id,
)
from .dicom_labels import (
    HeaderLabels,
    extract_header_values,
    label_header,
    label_values,
    non_image_reason,
)
from .privacy import IDENTIFYING_TAGS, REDACTED, identifier_pattern, identifier_strings, redact_identifiers
