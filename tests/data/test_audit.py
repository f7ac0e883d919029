"""The duplicate / leakage audit: planted exact and near duplicates, a planted pretraining -> task leak, blank, tiny,
missing and corrupt images, the fingerprint cache, --drop, bad input; oracles for the two search primitives; the real
BUSI cross-class duplicate in BreastMNIST."""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from monai_modan.data import audit as audit_module
from monai_modan.data.audit import (AuditError, AuditSettings, aligned_correlation, audit, content_key,
                                    fingerprint_image, hamming_pairs, write_audit_report, write_cleaned_datalists)
from monai_modan.data.datalist import load_datalist, write_datalist
from monai_modan.data.downstream import load_task_datalist
from monai_modan.data.downstream.task import write_task_datalist
from monai_modan.data.records import ImageRecord, IndexResult
from monai_modan.labels import LabelSpace

SIDE = 48


def texture(seed: int, side: int = SIDE) -> np.ndarray:
    """A distinct smooth random picture (uint8): structure at several scales, like a real image's."""
    rng = np.random.default_rng(seed)
    x = sum(gaussian_filter(rng.standard_normal((side, side)), s) * s for s in (1.0, 3.0, 6.0))
    x = (x - x.min()) / (x.max() - x.min())
    return np.rint(x * 255).astype(np.uint8)


def png(path: Path, pixels: np.ndarray) -> str:
    Image.fromarray(pixels).save(path)
    return str(path)


def resized_jpeg(path: Path, pixels: np.ndarray, factor: float, quality: int = 90) -> str:
    """A near duplicate: resized, then re-encoded as JPEG."""
    side = round(pixels.shape[0] * factor)
    Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR).save(path, "JPEG", quality=quality)
    return str(path)


def pretraining_datalist(path: Path, images: list[str]) -> Path:
    space = LabelSpace.default()
    result = IndexResult(source="test", root=str(path.parent),
                         records=[ImageRecord(image=i, labels={"modality": "CT", "anatomy": "chest"}) for i in images])
    return write_datalist(result, space, path, report=False)


def task_datalist(path: Path, images: list[str], labels: list[int]) -> Path:
    items = [{"image": i, "label": y} for i, y in zip(images, labels)]
    return write_task_datalist(items, path, task="t", positive="malignant", check_images=False)


@pytest.fixture()
def planted(tmp_path):
    """A corpus and a task with planted findings (the expectations are the dict's other keys)."""
    d = tmp_path
    base = [texture(s) for s in range(12)]
    corpus = [png(d / f"a{i}.png", x) for i, x in enumerate(base)]
    Image.fromarray(base[0]).save(d / "a0_copy.tif")  # the same pixels in other bytes: an exact duplicate
    corpus.append(str(d / "a0_copy.tif"))
    corpus.append(resized_jpeg(d / "a1_near.jpg", base[1], 2.0))  # a near duplicate
    corpus.append(png(d / "blank.png", np.full((SIDE, SIDE), 90, np.uint8)))
    corpus.append(png(d / "tiny.png", texture(99, side=16)))
    corpus.append(str(d / "missing.png"))
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    corpus.append(str(d / "corrupt.png"))
    pre = pretraining_datalist(d / "corpus.json", corpus)

    others = [texture(100 + s) for s in range(6)]
    task_images = [png(d / f"b{i}.png", x) for i, x in enumerate(others)]
    np.save(d / "b0_copy.npy", others[0])  # the same picture as b0 (NPY uint8 / 255), with the other label
    task_images.append(str(d / "b0_copy.npy"))
    shutil.copy(d / "a2.png", d / "leak_exact.png")  # a pretraining image, byte for byte
    task_images.append(str(d / "leak_exact.png"))
    task_images.append(resized_jpeg(d / "leak_near.jpg", base[3], 1.5))  # a resized, recompressed pretraining image
    labels = [0, 1, 0, 1, 0, 1, 1, 0, 1]
    task = task_datalist(d / "task.json", task_images, labels)
    return {"pre": pre, "task": task, "dir": d}


def _names(report, pairs) -> set[frozenset[str]]:
    return {frozenset((Path(report.images[p.a]).name, Path(report.images[p.b]).name)) for p in pairs}


