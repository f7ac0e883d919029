"""The result format shared by the benchmarks, and careful timing.

A benchmark returns one dict (JSON-able)::

    {"benchmark": "loss", "title": ..., "date": "YYYY-MM-DD", "device": "cpu", "device_name": ...,
     "threads": 2, "cpu_count": 2, "versions": {"torch", "monai", "python", "monai_modan", ...},
     "sizes": {...},                                   # what was measured (batch, image size, files ...)
     "comparisons": [                                  # every baseline measured in the same process
        {"name": ..., "baseline": Timing, "candidate": Timing,
         "ratio": baseline_s / candidate_s,            # > 1: the candidate is faster
         "metric": "ratio" | "overhead", "value": ..., # overhead = candidate_s / baseline_s = 1 / ratio
         "target": {"op": ">=" | "<=", "value": x} | None, "met": bool | None, "note": ...}],
     "notes": [...]}

``Timing = {"name", "seconds" (median), "min", "max", "repeats", "warmup", "number", "samples": [...], "items",
"items_per_second", "unit"}``: seconds for one call of the timed function, which processes ``items`` things
(images, files, batches). ``ratio`` always compares the same work (same items). Baseline and candidate are timed
in alternation (:func:`measure_interleaved`), so that both see the same machine load.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Timing", "Timed", "measure", "measure_interleaved", "comparison", "make_result", "environment",
           "format_result", "synchronize"]

Timing = dict


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work (CUDA); nothing on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timed:
    """One function to time: ``fn()`` processes ``items`` ``unit``; ``setup()`` (untimed) runs before each sample;
    a sample is ``number`` consecutive calls (for functions too fast to time one call at a time)."""

    name: str
    fn: Callable[[], Any]
    items: int = 1
    unit: str = "items"
    setup: Callable[[], Any] | None = None
    number: int = 1


def measure_interleaved(entries: Sequence[Timed], *, device: torch.device | str = "cpu", warmup: int = 1,
                        repeats: int = 5) -> list[Timing]:
    """Time several functions in alternation: ``warmup`` untimed rounds, then ``repeats`` rounds in which every
    entry takes one sample (``setup``, device sync, ``number`` calls, device sync).

    Interleaving exposes all entries to the same machine conditions: on a shared machine, load that comes and goes
    spreads over baseline and candidate instead of favouring whichever ran in the quiet minute. Returns one
    :data:`Timing` per entry: median, min, max and all samples, in seconds per call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(max(0, warmup)):
        for entry in entries:
            if entry.setup is not None:
                entry.setup()
            entry.fn()
    samples: list[list[float]] = [[] for _ in entries]
    for _ in range(repeats):
        for entry, taken in zip(entries, samples):
            if entry.setup is not None:
                entry.setup()
            synchronize(device)
            start = time.perf_counter()
            for _ in range(max(1, entry.number)):
                entry.fn()
            synchronize(device)
            taken.append((time.perf_counter() - start) / max(1, entry.number))
    out = []
    for entry, taken in zip(entries, samples):
        median = statistics.median(taken)
        out.append({
            "name": entry.name,
            "seconds": median,
            "min": min(taken),
            "max": max(taken),
            "repeats": repeats,
            "warmup": warmup,
            "number": max(1, entry.number),
            "samples": taken,
            "items": entry.items,
            "unit": entry.unit,
            "items_per_second": entry.items / median if median > 0 else float("inf"),
        })
    return out


def measure(fn: Callable[[], Any], *, name: str, device: torch.device | str = "cpu", warmup: int = 1,
            repeats: int = 5, items: int = 1, unit: str = "items", setup: Callable[[], Any] | None = None,
            number: int = 1) -> Timing:
    """Time one function (:func:`measure_interleaved` with a single entry)."""
    return measure_interleaved([Timed(name, fn, items, unit, setup, number)], device=device, warmup=warmup,
                               repeats=repeats)[0]


def comparison(
    name: str,
    baseline: Timing,
    candidate: Timing,
    *,
    metric: str = "ratio",
    target: tuple[str, float] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """Compare two timings of the same work. ``metric="ratio"``: ``baseline_s / candidate_s`` (speed-up);
    ``metric="overhead"``: ``candidate_s / baseline_s`` (what the candidate costs on top of a lower bound).
    ``target = (op, value)`` with op ``">="`` or ``"<="`` is checked against that metric."""
    if baseline["items"] != candidate["items"]:
        raise ValueError(f"{name}: baseline and candidate time different work ({baseline['items']} vs "
                         f"{candidate['items']} {baseline['unit']})")
    ratio = baseline["seconds"] / candidate["seconds"]
    if metric not in ("ratio", "overhead"):
        raise ValueError(f"metric must be 'ratio' or 'overhead', got {metric!r}")
    value = ratio if metric == "ratio" else 1.0 / ratio
    met = None
    if target is not None:
        op, bound = target
        if op not in (">=", "<="):
            raise ValueError(f"target op must be '>=' or '<=', got {op!r}")
        met = value >= bound if op == ">=" else value <= bound
    return {
        "name": name,
        "baseline": baseline,
        "candidate": candidate,
        "ratio": ratio,
        "metric": metric,
        "value": value,
        "target": None if target is None else {"op": target[0], "value": target[1]},
        "met": met,
        "note": note,
    }


def environment(device: torch.device | str) -> dict[str, Any]:
    """Date, device, thread count and versions of what was measured."""
    import monai

    device = torch.device(device)
    versions = {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__}
    try:
        from importlib.metadata import version

        versions["monai_modan"] = version("monai-modan")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source tree on sys.path)
        versions["monai_modan"] = "source"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        versions["cuda"] = torch.version.cuda
    else:
        name = platform.processor() or platform.machine()
    return {
        "date": _dt.date.today().isoformat(),
        "device": device.type,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": sys.platform,
        "versions": versions,
    }


def make_result(benchmark: str, title: str, device: torch.device | str, sizes: dict[str, Any],
                comparisons: Sequence[dict[str, Any]], notes: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """Assemble the result dict (see the module docstring)."""
    return {"benchmark": benchmark, "title": title, **environment(device), "sizes": dict(sizes),
            "comparisons": list(comparisons), "notes": list(notes), **extra}


def _seconds(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.3f} s"


def format_result(result: dict[str, Any]) -> str:
    """Human-readable summary of a result (the ``--json`` output holds everything)."""
    v = result["versions"]
    lines = [
        f"{result['benchmark']}: {result['title']}",
        f"  {result['date']}  device {result['device']} ({result['device_name']}), {result['threads']} threads, "
        f"{result['cpu_count']} CPUs; torch {v['torch']}, monai {v['monai']}, python {v['python']}",
        "  sizes: " + ", ".join(f"{k}={val}" for k, val in result["sizes"].items()),
    ]
    for c in result["comparisons"]:
        b, k = c["baseline"], c["candidate"]
        target = c["target"]
        verdict = ("" if target is None
                   else f"  (target {target['op']} {target['value']:g}: {'met' if c['met'] else 'MISSED'})")
        lines.append(f"  - {c['name']}: {c['metric']} {c['value']:.3g}{verdict}")
        for label, t in (("baseline ", b), ("candidate", k)):
            lines.append(f"      {label} {t['name']}: {_seconds(t['seconds'])} median of {t['repeats']} "
                         f"[{_seconds(t['min'])} .. {_seconds(t['max'])}], {t['items_per_second']:.4g} {t['unit']}/s")
        if c.get("note"):
            lines.append(f"      note: {c['note']}")
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
