"""The package's layering: no import cycles (function-local imports included), each layer importing
only the layers below it, and a writer process free of Hydra and torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gdexp"

# config -> training -> tracking -> job -> sweeps and compare -> entry points: each module may
# import its own layer's modules (without cycles) and those of lower layers.
LAYERS = {
    "gdexp.errors": 0,
    "gdexp.config": 1,
    "gdexp.checks": 2,
    "gdexp.training": 3,
    "gdexp.tracking": 4,
    "gdexp.outcome": 5,
    "gdexp.console": 5,
    "gdexp.job": 5,
    "gdexp.failures": 5,
    "gdexp.task": 6,
    "gdexp.sweeps": 6,
    "gdexp.compare": 6,
    "gdexp.api": 7,
    "gdexp.ui": 7,
    "gdexp.compare.cli": 7,
    "gdexp.compare.__main__": 7,
    "gdexp.run": 7,
    "gdexp.sync": 7,
    "gdexp": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, name: str) -> set[str]:
    """Every gdexp module ``path`` imports, at any depth of its code (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "gdexp"}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in imports(path, name) if m in modules and m != name} for name, path in modules.items()}


def layer(name: str) -> int:
    best = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len)
    return LAYERS[best]


def test_no_import_cycles_in_the_package():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_each_module_imports_only_its_layer_and_those_below():
    upward = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        for target in targets
        if layer(target) > layer(name) and not name.startswith(target + ".") and name != "gdexp"
    ]
    assert upward == []


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    """The check counts function-local imports: a cycle made only of them is still found."""
    pkg = tmp_path / "gdexp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import gdexp.b\n")
    (pkg / "b.py").write_text("def f():\n    from gdexp import a\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    edges = graph()
    assert edges["gdexp.a"] == {"gdexp.b"} and "gdexp.a" in edges["gdexp.b"]


def test_the_writer_process_imports_neither_hydra_nor_torch():
    probe = (
        "import sys, gdexp.tracking.writer, gdexp.tracking.client, mlflow; "
        "print(sorted(m for m in ('hydra', 'omegaconf', 'torch', 'pytorch_lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_module_is_long_without_a_reason():
    """Small modules that read top to bottom; the longest stay within about 350 lines."""
    long = {module_name(p): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 360}
    assert long == {}
