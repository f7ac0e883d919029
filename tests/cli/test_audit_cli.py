"""`audit` and `index SRC1 SRC2 ...` on the command line: outputs, --drop, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from monai_modan.__main__ import main
from monai_modan.synthetic import generate_pretraining_corpus


def _texture(seed: int) -> np.ndarray:
    x = gaussian_filter(np.random.default_rng(seed).standard_normal((40, 40)), 2.0)
    return np.rint((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)


def test_audit_command_reports_and_drops(tmp_path, capsys):
    corpus = generate_pretraining_corpus(tmp_path / "data", images_per_class=1, image_size=32, layouts=("radimagenet",),
                                         progress=False)
    assert main(["index", str(corpus.radimagenet_root), "--out", str(tmp_path / "rin.json"), "--quiet"]) == 0
    rin = json.loads((tmp_path / "rin.json").read_text())
    leaked = rin["training"][0]["image"]
    images = []
    for i in range(6):
        Image.fromarray(_texture(i)).save(tmp_path / f"t{i}.png")
        images.append(str(tmp_path / f"t{i}.png"))
    shutil.copy(leaked, tmp_path / "seen.png")
    items = [{"image": p, "label": i % 2} for i, p in enumerate(images + [str(tmp_path / "seen.png")])]
    (tmp_path / "task.json").write_text(json.dumps({"format": "monai-modan/task/1", "task": "t", "training": items}))
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "rin.json"), str(tmp_path / "task.json"), "--out", str(tmp_path / "a"),
                 "--drop", "--quiet", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "task: 7 images" in out and "1 also in pretraining" in out and "cleaned task" in out
    assert (tmp_path / "a" / "audit.md").is_file() and (tmp_path / "a" / "audit_pairs.png").is_file()
    cleaned = json.loads((tmp_path / "task.clean.json").read_text())
    assert [Path(it["image"]).name for it in cleaned["training"]] == [f"t{i}.png" for i in range(6)]


def test_audit_and_merge_mistakes_are_one_line(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "none.json" in err and "\n" not in err
    (tmp_path / "x.json").write_text("{}")
    assert main(["audit", str(tmp_path / "x.json"), "--max-distance", "99"]) == 2
    assert "max_distance must be an integer in [0, 64], got 99" in capsys.readouterr().err
    corpus = generate_pretraining_corpus(tmp_path / "data", images_per_class=1, image_size=32, progress=False)
    assert main(["index", str(corpus.radimagenet_root), "--out", str(tmp_path / "rin.json"), "--quiet"]) == 0
    assert main(["index", str(tmp_path / "rin.json"), str(corpus.dicom_root), "--out", str(tmp_path / "m.json"),
                 "--groups", "laterality", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "label space differs" in err and "\n" not in err and not (tmp_path / "m.json").exists()
    assert main(["index", str(corpus.radimagenet_root), str(corpus.dicom_root), "--out", str(tmp_path / "m.json"),
                 "--quiet", "--workers", "0"]) == 0
    assert "## Sources" in (tmp_path / "m.report.md").read_text()
