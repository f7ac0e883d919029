"""The task datalist a downstream bundle or experiment trains on: a converted data set, or the embedded synthetic task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...utils.io import atomic_write_json

__all__ = ["prepare_task"]

# the synthetic stand-in for each public task (see monai_modan.data.synthetic.SyntheticTask)
SYNTHETIC_FOR_TASK = {"acl_mrnet": "knee_acl", "breast_us": "breast_us", "thyroid_us": "thyroid_us",
                      "knee_acl": "knee_acl"}


def prepare_task(task: str, out_dir: str | Path, source: str | Path | None = None, kind: str = "auto",
                 options: dict[str, Any] | None = None, *, n_images: int = 120, image_size: int = 64, seed: int = 0,
                 overwrite: bool = False) -> str:
    """Return the path of a validated task datalist for ``task``.

    With ``source`` (MRNet / BUSI / DDTI / CSV / folder / MedMNIST ...), it is converted to ``out_dir/<task>.json``
    and reused while the request (source, kind, options -- recorded beside it in ``<task>.request.json``) is
    unchanged; another source or other options convert again. Without it, the embedded synthetic task is
    generated once under ``out_dir/synthetic/`` (deterministic by ``seed``), so every bundle runs offline.
    """
    from .convert import convert
    from .task import load_task_datalist

    out_dir = Path(out_dir)
    if source is not None:
        out = out_dir / f"{task}.json"
        request = {"source": str(Path(source).resolve()), "kind": str(kind), "options": options or {}}
        request_file = out_dir / f"{task}.request.json"
        previous = json.loads(request_file.read_text()) if request_file.exists() else None
        if overwrite or not out.exists() or previous != json.loads(json.dumps(request)):
            convert(source, kind, out, **(options or {}))
            atomic_write_json(request_file, request)
    else:
        from ..synthetic import generate_downstream_task

        synthetic = SYNTHETIC_FOR_TASK.get(task)
        if synthetic is None:
            raise ValueError(f"no embedded synthetic data for task {task!r} (known: {sorted(SYNTHETIC_FOR_TASK)}); "
                             "pass a data source (--data_source)")
        out = out_dir / "synthetic" / synthetic / "datalist.json"
        if overwrite or not out.exists():
            out = generate_downstream_task(synthetic, out_dir / "synthetic", n_images=n_images,
                                           image_size=image_size, seed=seed)
    load_task_datalist(out)  # validate now: clear errors before any training
    return str(out)
