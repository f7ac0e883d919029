"""Command line: ``python -m monai_modan <command> --help``.

Commands
    index    folder (DICOM export, RadImageNet tree, MedMNIST .npz) -> datalist JSON + report
    synth    write the embedded synthetic corpus (RadImageNet layout + DICOM export + downstream tasks)
    minirin  sample miniRIN (<= N images per RadImageNet class, seeded) and write the chosen list + datalist
    convert  a downstream data set (MRNet, BUSI, DDTI, CSV, folder per class, MedMNIST) -> binary task datalist
    experiment  every init x {fine-tune, linear probe} x every task under the CV protocol -> one report
    pack     a datalist -> memory-mapped uint8 corpus for the device-resident fast pretraining path
    audit    datalists -> duplicates, near duplicates, blank images, pretraining/task leakage (+ cleaned lists)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from pathlib import Path

# Only light modules at the top: building the parser (``--help``) imports no torch, MONAI or data module. Each
# command imports what it needs when it runs; the defaults shown come from utils.defaults, the one home the package's
# dataclasses read them from too (tests/cli/test_cli.py checks both).
from .utils.defaults import CV_FOLDS, CV_REPEATS, EVAL_MODES, EXPERIMENT_WORKERS, FINETUNE_EPOCHS, IMAGE_SIZE
from .utils.defaults import (
    AUDIT_BLANK_STD,
    AUDIT_MAX_DISTANCE,
    AUDIT_MAX_SHIFT,
    AUDIT_MIN_CORRELATION,
    AUDIT_MIN_SIZE,
)

__all__ = ["main", "SourceType", "detect_source", "index_path"]
_FROM_INDEX = ("SourceType", "detect_source", "index_path")  # re-exported, imported on first use (PEP 562)


def __getattr__(name: str):
    if name in _FROM_INDEX:
        return getattr(importlib.import_module(".data.index", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _space(args):
    from .labels import LabelSpace

    return LabelSpace.default(extra_groups=args.groups or (), user_yaml=args.vocab or None)


def _cmd_index(args) -> int:
    from .data.datalist import format_report, write_datalist
    from .data.index import index_sources
    from .utils.io import check_writable

    space = _space(args)
    out = Path(args.out)
    cache = None if args.no_cache else (args.cache or out.with_name(out.stem + ".dicom-cache.json"))
    check_writable(out)  # before indexing, which can take long
    # files whose path holds one of their own identifying values are listed through links made here
    links = out.with_name(out.stem + ".links")
    stem = out.with_suffix("") if out.suffix == ".json" else out
    own_outputs = [out, Path(f"{stem}.report.md"), Path(f"{stem}.report.json")]  # when written into the export
    result, classes, sources = index_sources(args.path, space, args.source, workers=args.workers, cache=cache,
                                             link_dir=links, exclude=own_outputs, progress=not args.quiet)
    if not result.records:
        reasons = ", ".join(sorted({s.reason for s in result.skipped})) or "no files"
        raise UsageError(f"{' '.join(args.path)}: no usable image found ({len(result.skipped)} skipped: {reasons})")
    sources = sources if len(args.path) > 1 else []
    write_datalist(result, space, out, classes=classes, sources=sources)
    if not args.quiet:
        print(format_report(result, space, sources=sources))
    print(f"wrote {out} ({len(result.records)} images, {len(result.skipped)} skipped); report: {stem}.report.md")
    return 0


def _cmd_synth(args) -> int:
    from .synthetic import SyntheticTask, generate_downstream_task, generate_pretraining_corpus

    corpus = generate_pretraining_corpus(args.out, images_per_class=args.images_per_class, image_size=args.image_size,
                                         seed=args.seed, progress=not args.quiet)
    print(f"wrote synthetic pretraining corpus to {args.out}: {corpus}")
    if not args.no_tasks:
        for task in SyntheticTask:
            path = generate_downstream_task(task, Path(args.out) / "tasks", n_images=args.task_images,
                                            image_size=args.image_size, seed=args.seed)
            print(f"wrote synthetic downstream task {task}: {path}")
    return 0


def _cmd_minirin(args) -> int:
    from .data.datalist import write_datalist
    from .data.radimagenet_index import index_radimagenet, sample_minirin, write_selection

    space = _space(args)
    index = index_radimagenet(args.root, space, progress=not args.quiet)
    mini = sample_minirin(index, per_class=args.per_class, seed=args.seed)
    out = Path(args.out)
    if out.suffix == ".csv":
        selection, datalist = out, out.with_suffix(".json")
    else:
        selection, datalist = out / "minirin_selection.csv", out / "minirin.json"
    write_selection(mini, selection)
    write_datalist(mini.result, space, datalist, classes=mini.classes)
    print(f"miniRIN: {len(mini.result.records)} images from {len(mini.classes)} classes "
          f"(<= {args.per_class} per class, seed {args.seed})\nwrote {selection} and {datalist}")
    return 0


def _parse_options(pairs: list[str] | None) -> dict:
    """``key=value`` pairs; values are read as YAML scalars/lists (``true``, ``4b``, ``[2, 3]``)."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {pair!r}: write key=value, e.g. --option include_normal=false")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _cmd_convert(args) -> int:
    from .data.downstream import convert

    task = convert(args.source, args.kind, args.out, **_parse_options(args.option))
    counts = task.counts
    print(f"wrote {args.out}: {counts[1]} positive ({task.positive}), {counts[0]} negative, {len(task.groups)} groups; "
          f"{len(task.excluded)} excluded")
    for note in task.notes:
        print(f"  note: {note}")
    return 0


