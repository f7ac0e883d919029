"""The one place that turns a task bundle's or the command line's settings into an :class:`ExperimentConfig`.

The three task bundles (``bundles/breast_us``, ``bundles/thyroid_us``, ``bundles/acl_mrnet``) build their
experiment as a ``_target_`` component of :func:`configure_experiment`, and ``python -m monai_modan experiment``
calls the same function, so the wiring (task datalists -> ``tasks``, ``output_dir`` / ``run_name`` -> ``out_dir``,
``image_size`` -> ``recipe.image_size``, the report title) exists once. Defaults stay in the dataclasses
(:class:`~monai_modan.evaluation.experiment.ExperimentConfig`, :class:`~monai_modan.evaluation.finetune.Recipe`):
a setting given as ``None`` -- a bundle key left ``null`` -- takes the dataclass default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .experiment import ExperimentConfig, ExperimentError
from .finetune import Recipe

__all__ = ["configure_experiment"]


def configure_experiment(tasks: Mapping[str, str | os.PathLike], inits: Mapping[str, str | None],
                         output_dir: str | os.PathLike, run_name: str | None = None, *, image_size: int | None = None,
                         recipe: Recipe | Mapping[str, Any] | None = None, title: str | None = None,
                         **settings: Any) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from the settings a task bundle or the CLI exposes.

    Args:
        tasks: task name -> task datalist JSON.
        inits: init name -> weights (:func:`~monai_modan.evaluation.inits.pretrained_inits`,
            :func:`~monai_modan.evaluation.inits.default_init`).
        output_dir: the run's parent folder; the results go to ``output_dir/run_name`` (``output_dir`` itself when
            ``run_name`` is empty).
        image_size: input side S in pixels: ``recipe.image_size`` unless ``recipe`` gives one (a :class:`Recipe`
            instance always does).
        recipe: the :class:`Recipe` fields that differ from its defaults (``None`` values are dropped), or a
            :class:`Recipe`.
        title: report heading; default ``"<task>, ... (<mode>, ...)"``.
        settings: any other :class:`ExperimentConfig` field (``modes``, ``repeats``, ``folds``, ``seed``,
            ``device`` ...); a ``None`` value means the field's default. An unknown name raises
            :class:`ExperimentError` naming it.
    """
    if isinstance(recipe, Recipe):
        recipe = recipe.to_dict()
    elif recipe is not None and not isinstance(recipe, Mapping):
        raise ExperimentError(f"recipe: expected a mapping of recipe settings, got {recipe!r}")
    recipe = {k: v for k, v in dict(recipe or {}).items() if v is not None}
    if image_size is not None:
        recipe.setdefault("image_size", image_size)
    if "out_dir" in settings:
        raise ExperimentError("configure_experiment: give output_dir (and run_name), not out_dir")
    out_dir = Path(output_dir) / run_name if run_name else Path(output_dir)
    values = {k: v for k, v in settings.items() if v is not None}
    config = ExperimentConfig.from_dict({**values, "tasks": tasks, "inits": inits, "out_dir": str(out_dir),
                                         "recipe": recipe})
    config.title = title or f"{', '.join(config.tasks)} ({', '.join(config.eval_modes)})"
    return config