def test_audit_finds_planted_duplicates_leaks_and_bad_images(planted):
    report = audit(planted["pre"], [planted["task"]], workers=0)
    summary = report.summary()
    pre, task = summary["corpus"], summary["task"]
    # inside the corpus: the TIFF copy (exact, other bytes) and the resized JPEG (near); nothing else is paired
    assert _names(report, report.within["corpus"]) == {frozenset({"a0.png", "a0_copy.tif"}),
                                                       frozenset({"a1.png", "a1_near.jpg"})}
    exact = [p for p in report.within["corpus"] if p.exact]
    assert len(exact) == 1 and not exact[0].same_content  # same pixels, different files
    assert (pre["exact_pairs"], pre["near_pairs"]) == (1, 1)
    # bad images: counted and named, the audit went on
    assert pre["unreadable"] == 2 and pre["blank_or_constant"] == 1 and pre["too_small"] == 1
    reasons = {Path(report.images[r]).name: why for r, why in report.unreadable.items()}
    assert set(reasons) == {"missing.png", "corrupt.png"} and "not found" in reasons["missing.png"]
    assert {Path(report.images[r]).name for r in report.blank} == {"blank.png"}
    assert {Path(report.images[r]).name for r in report.too_small} == {"tiny.png"}
    # inside the task: the NPY copy of b0 carries the other label
    assert _names(report, report.within["task"]) == {frozenset({"b0.png", "b0_copy.npy"})}
    assert task["conflicting_label_pairs"] == 1
    # the leak: one byte-identical copy and one resized JPEG of corpus images
    assert _names(report, report.leaks["task"]) == {frozenset({"a2.png", "leak_exact.png"}),
                                                    frozenset({"a3.png", "leak_near.jpg"})}
    assert task["seen_in_pretraining"] == 2 and task["seen_in_pretraining_exact"] == 1
    assert next(p for p in report.leaks["task"] if p.exact).same_content

    files = write_audit_report(report, planted["dir"] / "audit")
    data = json.loads(files["audit.json"].read_text())
    assert data["summary"]["task"]["seen_in_pretraining"] == 2
    assert {u["image"].rsplit("/", 1)[-1] for u in data["unreadable"]} == {"missing.png", "corrupt.png"}
    md = files["audit.md"].read_text()
    assert "2 of 9 images of task are also in the pretraining corpus" in md and "labels differ" in md
    with Image.open(files["audit_pairs.png"]) as sheet:
        assert sheet.format == "PNG" and sheet.width > 200
    assert not list((planted["dir"] / "audit").glob(".*.tmp"))


def test_drop_writes_cleaned_datalists_that_audit_clean(planted):
    report = audit(planted["pre"], [planted["task"]], workers=0)
    cleaned = write_cleaned_datalists(report)
    pre = load_datalist(cleaned["corpus"])
    kept = {Path(it["image"]).name for it in pre.items("training")}
    assert kept == {f"a{i}.png" for i in range(12)}  # first copies kept; copies, blank, tiny, unreadable dropped
    assert len(json.loads(Path(cleaned["corpus"]).read_text())["excluded"]) == 6
    items, meta = load_task_datalist(cleaned["task"])
    assert {Path(it["image"]).name for it in items} == {f"b{i}.png" for i in range(1, 6)}  # b0: conflicting labels
    reasons = {Path(e["image"]).name: e["reason"] for e in meta["excluded"]}
    assert "pretraining corpus" in reasons["leak_exact.png"] and "pretraining corpus" in reasons["leak_near.jpg"]
    assert "different label" in reasons["b0.png"] and "different label" in reasons["b0_copy.npy"]
    again = audit(cleaned["corpus"], [cleaned["task"]], workers=0)
    assert all(not pairs for pairs in again.within.values()) and not again.leaks[again.datalists[1].name]
    assert not again.unreadable and not again.blank and not again.too_small


