"""The task datalist a downstream bundle or experiment trains on, converted from a data set it is given.

Without a data set the entry layer (bundle config, CLI) uses the embedded synthetic task instead
(:func:`monai_modan.synthetic.default_task_datalist`); this module does not choose it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...utils.io import atomic_write_json
from .convert import convert
from .task import TaskDatalistError, load_task_datalist

__all__ = ["prepare_task"]


def prepare_task(task: str, out_dir: str | Path, source: str | Path, kind: str = "auto",
                 options: dict[str, Any] | None = None, *, overwrite: bool = False) -> str:
    """Return the path of a validated task datalist for ``task``, converted from ``source``.

    ``source`` (MRNet / BUSI / DDTI / CSV / folder / MedMNIST ...) is converted to ``out_dir/<task>.json`` and
    reused while the request (source, kind, options -- recorded beside it in ``<task>.request.json``) is
    unchanged; another source or other options convert again, and so does a datalist whose images are gone (an
    output folder moved away from the slices MRNet's conversion wrote).

    Raises:
        ValueError: no ``source`` given.
    """
    if source is None or str(source) == "":
        raise ValueError(f"prepare_task: no data source for task {task!r}; pass one (--data_source), or use "
                         "monai_modan.synthetic.default_task_datalist for the embedded synthetic task")
    out_dir = Path(out_dir)
    out = out_dir / f"{task}.json"
    request = {"source": str(Path(source).resolve()), "kind": str(kind), "options": options or {}}
    request_file = out_dir / f"{task}.request.json"
    previous = json.loads(request_file.read_text()) if request_file.exists() else None
    if overwrite or not out.exists() or previous != json.loads(json.dumps(request)) or not _usable(out):
        convert(source, kind, out, **(options or {}))
        atomic_write_json(request_file, request)
    load_task_datalist(out)  # validate now: clear errors before any training
    return str(out)


def _usable(datalist: Path) -> bool:
    """Whether a converted datalist still validates: one in a folder moved or copied from elsewhere may list images
    the conversion wrote at the old place (MRNet's slices); it is converted again here (deterministic)."""
    try:
        load_task_datalist(datalist)
    except TaskDatalistError:
        return False
    return True
