"""Which initialisations an experiment compares: the encoders a ``modan_pretrain`` run left behind, plus baselines."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["PRETRAIN_METHODS", "NoPretrainedEncoderError", "default_init", "pretrained_inits"]

PRETRAIN_METHODS = ("mulsupcon", "simclr", "supervised", "spark", "hybrid")


class NoPretrainedEncoderError(FileNotFoundError):
    """Pretrained inits were asked for and none was found: comparing scratch with nothing must be a choice."""
logger = logging.getLogger(__name__)


def pretrained_inits(pretrain_runs: str | Path | None, methods: tuple[str, ...] | list[str] = PRETRAIN_METHODS,
                     imagenet: str | Path | None = None, scratch: bool = True,
                     require: tuple[str, ...] | list[str] = (), require_any: bool = True) -> dict[str, str | None]:
    """``{init name: value}`` for :class:`~monai_modan.evaluation.experiment.ExperimentConfig`.

    Looks for ``<pretrain_runs>/<method>/encoder.pt`` (the pretrain bundle's output layout) for each method; the
    ones found come first, in ``methods`` order. ``imagenet`` adds a local torchvision ``resnet18`` weights file
    (never downloaded) and ``scratch`` a random initialisation. A method listed in ``require`` that has no encoder is
    an error naming the command that makes it; so is finding none of ``methods`` at all (``require_any``): a
    comparison without any pretrained encoder is asked for explicitly (``methods=()``, the CLI's ``--scratch-only``),
    never the silent result of a mistyped or relative ``pretrain_runs``.
    """
    inits: dict[str, str | None] = {}
    runs = Path(pretrain_runs) if pretrain_runs else None
    for method in methods:
        encoder = runs / method / "encoder.pt" if runs else None
        if encoder is not None and encoder.is_file():
            inits[method] = str(encoder)
        elif method in require:
            raise FileNotFoundError(
                f"no {method} encoder at {encoder}: pretrain it first, e.g. `python -m monai.bundle run --config_file "
                f"\"['bundles/modan_pretrain/configs/train.json','bundles/modan_pretrain/configs/{method}.json']\" "
                "--bundle_root bundles/modan_pretrain` (train.json alone is mulsupcon)")
        else:
            logger.info("init %s skipped: no encoder at %s", method, encoder)
    if methods and require_any and not inits:
        where = runs.resolve() if runs else "nowhere (no pretrain_runs given)"
        raise NoPretrainedEncoderError(
            f"no pretrained encoder found: looked for {', '.join(f'{m}/encoder.pt' for m in methods)} under {where}; "
            "pretrain first (python -m monai.bundle run --config_file bundles/modan_pretrain/configs/train.json "
            "--bundle_root bundles/modan_pretrain), point --pretrain-runs / pretrain_runs at the runs folder, or ask "
            "for scratch only (--scratch-only; bundles: --inits \"{'scratch': None}\")")
    if imagenet:
        if not Path(imagenet).is_file():
            raise FileNotFoundError(f"ImageNet weights {imagenet} not found (a local torchvision resnet18 .pth; "
                                    "monai-modan never downloads weights)")
        inits["imagenet"] = f"imagenet:{imagenet}"
    if scratch:
        inits["scratch"] = None
    return inits


def default_init(pretrain_runs: str | Path | None, method: str = "mulsupcon") -> dict[str, str | None]:
    """The one init a single fine-tuning run uses: the ``method`` encoder.

    Raises:
        NoPretrainedEncoderError: there is none under ``pretrain_runs`` (naming where it looked); fine-tuning from
            scratch is asked for by setting the bundle's ``inits`` to ``{"scratch": None}``.
    """
    return pretrained_inits(pretrain_runs, methods=(method,), scratch=False)
