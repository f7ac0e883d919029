"""Packed corpus: decode once through the project reader, memory-mapped uint8, atomic and checked on open."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from monai_modan.data.datalist import DatalistError
from monai_modan.data.packed import (
    PackedCorpus,
    PackedCorpusError,
    datalist_fingerprint,
    open_or_pack,
    pack_datalist,
)
from monai_modan.data.readers import LoadGrayscaleImage
from monai_modan.labels import LabelSpace

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_png(path, pixels: np.ndarray) -> str:
    Image.fromarray(pixels).save(path)
    return str(path)


def make_datalist(tmp_path, n_good: int = 9, classes: bool = True) -> tuple:
    """PNGs of different sizes and contents, one corrupt file and one missing path, in a monai-modan datalist."""
    space = LabelSpace.default()
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    items = []
    for i in range(n_good):
        h, w = 20 + 3 * i, 40 - 2 * i
        pixels = (rng.random((h, w)) * 255).astype(np.uint8)
        if i == 0:
            pixels[:] = 128  # constant grey: survives any resize exactly
        label = [0] * space.width
        label[i % 3] = 1
        label[space.slices["anatomy"].start + i % 4] = 1
        items.append({"image": _write_png(folder / f"img{i}.png", pixels), "label": label, "class_index": i % 5})
    bad = folder / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    items.insert(3, {"image": str(bad), "label": items[0]["label"], "class_index": 0})
    items.insert(6, {"image": str(folder / "missing.png"), "label": items[0]["label"], "class_index": 1})
    data = {"format": "monai-modan/datalist/1", "source": "test", "root": str(folder),
            "label_space": space.to_dict(), "training": items}
    if classes:
        data["classes"] = [f"c{k}" for k in range(5)]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(data))
    return path, items, space


def test_pack_decodes_every_image_once_and_skips_bad_files(tmp_path):
    datalist, items, space = make_datalist(tmp_path)
    pack = pack_datalist(datalist, tmp_path / "pack", SIZE, workers=0)

    good = [it for it in items if "broken" not in it["image"] and "missing" not in it["image"]]
    assert len(pack) == len(good) == 9
    assert pack.images.shape == (9, 1, SIZE, SIZE) and pack.images.dtype == np.uint8
    assert pack.paths == [it["image"] for it in good]
    # the same pixels as the project's reader at that size, quantised to 8 bits
    reader = LoadGrayscaleImage(spatial_size=SIZE)
    for row, it in enumerate(good):
        expected = np.rint(np.asarray(reader(it["image"])) * 255).astype(np.uint8)
        np.testing.assert_array_equal(pack.images[row], expected)
    assert (pack.images[0] == 128).all()
    np.testing.assert_array_equal(pack.labels, np.asarray([it["label"] for it in good], dtype=np.uint8))
    assert pack.labels.shape == (9, space.width)
    np.testing.assert_array_equal(pack.class_index, [it["class_index"] for it in good])
    assert pack.space == space and pack.classes == [f"c{k}" for k in range(5)]
    # skipped files are listed with the reader's reason, which names the file
    reasons = {s["image"]: s["reason"] for s in pack.skipped}
    assert set(reasons) == {str(tmp_path / "images" / "broken.png"), str(tmp_path / "images" / "missing.png")}
    assert all(path in reason for path, reason in reasons.items())
    assert "not found" in reasons[str(tmp_path / "images" / "missing.png")]
    # the source datalist is fingerprinted
    assert pack.fingerprint["sha256"] == datalist_fingerprint(datalist)["sha256"]
    assert pack.is_current(datalist)
    # no temporary files are left behind
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == ["class_index.npy", "images.u8", "index.json",
                                                                      "labels.npy"]


def test_worker_processes_give_the_same_pack(tmp_path):
    datalist, _, _ = make_datalist(tmp_path)
    serial = pack_datalist(datalist, tmp_path / "serial", SIZE, workers=0)
    parallel = pack_datalist(datalist, tmp_path / "parallel", SIZE, workers=2)
    np.testing.assert_array_equal(np.asarray(serial.images), np.asarray(parallel.images))
    np.testing.assert_array_equal(serial.labels, parallel.labels)
    assert serial.paths == parallel.paths and serial.skipped == parallel.skipped


def test_open_is_read_only_and_tracks_its_source(tmp_path):
    datalist, _, _ = make_datalist(tmp_path)
    pack_datalist(datalist, tmp_path / "pack", SIZE, workers=0)
    pack = PackedCorpus.open(tmp_path / "pack")
    assert isinstance(pack.images, np.memmap)
    with pytest.raises(ValueError):
        pack.images[0, 0, 0, 0] = 1
    index = json.loads((tmp_path / "pack" / "index.json").read_text())
    assert index["shape"] == [9, 1, SIZE, SIZE] and index["dtype"] == "uint8" and index["split"] == "training"
    data = json.loads(datalist.read_text())
    data["training"] = data["training"][:4]
    datalist.write_text(json.dumps(data))
    assert not pack.is_current(datalist)


def test_damaged_or_incomplete_packs_are_refused(tmp_path):
    datalist, _, _ = make_datalist(tmp_path)
    out = tmp_path / "pack"
    with pytest.raises(PackedCorpusError, match="not a complete pack"):
        PackedCorpus.open(out)
    pack_datalist(datalist, out, SIZE, workers=0)
    images = out / "images.u8"
    images.write_bytes(images.read_bytes()[:-10])  # cut short
    with pytest.raises(PackedCorpusError, match="images.u8: .* bytes"):
        PackedCorpus.open(out)
    pack_datalist(datalist, out, SIZE, workers=0)  # repacking repairs it
    np.save(out / "labels.npy", np.zeros((3, 2), np.uint8))
    with pytest.raises(PackedCorpusError, match="labels.npy"):
        PackedCorpus.open(out)
    (out / "index.json").write_text("{}")
    with pytest.raises(PackedCorpusError, match="not a monai-modan/packed/1 index"):
        PackedCorpus.open(out)


def test_repacking_replaces_the_pack_and_class_index_follows_the_datalist(tmp_path):
    datalist, _, _ = make_datalist(tmp_path, classes=False)
    out = tmp_path / "pack"
    first = pack_datalist(datalist, out, SIZE, workers=0)
    assert first.class_index is None and not (out / "class_index.npy").exists()
    second = pack_datalist(datalist, out, 8, workers=0)
    assert second.images.shape == (9, 1, 8, 8) and PackedCorpus.open(out).image_size == 8


def test_open_or_pack_reuses_a_current_pack_and_repacks_otherwise(tmp_path):
    datalist, _, _ = make_datalist(tmp_path)
    out = tmp_path / "pack"
    first = open_or_pack(datalist, out, SIZE, workers=0)
    stamp = (out / "images.u8").stat().st_mtime_ns
    assert len(open_or_pack(datalist, out, SIZE, workers=0)) == len(first) == 9
    assert (out / "images.u8").stat().st_mtime_ns == stamp, "a current pack is reused, not rewritten"
    assert open_or_pack(datalist, out, 8, workers=0).image_size == 8, "another size repacks"
    index = json.loads((out / "index.json").read_text())
    index["reader"]["version"] = 0  # made by an older reader
    (out / "index.json").write_text(json.dumps(index))
    stamp = (out / "images.u8").stat().st_mtime_ns
    assert open_or_pack(datalist, out, 8, workers=0).index["reader"]["version"] >= 1, "another reader repacks"
    assert (out / "images.u8").stat().st_mtime_ns != stamp
    data = json.loads(datalist.read_text())
    data["training"] = data["training"][:4]  # 3 good images, 1 corrupt
    datalist.write_text(json.dumps(data))
    assert len(open_or_pack(datalist, out, 8, workers=0)) == 3, "a changed datalist repacks"
    (out / "index.json").unlink()  # an interrupted pack, killed while writing its images
    (out / ".images.u8.x1y2z3.tmp").write_bytes(b"\0" * 1000)
    assert len(open_or_pack(datalist, out, 8, workers=0)) == 3
    assert sorted(p.name for p in out.iterdir()) == ["class_index.npy", "images.u8", "index.json", "labels.npy"]


def test_a_decoder_that_kills_its_process_costs_one_file(tmp_path, monkeypatch):
    """A codec segfault or the OOM killer ends a worker process: that file is skipped as "the decoder crashed", the
    other files of its chunk and of the chunks in flight are still packed."""
    import os

    from monai_modan.data import packed

    datalist, _, _ = make_datalist(tmp_path, n_good=19)  # 21 items: two chunks of 16
    data = json.loads(datalist.read_text())
    crash = str(tmp_path / "images" / "img5.png")
    real = packed._decode
    monkeypatch.setattr(packed, "_decode", lambda path, size: os._exit(9) if path == crash else real(path, size))
    pack = pack_datalist(datalist, tmp_path / "pack", SIZE, workers=2)  # forked workers inherit the patch
    reasons = {s["image"]: s["reason"] for s in pack.skipped}
    assert "decoder crashed" in reasons[crash] and len(pack) == 19 - 1
    assert pack.paths == [it["image"] for it in data["training"] if it["image"] not in reasons]


def test_images_left_out_are_reported_when_packed_and_when_reused(tmp_path, caplog):
    datalist, _, _ = make_datalist(tmp_path)
    with caplog.at_level("WARNING", logger="monai_modan.data.packed"):
        open_or_pack(datalist, tmp_path / "pack", SIZE, workers=0)
        made = caplog.text
        caplog.clear()
        open_or_pack(datalist, tmp_path / "pack", SIZE, workers=0)  # reused
    assert "2 of 11 images could not be decoded and were left out" in made and "broken.png" in made
    assert "2 of 11 images could not be decoded and are left out of this reused pack" in caplog.text


def test_fine_classes_need_a_valid_index_on_every_item(tmp_path, caplog):
    datalist, _, _ = make_datalist(tmp_path)
    data = json.loads(datalist.read_text())
    data["training"][4]["class_index"] = True  # a bool is not a class
    datalist.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="monai_modan.data.packed"):
        pack = pack_datalist(datalist, tmp_path / "pack", SIZE, workers=0)
    assert pack.class_index is None
    assert "training item 4 (" in caplog.text and "img3.png" in caplog.text and "class_index True" in caplog.text


def test_a_datalist_rewritten_while_read_is_not_packed(tmp_path, monkeypatch):
    from monai_modan.data import packed as packed_module

    datalist, _, _ = make_datalist(tmp_path)
    real = packed_module.load_datalist

    def load_then_rewrite(path, *args, **kwargs):
        data = real(path, *args, **kwargs)
        datalist.write_text(datalist.read_text() + " ")  # an indexer still writing
        return data

    monkeypatch.setattr(packed_module, "load_datalist", load_then_rewrite)
    with pytest.raises(PackedCorpusError, match="changed while it was being read"):
        pack_datalist(datalist, tmp_path / "pack", SIZE, workers=0)


def test_bad_inputs_give_clear_errors(tmp_path):
    datalist, items, _ = make_datalist(tmp_path)
    with pytest.raises(PackedCorpusError, match="image_size"):
        pack_datalist(datalist, tmp_path / "p", 0)
    with pytest.raises(PackedCorpusError, match="split 'validation' is empty"):
        pack_datalist(datalist, tmp_path / "p", SIZE, split="validation")
    with pytest.raises(DatalistError):
        pack_datalist(tmp_path / "nope.json", tmp_path / "p", SIZE)
    data = json.loads(datalist.read_text())
    data["training"][1]["label"][0] = 2
    datalist.write_text(json.dumps(data))
    with pytest.raises(DatalistError, match=r"training\[1\] .*img1.png.* not multi-hot"):
        pack_datalist(datalist, tmp_path / "p", SIZE)
    # nothing decodable: an error with examples, and no array left behind
    data["training"] = [it for it in items if "broken" in it["image"] or "missing" in it["image"]]
    datalist.write_text(json.dumps(data))
    with pytest.raises(PackedCorpusError, match="none of the 2 images .*broken.png"):
        pack_datalist(datalist, tmp_path / "empty", SIZE, workers=0)
    assert list((tmp_path / "empty").iterdir()) == []


def test_shards_are_disjoint_equal_strided_and_deterministic(tmp_path):
    datalist, _, _ = make_datalist(tmp_path)
    pack = pack_datalist(datalist, tmp_path / "pack", SIZE, workers=0)  # 9 images
    shards = [pack.shard(r, 4) for r in range(4)]
    assert [len(s) for s in shards] == [2, 2, 2, 2]  # 9 // 4 each; the 9th image is left out
    rows = np.concatenate([s.rows for s in shards])
    assert sorted(rows.tolist()) == list(range(8))
    np.testing.assert_array_equal(shards[1].rows, [1, 5])
    for s in shards:
        np.testing.assert_array_equal(np.asarray(s.images), np.asarray(pack.images)[s.rows])
        np.testing.assert_array_equal(s.labels, pack.labels[s.rows])
        np.testing.assert_array_equal(s.class_index, pack.class_index[s.rows])
        assert s.paths == [pack.paths[r] for r in s.rows]
    np.testing.assert_array_equal(pack.shard(1, 4).rows, shards[1].rows)
    assert len(pack.shard(0, 1)) == 9
    for rank, world in ((4, 4), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="rank"):
            pack.shard(rank, world)
    with pytest.raises(ValueError, match="cannot be shared"):
        pack.shard(0, 10)


def test_to_device_gives_the_uint8_corpus_and_targets(tmp_path):
    datalist, _, _ = make_datalist(tmp_path)
    pack = pack_datalist(datalist, tmp_path / "pack", SIZE, workers=0)
    shard = pack.shard(0, 2)
    images = shard.to_device("cpu")
    assert images.dtype == torch.uint8 and images.shape == (4, 1, SIZE, SIZE)
    np.testing.assert_array_equal(images.numpy(), np.asarray(shard.images))
    labels, class_index = shard.targets_to_device("cpu")
    np.testing.assert_array_equal(labels.numpy(), shard.labels)
    assert class_index.dtype == torch.int64 and class_index.tolist() == shard.class_index.tolist()


def test_real_dicom_files_are_packed_as_the_reader_displays_them(tmp_path, dicom_dir):
    """Real DICOM (RLE, MONOCHROME1 CR, big-endian MR) go through the same reader as the plain path."""
    space = LabelSpace.default()
    names = ["pydicom_test_files/MR_small_RLE.dcm", "pydicom_test_files/MR_small_bigendian.dcm",
             "pydicom_test_files/dicomdirtests/77654033/CR1/6154", "pydicom_test_files/CT_small.dcm"]
    items = [{"image": str(dicom_dir / name), "label": [0] * space.width} for name in names]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"label_space": space.to_dict(), "training": items}))
    pack = pack_datalist(path, tmp_path / "pack", SIZE, workers=0)
    assert len(pack) == 4 and pack.skipped == [] and pack.class_index is None
    reader = LoadGrayscaleImage(spatial_size=SIZE)
    for row, item in enumerate(items):
        expected = np.rint(np.asarray(reader(item["image"])) * 255).astype(np.uint8)
        np.testing.assert_array_equal(pack.images[row], expected)
        assert pack.images[row].std() > 0  # real content, not a blank frame
