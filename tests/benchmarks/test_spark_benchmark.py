"""The SparK case of the pretrain benchmark in a tiny configuration: the result's shape and arithmetic (speed
itself is never asserted)."""

from __future__ import annotations

import json

import pytest

from monai_modan.benchmarks import pretrain
from monai_modan.benchmarks.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_spark_case_compares_a_spark_step_with_a_mulsupcon_step(tmp_path):
    result = pretrain.run(image_size=32, batch_size=2, images=4, warmup=0, repeats=1, workdir=tmp_path, case="spark")
    assert result["benchmark"] == "pretrain" and result["sizes"]["case"] == "spark"
    (spark,) = result["comparisons"]
    assert spark["metric"] == "overhead" and spark["target"] == {"op": "<=", "value": 1.3}
    assert spark["baseline"]["name"].startswith("MulSupCon") and spark["candidate"]["name"].startswith("SparK")
    assert spark["baseline"]["items"] == spark["candidate"]["items"] == 2
    assert spark["value"] == pytest.approx(spark["candidate"]["seconds"] / spark["baseline"]["seconds"])
    assert spark["met"] == (spark["value"] <= 1.3)
    assert "16-px patches (4 per image, mask ratio 0.6)" in spark["note"]


def test_unknown_case_is_refused():
    with pytest.raises(ValueError, match="case must be one of fast, spark, all, got 'mae'"):
        pretrain.run(case="mae")


def test_cli_runs_the_spark_case(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert main(["pretrain", "--case", "spark", "--size", "32", "--batch-size", "2", "--images", "4",
                 "--repeats", "1", "--warmup", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in result["comparisons"]] == ["SparK step vs MulSupCon step on the same batch"]
