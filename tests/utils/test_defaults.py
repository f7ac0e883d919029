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
