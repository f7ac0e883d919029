"""Fixtures shared by the bundle tests."""

from __future__ import annotations

import pytest

from monai_modan.synthetic import default_pretraining_datalist


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """One small synthetic pretraining corpus + datalist (27 classes x 4 images, 32 px) for every pretrain-bundle
    test, generated once through the bundle's own default path; tests read it, none writes into it."""
    return default_pretraining_datalist(tmp_path_factory.mktemp("corpus"), images_per_class=4, image_size=32)
