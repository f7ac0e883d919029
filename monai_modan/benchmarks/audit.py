"""Audit benchmarks: the speed of the duplicate / leakage audit, and the measurement of its thresholds.

``case="speed"`` (a :mod:`~monai_modan.benchmarks.common` result, ratios against baselines timed in the same run):

1. *fingerprinting* -- :func:`~monai_modan.data.audit.fingerprint_image` of already decoded images (exact key,
   pHash, thumbnail) against the plain decoding they come from (``load_grayscale``): what hashing adds to reading.
   Images: PNG files of ``image_size`` px made from real MedMNIST images (resized) when ``medmnist`` is given, else
   synthetic phantoms.
2. *a re-run with the cache* -- :func:`~monai_modan.data.audit.audit` of the same datalist a second time (fingerprints
   read from ``<stem>.audit-cache.npz``) against the first, cold run.
3. *near-duplicate search at scale* -- :func:`~monai_modan.data.audit.hamming_pairs` over ``corpus`` 64-bit hashes
   (default 100,000: every pair, blocked XOR + popcount) against a plain Python loop over pairs, timed on a sample
   of pairs and scaled to all of them (the loop itself would take hours).

``case="thresholds"`` (real data: the MedMNIST folder): the numbers docs/audit.md reports -- the closest
cross-class pair of BreastMNIST (BUSI's duplicated benign/malignant image), pHash distance and aligned correlation
of resized, JPEG-recompressed, shifted, cropped and gamma-changed copies of real images, and how many pairs of
unrelated real images pass each threshold.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.audit import (
    AuditSettings,
    aligned_correlation,
    audit,
    fingerprint_image,
    hamming_pairs,
)
from ..data.readers import load_grayscale
from .common import Timed, comparison, make_result, measure, measure_interleaved

__all__ = ["run", "run_thresholds", "TRANSFORMS"]


# ------------------------------------------------------------------------------------------------------- speed
def _write_corpus(folder: Path, images: int, image_size: int, medmnist: str | Path | None, seed: int) -> Path:
    """``images`` PNG files of ``image_size`` px and a pretraining datalist listing them; returns the datalist."""
    from ..data.datalist import write_datalist
    from ..data.records import ImageRecord, IndexResult
    from ..labels import LabelSpace

    rng = np.random.default_rng(seed)
    if medmnist is not None:
        source = np.load(Path(medmnist) / "pneumoniamnist.npz")["train_images"]
        pick = rng.choice(len(source), images, replace=len(source) < images)
        base = [source[i] for i in pick]
    else:
        yy, xx = np.mgrid[:image_size, :image_size] / image_size
        base = [np.clip(255 * (0.5 + 0.3 * np.sin(6 * (xx + rng.random()) * (1 + rng.random()))
                               * np.cos(5 * yy + rng.random()) + 0.05 * rng.standard_normal(xx.shape)), 0, 255)
                .astype(np.uint8) for _ in range(images)]
    folder.mkdir(parents=True, exist_ok=True)
    result = IndexResult(source="benchmark", root=str(folder))
    for i, img in enumerate(base):
        path = folder / f"img{i:06d}.png"
        Image.fromarray(img).resize((image_size, image_size), Image.Resampling.BILINEAR).save(path)
        result.records.append(ImageRecord(image=str(path), labels={"modality": "XR", "anatomy": "chest"}))
    space = LabelSpace.default()
    return write_datalist(result, space, folder / "corpus.json", report=False)


def _python_loop_pairs(hashes: Sequence[int], pairs: int, max_distance: int) -> int:
    """The baseline: a Python double loop over the first ``pairs`` pairs (``bin(a ^ b).count("1")``)."""
    n, found, done = len(hashes), 0, 0
    for i in range(n):
        hi = hashes[i]
        for j in range(i + 1, n):
            found += bin(hi ^ hashes[j]).count("1") <= max_distance
            done += 1
            if done >= pairs:
                return found
    return found


def run(*, image_size: int = 224, images: int = 400, corpus: int = 100_000, medmnist: str | Path | None = None,
        workers: int | None = None, warmup: int = 1, repeats: int = 3, seed: int = 0, device: str = "cpu",
        ) -> dict[str, Any]:
    """The speed case (module docstring); ``images`` PNG files for 1-2, ``corpus`` hashes for 3."""
    settings = AuditSettings()
    comparisons, notes = [], []
    with tempfile.TemporaryDirectory(prefix="monai-modan-audit-bench-") as tmp:
        datalist = _write_corpus(Path(tmp) / "corpus", images, image_size, medmnist, seed)
        paths = [str(p) for p in sorted((Path(tmp) / "corpus").glob("*.png"))]
        decoded: list[np.ndarray] = []

        def decode() -> None:
            decoded[:] = [load_grayscale(p) for p in paths]

        decode()
        decode_t = measure(decode, name="load_grayscale (decode only)", warmup=warmup, repeats=repeats,
                           items=len(paths), unit="images")
        hash_t = measure(lambda: [fingerprint_image(x) for x in decoded], name="fingerprint_image of decoded images",
                         warmup=warmup, repeats=repeats, items=len(paths), unit="images")
        comparisons.append(comparison(
            "fingerprinting vs decoding (the hashing cost on top of reading each image once)", decode_t, hash_t,
            metric="overhead", note="overhead = fingerprint seconds / decode seconds: < 1 means hashing costs less "
                                    "than decoding"))
        cache = Path(datalist).with_name(Path(datalist).stem + ".audit-cache.npz")

        def cold() -> None:
            cache.unlink(missing_ok=True)
            audit(datalist, workers=workers)

        entries = [Timed("audit, first run (decode + fingerprint + search)", cold, len(paths), "images"),
                   Timed("audit, re-run (fingerprints from the cache)", lambda: audit(datalist, workers=workers),
                         len(paths), "images")]
        first_t, rerun_t = measure_interleaved(entries, warmup=warmup, repeats=repeats)
        comparisons.append(comparison("audit re-run with the fingerprint cache vs a first run", first_t, rerun_t,
                                      note=f"{len(paths)} PNG files of {image_size} px, workers={workers or 'all'}"))

    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, np.iinfo(np.int64).max, corpus, dtype=np.int64).astype(np.uint64)
    total_pairs = corpus * (corpus - 1) // 2
    sample = min(total_pairs, 2_000_000)
    listed = [int(h) for h in hashes]
    loop_t = measure(lambda: _python_loop_pairs(listed, sample, settings.max_distance),
                     name=f"Python loop over {sample:,} pairs", warmup=0, repeats=1, items=sample, unit="pairs")
    threads = workers or 2
    block_t = measure(lambda: hamming_pairs(hashes, None, settings.max_distance, threads=threads),
                      name=f"hamming_pairs, all {total_pairs:,} pairs, {threads} threads", warmup=0,
                      repeats=max(1, repeats - 1), items=total_pairs, unit="pairs")
    scaled = dict(loop_t, name=f"Python loop, scaled from {sample:,} pairs to {total_pairs:,}",
                  seconds=loop_t["seconds"] * total_pairs / sample, min=loop_t["min"] * total_pairs / sample,
                  max=loop_t["max"] * total_pairs / sample, items=total_pairs,
                  samples=[s * total_pairs / sample for s in loop_t["samples"]])
    scaled["items_per_second"] = total_pairs / scaled["seconds"]
    comparisons.append(comparison(f"near-duplicate candidates among {corpus:,} hashes: blocked popcount vs a Python "
                                  "pair loop", scaled, block_t, target=(">=", 100.0),
                                  note=f"the loop was timed on {sample:,} pairs and scaled linearly; blocked "
                                       f"search: {block_t['seconds']:.1f} s for the whole corpus"))
    notes.append(f"a {corpus:,}-image corpus costs, on top of the search, one decode + fingerprint per image on the "
                 "first run (see the first two rows for the per-image rates) and a stat() per image afterwards")
    return make_result("audit", "duplicate / leakage audit", device,
                       {"image_size": image_size, "images": len(paths), "corpus_hashes": corpus,
                        "source": "MedMNIST pneumonia (resized)" if medmnist else "synthetic"}, comparisons, notes)


# -------------------------------------------------------------------------------------------------- thresholds
def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape
    size = (max(8, round(w * factor)), max(8, round(h * factor)))
    return np.asarray(Image.fromarray(_u8(image)).resize(size, Image.Resampling.BILINEAR)) / 255.0


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(_u8(image)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer)) / 255.0


def _shift(image: np.ndarray, fraction: float) -> np.ndarray:
    """Shifted down and right by ``fraction`` of the side (at least 1 px), the edge repeated."""
    s = max(1, round(fraction * image.shape[0]))
    return np.pad(image, ((s, 0), (s, 0)), mode="edge")[:image.shape[0], :image.shape[1]]


def _crop(image: np.ndarray, fraction: float) -> np.ndarray:
    h, w = image.shape
    c = max(1, round(fraction * h))
    return np.asarray(Image.fromarray(_u8(image[c:h - c, c:w - c])).resize((w, h), Image.Resampling.BILINEAR)) / 255.0


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "resized x2": lambda x: _resize(x, 2.0),
    "resized x0.5": lambda x: _resize(x, 0.5),
    "JPEG quality 75": lambda x: _jpeg(x, 75),
    "JPEG quality 50": lambda x: _jpeg(x, 50),
    "resized x0.5 + JPEG 75": lambda x: _jpeg(_resize(x, 0.5), 75),
    "gamma 0.8": lambda x: x ** 0.8,
    "shifted 1/28 of the side": lambda x: _shift(x, 1 / 28),
    "shifted 2/28 of the side": lambda x: _shift(x, 2 / 28),
    "cropped 5 % each side": lambda x: _crop(x, 0.05),
}


def _medmnist_images(folder: Path, name: str, split: str | None = None, limit: int | None = None) -> list:
    with np.load(folder / f"{name}.npz") as z:
        splits = [split] if split else ["train", "val", "test"]
        refs = [f"{folder / name}.npz#{s}_images/{i}" for s in splits for i in range(len(z[f"{s}_images"]))]
    return [load_grayscale(r) for r in refs[:limit]]


def run_thresholds(medmnist: str | Path, dicom: str | Path | None = None, probes: int = 150,
                   settings: AuditSettings | None = None,
                   grid: Sequence[tuple[int, float]] = ((8, -1.0), (8, 0.9), (8, 0.95), (8, 0.97), (10, 0.95),
                                                         (6, 0.95))) -> dict[str, Any]:
    """The threshold measurements of docs/audit.md (module docstring) on the MedMNIST folder (and, if given, the
    DICOM folder's images of >= 64 px for the transformed copies). Returns a JSON-able dict."""
    settings = settings or AuditSettings()
    folder = Path(medmnist)
    out: dict[str, Any] = {"settings": asdict(settings), "grid": [list(g) for g in grid]}
    started = time.perf_counter()

    # 1. BreastMNIST: the closest pair across classes
    with np.load(folder / "breastmnist.npz") as z:
        refs, labels = [], []
        for s in ("train", "val", "test"):
            refs += [f"{s}_images/{i}" for i in range(len(z[f"{s}_images"]))]
            labels += z[f"{s}_labels"][:, 0].tolist()
    breast = _medmnist_images(folder, "breastmnist")
    flat = np.stack([b.ravel() for b in breast]).astype(np.float64)
    labels_arr = np.array(labels)
    sq = (flat ** 2).sum(1)
    rmse = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0, None) / flat.shape[1])
    cross = np.where(labels_arr[:, None] != labels_arr[None, :], rmse, np.inf)
    i, j = np.unravel_index(np.argmin(cross), cross.shape)
    fi, fj = fingerprint_image(breast[i]), fingerprint_image(breast[j])
    second = np.sort(cross[np.triu_indices(len(breast), 1)])[1]
    out["breastmnist_cross_class_pair"] = {
        "a": refs[i], "a_label": int(labels[i]), "b": refs[j], "b_label": int(labels[j]), "rmse": float(rmse[i, j]),
        "exact": fi.exact == fj.exact, "phash_distance": bin(fi.phash ^ fj.phash).count("1"),
        "correlation": float(aligned_correlation(fi.thumb[None], fj.thumb[None], settings.max_shift)[0]),
        "next_closest_cross_class_rmse": float(second)}

    # 2. transformed copies of real images
    probe_sets = {name: _medmnist_images(folder, name, "test", probes)
                  for name in ("breastmnist", "pneumoniamnist", "retinamnist")}
    if dicom is not None:
        images = []
        for path in sorted(Path(dicom).rglob("*.dcm")):
            try:
                image = load_grayscale(path)
            except Exception:  # noqa: BLE001 - files this environment cannot decode are left out
                continue
            if min(image.shape) >= 64 and image.std() > 0.01:
                images.append(image)
        probe_sets["dicom (>= 64 px)"] = images
    copies: dict[str, Any] = {}
    for transform, fn in TRANSFORMS.items():
        dist, corr = [], []
        for images in probe_sets.values():
            base = [fingerprint_image(x) for x in images]
            moved = [fingerprint_image(np.clip(fn(x), 0, 1)) for x in images]
            dist += [bin(a.phash ^ b.phash).count("1") for a, b in zip(base, moved)]
            corr += aligned_correlation(np.stack([a.thumb for a in base]), np.stack([b.thumb for b in moved]),
                                        settings.max_shift).tolist()
        d, c = np.array(dist), np.array(corr)
        copies[transform] = {"n": len(d), "phash_median": float(np.median(d)), "phash_p95": float(np.percentile(d, 95)),
                             "phash_max": int(d.max()), "correlation_p5": float(np.percentile(c, 5)),
                             "correlation_min": float(c.min()),
                             "recall": {f"d<={t},r>={r:g}": float(np.mean((d <= t) & (c >= r))) for t, r in grid}}
    out["copies"] = copies

    # 3. unrelated pairs: across data sets (never the same image), and every pair within each data set
    sample = {name: _medmnist_images(folder, name, "train", 1000) for name in ("breastmnist", "pneumoniamnist",
                                                                               "retinamnist")}
    fingerprints = {name: [fingerprint_image(x) for x in images] for name, images in sample.items()}
    names = list(sample)
    cross_pairs = {}
    for a_index, a in enumerate(names):
        for b in names[a_index + 1:]:
            ha = np.array([f.phash for f in fingerprints[a]], np.uint64)
            hb = np.array([f.phash for f in fingerprints[b]], np.uint64)
            ii, jj, dd = hamming_pairs(ha, hb, max(t for t, _ in grid))
            ta = np.stack([f.thumb for f in fingerprints[a]])
            tb = np.stack([f.thumb for f in fingerprints[b]])
            cc = aligned_correlation(ta[ii], tb[jj], settings.max_shift) if len(ii) else np.zeros(0)
            total = len(ha) * len(hb)
            cross_pairs[f"{a} x {b}"] = {"pairs": total, **{f"d<={t},r>={r:g}": int(np.sum((dd <= t) & (cc >= r)))
                                                            for t, r in grid}}
    out["unrelated_across_data_sets"] = cross_pairs
    within = {}
    for name in ("breastmnist", "pneumoniamnist", "retinamnist"):
        images = _medmnist_images(folder, name)
        prints = [fingerprint_image(x) for x in images]
        hashes = np.array([f.phash for f in prints], np.uint64)
        ii, jj, dd = hamming_pairs(hashes, None, max(t for t, _ in grid), threads=2)
        exact = np.array([prints[x].exact == prints[y].exact for x, y in zip(ii, jj)], bool)
        thumbs = np.stack([f.thumb for f in prints])
        cc = np.concatenate([aligned_correlation(thumbs[ii[k:k + 2048]], thumbs[jj[k:k + 2048]], settings.max_shift)
                             for k in range(0, len(ii), 2048)]) if len(ii) else np.zeros(0)
        within[name] = {"images": len(images), "pairs": len(images) * (len(images) - 1) // 2,
                        "exact_pairs": int(exact.sum()),
                        **{f"d<={t},r>={r:g}": int(np.sum((dd <= t) & (cc >= r) & ~exact)) for t, r in grid}}
    out["within_data_sets_non_exact"] = within
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def format_thresholds(result: dict[str, Any]) -> str:
    """The threshold measurements as markdown tables (what docs/audit.md shows)."""
    grid = [f"d<={t},r>={r:g}" for t, r in result["grid"]]
    pair = result["breastmnist_cross_class_pair"]
    lines = [f"closest cross-class pair of BreastMNIST: {pair['a']} (label {pair['a_label']}) ~ {pair['b']} (label "
             f"{pair['b_label']}): pixel RMSE {pair['rmse']:.4f}, exact {pair['exact']}, pHash distance "
             f"{pair['phash_distance']}, correlation {pair['correlation']:.3f}; next closest cross-class RMSE "
             f"{pair['next_closest_cross_class_rmse']:.4f}", "",
             "| copy | n | pHash median / p95 / max | correlation p5 / min | " + " | ".join(grid) + " |",
             "|---" * (4 + len(grid)) + "|"]
    for name, c in result["copies"].items():
        lines.append(f"| {name} | {c['n']} | {c['phash_median']:g} / {c['phash_p95']:g} / {c['phash_max']} | "
                     f"{c['correlation_p5']:.3f} / {c['correlation_min']:.3f} | "
                     + " | ".join(f"{c['recall'][g]:.2f}" for g in grid) + " |")
    lines += ["", "| unrelated pairs | pairs | " + " | ".join(grid) + " |", "|---" * (2 + len(grid)) + "|"]
    for name, c in result["unrelated_across_data_sets"].items():
        lines.append(f"| {name} | {c['pairs']:,} | " + " | ".join(str(c[g]) for g in grid) + " |")
    lines += ["", "| within (non-exact pairs passing) | images | pairs | exact pairs | " + " | ".join(grid) + " |",
              "|---" * (4 + len(grid)) + "|"]
    for name, c in result["within_data_sets_non_exact"].items():
        lines.append(f"| {name} | {c['images']} | {c['pairs']:,} | {c['exact_pairs']} | "
                     + " | ".join(str(c[g]) for g in grid) + " |")
    lines.append(f"\n({result['seconds']} s)")
    return "\n".join(lines)
