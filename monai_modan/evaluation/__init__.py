"""Downstream evaluation protocol: fixed folds, AUC statistics, paired tests, the report and embedding views.

UMAP and matplotlib are imported only when a figure is drawn. The experiment runner (``experiment``) trains
networks and imports torch, so it is exported lazily: the statistics stay importable without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from monai_modan.evaluation.embedding import UNKNOWN, UmapPanels, knn_auc, logistic_auc, pair_colours, umap_panels
from monai_modan.evaluation.folds import (
    VALIDATION_SPLIT_METHOD,
    FoldPlan,
    FoldPlanError,
    FoldPlanMismatchError,
    data_fingerprint,
    load_or_make_folds,
    make_folds,
    make_imported_folds,
    nested_subsets,
    subsample_training,
)
from monai_modan.evaluation.report import EvaluationProtocol, format_cell, format_p, mode_title, write_report
from monai_modan.evaluation.stats import (
    RESULT_FIELDS,
    WILCOXON_ZERO_METHOD,
    Alternative,
    AucRow,
    EvalMode,
    InitSummary,
    PairedTest,
    RepeatResult,
    compare_inits,
    fold_auc,
    paired_wilcoxon,
    read_results_csv,
    repeat_results,
)

_LAZY = {name: "monai_modan.evaluation.experiment"
         for name in ("ExperimentConfig", "ExperimentError", "experiment_from_yaml", "run_experiment", "umap_items")}

__all__ = [
    "Alternative",
    "AucRow",
    "EvalMode",
    "EvaluationProtocol",
    "FoldPlan",
    "FoldPlanError",
    "FoldPlanMismatchError",
    "InitSummary",
    "PairedTest",
    "RESULT_FIELDS",
    "RepeatResult",
    "UNKNOWN",
    "UmapPanels",
    "VALIDATION_SPLIT_METHOD",
    "WILCOXON_ZERO_METHOD",
    "compare_inits",
    "data_fingerprint",
    "fold_auc",
    "format_cell",
    "format_p",
    "knn_auc",
    "logistic_auc",
    "load_or_make_folds",
    "make_folds",
    "make_imported_folds",
    "mode_title",
    "nested_subsets",
    "paired_wilcoxon",
    "pair_colours",
    "read_results_csv",
    "repeat_results",
    "subsample_training",
    "umap_panels",
    "write_report",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