def test_cache_is_keyed_by_content(planted):
    first = audit(planted["pre"], [planted["task"]], workers=0)
    assert first.cache["decoded"] > 0 and (planted["dir"] / "corpus.audit-cache.npz").is_file()
    second = audit(planted["pre"], [planted["task"]], workers=0)
    # everything from the cache but the corrupt file, which is tried again (only fingerprints are cached)
    assert second.cache == {"cached": first.cache["decoded"] + first.cache["cached"] - 1, "decoded": 1}
    assert second.summary() == first.summary()
    # a renamed file keeps its fingerprint (same bytes); a rewritten one is decoded again
    d = planted["dir"]
    os.rename(d / "a5.png", d / "a5_renamed.png")
    png(d / "a6.png", texture(606))
    data = json.loads(planted["pre"].read_text())
    for item in data["training"]:
        item["image"] = item["image"].replace("a5.png", "a5_renamed.png")
    planted["pre"].write_text(json.dumps(data))
    third = audit(planted["pre"], [], workers=0)
    assert third.cache["decoded"] == 2  # a6 and the corrupt file


def test_npz_items_are_keyed_by_their_array_bytes(tmp_path):
    x = np.stack([texture(1), texture(2), texture(1)])
    np.savez(tmp_path / "a.npz", train_images=x)
    np.savez(tmp_path / "b.npz", other=x[::-1].copy())
    a0, a2 = content_key(f"{tmp_path}/a.npz#train_images/0"), content_key(f"{tmp_path}/a.npz#train_images/2")
    assert a0 == a2 != content_key(f"{tmp_path}/a.npz#train_images/1")
    assert content_key(f"{tmp_path}/b.npz#other/0") == a0  # same item bytes in another file
    pre = pretraining_datalist(tmp_path / "npz.json", [f"{tmp_path}/a.npz#train_images/{i}" for i in range(3)])
    report = audit(pre, workers=0)
    pair, = report.within["npz"]
    assert pair.exact and pair.same_content


