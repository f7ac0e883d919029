"""The package's layers only point down, and no module imports itself round a circle.

Every ``import`` / ``from ... import`` of a ``monai_modan`` module -- at module top or inside a function -- is read
from the source (``ast``, nothing is imported), so a lazy import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_modan"

# lowest first; a package may import its own layer's modules and any lower layer, never a higher one
LAYERS = (
    ("monai_modan", "resources", "utils"),
    ("labels",),
    ("data",),
    ("synthetic", "embedded"),
    ("transforms",),
    ("losses",),
    ("networks",),
    ("engines",),
    ("evaluation",),
    ("benchmarks", "__main__"),
)
ENTRY = {"__main__"}  # imported by nothing


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import of a monai_modan module."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target]
                if node.module is None or target in _packages():  # "from . import x": x may be a module
                    targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in _modules() else target
                               for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges += [(module, t, node.lineno) for t in targets if t.split(".")[0] == "monai_modan"]
    return edges


def _modules() -> set[str]:
    return {_module(p) for p in PACKAGE.rglob("*.py")}


def _packages() -> set[str]:
    return {_module(p) for p in PACKAGE.rglob("__init__.py")}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its package {top!r} has no layer in tests/test_architecture.py::LAYERS")


def test_imports_only_point_down():
    upward = [f"{src}:{line} imports {dst} (layer {_layer(dst)} above {_layer(src)})"
              for src, dst, line in _imports() if _layer(dst) > _layer(src)]
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_nothing_imports_the_cli():
    importers = [f"{src}:{line}" for src, dst, line in _imports()
                 if dst.split(".")[1:2] and dst.split(".")[1] in ENTRY and src.split(".")[1:2] != [dst.split(".")[1]]]
    assert not importers, f"the CLI is imported by {importers}"


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    modules = _modules()
    for src, dst, _ in _imports():
        while dst not in modules and "." in dst:  # "from pkg.mod import name" -> the module pkg.mod
            dst = dst.rpartition(".")[0]
        if dst != src and not (src.startswith(dst + ".") and dst in _packages()):  # a package's face re-exports
            graph.setdefault(src, set()).add(dst)
    visiting, done, cycles = set(), set(), []

    def visit(node: str, stack: list[str]) -> None:
        visiting.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in visiting:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, [*stack, nxt])
        visiting.discard(node)
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("bad", ["monai_modan.evaluation.stats", "monai_modan.__main__"])
def test_the_check_sees_an_upward_import(bad, tmp_path, monkeypatch):
    """The walker finds an upward edge planted in a copy of a low module (so the tests above can fail)."""
    import shutil

    copy = tmp_path / "monai_modan"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "labels" / "planted.py").write_text(f"from {bad} import x\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", copy)
    with pytest.raises(AssertionError, match="planted"):
        test_imports_only_point_down()


def test_the_check_sees_a_cycle(tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "monai_modan"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "labels" / "ring_a.py").write_text("from .ring_b import x\n", encoding="utf-8")
    (copy / "labels" / "ring_b.py").write_text("def f():\n    from monai_modan.labels.ring_a import y\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", copy)
    with pytest.raises(AssertionError, match="ring_a -> monai_modan.labels.ring_b|ring_b -> monai_modan.labels.ring_a"):
        test_no_import_cycles_between_modules()
