"""TorchScript weights files run code on load: every entry point that reads encoder weights refuses them unless the
caller opts in with ``allow_torchscript``.

The payload is a real TorchScript encoder: a ``ResNet18Encoder`` beside a child module whose scripted
``__setstate__`` -- code stored in the archive, run by ``torch.jit.load`` -- creates a marker file through
``torch.from_file(..., shared=True)`` and writes ``pwned!`` into it. The child holds no tensors, so the archive's state
dict is exactly the encoder's. The marker shows that the code ran; on the refused paths ``torch.jit.load`` (and the
C++ importer under it) is also replaced by a function that fails the test, so no entry point reaches it.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Tuple

import pytest
import torch
import torch.nn as nn

import monai_modan.__main__ as cli
from monai_modan.evaluation import experiment as experiment_module
from monai_modan.evaluation.experiment import ExperimentConfig, ExperimentError, experiment_from_yaml, run_experiment
from monai_modan.evaluation.inits import default_init, pretrained_inits
from monai_modan.networks import CheckpointError, ResNet18Encoder, build_encoder, export_encoder, load_encoder
from monai_modan.networks.weights import InitKind, InitSpec

REPO = Path(__file__).resolve().parents[2]
PWNED = b"pwned!\n"
SIZE = 32


class _Payload(nn.Module):
    """No parameters or buffers; its ``__setstate__`` is TorchScript code saved in the archive."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.ran = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        written = torch.from_file(self.marker, shared=True, size=7, dtype=torch.uint8)  # creates the file
        written.copy_(torch.tensor([112, 119, 110, 101, 100, 33, 10], dtype=torch.uint8))  # b"pwned!\n"
        self.ran = int(written.sum())  # used, so the scripted code keeps the write


class _TrojanEncoder(nn.Module):
    def __init__(self, encoder: ResNet18Encoder, marker: str):
        super().__init__()
        self.encoder = encoder
        self.payload = _Payload(marker)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.payload(x))


def make_payload(path: Path, marker: Path, stem: str = "conv3x3") -> tuple[Path, ResNet18Encoder]:
    """Write a TorchScript encoder archive whose loading writes ``marker``; returns it and the encoder inside."""
    torch.manual_seed(0)
    encoder = build_encoder(stem).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still MONAI's format
        torch.jit.save(torch.jit.script(_TrojanEncoder(encoder, str(marker.absolute())).eval()), str(path))
    assert not marker.exists(), "scripting and saving must not run the payload"
    return path, encoder


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "marker" / "pwned.txt"


@pytest.fixture
def payload(tmp_path, marker) -> Path:
    marker.parent.mkdir()
    return make_payload(tmp_path / "weights" / "encoder.pt", marker)[0]


@pytest.fixture
def no_jit_load(monkeypatch):
    """Fail the test if anything reaches ``torch.jit.load`` or the C++ importer behind it (``torch.load`` with
    ``weights_only=False`` dispatches TorchScript archives there)."""
    calls = []

    def trap(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"torch.jit.load reached with {args}")

    monkeypatch.setattr(torch.jit, "load", trap)
    monkeypatch.setattr(torch._C, "import_ir_module", trap)
    monkeypatch.setattr(torch._C, "import_ir_module_from_buffer", trap)
    return calls


def assert_refusal(message: str, path: Path) -> None:
    """One line naming the file, the risk, the conversion and the opt-in."""
    assert "\n" not in message, message
    assert str(path) in message and "TorchScript archive" in message and "runs code" in message, message
    assert ".state_dict()" in message and "torch.save(" in message and "allow_torchscript=True" in message, message