def _cmd_pack(args) -> int:
    from .data.packed import pack_datalist

    packed = pack_datalist(args.datalist, args.out, args.image_size, split=args.split, workers=args.workers,
                           progress=not args.quiet)
    print(f"packed {len(packed)} images ({args.split}, {args.image_size} px, {len(packed.skipped)} skipped) "
          f"into {args.out}")
    return 0



def _cmd_audit(args) -> int:
    from .data.audit import AuditSettings, audit, write_audit_report, write_cleaned_datalists

    settings = AuditSettings(max_distance=args.max_distance, min_correlation=args.min_correlation,
                             max_shift=args.max_shift, min_size=args.min_size, blank_std=args.blank_std)
    first = Path(args.datalists[0])
    out = Path(args.out) if args.out else first.with_name(first.stem + ".audit")
    report = audit(args.datalists[0], args.datalists[1:], settings, pretrain_splits=args.pretrain_splits,
                   cache=not args.no_cache, workers=args.workers, progress=not args.quiet)
    cleaned = write_cleaned_datalists(report) if args.drop else {}
    files = write_audit_report(report, out, cleaned)
    for name, c in report.summary().items():
        seen = f", {c['seen_in_pretraining']} also in pretraining" if "seen_in_pretraining" in c else ""
        print(f"{name}: {c['images']} images, {c['unreadable']} unreadable, {c['blank_or_constant']} blank, "
              f"{c['too_small']} too small, {c['exact_pairs']} exact + {c['near_pairs']} near duplicate pairs "
              f"({c['conflicting_label_pairs']} with different labels){seen}")
    for name, path in cleaned.items():
        print(f"cleaned {name}: {path}")
    print(f"report: {files['audit.md']}")
    return 0

DEFAULT_TASKS = ("acl_mrnet", "breast_us", "thyroid_us")


