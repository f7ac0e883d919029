"""``python -m monai_modan.benchmarks {loss,pretrain,index,cv,audit} [--json] [--device cpu|cuda] [--size N] ...``

Each command measures its candidate and its baseline(s) in this process and prints one result: the timings, the
ratio, the target, device, versions, sizes and date (``--json``: the whole result dict, see
:mod:`monai_modan.benchmarks.common`). ``--size`` is the main size of each benchmark: the batch ``B`` (loss), the
image side in pixels (pretrain, cv), the number of DICOM files (index).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monai_modan.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)

    def common(q: argparse.ArgumentParser, repeats: int) -> None:
        q.add_argument("--json", action="store_true", help="print the result as JSON")
        q.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
        q.add_argument("--repeats", type=int, default=repeats, help="timed repeats (the median is reported)")
        q.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")

    q = sub.add_parser("loss", help="MulSupCon fwd+bwd vs per-pair loop Jaccard and pytorch-metric-learning SupCon")
    common(q, repeats=5)
    q.add_argument("--size", type=int, default=256, help="batch B (images)")
    q.add_argument("--views", type=int, default=2)
    q.add_argument("--dim", type=int, default=128)
    q.add_argument("--number", type=int, default=10, help="calls per sample of the two fast losses")

    q = sub.add_parser("pretrain", help="fast path: step overhead vs fwd+bwd, epoch throughput vs DataLoader loop")
    common(q, repeats=3)
    q.add_argument("--size", type=int, default=None, help="image side in px (default 64 on CPU, 224 on CUDA)")
    q.add_argument("--batch-size", type=int, default=None, help="images per step (default 16 on CPU, 256 on CUDA)")
    q.add_argument("--images", type=int, default=None,
                   help="images in the timed epoch (default 64 on CPU, 2048 on CUDA)")
    q.add_argument("--stem", choices=("conv3x3", "conv7x7"), default="conv3x3")
    q.add_argument("--amp", choices=("auto", "bf16", "fp32"), default="auto", help="auto = bf16 on CUDA only")
    q.add_argument("--compile", action="store_true", help="torch.compile the fast path's forward")
    q.add_argument("--loader-workers", type=int, default=None, help="DataLoader workers of the plain loop")
    q.add_argument("--epoch-repeats", type=int, default=2, help="timed epochs of the throughput comparison")
    q.add_argument("--case", choices=("fast", "spark", "all"), default="fast",
                   help="fast: step overhead + epoch throughput; spark: SparK step vs MulSupCon step; all: both")

    q = sub.add_parser("index", help="DICOM header indexer (cold/warm cache) vs naive full dcmread loop")
    common(q, repeats=3)
    q.add_argument("--size", type=int, default=1000, help="number of DICOM image files")
    q.add_argument("--image-size", type=int, default=512, help="side of the synthetic images in px")
    q.add_argument("--source", default=None, help="replicate this folder of real files instead of synthetic ones")
    q.add_argument("--workers", type=int, default=None, help="indexer processes (default: all CPUs)")
    q.add_argument("--keep-os-cache", action="store_true", help="do not drop the files from the OS page cache")

    q = sub.add_parser("cv", help="evaluation protocol: fine-tuning folds in a process pool and linear probes "
                                  "sharing one feature pass, each vs one run after another")
    common(q, repeats=3)
    q.add_argument("--size", type=int, default=None, help="image side in px (default 32 on CPU, 64 on CUDA)")
    q.add_argument("--images", type=int, default=None, help="images in the task (default 60 on CPU, 400 on CUDA)")
    q.add_argument("--workers", type=int, default=None, help="processes of the candidate (default 2 CPU, 4 CUDA)")
    q.add_argument("--cv-repeats", type=int, default=2, help="repeats of the cross-validation")
    q.add_argument("--folds", type=int, default=3)
    q.add_argument("--epochs", type=int, default=1)
    q.add_argument("--batch-size", type=int, default=32)

    q = sub.add_parser("audit", help="duplicate / leakage audit: fingerprinting vs decoding, cached re-run vs first "
                                     "run, blocked popcount search over a 100k corpus vs a Python pair loop; "
                                     "--thresholds: the threshold measurements of docs/audit.md on real data")
    common(q, repeats=3)
    q.add_argument("--size", type=int, default=224, help="image side in px of the PNG files decoded")
    q.add_argument("--images", type=int, default=400, help="PNG files decoded, fingerprinted and audited")
    q.add_argument("--corpus", type=int, default=100_000, help="hashes of the near-duplicate search")
    q.add_argument("--medmnist", help="MedMNIST folder: real images (PneumoniaMNIST, resized) instead of phantoms; "
                                      "with --thresholds, the data measured")
    q.add_argument("--dicom", help="with --thresholds: a folder of DICOM files (>= 64 px) for the transformed copies")
    q.add_argument("--workers", type=int, default=None, help="decoding processes and search threads (default: all)")
    q.add_argument("--thresholds", action="store_true",
                   help="measure the thresholds (needs --medmnist) instead of the speed")
    return parser


def run(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available to this process")
    common = {"warmup": args.warmup, "repeats": args.repeats, "seed": args.seed}
    if args.benchmark == "loss":
        from .loss import run as run_loss

        return run_loss(device=args.device, batch=args.size, views=args.views, dim=args.dim,
                        number=args.number, **common)
    if args.benchmark == "pretrain":
        from .pretrain import run as run_pretrain

        amp = None if args.amp == "auto" else args.amp == "bf16"
        return run_pretrain(device=args.device, image_size=args.size, batch_size=args.batch_size, images=args.images,
                            stem=args.stem, amp=amp, compile=args.compile, loader_workers=args.loader_workers,
                            epoch_repeats=args.epoch_repeats, case=args.case, **common)
    if args.benchmark == "cv":
        from .cv import run as run_cv

        return run_cv(device=args.device, image_size=args.size, images=args.images, workers=args.workers,
                      repeats_cv=args.cv_repeats, folds=args.folds, epochs=args.epochs, batch_size=args.batch_size,
                      **common)
    if args.benchmark == "audit":
        from .audit import run as run_audit
        from .audit import run_thresholds

        if args.thresholds:
            if not args.medmnist:
                raise SystemExit("audit --thresholds: give --medmnist DIR (the MedMNIST .npz files measured)")
            return run_thresholds(args.medmnist, args.dicom)
        return run_audit(image_size=args.size, images=args.images, corpus=args.corpus, medmnist=args.medmnist,
                         workers=args.workers, device=args.device, **common)
    from .index import run as run_index

    return run_index(files=args.size, image_size=args.image_size, source=args.source, workers=args.workers,
                     drop_os_cache=False if args.keep_os_cache else None, device=args.device, **common)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
    elif "copies" in result:  # audit --thresholds
        from .audit import format_thresholds

        print(format_thresholds(result))
    else:
        from .common import format_result

        print(format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