def test_the_payload_runs_code_on_torch_jit_load(payload, marker):
    """The test's premise: loading the archive directly executes its ``__setstate__`` (a file appears)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(payload))
    assert marker.read_bytes() == PWNED and loaded.payload.ran == sum(PWNED)


# ---------------------------------------------------------------- load_encoder, the one loader


def test_load_encoder_refuses_torchscript_by_default(payload, marker, no_jit_load):
    with pytest.raises(CheckpointError) as info:
        load_encoder(payload)
    assert_refusal(str(info.value), payload)
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        load_encoder(payload, allow_torchscript=False)
    assert not marker.exists() and no_jit_load == []


def test_load_encoder_opt_in_loads_the_encoder_and_runs_its_code(payload, marker):
    encoder = make_payload(payload, marker)[1]  # the same weights again (seeded)
    loaded = load_encoder(payload, allow_torchscript=True)
    assert marker.read_bytes() == PWNED, "the opt-in really runs code from the file"
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), encoder(x))


def test_opt_in_must_be_a_bool(payload, marker, no_jit_load):
    with pytest.raises(TypeError, match="allow_torchscript"):
        load_encoder(payload, allow_torchscript="false")
    assert not marker.exists()


def test_the_advised_conversion_gives_a_loadable_state_dict(payload, marker, tmp_path):
    """The refusal's advice, followed in a trusted session, yields a plain state dict the default loader reads."""
    encoder = make_payload(payload, marker)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.save(torch.jit.load(str(payload)).state_dict(), tmp_path / "encoder_state_dict.pt")
    loaded = load_encoder(tmp_path / "encoder_state_dict.pt")
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), encoder(x))


def test_exported_torchscript_needs_the_opt_in_too(tmp_path, no_jit_load):
    """Our own TorchScript export is refused like any other archive: the loader cannot tell a trusted one."""
    path = export_encoder(build_encoder(), tmp_path / "encoder.ts", fmt="torchscript")
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        load_encoder(path)
    assert no_jit_load == []


def test_training_checkpoint_resume_refuses_torchscript(payload, marker, no_jit_load):
    from monai_modan.engines.pretrain import load_checkpoint

    with pytest.raises(CheckpointError, match="loaded safely.*TorchScript"):
        load_checkpoint(payload)
    assert not marker.exists() and no_jit_load == []


# ---------------------------------------------------------------- InitSpec


@pytest.mark.parametrize("prefix, kind", [("", InitKind.CHECKPOINT), ("imagenet:", InitKind.IMAGENET)])
def test_init_spec_refuses_torchscript(payload, marker, no_jit_load, prefix, kind):
    with pytest.raises(CheckpointError) as info:
        InitSpec.parse("evil", f"{prefix}{payload}")
    assert str(info.value).startswith(f"init 'evil' ({kind}): ")
    assert_refusal(str(info.value), payload)
    # built without parse (or the file swapped after parsing): build_encoder refuses it as well
    spec = InitSpec("evil", kind, payload)
    assert spec.allow_torchscript is False
    with pytest.raises(CheckpointError) as info:
        spec.build_encoder()
    assert str(info.value).startswith(f"init 'evil' ({kind}): ")
    assert_refusal(str(info.value), payload)
    assert not marker.exists() and no_jit_load == []


def test_init_spec_opt_in_builds_the_encoder(payload, marker):
    spec = InitSpec.parse("trusted", str(payload), allow_torchscript=True)
    assert spec.allow_torchscript is True and not marker.exists()
    assert isinstance(spec.build_encoder(), ResNet18Encoder) and marker.read_bytes() == PWNED
    with pytest.raises(ValueError, match="allow_torchscript must be True or False"):
        InitSpec("x", InitKind.CHECKPOINT, payload, allow_torchscript="yes")


# ---------------------------------------------------------------- ExperimentConfig / run_experiment / YAML


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    try:
        from monai_modan.synthetic import generate_downstream_task
    except ImportError:  # before the synthetic package moved out of monai_modan.data
        from monai_modan.data.synthetic import generate_downstream_task

    return Path(generate_downstream_task("knee_acl", tmp_path_factory.mktemp("task"), n_images=24, image_size=SIZE))


