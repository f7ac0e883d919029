"""Benchmarks in tiny configurations: the result format and its arithmetic (speed itself is never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from monai_modan.benchmarks import cv, index, loss, pretrain
from monai_modan.benchmarks.__main__ import main
from monai_modan.benchmarks.common import Timed, comparison, format_result, measure, measure_interleaved

RESULT_KEYS = {"benchmark", "title", "date", "device", "device_name", "threads", "cpu_count", "versions", "sizes",
               "comparisons", "notes"}
TIMING_KEYS = {"name", "seconds", "min", "max", "repeats", "warmup", "number", "samples", "items", "unit",
               "items_per_second"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def check_result(result: dict, benchmark: str, n_comparisons: int) -> None:
    assert RESULT_KEYS <= set(result) and result["benchmark"] == benchmark
    assert {"torch", "monai", "python"} <= set(result["versions"])
    assert len(result["date"]) == 10 and result["device"] == "cpu"
    assert len(result["comparisons"]) == n_comparisons
    for c in result["comparisons"]:
        for timing in (c["baseline"], c["candidate"]):
            assert TIMING_KEYS <= set(timing)
            assert timing["seconds"] > 0 and all(s > 0 for s in timing["samples"])
            assert timing["min"] <= timing["seconds"] <= timing["max"]
            assert timing["items_per_second"] == pytest.approx(timing["items"] / timing["seconds"])
        assert c["baseline"]["items"] == c["candidate"]["items"]
        assert c["ratio"] == pytest.approx(c["baseline"]["seconds"] / c["candidate"]["seconds"])
        assert c["value"] == pytest.approx(c["ratio"] if c["metric"] == "ratio" else 1 / c["ratio"])
        if c["target"] is not None:
            op, bound = c["target"]["op"], c["target"]["value"]
            assert c["met"] == (c["value"] >= bound if op == ">=" else c["value"] <= bound)
    json.dumps(result)  # JSON-able as printed by --json
    assert result["benchmark"] in format_result(result)


def test_loss_benchmark_tiny():
    result = loss.run(batch=6, warmup=0, repeats=2, number=2)
    check_result(result, "loss", n_comparisons=2)
    assert result["sizes"]["B"] == 6 and result["comparisons"][0]["target"] == {"op": ">=", "value": 100.0}
    assert "|diff|" in result["comparisons"][0]["note"]


def test_authors_style_loss_computes_mulsupcon():
    from monai_modan.labels import LabelSpace
    from monai_modan.losses import MulSupConLoss

    g = torch.Generator().manual_seed(0)
    features = torch.randn(7, 2, 5, generator=g)
    labels = loss.metadata_labels(7, LabelSpace.default(), g)
    assert (labels.sum(dim=1) >= 1).all()  # modality always known
    torch.testing.assert_close(loss.authors_style_mulsupcon(features, labels), MulSupConLoss()(features, labels))


def test_pretrain_benchmark_tiny(tmp_path):
    result = pretrain.run(image_size=32, batch_size=2, images=4, stem="conv7x7", warmup=0, repeats=1,
                          epoch_repeats=1, loader_workers=0, workdir=tmp_path)
    check_result(result, "pretrain", n_comparisons=2)
    overhead, throughput = result["comparisons"]
    assert overhead["metric"] == "overhead" and overhead["target"] == {"op": "<=", "value": 1.3}
    assert throughput["candidate"]["items"] == result["sizes"]["epoch_images"]
    assert result["configuration"] == "cpu stand-in" and any("NOT the GPU" in n for n in result["notes"])


def test_index_benchmark_tiny():
    result = index.run(files=30, image_size=32, warmup=0, repeats=1)
    check_result(result, "index", n_comparisons=2)
    sizes = result["sizes"]
    assert sizes["indexed_images"] == sizes["naive_labelled"] >= 30
    assert sizes["files"] == sizes["indexed_images"] + sizes["skipped_files"]
    assert result["comparisons"][0]["candidate"]["name"].endswith("empty header cache")


def test_cv_benchmark_tiny(tmp_path):
    result = cv.run(image_size=32, images=40, workers=2, repeats_cv=1, folds=2, epochs=1, warmup=0, repeats=1,
                    workdir=tmp_path)
    check_result(result, "cv", n_comparisons=2)
    pooled, probe = result["comparisons"]
    assert pooled["target"] == {"op": ">=", "value": 1.5} and pooled["candidate"]["items"] == 2
    assert result["sizes"]["workers"] == 2 and result["max_auc_diff"] <= 1e-3
    # the linear probe's shared feature pass runs the same optimisation as per-run encoding
    assert probe["candidate"]["items"] == probe["baseline"]["items"] == 2
    assert result["max_auc_diff_linear_probe"] <= 1e-6
    assert (tmp_path / "out_workers2" / "results.csv").is_file()
    with pytest.raises(ValueError, match="workers must be >= 2"):
        cv.run(workers=1, workdir=tmp_path)


def test_measurements_interleave_and_count_calls():
    calls = []
    entries = [Timed("a", lambda: calls.append("a"), setup=lambda: calls.append("setup")),
               Timed("b", lambda: calls.append("b"), number=3)]
    a, b = measure_interleaved(entries, warmup=1, repeats=2)
    assert calls == ["setup", "a", "b"] + ["setup", "a", "b", "b", "b"] * 2
    assert (a["repeats"], a["number"], b["number"], len(b["samples"])) == (2, 1, 3, 2)


def test_comparison_refuses_different_work_and_bad_targets():
    a = measure(lambda: None, name="a", warmup=0, repeats=2, items=3)
    b = measure(lambda: None, name="b", warmup=0, repeats=2, items=4)
    with pytest.raises(ValueError, match="different work"):
        comparison("x", a, b)
    with pytest.raises(ValueError, match="op"):
        comparison("x", a, a, target=("==", 1.0))
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda: None, name="c", repeats=0)


def test_cli_prints_one_json_result(capsys):
    assert main(["loss", "--json", "--size", "4", "--repeats", "1", "--warmup", "0", "--number", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    check_result(result, "loss", n_comparisons=2)
    assert result["sizes"]["B"] == 4
