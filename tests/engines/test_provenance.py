"""A run's config records its pretraining datalist (for the experiment's leakage check) without making a resume
depend on where that datalist lies."""

from __future__ import annotations

import pytest
import torch

from monai_modan.engines.pretrain import (PROVENANCE_KEYS, CheckpointError, checkpoint_payload, config_fingerprint,
                                          restore_checkpoint, save_checkpoint)


def test_the_datalist_is_recorded_but_not_compared_on_resume(tmp_path):
    model = torch.nn.Linear(3, 2)
    config = config_fingerprint(method="mulsupcon", image_size=32, datalist="/data/old/corpus.json")
    assert "datalist" in PROVENANCE_KEYS and config["datalist"] == "/data/old/corpus.json"
    path = save_checkpoint(tmp_path / "c.pt", checkpoint_payload(model, None, None, 1, 10, config))
    moved = dict(config, datalist="/data/new/corpus.json")
    assert restore_checkpoint(path, moved, model)["epoch"] == 1
    with pytest.raises(CheckpointError, match="image_size: checkpoint 32 vs now 64"):
        restore_checkpoint(path, dict(moved, image_size=64), model)
