"""The evaluation report: raw fold AUCs, summary tables laid out like the ModAn paper's Tables 4 and 5, plots.

``write_report`` writes into one folder (every file atomically)::

    results.csv                       one row per (init, mode, task, label fraction, repeat, fold): the raw AUCs
    summary.csv, summary.json         one row per (mode, task, label fraction, init): mean, sd, repeats, p-value
                                      vs the reference at the same fraction, training images
    report.md                         protocol, one table per mode (rows = inits, columns = tasks; at the largest
                                      label fraction), the label-fraction curves, the figures
    auc_box_<mode>_<task>.png         one box per init over its repeat means (largest label fraction)
    auc_curve_<mode>_<task>.png       AUC against the number of training images, one line per init (when the rows
                                      hold several label fractions)
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
from .stats import (
    RESULT_FIELDS,
    WILCOXON_ZERO_METHOD,
    Alternative,
    AucRow,
    EvalMode,
    InitSummary,
    compare_inits,
    fold_auc,
)

__all__ = ["EvaluationProtocol", "format_cell", "format_p", "mode_title", "write_report", "SUMMARY_FIELDS"]

SUMMARY_FIELDS = ("mode", "task", "label_fraction", "init", "reference", "n_repeats", "n_folds", "n_train",
                  "mean_auc", "sd_auc", "p_value", "repeat_means", "note")

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
        label_fractions: the fractions of a label-fraction curve (several); overrides ``label_fraction``.
        notes: further lines.
        folds: how the test folds were obtained (e.g. imported from the data set), replacing the default sentence
            "fixed stratified folds (grouped by patient/case where the task has groups)".
    """

    fold_seed: int | None = None
    fold_plan: str | None = None
    repeat_seeds: Sequence[int] | None = None
    val_fraction: float | None = None
    validation: str = VALIDATION_SPLIT_METHOD
    model_selection: str | None = None
    label_fraction: float | None = None
    notes: Sequence[str] = field(default_factory=tuple)
    label_fractions: Sequence[float] | None = None
    folds: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fold_seed": self.fold_seed, "fold_plan": self.fold_plan,
                "repeat_seeds": None if self.repeat_seeds is None else [int(s) for s in self.repeat_seeds],
                "val_fraction": self.val_fraction, "validation": self.validation,
                "model_selection": self.model_selection, "label_fraction": self.label_fraction,
                "label_fractions": None if self.label_fractions is None else [float(f) for f in self.label_fractions],
                "folds": self.folds, "notes": list(self.notes)}


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


def _train_sizes(sizes: Mapping[str, Mapping[float, float]] | None) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    for task, by_fraction in (sizes or {}).items():
        for fraction, n in by_fraction.items():
            if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)) or not (
                    math.isfinite(float(n)) and float(n) > 0):
                raise ValueError(f"train_sizes[{task!r}][{fraction!r}] must be a number > 0, got {n!r}")
            out.setdefault(str(task), {})[float(fraction)] = float(n)
    return out


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


