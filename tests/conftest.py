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