def test_a_volume_is_audited_through_its_middle_slice(tmp_path):
    """The middle axial slice is what every stage trains on: two volumes sharing it are the same training image
    (reported as an exact pair whose files differ)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (9, 32, 32), dtype=np.uint8)
    b = a.copy()
    b[:3] = 255 - b[:3]  # other slices differ
    c = a.copy()
    c[4] = texture(5, side=32)  # another middle slice
    for name, v in (("a", a), ("b", b), ("c", c)):
        np.save(tmp_path / f"{name}.npy", v)
    pre = pretraining_datalist(tmp_path / "vol.json", [str(tmp_path / f"{n}.npy") for n in "abc"])
    report = audit(pre, workers=0)
    assert _names(report, report.within["vol"]) == {frozenset({"a.npy", "b.npy"})}
    assert not report.within["vol"][0].same_content


def test_hamming_pairs_is_every_pair_within_the_distance(monkeypatch):
    monkeypatch.setattr(audit_module, "_BLOCK_ROWS", 64)  # several tiles in both directions
    monkeypatch.setattr(audit_module, "_BLOCK_COLS", 96)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2 ** 63, 40, dtype=np.int64).astype(np.uint64)
    flips = rng.integers(0, 64, (300, 12))
    values = []
    for i in range(300):  # clusters around 40 centres, each value up to 11 bits away from its centre
        v = int(base[i % 40])
        for bit in set(flips[i, : i % 12].tolist()):
            v ^= 1 << bit
        values.append(v)
    hashes = np.array(values, dtype=np.uint64)

    def brute(a, b, t):
        pairs = ((i, j) for i in range(len(a)) for j in range(len(b)) if b is not a or j > i)
        return {(i, j, bin(int(a[i]) ^ int(b[j])).count("1")) for i, j in pairs
                if bin(int(a[i]) ^ int(b[j])).count("1") <= t}

    for threads in (1, 2):
        i, j, d = hamming_pairs(hashes, None, 8, threads=threads)
        assert set(zip(i.tolist(), j.tolist(), d.tolist())) == brute(hashes, hashes, 8)
    other = hashes[::-3].copy()
    i, j, d = hamming_pairs(hashes[:130], other, 10, threads=2)
    assert set(zip(i.tolist(), j.tolist(), d.tolist())) == brute(hashes[:130], other, 10)
    assert len(hamming_pairs(hashes[:0], None, 8)[0]) == 0


def test_aligned_correlation_is_the_best_overlap_correlation():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (6, 32, 32)).astype(np.uint8)
    b = rng.integers(0, 256, (6, 32, 32)).astype(np.uint8)
    b[0] = np.roll(a[0], (1, -2), axis=(0, 1))  # the same picture, shifted
    b[1] = a[1]
    b[2] = 255 - a[2]
    b[3] = 7  # constant: no correlation defined
    expected = []
    for p in range(6):
        best = -1.0
        for dy, dx in itertools.product(range(-2, 3), repeat=2):
            wa = a[p, max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)].astype(float).ravel()
            wb = b[p, max(0, dy):32 + min(0, dy), max(0, dx):32 + min(0, dx)].astype(float).ravel()
            if wa.std() > 0 and wb.std() > 0:
                best = max(best, np.corrcoef(wa, wb)[0, 1])
        expected.append(best)
    got = aligned_correlation(a, b, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[0] > 0.999 and got[1] > 0.999 and got[3] == -1.0


def test_fingerprint_of_a_recompressed_copy_is_near_and_of_another_image_far():
    x = texture(3)
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=75)
    y = np.asarray(Image.open(buffer)) / 255.0
    fx, fy, fz = fingerprint_image(x / 255.0), fingerprint_image(y), fingerprint_image(texture(4) / 255.0)
    assert fx.exact != fy.exact
    assert bin(fx.phash ^ fy.phash).count("1") <= AuditSettings().max_distance < bin(fx.phash ^ fz.phash).count("1")
    assert fingerprint_image(np.full((8, 8), 0.3)).std == 0.0


@pytest.mark.parametrize("kwargs, match", [
    ({"max_distance": 65}, "max_distance must be an integer in \\[0, 64\\], got 65"),
    ({"max_distance": 2.5}, "max_distance"),
    ({"min_correlation": 1.5}, "min_correlation must be a number in \\[-1, 1\\], got 1.5"),
    ({"min_correlation": "high"}, "min_correlation"),
    ({"max_shift": -1}, "max_shift"),
    ({"blank_std": True}, "blank_std"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(AuditError, match=match):
        AuditSettings(**kwargs)


def test_bad_datalists_are_named_before_any_decoding(tmp_path, planted):
    with pytest.raises(AuditError, match="nothing to audit"):
        audit(None, [])
    with pytest.raises(AuditError, match=r"nope\.json"):
        audit(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AuditError, match=r"bad\.json is not valid JSON"):
        audit(tmp_path / "bad.json")
    with pytest.raises(AuditError, match="unknown split"):
        audit(planted["pre"], pretrain_splits=["train"])
    with pytest.raises(AuditError, match="workers"):
        audit(planted["pre"], workers=-1)
    assert not (planted["dir"] / "corpus.audit-cache.npz").exists()


def test_the_real_busi_cross_class_duplicate_in_breastmnist(medmnist_dir, tmp_path):
    """BUSI's `benign (433)` / `malignant (145)` picture, in BreastMNIST as train 115 (malignant) and test 76
    (benign): the only exact pair of the file, with different labels."""
    from monai_modan.data.downstream import convert

    task = convert(medmnist_dir / "breastmnist.npz", "auto", tmp_path / "breast.json")
    report = audit(task.path, [], workers=0)
    exact = [p for p in report.within["breast"] if p.exact]
    assert len(exact) == 1
    names = {report.images[exact[0].a].rsplit("#", 1)[1], report.images[exact[0].b].rsplit("#", 1)[1]}
    assert names == {"train_images/115", "test_images/76"}
    assert report.label(exact[0].a) != report.label(exact[0].b)
    assert report.summary()["breast"]["near_pairs"] >= 150  # BUSI's many re-cropped copies (docs/audit.md)


def test_decoding_processes_give_the_serial_result(planted, monkeypatch):
    monkeypatch.setattr(audit_module, "_CHUNK", 4)  # several chunks over two worker processes
    serial = audit(planted["pre"], [planted["task"]], workers=0, cache=False)
    pooled = audit(planted["pre"], [planted["task"]], workers=2, cache=False)
    assert pooled.summary() == serial.summary() and pooled.cache["decoded"] == serial.cache["decoded"]
    assert [p.exact if p else None for p in pooled.fingerprints] == [p.exact if p else None for p in
                                                                    serial.fingerprints]
    assert set(pooled.unreadable.values()) == set(serial.unreadable.values())
