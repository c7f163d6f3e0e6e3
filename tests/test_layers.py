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
    "gdexp.session": 0,
    "gdexp.config": 1,
    "gdexp.commandline": 1,
    "gdexp.checks": 2,
    "gdexp.configfile": 2,
    "gdexp.explain": 2,
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


# --------------------------------------------------------------------------- one owner per thing

URI_HELPERS = {"resolve_uri", "masked", "mask_text", "scrub_credentials", "TrackingError", "TRACKING_ALLOWED"}


def imported_names(path: Path, module: str) -> set[str]:
    """The names ``path`` imports from ``module`` (``from module import a, b``), at any depth."""
    return {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == module
        for alias in node.names
    }


def sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in [*SRC.rglob("*.py"), *(SRC.parent / "hydra_plugins").rglob("*.py")]}


def test_no_module_outside_tracking_takes_a_uri_helper_from_the_store():
    """URIs and secrets are :mod:`gdexp.tracking.uri`'s; the store module is for stores."""
    paths = [*SRC.rglob("*.py"), *(SRC.parent / "hydra_plugins").rglob("*.py")]
    wrong = {
        str(p.relative_to(SRC.parent)): names
        for p in paths
        if "tracking" not in p.relative_to(SRC.parent).parts
        and (names := imported_names(p, "gdexp.tracking.store") & URI_HELPERS)
    }
    assert wrong == {}
    store = (SRC / "tracking" / "store.py").read_text()
    assert not any(f"def {name}(" in store for name in URI_HELPERS), "the store defines a URI helper again"


def test_the_uri_is_resolved_at_the_edges_only():
    """``resolve_uri`` is called where a URI enters: its own module (Target.of), and the two
    command lines that take ``--tracking-uri`` (compare, ui); everything else is handed a Target."""
    callers = {name for name, text in sources().items() if "resolve_uri(" in text}
    assert callers <= {"gdexp.tracking.uri", "gdexp.compare.runs", "gdexp.ui"}, callers


def test_launchers_and_sweepers_are_known_by_type_not_by_name():
    found = {
        name
        for name, text in sources().items()
        for suffix in ("Launcher", "Sweeper")
        if f'endswith("{suffix}' in text or f'{suffix}" in' in text or f"endswith('{suffix}" in text
    }
    assert found == set()


def test_process_state_has_one_owner():
    """What a command has seen and opened lives in :data:`gdexp.session.SESSION`, reset by one call,
    not in module globals or class attributes."""
    texts = sources()
    for name in ("FAILURES", "SKIPPED", "ACTIVE", "_TASK_STARTED"):
        assert not any(f"\n{name}: " in t or f"\n{name} = " in t for t in texts.values()), name
    assert not [n for n, t in texts.items() if "ClassVar[dict" in t or "ClassVar[list" in t], (
        "a class attribute holds process state"
    )


def test_every_user_facing_error_is_a_user_error():
    """Every exception a user may see is a :class:`gdexp.errors.UserError` (one line, an exit
    status); the few others are control flow, never shown."""
    import importlib
    import inspect

    from gdexp.errors import UserError

    control_flow = {"SweepAborted", "RunInterrupted", "StopSignal"}
    wrong = []
    for name in sorted(sources()):
        if not name.startswith("gdexp") or name.endswith("__main__") or name == "gdexp.tracking.writer":
            continue
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException) or cls_name in control_flow:
                continue
            if not issubclass(cls, UserError):
                wrong.append(f"{name}.{cls_name}")
    assert wrong == []


def test_one_argument_parser_for_every_command_line():
    texts = sources()
    parsers = {n for n, t in texts.items() if "(argparse.ArgumentParser)" in t or "argparse.ArgumentParser(" in t}
    assert parsers == {"gdexp.commandline"}
    for command in ("gdexp.compare.cli", "gdexp.ui", "gdexp.sync"):
        assert "OneLineParser(" in texts[command], command