def _curve_plot(lines: Mapping[str, Sequence[InitSummary | None]], xs: Sequence[float], fractions: Sequence[float],
                sized: bool, mode: str, task: str, path: Path) -> None:
    """AUC (mean ± sd over repeats) against the training images (``sized``) or the label fraction, log x axis."""
    # lazy: matplotlib is imported only when a figure is drawn
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, NullLocator

    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.subplots()
    x = np.asarray(xs, dtype=np.float64)
    for init, cells in lines.items():
        mean = np.asarray([np.nan if c is None else c.mean for c in cells])
        sd = np.asarray([np.nan if c is None else c.sd for c in cells])
        reference = any(c is not None and c.reference for c in cells)
        line = ax.plot(x, mean, marker="o", lw=2.0 if reference else 1.5,
                       label=init + (" (reference)" if reference else ""))[0]
        if np.isfinite(sd).any():
            ax.fill_between(x, mean - sd, mean + sd, where=np.isfinite(sd), color=line.get_color(), alpha=0.15,
                            lw=0)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    labels = [f"{n:.0f}\n({f:g})" if sized else f"{f:g}" for n, f in zip(x, fractions)]
    ax.set_xticks(x, labels)
    ax.set_xlabel("training images per fold, mean over repeats and folds (label fraction)" if sized
                  else "label fraction of each training part")
    ax.set_ylabel("test AUC, mean ± sd over repeats")
    ax.set_title(f"{task} – {mode_title(mode)}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
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


def _protocol_lines(protocol: EvaluationProtocol, summaries: Sequence[InitSummary], reference_init: str,
                    alternative: Alternative) -> list[str]:
    def given(value: Any) -> str:
        return "not recorded" if value is None else str(value)

    folds = sorted({s.n_folds for s in summaries})
    repeats = sorted({s.n_repeats for s in summaries})
    seeds = None if protocol.repeat_seeds is None else ", ".join(str(int(s)) for s in protocol.repeat_seeds)
    fractions = list(protocol.label_fractions or ())
    single = fractions[0] if len(fractions) == 1 else protocol.label_fraction
    fraction = None if single is None else f"{single:.0%} of each training part"
    if len(fractions) > 1:
        fraction_line = (f"- Label fractions: {', '.join(f'{f:g}' for f in sorted(fractions))} of each training part "
                         "(after the validation part is held out, which is never subsampled): stratified, whole "
                         "groups, drawn once per repeat and fold and the same for every initialisation; nested (a "
                         "smaller fraction's subset lies inside every larger one's). The tables by mode give the "
                         "largest fraction; the label-fraction curves give every fraction.")
    else:
        fraction_line = f"- Label fraction: {given(fraction)}."
    lines = [
        f"- Cross-validation: {'/'.join(map(str, folds))} "
        f"{protocol.folds or 'fixed stratified folds (grouped by patient/case where the task has groups)'}, the same "
        f"folds for every initialisation and repeat; fold seed {given(protocol.fold_seed)}; fold plan "
        f"{given(protocol.fold_plan)}.",
        f"- Repeats: {'/'.join(map(str, repeats))} per (initialisation, mode, task"
        f"{', label fraction' if len(fractions) > 1 else ''}); repeat seeds {given(seeds)}.",
        f"- Validation split (model selection): val_fraction = {given(protocol.val_fraction)}; {protocol.validation}.",
        f"- Model selection: {given(protocol.model_selection)}.",
        fraction_line,
        "- Metric: ROC AUC of each test fold; a repeat's score is the mean over its folds; cells give the mean ± "
        "sample sd (ddof = 1) of the repeat scores.",
        f"- Test: Wilcoxon signed-rank test of each initialisation against the reference (**{reference_init}**), "
        f"paired by repeat, {alternative.describe()}: alternative = {alternative.value!r} on the differences "
        f"reference - other (scipy.stats.wilcoxon, zero_method={WILCOXON_ZERO_METHOD!r}: zero differences dropped, "
        "exact null distribution for small samples; p = 1 when all differences are zero). No correction for multiple "
        f"comparisons. With R paired repeats the smallest attainable p is "
        f"{'2' if alternative == Alternative.TWO_SIDED else '1'} / 2^R "
        f"(here {', '.join(f'{alternative.smallest_p(r):.3g} for R = {r}' for r in repeats)}).",
    ]
    return lines + [f"- {note}" for note in protocol.notes]


def write_report(rows: Iterable[AucRow | Mapping[str, Any]], out_dir: str | Path, reference_init: str, *,
                 roc_data: Mapping[str, Mapping[str, Sequence[tuple[Any, Any]]]] | None = None,
                 embeddings: Mapping[str, tuple[np.ndarray, Sequence[Any], Sequence[Any]]] | None = None,
                 protocol: EvaluationProtocol | Mapping[str, Any] | None = None,
                 init_order: Sequence[str] | None = None, task_order: Sequence[str] | None = None,
                 title: str = "Downstream evaluation", seed: int = 0,
                 train_sizes: Mapping[str, Mapping[float, float]] | None = None,
                 alternative: Alternative | str = Alternative.TWO_SIDED) -> dict[str, Path]:
    """Write the evaluation report into ``out_dir`` (see the module docstring for the files).

    Rows of several label fractions give, per (mode, task), a table AUC × fraction × init (p against the reference
    at each fraction) and a plot of AUC against the number of training images; the tables by mode, the box plots and
    the ROC curves are of the largest fraction. With one fraction the report is the single-fraction report.

    Args:
        rows: raw AUC rows, :class:`~monai_modan.evaluation.stats.AucRow` or mappings with
            ``init, mode, task, [label_fraction,] repeat, fold, auc``.
        reference_init: the init every other one is tested against (its cells carry no p-value).
        roc_data: plot key (usually the task, e.g. ``"busi"`` or ``"busi linear_probing"``) -> init -> one
            ``(y_true [n], y_score [n])`` per test fold (all repeats); one ``roc_<key>.png`` per key.
        embeddings: init -> ``(X [N, F], modality [N], anatomy [N])`` for :func:`~.embedding.umap_panels`.
        protocol: seeds, validation split and label fraction to state (an :class:`EvaluationProtocol` or its
            fields as a mapping).
        init_order, task_order: table row/column order (default: order of first appearance).
        title: report heading. seed: UMAP seed.
        train_sizes: task -> label fraction -> training images per fold (mean over repeats and folds), the x axis of
            the curves (without it, or for a task or fraction it lacks, the axis is the label fraction).
        alternative: of the paired Wilcoxon tests (:class:`~monai_modan.evaluation.stats.Alternative`:
            ``two-sided``, ``greater`` = the reference is better, ``less``); stated in the protocol.

    Returns:
        file name -> path of every file written.
    """
    rows = [AucRow.coerce(r) for r in rows]
    alternative = Alternative.parse(alternative)
    summaries = compare_inits(rows, reference_init, alternative)
    sizes = _train_sizes(train_sizes)
    if protocol is None:
        protocol = EvaluationProtocol()
    elif isinstance(protocol, Mapping):
        protocol = EvaluationProtocol(**protocol)
    inits = _ordered((s.init for s in summaries), init_order, "init")
    tasks = _ordered((s.task for s in summaries), task_order, "task")
    known_first = {m: i for i, m in enumerate(EvalMode)}
    modes = sorted(dict.fromkeys(s.mode for s in summaries),
                   key=lambda m: known_first.get(_known_mode(m), len(known_first)))
    fractions = sorted({s.label_fraction for s in summaries})
    main = fractions[-1]  # the tables by mode, box plots and ROC curves: the largest fraction
    curves = len(fractions) > 1
    by_key = {(s.mode, s.task, s.init): s for s in summaries if s.label_fraction == main}
    by_fraction = {(s.mode, s.task, s.label_fraction, s.init): s for s in summaries}

    out_dir = Path(out_dir)
    written: dict[str, Path] = {}

    def put(name: str) -> Path:
        if name in written:
            raise ValueError(f"two report files would be named {name}: rename a task, mode or ROC key")
        written[name] = out_dir / name
        return written[name]

    atomic_write_text(put("results.csv"), _csv_text(RESULT_FIELDS, (r.as_dict() for r in rows)))
    summary_rows = [{"mode": s.mode, "task": s.task, "label_fraction": s.label_fraction, "init": s.init,
                     "reference": s.reference, "n_repeats": s.n_repeats, "n_folds": s.n_folds,
                     "n_train": sizes.get(s.task, {}).get(s.label_fraction), "mean_auc": s.mean,
                     "sd_auc": _finite_or_none(s.sd), "p_value": _finite_or_none(s.p_value),
                     "repeat_means": list(s.repeat_means), "note": s.note} for s in summaries]
    blank = {"sd_auc", "p_value", "n_train"}  # None -> empty CSV cell
    atomic_write_text(put("summary.csv"), _csv_text(SUMMARY_FIELDS, (
        {**{k: "" if k in blank and v is None else v for k, v in r.items()},
         "repeat_means": " ".join(f"{m:.6f}" for m in r["repeat_means"])} for r in summary_rows)))

    tables = {mode: {"title": mode_title(mode), "columns": tasks, "label_fraction": main,
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
    curve_tables: dict[str, dict[str, dict[str, Any]]] = {}
    for mode in modes if curves else ():
        for task in tasks:
            present = [f for f in fractions if any((mode, task, f, init) in by_fraction for init in inits)]
            if len(present) < 2:
                continue
            known = all(f in sizes.get(task, {}) for f in present)
            xs = [sizes[task][f] for f in present] if known else present
            per_init = {init: [by_fraction.get((mode, task, f, init)) for f in present] for init in inits
                        if any((mode, task, f, init) in by_fraction for f in present)}
            name = f"auc_curve_{_slug(mode, task)}.png"
            _curve_plot(per_init, xs, present, known, mode, task, put(name))
            curve_tables.setdefault(mode, {})[task] = {
                "label_fractions": present, "n_train": [sizes.get(task, {}).get(f) for f in present],
                "rows": {init: [None if c is None else format_cell(c) for c in cells] for init, cells in per_init.items()},
                "figure": name}
    roc_plots = []
    for key, by_init in (roc_data or {}).items():
        name = f"roc_{_slug(key)}.png"
        _roc_plot(key, by_init, put(name))
        roc_plots.append((key, name))
    if embeddings:
        umap_panels(embeddings, put("umap.png"), seed=seed)

    lines = [f"# {title}", "", "## Protocol", "", *_protocol_lines(protocol, summaries, reference_init, alternative),
             ""]
    for mode in modes:
        at = f", label fraction {main:g} (the largest)" if curves else ""
        lines += [f"## {mode_title(mode)}", "", f"Mode `{mode}`{at}: test AUC, mean ± sd over repeats (p vs "
                  f"{reference_init}).", "", "| Initialisation | " + " | ".join(tasks) + " |",
                  "|---|" + "---|" * len(tasks)]
        for init in inits:
            label = f"{init} (reference)" if init == reference_init else init
            cells = [tables[mode]["rows"][init][task] or "–" for task in tasks]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        notes = [f"{s.init} on {s.task}: {s.note}" for s in summaries
                 if s.mode == mode and s.note and s.label_fraction == main]
        lines += [""] + [f"- Note: {n}" for n in notes] + ([""] if notes else [])
        lines += [f"![AUC per repeat, {mode}, {name}]({name})" for name in box_plots[mode]] + [""]
    if curve_tables:
        lines += ["## Label-fraction curves", "",
                  "Test AUC, mean ± sd over repeats, at each label fraction (the share of each training part used; "
                  f"nested subsets); p: Wilcoxon signed-rank test ({alternative.value}) against {reference_init} at "
                  "the same fraction, paired by repeat. n: training images per fold, mean over repeats and folds (the "
                  "validation part is not subsampled).", ""]
        for mode, by_task in curve_tables.items():
            for task, curve in by_task.items():
                heads = [f"{f:g}" + ("" if n is None else f" (n = {n:.1f})")
                         for f, n in zip(curve["label_fractions"], curve["n_train"])]
                lines += [f"### {task} – {mode_title(mode)}", "", "| Initialisation | " + " | ".join(heads) + " |",
                          "|---|" + "---|" * len(heads)]
                for init, cells in curve["rows"].items():
                    label = f"{init} (reference)" if init == reference_init else init
                    lines.append(f"| {label} | " + " | ".join(c or "–" for c in cells) + " |")
                notes = [f"{s.init} at label fraction {s.label_fraction:g}: {s.note}" for s in summaries
                         if s.mode == mode and s.task == task and s.note]
                lines += [""] + [f"- Note: {n}" for n in notes] + ([""] if notes else [])
                lines += [f"![AUC against training images, {mode}, {task}]({curve['figure']})", ""]
    if roc_plots:
        lines += ["## ROC curves", "", *([f"At label fraction {main:g} (the largest).", ""] if curves else []),
                  *(f"![ROC {key}]({name})" for key, name in roc_plots), ""]
    if embeddings:
        lines += ["## Embeddings", "", "UMAP of each initialisation's features, coloured by (modality, anatomy).", "",
                  "![UMAP panels](umap.png)", ""]

    summary = {"title": title, "reference_init": reference_init, "alternative": alternative.value,
               "protocol": protocol.to_dict(),
               "inits": inits, "tasks": tasks, "modes": modes, "label_fractions": fractions,
               "summary": summary_rows, "tables": tables, "curves": curve_tables,
               "figures": sorted(n for n in written if n.endswith(".png"))}
    atomic_write_json(put("summary.json"), summary)
    atomic_write_text(put("report.md"), "\n".join(lines))
    return written
