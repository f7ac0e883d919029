"""Defaults shared across layers, each in one place.

A value used by one class only lives in that class's signature or dataclass (``Recipe``, ``TwoViewRecipe``, the
losses' temperatures); this module holds the ones several layers must agree on.
"""

from __future__ import annotations

__all__ = ["AUDIT_BLANK_STD", "AUDIT_MAX_DISTANCE", "AUDIT_MAX_SHIFT", "AUDIT_MIN_CORRELATION", "AUDIT_MIN_SIZE",
           "CV_FOLDS", "CV_REPEATS", "EVAL_MODES", "EXPERIMENT_WORKERS", "FINETUNE_EPOCHS", "IMAGE_SIZE",
           "TASK_SPLITS"]

# Image side in pixels of the embedded demo, the synthetic data and CI (CPU-sized); the ModAn paper used 224.
IMAGE_SIZE = 64

# The downstream protocol: defaults of ExperimentConfig and Recipe (evaluation layer) that the CLI's experiment
# options show in --help, read here so that building the parser imports no torch. The ModAn paper's 10 repeats of
# 5-fold cross-validation and 10 epochs per fold (Table 3).
CV_REPEATS = 10
CV_FOLDS = 5
FINETUNE_EPOCHS = 10
EVAL_MODES = ("fine_tuning", "linear_probing")  # values of evaluation.stats.EvalMode (a test checks them)
EXPERIMENT_WORKERS = 1  # fine-tuning processes: 1 = every fold in the calling process

# The values of a task datalist item's ``split`` (data layer: the converters and the loader check them; evaluation
# layer: the fold plan takes the ``val`` items as the data set's own validation part).
TASK_SPLITS = ("train", "val")

# The audit's thresholds (data.audit.AuditSettings; measured on real images in docs/audit.md), read here so that the
# CLI's help shows them without importing the data layer: near duplicate = pHash distance <= AUDIT_MAX_DISTANCE of 64
# bits and aligned 32 px thumbnail correlation >= AUDIT_MIN_CORRELATION (shifts up to AUDIT_MAX_SHIFT px); blank =
# pixel sd < AUDIT_BLANK_STD on [0, 1]; too small = shorter side < AUDIT_MIN_SIZE px (MedMNIST's 28 px passes).
AUDIT_MAX_DISTANCE = 8
AUDIT_MIN_CORRELATION = 0.95
AUDIT_MAX_SHIFT = 2
AUDIT_MIN_SIZE = 24
AUDIT_BLANK_STD = 0.01
