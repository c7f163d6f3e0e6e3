"""Every command in the README and in docs/ works as written.

The commands are read from the pages' ``bash`` blocks. Each is checked the way its program reads
it: a single run of ``gdexp.run`` is run (in-process, into the test's store); a sweep is composed
with its first value on every axis, Hydra's own keys included, after Hydra's parser has read every
override; ``gdexp-compare``, ``gdexp-ui`` and ``gdexp-sync`` parse their arguments with their own
parsers; a script exists and parses (``bash -n``, ``py_compile``). What is not gdexp's (pip,
``mlflow server``, a user's own app) must be one of the few listed below.
"""

from __future__ import annotations

import py_compile
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from gdexp.config import CONF_DIR, register_configs

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Commands that are not gdexp's, shown for the reader to adapt (a placeholder, a user's own app).
NOT_GDEXP = (
    "pip ",
    "mlflow ",
    "export ",
    "sbatch ",
    "sinfo",
    "sudo -u postgres ",
    "python my_app.py",
    "cd ",
    ". .venv",
)


def commands() -> list[tuple[str, str]]:
    """(page, command) for every command line of every ``bash`` block, continuations joined and
    comments cut; lines with a ``...`` placeholder are left to the reader."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#") and "..." not in line and "<" not in line:
                    found.append((page.name, line))
    return found


COMMANDS = commands()


def test_the_pages_hold_commands():
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "compare.md", "search.md", "clusters.md", "batched.md"} <= pages
    assert len(COMMANDS) > 40


def _gdexp_run_args(command: str) -> list[str] | None:
    for prefix in ("python -m gdexp.run", "gdexp-run", "bash scripts/setup.sh -- python -m gdexp.run"):
        if command == prefix or command.startswith(prefix + " "):
            return shlex.split(command[len(prefix) :])
    return None


def _check_sweep(args: list[str]) -> None:
    """Every override parses; the sweep's first job composes, Hydra's keys included."""
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            if o.is_discrete_sweep():
                first.append(f"{key}={next(iter(o.sweep_string_iterator()))}")
        else:
            first.append(f"{key}={o.get_value_element_as_str()}")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        compose(config_name="config", overrides=first, return_hydra_config=True)


@pytest.mark.slow
@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_every_documented_command_works_as_written(page, command, tmp_path, capsys):
    args = _gdexp_run_args(command)
    if args is not None:
        if "--help" in args:
            return  # tests/test_ui.py runs the help page
        if "-m" in args or "--multirun" in args or any("hydra/sweeper" in a for a in args):
            _check_sweep(args)
        else:
            overrides = [a for a in args if not a.startswith("tracking.uri=")]
            outcome = run(overrides, tmp_path, tracking=True)
            assert outcome is not None and outcome.run_id
        return
    words = shlex.split(command)
    if words[0] in ("gdexp-compare", "gdexp-ui", "gdexp-sync") or words[:3] in (
        ["python", "-m", "gdexp.compare"],
        ["python", "-m", "gdexp.ui"],
        ["python", "-m", "gdexp.sync"],
    ):
        _parse_cli(words)
        return
    if words[0] == "bash" and words[1].endswith(".sh"):
        script = REPO / words[1]
        assert script.is_file(), command
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        return
    if words[0] == "python" and words[1].endswith(".py") and not words[1].startswith("my_app"):
        assert (REPO / words[1]).is_file(), command
        py_compile.compile(str(REPO / words[1]), doraise=True, cfile=str(tmp_path / "x.pyc"))
        return
    assert command.startswith(NOT_GDEXP), f"{page}: a command no test checks: {command}"


def _parse_cli(words: list[str]) -> None:
    """The command's own parser reads its arguments (exit 2 on anything it does not know)."""
    from gdexp.compare import cli as compare_cli
    from gdexp.ui import parser as ui_parser

    program = words[0] if words[0] != "python" else words[2].replace("gdexp.", "gdexp-")
    args = words[1:] if words[0] != "python" else words[3:]
    if program == "gdexp-compare":
        compare_cli._parser().parse_args(args)
    elif program == "gdexp-ui":
        ui_parser().parse_args(args)
    else:
        from gdexp.sync import parser as sync_parser

        sync_parser().parse_args(args)


def test_the_readme_is_a_front_door():
    """What gdexp is, the two commands, a tour with one picture, where to go next; every page of
    docs/ linked, every link there resolving."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert text.count("![") == 1
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, page.name
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name}: {target}"
    assert Path(REPO / "docs").is_dir()