def _cmd_experiment(args) -> int:
    from .data.downstream.prepare import prepare_task
    from .evaluation.configure import configure_experiment
    from .evaluation.experiment import experiment_from_yaml, resolve_label_fractions, run_experiment
    from .evaluation.inits import PRETRAIN_METHODS, pretrained_inits
    from .evaluation.stats import Alternative
    from .embedded import EMBEDDED_TASKS, embedded_task_datalist
    from .synthetic import default_task_datalist

    if args.config:
        if args.allow_torchscript:  # --config overrides every other option: never ignore an opt-in silently
            raise UsageError(f"--allow-torchscript has no effect with --config: write `allow_torchscript: true` in "
                             f"{args.config} (only for weights files you trust: it runs code from the file)")
        if args.allow_leakage:
            raise UsageError(f"--allow-leakage has no effect with --config: write `allow_leakage: true` in "
                             f"{args.config}")
        config = experiment_from_yaml(args.config)
    else:
        resolve_label_fractions(args.label_fraction, args.label_fractions)  # a bad value fails before any task is made
        if args.alternative is not None:  # likewise
            Alternative.parse(args.alternative)
        out = Path(args.out)
        tasks = {}
        for spec in args.task or DEFAULT_TASKS:
            name, _, source = spec.partition("=")
            if source:  # NAME=SOURCE: convert the data set; NAME alone: embedded real data or a synthetic stand-in
                tasks[name] = prepare_task(name, out / "tasks", source)
            elif name in EMBEDDED_TASKS:
                tasks[name] = embedded_task_datalist(name, out / "tasks")
            else:
                tasks[name] = default_task_datalist(name, out / "tasks", n_images=args.synthetic_images,
                                                    image_size=args.image_size)
        methods = () if args.scratch_only else PRETRAIN_METHODS
        inits = pretrained_inits(args.pretrain_runs, methods=methods, imagenet=args.imagenet)
        if not args.quiet:
            missing = [m for m in methods if m not in inits]
            print(f"inits: {', '.join(inits)}" + (f" (no encoder under {Path(args.pretrain_runs).resolve()} for "
                                                  f"{', '.join(missing)})" if missing else ""))
        config = configure_experiment(
            tasks, inits, out, image_size=args.image_size,
            recipe={"epochs": args.epochs}, modes=args.modes, repeats=args.repeats, folds=args.folds,
            label_fraction=args.label_fraction, label_fractions=args.label_fractions, knn=args.knn,
            logistic=args.logistic, umap_datalist=args.umap_datalist, reference_init=args.reference,
            alternative=args.alternative, fixed_splits=args.fixed_splits,
            workers=args.workers, allow_torchscript=args.allow_torchscript, allow_leakage=args.allow_leakage,
            title="monai-modan: which initialisation for which task?")
    files = run_experiment(config, progress=not args.quiet)
    report = files.get("report.md") or next(iter(files.values()))
    print(f"report: {report}")
    return 0


