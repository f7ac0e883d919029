"""The audit benchmark in a tiny configuration: the result's shape and arithmetic (speed is never asserted), and the
threshold measurements on real data (skipped without it)."""

from __future__ import annotations

import json

import pytest

from monai_modan.benchmarks import audit as audit_benchmark
from monai_modan.benchmarks.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_audit_speed_case_compares_with_baselines_of_the_same_run(capsys):
    result = audit_benchmark.run(image_size=32, images=12, corpus=3000, warmup=0, repeats=1, workers=0)
    assert result["benchmark"] == "audit" and result["sizes"]["corpus_hashes"] == 3000
    fingerprint, rerun, search = result["comparisons"]
    assert fingerprint["metric"] == "overhead" and fingerprint["baseline"]["items"] == 12
    assert rerun["baseline"]["items"] == rerun["candidate"]["items"] == 12
    assert search["candidate"]["items"] == 3000 * 2999 // 2 and search["target"] == {"op": ">=", "value": 100.0}
    for c in result["comparisons"]:
        assert c["ratio"] == pytest.approx(c["baseline"]["seconds"] / c["candidate"]["seconds"])
    json.dumps(result)
    assert main(["audit", "--size", "32", "--images", "4", "--corpus", "500", "--repeats", "1", "--warmup", "0",
                 "--workers", "0"]) == 0
    assert "blocked popcount" in capsys.readouterr().out


def test_threshold_measurements_on_real_data(medmnist_dir, monkeypatch):
    monkeypatch.setattr(audit_benchmark, "_medmnist_images",
                        lambda folder, name, split=None, limit=None, _f=audit_benchmark._medmnist_images:
                        _f(folder, name, split, 60 if name != "breastmnist" or split else limit))
    result = audit_benchmark.run_thresholds(medmnist_dir, probes=20, grid=((8, 0.95),))
    pair = result["breastmnist_cross_class_pair"]
    assert pair["exact"] and {pair["a"], pair["b"]} == {"train_images/115", "test_images/76"}
    assert pair["a_label"] != pair["b_label"]
    assert result["copies"]["JPEG quality 75"]["recall"]["d<=8,r>=0.95"] == 1.0
    assert all(v["d<=8,r>=0.95"] == 0 for v in result["unrelated_across_data_sets"].values())
    assert "| copy |" in audit_benchmark.format_thresholds(result)