@pytest.fixture
def prepared(task, monkeypatch):
    """The CLI and the task bundles get their task datalists from ``prepare_task`` (a data source) or the embedded
    synthetic ``default_task_datalist``: hand them ``task`` (tested elsewhere; here only the weights matter)."""
    import monai_modan.synthetic
    from monai_modan.data.downstream import prepare

    monkeypatch.setattr(prepare, "prepare_task", lambda *args, **kwargs: str(task))
    if hasattr(monai_modan.synthetic, "default_task_datalist"):
        monkeypatch.setattr(monai_modan.synthetic, "default_task_datalist", lambda *args, **kwargs: str(task))
    return task


def _config(task, out, inits, **kw):
    return {"tasks": {"knee": str(task)}, "inits": inits, "out_dir": str(out), "repeats": 1, "folds": 2,
            "recipe": {"epochs": 1, "image_size": SIZE}, "device": "cpu", **kw}


def test_experiment_config_refuses_torchscript_inits(task, payload, marker, tmp_path, no_jit_load):
    for inits in ({"evil": str(payload)}, {"scratch": None, "evil": f"imagenet:{payload}"}):
        with pytest.raises(ExperimentError) as info:
            ExperimentConfig.from_dict(_config(task, tmp_path / "out", inits))
        assert "init 'evil'" in str(info.value)
        assert_refusal(str(info.value), payload)
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        ExperimentConfig(**_config(task, tmp_path / "out", {"evil": str(payload)}))
    with pytest.raises(ExperimentError, match="allow_torchscript must be true or false"):
        ExperimentConfig.from_dict(_config(task, tmp_path / "out", {"s": None}, allow_torchscript="false"))
    assert not marker.exists() and no_jit_load == [] and not (tmp_path / "out").exists()


def test_run_experiment_refuses_before_any_training(task, payload, marker, tmp_path, monkeypatch, no_jit_load):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(experiment_module, "train_fold", no_training)
    with pytest.raises(ExperimentError, match="TorchScript archive"):  # a plain mapping, as the bundles pass
        run_experiment(_config(task, tmp_path / "a", {"evil": str(payload)}), progress=False)
    # a weights file swapped for the payload after the config was checked: the up-front load refuses it
    safe = export_encoder(build_encoder(), tmp_path / "w" / "encoder.pt")
    cfg = ExperimentConfig.from_dict(_config(task, tmp_path / "b", {"modan": str(safe)}))
    shutil.copy(payload, safe)
    with pytest.raises(CheckpointError, match="init 'modan'.*TorchScript archive"):
        run_experiment(cfg, progress=False)
    assert not marker.exists() and no_jit_load == []
    assert not (tmp_path / "b" / "results.csv").exists()


def test_yaml_inits_refused_and_opted_in(task, payload, marker, tmp_path, no_jit_load, monkeypatch):
    yaml = tmp_path / "exp.yaml"
    base = f"tasks: {{knee: {task}}}\ninits: {{evil: {payload}}}\nout_dir: out\n"
    yaml.write_text(base, encoding="utf-8")
    with pytest.raises(ExperimentError) as info:
        experiment_from_yaml(yaml)
    assert str(info.value).startswith(f"{yaml}: ")
    assert_refusal(str(info.value), payload)
    yaml.write_text(base + "allow_torchscript: 'true'\n", encoding="utf-8")
    with pytest.raises(ExperimentError, match="allow_torchscript must be true or false"):
        experiment_from_yaml(yaml)
    assert not marker.exists() and no_jit_load == []
    monkeypatch.undo()  # the opt-in path really loads the archive
    yaml.write_text(base + "allow_torchscript: true\n", encoding="utf-8")
    cfg = experiment_from_yaml(yaml)
    assert cfg.allow_torchscript is True and cfg.init_specs["evil"].allow_torchscript is True
    assert isinstance(cfg.init_specs["evil"].build_encoder(), ResNet18Encoder) and marker.read_bytes() == PWNED


# ---------------------------------------------------------------- pretrained_inits (the bundles' pretrain_runs)


