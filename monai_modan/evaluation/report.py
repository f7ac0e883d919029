"""The evaluation report: raw fold AUCs, summary tables laid out like the ModAn paper's Tables 4 and 5, plots.

``write_report`` writes into one folder (every file atomically)::

    results.csv                       one row per (init, mode, task, repeat, fold): the raw AUCs
    summary.csv, summary.json         one row per (mode, task, init): mean, sd, repeats, p-value vs reference
    report.md                         protocol, one table per mode (rows = inits, columns = tasks), the figures
    auc_box_<mode>_<task>.png         one box per init over its repeat means
    roc_<key>.png                     mean ROC over folds per init (when ``roc_data`` is given)
    umap.png                          UMAP panels per init (when ``embeddings`` is given)

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, so the global pyplot backend is
never touched.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from ..utils.io import atomic_path, atomic_write_json, atomic_write_text
from .embedding import umap_panels
from .folds import VALIDATION_SPLIT_METHOD
from .stats import RESULT_FIELDS, WILCOXON_ZERO_METHOD, AucRow, EvalMode, InitSummary, compare_inits, fold_auc

__all__ = ["EvaluationProtocol", "format_cell", "format_p", "mode_title", "write_report", "SUMMARY_FIELDS"]

SUMMARY_FIELDS = ("mode", "task", "init", "reference", "n_repeats", "n_folds", "mean_auc", "sd_auc", "p_value",
                  "repeat_means", "note")

_MODE_TITLES = {EvalMode.FINE_TUNING: "Fine-tuning (cf. ModAn paper, Table 4)",
                EvalMode.LINEAR_PROBING: "Linear probing (cf. ModAn paper, Table 5)",
                EvalMode.KNN: "k-nearest neighbours on frozen features",
                EvalMode.LOGISTIC: "Logistic regression on standardised frozen features (not in the ModAn paper)"}
def _known_mode(mode: str) -> EvalMode | None:
    try:
        return EvalMode.parse(mode)
    except ValueError:
        return None


def mode_title(mode: str) -> str:
    """Heading of a mode's table: the paper's name for known modes, else the mode itself."""
    known = _known_mode(mode)
    return _MODE_TITLES[known] if known is not None else mode


@dataclass
class EvaluationProtocol:
    """What the report states about how the AUCs were obtained (the fold and repeat counts come from the rows).

    Attributes:
        fold_seed: ``seed`` of :func:`~monai_modan.evaluation.folds.make_folds`.
        fold_plan: where the saved fold plan lives, or its fingerprint.
        repeat_seeds: the training seed of each repeat.
        val_fraction: validation part of each training part (model selection).
        validation: how the validation part is drawn.
        model_selection: what the validation part selects (e.g. ``"epoch with the best validation AUC"``).
        label_fraction: fraction of the training part used (label-fraction experiments), 1.0 = all.
        notes: further lines.
    """

    fold_seed: int | None = None
    fold_plan: str | None = None
    repeat_seeds: Sequence[int] | None = None
    val_fraction: float | None = None
    validation: str = VALIDATION_SPLIT_METHOD
    model_selection: str | None = None
    label_fraction: float | None = None
    notes: Sequence[str] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"fold_seed": self.fold_seed, "fold_plan": self.fold_plan,
                "repeat_seeds": None if self.repeat_seeds is None else [int(s) for s in self.repeat_seeds],
                "val_fraction": self.val_fraction, "validation": self.validation,
                "model_selection": self.model_selection, "label_fraction": self.label_fraction,
                "notes": list(self.notes)}


def format_p(p: float) -> str:
    """``"p = 0.002"``; below 0.001 ``"p < 0.001"``; ``nan`` (no meaningful test) ``"no test"``."""
    if math.isnan(p):
        return "no test"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def format_cell(s: InitSummary) -> str:
    """``"0.873 ± 0.012 (p = 0.002)"``; the reference has no p, a single repeat has no sd."""
    text = f"{s.mean:.3f}" if math.isnan(s.sd) else f"{s.mean:.3f} ± {s.sd:.3f}"
    return text if s.p_value is None else f"{text} ({format_p(s.p_value)})"


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", p).strip("-.") or "x" for p in parts)


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _csv_text(fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _ordered(present: Iterable[str], order: Sequence[str] | None, what: str) -> list[str]:
    present = list(dict.fromkeys(present))
    if order is None:
        return present
    unknown = [x for x in present if x not in order]
    if unknown:
        raise ValueError(f"{what}_order {list(order)} lacks {unknown}")
    return [x for x in order if x in present]


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _box_plot(cells: Sequence[InitSummary], mode: str, task: str, path: Path) -> None:
    # lazy: matplotlib is imported only when a figure is drawn
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.2 * len(cells) + 2.5, 4.0))
    ax = fig.subplots()
    ax.boxplot([s.repeat_means for s in cells], showmeans=True)
    for i, s in enumerate(cells, start=1):
        ax.plot(np.full(len(s.repeat_means), i), s.repeat_means, "o", ms=3, alpha=0.6,
                color="tab:red" if s.reference else "tab:blue")
    ax.set_xticks(range(1, len(cells) + 1), [s.init + (" (ref.)" if s.reference else "") for s in cells],
                  rotation=30, ha="right")
    ax.set_ylabel("AUC (mean over folds, one point per repeat)")
    ax.set_title(f"{task} – {mode_title(mode)}", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _roc_plot(key: str, by_init: Mapping[str, Sequence[tuple[Any, Any]]], path: Path) -> None:
    # lazy: matplotlib is imported only when a figure is drawn
    from matplotlib.figure import Figure

    grid = np.linspace(0.0, 1.0, 201)
    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    for init, folds in by_init.items():
        if not folds:
            raise ValueError(f"roc_data[{key!r}][{init!r}] has no folds")
        tprs, aucs = [], []
        for i, (y_true, y_score) in enumerate(folds):
            try:
                aucs.append(fold_auc(y_true, y_score))
            except ValueError as e:
                raise ValueError(f"roc_data[{key!r}][{init!r}] fold {i}: {e}") from None
            fpr, tpr, _ = roc_curve(np.asarray(y_true).astype(np.int64), np.asarray(y_score, dtype=np.float64))
            tprs.append(np.interp(grid, fpr, tpr))
            tprs[-1][0] = 0.0
        mean_tpr = np.mean(tprs, axis=0)
        mean_tpr[-1] = 1.0
        sd = f" ± {np.std(aucs, ddof=1):.3f}" if len(aucs) > 1 else ""
        line = ax.plot(grid, mean_tpr, lw=1.5, label=f"{init} (AUC {np.mean(aucs):.3f}{sd}, {len(aucs)} folds)")[0]
        if len(tprs) > 1:
            band = np.std(tprs, axis=0)
            ax.fill_between(grid, np.clip(mean_tpr - band, 0, 1), np.clip(mean_tpr + band, 0, 1),
                            color=line.get_color(), alpha=0.15, lw=0)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
           title=f"ROC – {key} (mean over folds ± 1 sd)")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def _protocol_lines(protocol: EvaluationProtocol, summaries: Sequence[InitSummary], reference_init: str) -> list[str]:
    def given(value: Any) -> str:
        return "not recorded" if value is None else str(value)

    folds = sorted({s.n_folds for s in summaries})
    repeats = sorted({s.n_repeats for s in summaries})
    seeds = None if protocol.repeat_seeds is None else ", ".join(str(int(s)) for s in protocol.repeat_seeds)
    fraction = None if protocol.label_fraction is None else f"{protocol.label_fraction:.0%} of each training part"
    lines = [
        f"- Cross-validation: {'/'.join(map(str, folds))} fixed stratified folds (grouped by patient/case where the "
        f"task has groups), the same folds for every initialisation and repeat; fold seed {given(protocol.fold_seed)}"
        f"; fold plan {given(protocol.fold_plan)}.",
        f"- Repeats: {'/'.join(map(str, repeats))} per (initialisation, mode, task); repeat seeds {given(seeds)}.",
        f"- Validation split (model selection): val_fraction = {given(protocol.val_fraction)}; {protocol.validation}.",
        f"- Model selection: {given(protocol.model_selection)}.",
        f"- Label fraction: {given(fraction)}.",
        "- Metric: ROC AUC of each test fold; a repeat's score is the mean over its folds; cells give the mean ± "
        "sample sd (ddof = 1) of the repeat scores.",
        f"- Test: two-sided Wilcoxon signed-rank test of each initialisation against the reference "
        f"(**{reference_init}**), paired by repeat (scipy.stats.wilcoxon, zero_method={WILCOXON_ZERO_METHOD!r}: "
        "zero differences dropped, exact null distribution for small samples; p = 1 when all differences are zero). "
        f"No correction for multiple comparisons. With R paired repeats the smallest attainable p is 2 / 2^R "
        f"(here {', '.join(f'{2 / 2 ** r:.3g} for R = {r}' for r in repeats)}).",
    ]
    return lines + [f"- {note}" for note in protocol.notes]


def write_report(rows: Iterable[AucRow | Mapping[str, Any]], out_dir: str | Path, reference_init: str, *,
                 roc_data: Mapping[str, Mapping[str, Sequence[tuple[Any, Any]]]] | None = None,
                 embeddings: Mapping[str, tuple[np.ndarray, Sequence[Any], Sequence[Any]]] | None = None,
                 protocol: EvaluationProtocol | Mapping[str, Any] | None = None,
                 init_order: Sequence[str] | None = None, task_order: Sequence[str] | None = None,
                 title: str = "Downstream evaluation", seed: int = 0) -> dict[str, Path]:
    """Write the evaluation report into ``out_dir`` (see the module docstring for the files).

    Args:
        rows: raw AUC rows, :class:`~monai_modan.evaluation.stats.AucRow` or mappings with
            ``init, mode, task, repeat, fold, auc``.
        reference_init: the init every other one is tested against (its cells carry no p-value).
        roc_data: plot key (usually the task, e.g. ``"busi"`` or ``"busi linear_probing"``) -> init -> one
            ``(y_true [n], y_score [n])`` per test fold (all repeats); one ``roc_<key>.png`` per key.
        embeddings: init -> ``(X [N, F], modality [N], anatomy [N])`` for :func:`~.embedding.umap_panels`.
        protocol: seeds, validation split and label fraction to state (an :class:`EvaluationProtocol` or its
            fields as a mapping).
        init_order, task_order: table row/column order (default: order of first appearance).
        title: report heading. seed: UMAP seed.

    Returns:
        file name -> path of every file written.
    """
    rows = [AucRow.coerce(r) for r in rows]
    summaries = compare_inits(rows, reference_init)
    if protocol is None:
        protocol = EvaluationProtocol()
    elif isinstance(protocol, Mapping):
        protocol = EvaluationProtocol(**protocol)
    inits = _ordered((s.init for s in summaries), init_order, "init")
    tasks = _ordered((s.task for s in summaries), task_order, "task")
    known_first = {m: i for i, m in enumerate(EvalMode)}
    modes = sorted(dict.fromkeys(s.mode for s in summaries),
                   key=lambda m: known_first.get(_known_mode(m), len(known_first)))
    by_key = {(s.mode, s.task, s.init): s for s in summaries}

    out_dir = Path(out_dir)
    written: dict[str, Path] = {}

    def put(name: str) -> Path:
        if name in written:
            raise ValueError(f"two report files would be named {name}: rename a task, mode or ROC key")
        written[name] = out_dir / name
        return written[name]

    atomic_write_text(put("results.csv"), _csv_text(RESULT_FIELDS, (r.as_dict() for r in rows)))
    summary_rows = [{"mode": s.mode, "task": s.task, "init": s.init, "reference": s.reference,
                     "n_repeats": s.n_repeats, "n_folds": s.n_folds, "mean_auc": s.mean,
                     "sd_auc": _finite_or_none(s.sd), "p_value": _finite_or_none(s.p_value),
                     "repeat_means": list(s.repeat_means), "note": s.note} for s in summaries]
    blank = {"sd_auc", "p_value"}  # None -> empty CSV cell
    atomic_write_text(put("summary.csv"), _csv_text(SUMMARY_FIELDS, (
        {**{k: "" if k in blank and v is None else v for k, v in r.items()},
         "repeat_means": " ".join(f"{m:.6f}" for m in r["repeat_means"])} for r in summary_rows)))

    tables = {mode: {"title": mode_title(mode), "columns": tasks,
                     "rows": {init: {task: format_cell(by_key[(mode, task, init)]) if (mode, task, init) in by_key
                                     else None for task in tasks} for init in inits}} for mode in modes}

    box_plots: dict[str, list[str]] = {mode: [] for mode in modes}
    for mode in modes:
        for task in tasks:
            cells = [by_key[(mode, task, init)] for init in inits if (mode, task, init) in by_key]
            if cells:
                name = f"auc_box_{_slug(mode, task)}.png"
                _box_plot(cells, mode, task, put(name))
                box_plots[mode].append(name)
    roc_plots = []
    for key, by_init in (roc_data or {}).items():
        name = f"roc_{_slug(key)}.png"
        _roc_plot(key, by_init, put(name))
        roc_plots.append((key, name))
    if embeddings:
        umap_panels(embeddings, put("umap.png"), seed=seed)

    lines = [f"# {title}", "", "## Protocol", "", *_protocol_lines(protocol, summaries, reference_init), ""]
    for mode in modes:
        lines += [f"## {mode_title(mode)}", "", f"Mode `{mode}`: test AUC, mean ± sd over repeats (p vs "
                  f"{reference_init}).", "", "| Initialisation | " + " | ".join(tasks) + " |",
                  "|---|" + "---|" * len(tasks)]
        for init in inits:
            label = f"{init} (reference)" if init == reference_init else init
            cells = [tables[mode]["rows"][init][task] or "–" for task in tasks]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        notes = [f"{s.init} on {s.task}: {s.note}" for s in summaries if s.mode == mode and s.note]
        lines += [""] + [f"- Note: {n}" for n in notes] + ([""] if notes else [])
        lines += [f"![AUC per repeat, {mode}, {name}]({name})" for name in box_plots[mode]] + [""]
    if roc_plots:
        lines += ["## ROC curves", ""] + [f"![ROC {key}]({name})" for key, name in roc_plots] + [""]
    if embeddings:
        lines += ["## Embeddings", "", "UMAP of each initialisation's features, coloured by (modality, anatomy).", "",
                  "![UMAP panels](umap.png)", ""]

    summary = {"title": title, "reference_init": reference_init, "protocol": protocol.to_dict(),
               "inits": inits, "tasks": tasks, "modes": modes, "summary": summary_rows, "tables": tables,
               "figures": sorted(n for n in written if n.endswith(".png"))}
    atomic_write_json(put("summary.json"), summary)
    atomic_write_text(put("report.md"), "\n".join(lines))
    return written
