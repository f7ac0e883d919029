"""Downstream data sets -> one binary task datalist format (image, label 0/1, group).

``convert(source, kind="auto", out=...)`` detects and converts MRNet, BUSI, DDTI (XML or fold CSVs), the MRNet ACL
slice CSV, a generic CSV, a folder per class, an existing datalist JSON or a MedMNIST ``.npz``;
:func:`load_task_datalist` reads the result back, validated. See each module for the data set's conventions.
"""

from __future__ import annotations

from .busi import BUSI_CLASSES, convert_busi, find_busi_root
from .convert import CONVERTERS, TaskSource, UnknownLayoutError, convert, detect_source
from .ddti import TIRADS_CATEGORIES, convert_ddti, convert_ddti_csv, ddti_case, tirads_label
from .duplicates import DuplicatePolicy, apply_duplicate_policy, pixel_hash
from .generic import (MEDMNIST_POSITIVE, LabelMapper, convert_csv, convert_folder, convert_json, convert_medmnist,
                      read_csv_items)
from .mrnet import SlicePolicy, convert_mrnet, convert_mrnet_slices, find_mrnet_root, select_slices
from .task import (TASK_FORMAT, DownstreamError, TaskDatalist, TaskDatalistError, load_task_datalist,
                   parse_binary_label, validate_items, write_task_datalist)

__all__ = [
    "BUSI_CLASSES", "CONVERTERS", "MEDMNIST_POSITIVE", "TASK_FORMAT", "TIRADS_CATEGORIES",
    "DownstreamError", "DuplicatePolicy", "LabelMapper", "SlicePolicy", "TaskDatalist", "TaskDatalistError",
    "TaskSource", "UnknownLayoutError",
    "apply_duplicate_policy", "convert", "convert_busi", "convert_csv", "convert_ddti", "convert_ddti_csv",
    "convert_folder", "convert_json", "convert_medmnist", "convert_mrnet", "convert_mrnet_slices", "ddti_case",
    "detect_source", "find_busi_root", "find_mrnet_root", "load_task_datalist", "parse_binary_label", "pixel_hash",
    "read_csv_items", "select_slices", "tirads_label", "validate_items", "write_task_datalist",
]
