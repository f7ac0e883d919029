"""The README's two set-up commands are what CI runs; resources ship with the package."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Set-up", 1)[1]
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", block, flags=re.S)[:2]


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    install_and_run, test = commands
    assert "\n" not in install_and_run.strip() and "\n" not in test.strip()
    # CPU torch before the package, so pip never pulls the CUDA build
    assert install_and_run.index("pip install torch==") < install_and_run.index("pip install -e .")
    assert "python -m monai.bundle run" in install_and_run or "python -m monai_modan" in install_and_run


def test_ci_runs_the_readme_test_command():
    test_command = _readme_commands()[1].strip()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()
    assert ci.index("pip install -q torch==2.13.0") < ci.index(test_command)


def test_resources_ship_with_the_package():
    root = resources.files("monai_modan.resources")
    for name in ("vocabulary.yaml", "radimagenet.yaml", "bundle_meta_schema.json"):
        assert root.joinpath(name).is_file(), name
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"resources/*.yaml", "resources/*.json"' in pyproject


def test_embedded_data_ships_with_the_package():
    """Every embedded data file matches a package-data pattern, so a wheel (not only a checkout) carries it."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["monai_modan"]
    package = REPO / "monai_modan"
    files = [p.relative_to(package).as_posix() for p in (package / "embedded").rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert len(files) >= 6, files  # ATTRIBUTION.md, four pretraining files, BreastMNIST
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not unshipped