def test_pretrained_inits_paths_are_refused_downstream(task, payload, marker, tmp_path, no_jit_load):
    runs = tmp_path / "runs"
    (runs / "simclr").mkdir(parents=True)
    shutil.copy(payload, runs / "simclr" / "encoder.pt")
    inits = pretrained_inits(runs, imagenet=payload)  # only paths: nothing is read here
    assert inits == {"simclr": str(runs / "simclr" / "encoder.pt"), "imagenet": f"imagenet:{payload}", "scratch": None}
    assert default_init(runs, method="simclr") == {"simclr": str(runs / "simclr" / "encoder.pt")}
    for chosen in ({"simclr": inits["simclr"]}, {"imagenet": inits["imagenet"]}, default_init(runs, "simclr")):
        with pytest.raises(ExperimentError, match="TorchScript archive"):
            ExperimentConfig.from_dict(_config(task, tmp_path / "out", chosen))
    assert not marker.exists() and no_jit_load == []
    cfg = ExperimentConfig.from_dict(_config(task, tmp_path / "out", inits, allow_torchscript=True))
    assert all(spec.allow_torchscript for spec in cfg.init_specs.values())


# ---------------------------------------------------------------- the CLI


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(["experiment", *argv])
    return rc, capsys.readouterr().err


def _tiny(tmp_path) -> list[str]:
    return ["--out", str(tmp_path / "out"), "--task", "breast_us", "--synthetic-images", "24", "--image-size",
            str(SIZE), "--repeats", "1", "--folds", "2", "--epochs", "1", "--quiet"]


def test_cli_pretrain_runs_and_imagenet_are_refused(prepared, payload, marker, tmp_path, capsys, no_jit_load,
                                                    monkeypatch):
    monkeypatch.setattr(experiment_module, "train_fold", lambda *a, **k: pytest.fail("training started"))
    runs = tmp_path / "runs"
    (runs / "mulsupcon").mkdir(parents=True)
    shutil.copy(payload, runs / "mulsupcon" / "encoder.pt")
    rc, err = _cli(capsys, *_tiny(tmp_path), "--pretrain-runs", str(runs))
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert_refusal(err.strip(), runs / "mulsupcon" / "encoder.pt")
    rc, err = _cli(capsys, *_tiny(tmp_path), "--scratch-only", "--imagenet", str(payload))
    assert rc == 2 and err.count("\n") == 1 and "init 'imagenet'" in err, err
    assert_refusal(err.strip(), payload)
    assert not marker.exists() and no_jit_load == []
    assert not (tmp_path / "out" / "results.csv").exists()


def test_cli_config_inits_are_refused(task, payload, marker, tmp_path, capsys, no_jit_load):
    yaml = tmp_path / "exp.yaml"
    yaml.write_text(f"tasks: {{knee: {task}}}\ninits: {{evil: {payload}}}\nout_dir: out\n", encoding="utf-8")
    rc, err = _cli(capsys, "--config", str(yaml))
    assert rc == 2 and err.count("\n") == 1, err
    assert_refusal(err.strip(), payload)
    rc, err = _cli(capsys, "--config", str(yaml), "--allow-torchscript")  # never silently ignored
    assert rc == 2 and "--allow-torchscript has no effect with --config" in err and "allow_torchscript: true" in err
    assert not marker.exists() and no_jit_load == []


