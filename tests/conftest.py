"""Shared fixtures. Real data lives in ``../shared/data`` beside the repository (never required by the package)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("MONAI_MODAN_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data()
    if path is None:
        pytest.skip("../shared/data not found (set MONAI_MODAN_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    return shared_data / "dicom"


@pytest.fixture(scope="session")
def medmnist_dir(shared_data: Path) -> Path:
    return shared_data / "medmnist"


@pytest.fixture(autouse=True)
def _restore_logging():
    """A bundle run in-process configures the root logger from its logging.conf with a handler on the sys.stdout of
    that moment (a test's capture, closed afterwards); later tests would log into a closed stream. Restore it."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine, OpenMP threads waiting for a busy core made
    the small tensors of the training tests up to 25x slower than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rows_match_their_predictions(out_dir: Path) -> dict[tuple, float]:
    """Oracle for an experiment folder: every fine-tuning / linear-probing AUC in results.csv equals scikit-learn's
    ``roc_auc_score`` recomputed from that fold's saved test scores in predictions.csv (an independent reference:
    the runner ranks logits, the oracle ranks the saved float64 probabilities). Returns the checked AUCs."""
    import csv

    from sklearn.metrics import roc_auc_score

    with open(out_dir / "predictions.csv", newline="") as f:
        predictions = list(csv.DictReader(f))
    with open(out_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fields = [k for k in ("init", "mode", "task", "label_fraction", "repeat", "fold") if k in rows[0]]
    scores: dict[tuple, list[tuple[int, float]]] = {}
    for p in predictions:
        scores.setdefault(tuple(p[k] for k in fields), []).append((int(p["label"]), float(p["score"])))
    checked = {}
    for row in rows:
        if row["mode"] not in ("fine_tuning", "linear_probing"):
            continue
        pairs = scores[tuple(row[k] for k in fields)]
        expected = roc_auc_score([t for t, _ in pairs], [s for _, s in pairs])
        assert abs(float(row["auc"]) - expected) < 1e-9, (row, expected)
        checked[tuple(row[k] for k in fields)] = expected
    assert checked, "no fine-tuning or linear-probing row to check"
    return checked


@pytest.fixture
def rows_match_their_predictions():
    return _rows_match_their_predictions
