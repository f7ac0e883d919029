"""Values several layers must agree on come from one place (monai_modan.utils.defaults)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from monai_modan.engines.inference import compute_embeddings
from monai_modan.engines.pretrain import pretraining_transforms
from monai_modan.evaluation.finetune import Recipe
from monai_modan.synthetic import default_pretraining_datalist, default_task_datalist, generate_pretraining_corpus
from monai_modan.transforms import TwoViewRecipe
from monai_modan.utils.defaults import IMAGE_SIZE

REPO = Path(__file__).resolve().parents[2]


def test_every_image_size_default_is_the_shared_one():
    assert Recipe().image_size == IMAGE_SIZE
    assert TwoViewRecipe().image_size == (IMAGE_SIZE, IMAGE_SIZE)
    for fn in (compute_embeddings, pretraining_transforms, default_pretraining_datalist, default_task_datalist,
               generate_pretraining_corpus):
        assert inspect.signature(fn).parameters["image_size"].default == IMAGE_SIZE, fn.__name__
    # the pretrain bundle states its values (MONAI model-zoo style); they must be the package's
    train = json.loads((REPO / "bundles" / "modan_pretrain" / "configs" / "train.json").read_text())
    assert train["image_size"] == IMAGE_SIZE


def test_protocol_defaults_are_the_shared_ones():
    """ExperimentConfig and Recipe read the protocol's defaults from utils.defaults (where the CLI reads them without
    importing torch); the modes there are values of the one EvalMode enum."""
    from monai_modan.evaluation.experiment import ExperimentConfig
    from monai_modan.evaluation.stats import EvalMode
    from monai_modan.utils.defaults import CV_FOLDS, CV_REPEATS, EVAL_MODES, EXPERIMENT_WORKERS, FINETUNE_EPOCHS

    config = ExperimentConfig(tasks={"t": "t.json"}, inits={"scratch": None}, out_dir=".")
    assert (config.repeats, config.folds, config.workers, config.modes) == (CV_REPEATS, CV_FOLDS, EXPERIMENT_WORKERS,
                                                                            EVAL_MODES)
    assert Recipe().epochs == FINETUNE_EPOCHS
    assert [EvalMode(m) for m in EVAL_MODES] == [EvalMode.FINE_TUNING, EvalMode.LINEAR_PROBING]