def test_cli_allow_torchscript_opts_in(prepared, payload, marker, tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_run(config, progress=True):  # the whole experiment is tested elsewhere: load the inits only
        seen["config"] = config
        for spec in config.init_specs.values():
            spec.build_encoder(config.seed)
        (tmp_path / "report.md").write_text("")
        return {"report.md": tmp_path / "report.md"}

    monkeypatch.setattr(experiment_module, "run_experiment", fake_run)
    runs = tmp_path / "runs"
    (runs / "supervised").mkdir(parents=True)
    shutil.copy(payload, runs / "supervised" / "encoder.pt")
    rc, err = _cli(capsys, *_tiny(tmp_path), "--pretrain-runs", str(runs), "--allow-torchscript")
    assert rc == 0, err
    assert seen["config"].allow_torchscript is True and seen["config"].init_specs["supervised"].allow_torchscript
    assert marker.read_bytes() == PWNED


def test_cli_help_says_the_flag_runs_code(capsys):
    with pytest.raises(SystemExit):
        cli.main(["experiment", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--allow-torchscript" in out and "RUNS CODE FROM THE FILE" in out


# ---------------------------------------------------------------- bundles


def _chain(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    try:
        from monai_modan.synthetic import default_pretraining_datalist
    except ImportError:  # before the synthetic corpus moved out of the pretraining engine
        from monai_modan.engines.pretrain import prepare_pretraining_datalist as default_pretraining_datalist
    return default_pretraining_datalist(root, images_per_class=1, image_size=SIZE)


def _inference(out: Path, corpus, **overrides):
    from monai.bundle import run

    configs = REPO / "bundles" / "modan_pretrain" / "configs"
    run(config_file=[str(configs / "train.json"), str(configs / "inference.json")],
        bundle_root=str(REPO / "bundles" / "modan_pretrain"), logging_file=str(configs / "logging.conf"),
        output_dir=str(out), model_file=str(out / "model.pt"), datalist=corpus, image_size=SIZE, batch_size=4,
        **overrides)


def test_inference_bundle_refuses_torchscript_and_opts_in(tmp_path, corpus):
    assert json.loads((REPO / "bundles/modan_pretrain/configs/inference.json").read_text())["allow_torchscript"] is False
    out = tmp_path / "run"
    marker = tmp_path / "pwned.txt"
    make_payload(out / "encoder.pt", marker)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load reached"))
        with pytest.raises(Exception) as info:
            _inference(out, corpus)
    assert "TorchScript archive" in _chain(info.value) and str(out / "encoder.pt") in _chain(info.value)
    assert not marker.exists() and not (out / "embeddings_training.npz").exists()
    _inference(out, corpus, allow_torchscript=True)
    assert marker.read_bytes() == PWNED
    import numpy as np

    emb = np.load(out / "embeddings_training.npz")
    assert emb["embeddings"].shape[1] == 512 and np.isfinite(emb["embeddings"]).all()


def _task_bundle(out: Path, runs: Path, **overrides):
    from monai.bundle import run

    configs = REPO / "bundles" / "breast_us" / "configs"
    run(config_file=str(configs / "train.json"), bundle_root=str(REPO / "bundles" / "breast_us"),
        logging_file=str(configs / "logging.conf"), output_dir=str(out), pretrain_runs=str(runs), image_size=SIZE,
        synthetic_images=24, folds=2, device="cpu", **overrides)


def test_task_bundle_refuses_a_torchscript_pretrain_run(prepared, tmp_path, monkeypatch):
    marker = tmp_path / "pwned.txt"
    make_payload(tmp_path / "runs" / "mulsupcon" / "encoder.pt", marker)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load reached"))
    monkeypatch.setattr(experiment_module, "train_fold", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(Exception) as info:
        _task_bundle(tmp_path / "out", tmp_path / "runs")
    assert "TorchScript archive" in _chain(info.value), _chain(info.value)
    assert not marker.exists()


def test_task_bundle_allow_torchscript_opts_in(prepared, tmp_path, monkeypatch):
    marker = tmp_path / "pwned.txt"
    make_payload(tmp_path / "runs" / "mulsupcon" / "encoder.pt", marker)
    seen = {}

    def fake_run(config, progress=True):
        seen["config"] = config
        for spec in config.init_specs.values():
            spec.build_encoder(config.seed)

    monkeypatch.setattr(experiment_module, "run_experiment", fake_run)
    _task_bundle(tmp_path / "out", tmp_path / "runs", allow_torchscript=True)
    assert seen["config"].allow_torchscript is True and marker.read_bytes() == PWNED
