"""The experiment's leakage check: is an evaluation image also in the corpus an encoder was pretrained on?

A pretraining run records the absolute path of its datalist in ``config.json`` beside ``encoder.pt`` (key
``datalist``, :data:`~monai_modan.engines.pretrain.PROVENANCE_KEYS`). For every pretrained init whose run names one,
:func:`check_leakage` audits each task against that corpus (:func:`~monai_modan.data.audit.find_leaks`: exact and
near duplicates of the task's images among the corpus' ``training`` images, fingerprints cached beside the
datalists) and returns the lines the report's protocol section states.

A test image the encoder has already seen makes its comparison with the other inits unfair: a task image whose
decoded pixels are those of a pretraining image (an *exact* duplicate, which cannot be a false alarm) is refused
(:class:`LeakageError`) unless the experiment allows it (``allow_leakage``). *Near* duplicates (resized or
recompressed copies) are counted and stated, not refused: on images that share one layout -- 28 px fundus photos,
the synthetic phantoms of one class -- distinct images pass the near-duplicate test too (docs/audit.md measures
how often), and a refusal must not be a false alarm. ``python -m monai_modan audit`` lists them for review.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from ..data.audit import AuditSettings, find_leaks
from ..networks.weights import InitKind, InitSpec

__all__ = ["LeakageError", "pretraining_datalist", "check_leakage"]

logger = logging.getLogger(__name__)


class LeakageError(ValueError):
    """Task images are also in an init's pretraining corpus and the experiment does not allow it."""


def pretraining_datalist(weights: str | Path) -> tuple[Path | None, str]:
    """``(datalist, "")`` named by the ``config.json`` beside a pretraining run's weights file, or ``(None, why
    not)`` when there is no such file, it names none, or the datalist no longer exists."""
    config = Path(weights).parent / "config.json"
    if not config.is_file():
        return None, f"no config.json beside {weights}"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{config} unreadable ({e})"
    datalist = data.get("datalist") if isinstance(data, dict) else None
    if not isinstance(datalist, str) or not datalist:
        return None, f"{config} names no pretraining datalist (a run from before the datalist was recorded)"
    if not Path(datalist).is_file():
        return None, f"its pretraining datalist {datalist} (named in {config}) no longer exists"
    return Path(datalist), ""


def check_leakage(tasks: Mapping[str, str | Path], inits: Mapping[str, InitSpec], *, allow: bool = False,
                  settings: AuditSettings | None = None, progress: bool = False) -> list[str]:
    """Audit every task against the pretraining corpus of every pretrained init; returns the report's lines.

    Inits sharing a corpus are audited once. Scratch and ImageNet inits have no corpus here (ImageNet is not a
    medical corpus); a pretrained init whose run names no datalist is stated as not checked.

    Raises:
        LeakageError: a task image is an exact duplicate of a corpus image and ``allow`` is false (naming task,
            count, inits, datalist, examples, and the two ways on).
    """
    corpora: dict[Path, list[str]] = defaultdict(list)
    lines: list[str] = []
    for name, spec in inits.items():
        if spec.kind != InitKind.CHECKPOINT or spec.path is None:
            continue
        datalist, why = pretraining_datalist(spec.path)
        if datalist is None:
            lines.append(f"Leakage check: init {name} not checked: {why}.")
        else:
            corpora[datalist.resolve()].append(name)
    refusals = []
    for datalist, names in corpora.items():
        for task, path in tasks.items():
            report = find_leaks(datalist, path, settings, progress=progress)
            audited = report.datalists[-1]
            pairs = report.leaks.get(audited.name, [])
            exact = sorted({p.b for p in pairs if p.exact})
            near = sorted({p.b for p in pairs if not p.exact} - set(exact))
            line = (f"Leakage check (monai_modan.data.audit, {len(report.datalists[0])} pretraining images of "
                    f"{', '.join(names)}: {datalist}): task {task}: {len(exact)} of {len(audited)} test images are "
                    f"also pretraining images (exact duplicates), {len(near)} more are near duplicates of one "
                    "(reported, not refused).")
            if exact and not allow:
                examples = ", ".join(report.images[r] for r in exact[:3])
                refusals.append(f"task {task}: {len(exact)} of {len(audited)} images are also pretraining images "
                                f"(same decoded pixels) of init(s) {', '.join(names)} ({datalist}), e.g. {examples}")
            lines.append(line + (" Allowed by allow_leakage: the comparison is not fair to the other inits."
                                 if exact and allow else ""))
    if refusals:
        raise LeakageError("; ".join(refusals) + ". A test image the encoder has seen inflates its AUC: drop them "
                           "(python -m monai_modan audit PRETRAIN.json TASK.json --drop writes TASK.clean.json) or, to "
                           "evaluate anyway, set allow_leakage: true (CLI: --allow-leakage)")
    return lines