class UsageError(ValueError):
    """A user mistake: printed as one line, no traceback."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help, except where there is nothing to show (``None``, a flag)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help  # nothing to show, or the help says it in words
        if isinstance(action.default, (list, tuple)):  # as it is typed: --modes fine_tuning linear_probing
            return f"{action.help} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


class _EnumValues:
    """The values of an enum of the package, for ``choices``: imported when argparse first needs them (to check a
    value given, or to print this command's help), so that building the parser imports no data module. Give the
    option a ``metavar`` (argparse formats the choices of an option without one when it is added) and write
    ``%(choices)s`` in its help."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _values(self) -> list[str]:
        return [m.value for m in getattr(importlib.import_module(self.module, __package__), self.name)]

    def __contains__(self, value) -> bool:
        return value in self._values()

    def __iter__(self):
        return iter(self._values())


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option, kept for one release and hidden from help: stores into the new option's
    ``dest`` and prints one line to stderr."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated and will be removed in the next release; use {self.replacement}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def _image_size_args(q, default: int) -> None:
    q.add_argument("--image-size", type=int, default=default, metavar="S", help="image side S in pixels")
    q.add_argument("--size", type=int, dest="image_size", metavar="S", action=_DeprecatedAlias,
                   replacement="--image-size")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m monai_modan",
        description="monai-modan: metadata (modality + anatomy) supervised pretraining for medical imaging.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `python -m monai_modan <command> --help` for each command. Docs: docs/ in the repository.",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)

    def vocab_args(q):
        q.add_argument("--vocab", action="append", metavar="YAML",
                       help="user vocabulary YAML extending the label space (repeatable; see docs/labels.md)")
        q.add_argument("--groups", nargs="+", metavar="GROUP",
                       help="shipped extra label groups to add, e.g. laterality contrast manufacturer view")
        q.add_argument("--quiet", action="store_true", help="no progress bars, no printed report")

    q = command("index", help="index a DICOM export / RadImageNet tree / MedMNIST files into a datalist",
                       description="Walk each PATH, label every usable image with modality and anatomy (multi-hot), and "
                                   "write a MONAI datalist JSON plus a report (<out>.report.md/.json): counts per "
                                   "modality x anatomy, which tag produced each label, unmapped tag values, and "
                                   "skipped files by reason. No patient-identifying value is written.")
    q.add_argument("path", nargs="+", metavar="PATH",
                   help="DICOM export folder, RadImageNet root (containing radiology_ai/), .npz file/folder, or a "
                        "datalist .json indexed before; several PATHs make one corpus with one label space and a "
                        "per-source report")
    q.add_argument("--out", required=True, help="datalist JSON to write")
    q.add_argument("--source", default="auto", choices=_EnumValues(".data.index", "SourceType"),
                   metavar="SOURCE", help="force the source type: %(choices)s")
    q.add_argument("--workers", type=int, default=None, help="header-reading processes (default: all cores; 0 = serial)")
    q.add_argument("--cache", help="DICOM header cache (default: <out>.dicom-cache.json); unchanged files are not re-read")
    q.add_argument("--no-cache", action="store_true", help="read every header again")
    vocab_args(q)
    q.set_defaults(func=_cmd_index)

    q = command("synth", help="write the embedded synthetic corpus",
                       description="Write a miniRIN-like synthetic corpus (RadImageNet layout + DICOM export with "
                                   "realistic, messy tags) and the synthetic downstream tasks (knee ACL, breast US, "
                                   "thyroid US). Deterministic by seed; seconds on a CPU at 64 px.")
    q.add_argument("out", help="output folder")
    q.add_argument("--images-per-class", type=int, default=8, help="images per RadImageNet-like class")
    _image_size_args(q, IMAGE_SIZE)
    q.add_argument("--seed", type=int, default=0, help="seed of every random draw (the output is deterministic)")
    q.add_argument("--task-images", type=int, default=120, help="images per synthetic downstream task")
    q.add_argument("--no-tasks", action="store_true", help="skip the downstream tasks")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=_cmd_synth)

    q = command("minirin", help="sample miniRIN from a RadImageNet root",
                       description="Take up to N images per RadImageNet class (a class is modality/anatomy/folder), "
                                   "seeded, from the training split; write the chosen list (CSV, to reproduce the "
                                   "run) and a datalist JSON.")
    q.add_argument("root", help="RadImageNet root (the folder containing radiology_ai/)")
    q.add_argument("--out", required=True, help="output folder, or a .csv path for the list (datalist written beside)")
    q.add_argument("--per-class", type=int, default=100, help="at most this many images per class")
    q.add_argument("--seed", type=int, default=0, help="seed of the per-class sampling")
    vocab_args(q)
    q.set_defaults(func=_cmd_minirin)

    q = command("convert", help="convert a downstream data set to a binary task datalist",
                       description="Convert MRNet (ACL), BUSI, DDTI (XML or fold CSVs), a CSV (path,label[,group]), a "
                                   "folder per class, a datalist JSON or a MedMNIST .npz into a task datalist with "
                                   "'label' (1 = tear / malignant) and 'group' (patient / case when known). Masks, "
                                   "duplicates and unusable items are excluded with reasons.")
    q.add_argument("source", help="data set folder or file")
    q.add_argument("--out", required=True, help="task datalist JSON to write")
    q.add_argument("--kind", default="auto", choices=_EnumValues(".data.downstream.convert", "TaskSource"),
                   metavar="KIND", help="force the layout: %(choices)s")
    q.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="converter option, e.g. slices=all, include_normal=false, malignant_from=4b, positive=malignant")
    q.set_defaults(func=_cmd_convert)

    q = command("experiment", help="run the whole evaluation: every init x mode x task, one report",
                       description="Fine-tune and linear-probe every initialisation (the modan_pretrain bundle's "
                                   "encoders found under --pretrain-runs, optional ImageNet weights, scratch) on "
                                   "every task under the fixed-fold, repeated cross-validation protocol, and write one "
                                   "report (markdown/CSV/JSON tables like the ModAn paper's Tables 4 and 5, ROC curves, "
                                   "box plots, UMAP panels). Without --task: the three embedded synthetic tasks.")
    q.add_argument("--config", help="experiment YAML (ExperimentConfig fields); overrides every other option")
    q.add_argument("--out", default="outputs/experiment", help="output folder (rows are appended as runs finish; "
                                                               "re-running resumes)")
    q.add_argument("--task", action="append", metavar="NAME[=SOURCE]",
                   help="task and its data (MRNet/BUSI/DDTI/CSV/folder/npz, converted); NAME alone = embedded data: "
                        f"real BreastMNIST (breastmnist) or a synthetic stand-in ({', '.join(DEFAULT_TASKS)})")
    q.add_argument("--pretrain-runs", default=str(Path(__file__).resolve().parents[1] / "bundles" / "modan_pretrain"
                                                  / "runs"),
                   help="folder with <method>/encoder.pt from the modan_pretrain bundle (default: this checkout's, "
                        "wherever the command runs); finding no encoder there is an error")
    q.add_argument("--scratch-only", action="store_true",
                   help="compare without pretrained encoders (scratch, and --imagenet if given)")
    q.add_argument("--imagenet", help="local torchvision resnet18 weights file (never downloaded)")
    q.add_argument("--allow-torchscript", action="store_true",
                   help="accept TorchScript archives as weights files: this RUNS CODE FROM THE FILE on load (use only "
                        "for files you trust; default: refused, with how to convert one to a state dict)")
    q.add_argument("--allow-leakage", action="store_true",
                   help="evaluate even when task images are also in an encoder's pretraining corpus (the datalist its "
                        "config.json names; default: refused, naming the images; the report states the count)")
    q.add_argument("--reference", help="reference init for the Wilcoxon tests (default: the first found)")
    q.add_argument("--alternative", metavar="{two-sided,greater,less}",
                   help="alternative of the paired Wilcoxon tests: two-sided (default), greater = the reference is "
                        "better (the paper's one-sided tests), less")
    q.add_argument("--fixed-splits", action=argparse.BooleanOptionalAction, default=None,
                   help="keep each fold's validation part and label-fraction subsets in every repeat, so repeats "
                        "differ by training seed only (default: on, the paper's setting); --no-fixed-splits redraws "
                        "them per repeat")
    q.add_argument("--modes", nargs="+", default=list(EVAL_MODES), metavar="MODE",
                   help=f"trained evaluation modes, any of {', '.join(EVAL_MODES)} (the 0.1 spellings fine_tune / "
                        "linear_probe still work, with a deprecation warning; frozen-feature classifiers: --knn, "
                        "--logistic)")
    q.add_argument("--repeats", type=int, default=CV_REPEATS,
                   help="repeats of the whole cross-validation (paired across inits)")
    q.add_argument("--folds", type=int, default=CV_FOLDS, help="test folds of the fixed fold plan")
    q.add_argument("--epochs", type=int, default=FINETUNE_EPOCHS,
                   help="training epochs per fold (the paper's Table 3)")
    q.add_argument("--image-size", type=int, default=IMAGE_SIZE, metavar="S",
                   help="input side S in pixels (also the size of the synthetic tasks)")
    q.add_argument("--label-fraction", type=float, metavar="F",
                   help="share of each training part used, in (0, 1] (default: 1.0 = all)")
    q.add_argument("--label-fractions", type=float, nargs="+", metavar="F",
                   help="a label-fraction curve: the whole protocol for each fraction (e.g. 0.05 0.1 0.25 0.5 1.0), "
                        "nested subsets, one folder and one report")
    q.add_argument("--knn", action="store_true", help="also evaluate kNN on frozen features")
    q.add_argument("--logistic", action="store_true",
                   help="also evaluate logistic regression on standardised frozen features (not in the paper)")
    q.add_argument("--umap-datalist", help="pretraining datalist whose embeddings are drawn as UMAP panels")
    q.add_argument("--synthetic-images", type=int, default=120, help="images per embedded synthetic task")
    q.add_argument("--workers", type=int, default=EXPERIMENT_WORKERS,
                   help="processes running fine-tuning folds concurrently (results identical to serial; see docs)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=_cmd_experiment)

    q = command("pack", help="pack a datalist into a memory-mapped uint8 corpus (fast pretraining path)",
                       description="Decode every image of a split once through the project reader at --image-size and "
                                   "store it as a memory-mapped uint8 array [N, 1, S, S] with labels and an index JSON "
                                   "(written atomically); bad images are skipped and counted. Large corpora then load "
                                   "without per-file decoding, on the device, sharded across DDP ranks.")
    q.add_argument("datalist", help="datalist JSON from `index`")
    q.add_argument("--out", required=True, help="output folder")
    _image_size_args(q, IMAGE_SIZE)
    q.add_argument("--split", default="training", help="datalist split to pack")
    q.add_argument("--workers", type=int, default=None, help="decoding processes (default: automatic)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=_cmd_pack)

    q = command("audit", help="find duplicates, blank images and pretraining/task leakage in datalists",
                description="Decode every image of the datalists through the project reader (a volume: its middle "
                            "slice) and report unreadable, blank/constant and too-small images, exact duplicates "
                            "(same decoded pixels) and near duplicates (pHash distance and aligned thumbnail "
                            "correlation; thresholds measured in docs/audit.md) inside each datalist, and every task "
                            "image also in the pretraining corpus. Writes audit.md, audit.json and a contact sheet "
                            "audit_pairs.png; fingerprints are cached beside each datalist (<stem>.audit-cache.npz).")
    q.add_argument("datalists", nargs="+", metavar="DATALIST",
                   help="PRETRAIN.json [TASK.json ...]: the pretraining datalist, then task datalists (when the first "
                        "is a task datalist, every one is audited as a task)")
    q.add_argument("--out", help="report folder (default: <first datalist>.audit/ beside it)")
    q.add_argument("--drop", action="store_true",
                   help="also write <stem>.clean.json beside each datalist without the flagged images (duplicates "
                        "but their first copy, every copy when labels differ, task images seen in pretraining)")
    q.add_argument("--pretrain-splits", nargs="+", default=["training"], metavar="SPLIT",
                   help="splits of the pretraining datalist to audit (pretraining reads training)")
    q.add_argument("--max-distance", type=int, default=AUDIT_MAX_DISTANCE, metavar="BITS",
                   help="near duplicate: largest pHash Hamming distance (of 64 bits)")
    q.add_argument("--min-correlation", type=float, default=AUDIT_MIN_CORRELATION, metavar="R",
                   help="near duplicate: smallest aligned thumbnail correlation (-1 = pHash alone)")
    q.add_argument("--max-shift", type=int, default=AUDIT_MAX_SHIFT, metavar="PX",
                   help="largest shift in thumbnail pixels (of 32) searched when aligning")
    q.add_argument("--min-size", type=int, default=AUDIT_MIN_SIZE, metavar="PX",
                   help="images whose shorter side is smaller are reported as too small")
    q.add_argument("--blank-std", type=float, default=AUDIT_BLANK_STD, metavar="SD",
                   help="images whose pixel sd (on [0, 1]) is smaller are blank")
    q.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores; 0 = serial)")
    q.add_argument("--no-cache", action="store_true", help="neither read nor write the fingerprint caches")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=_cmd_audit)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``warning: ...`` line (no source line): e.g. a deprecated mode spelling in --modes or a
    config."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores the caller's warning display afterwards
            warnings.showwarning = _one_line_warning
            return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError) as e:  # user mistakes and unreadable inputs: one clear line
        if args.debug or os.environ.get("MONAI_MODAN_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
