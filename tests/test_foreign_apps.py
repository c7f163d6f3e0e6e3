"""gdexp's ``hydra/launcher=batched`` and ``hydra/sweeper=gdexp`` in Hydra apps that are not gdexp:
Hydra's own launcher and sweeper test suites, and Hydra's example apps (``tests/hydra_apps/``)
run through Hydra's basic launcher and sweeper and through gdexp's, leaving the same things."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)

APPS = Path(__file__).parent / "hydra_apps"
GDEXP = ["hydra/launcher=batched", "hydra/sweeper=gdexp"]


def test_both_plugins_are_found_by_any_hydra_app():
    launchers = {p.__name__ for p in Plugins.instance().discover(Launcher)}
    sweepers = {p.__name__ for p in Plugins.instance().discover(Sweeper)}
    assert "BatchedLauncher" in launchers and "GdexpSweeper" in sweepers


# Hydra's own suites, as Hydra's launcher plugins run them (in-process sweeps of Hydra's test configs).
# Their apps leave version_base unset, which means chdir unless an earlier compose in this process
# set version_base 1.3 (gdexp's tests do): CHDIR says it either way.
CHDIR = "hydra.job.chdir=True"


@pytest.mark.parametrize(
    "launcher_name, overrides", [("batched", [CHDIR]), ("batched", [CHDIR, "hydra/sweeper=gdexp"])]
)
class TestBatchedLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("basic", [CHDIR, "hydra/sweeper=gdexp"])])
class TestGdexpSweeper(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "launcher_name, overrides",
    [("basic", [CHDIR, "hydra/sweeper=gdexp", "hydra.sweeper.max_batch_size=2"])],
)
class TestGdexpSweeperInBatches(BatchedSweeperTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", *GDEXP])])
class TestBothInHydraIntegrationSuite(IntegrationTestSuite):
    """Task names, custom sweep dirs and subdirs, hydra.job.chdir, get_original_cwd and
    to_absolute_path, each in an app Hydra writes and runs as a subprocess."""


def test_return_values_in_order_match_the_basic_launcher(hydra_sweep_runner, tmpdir):
    """The jobs' return values, their configs, overrides and directories, as the basic ones."""

    def task(cfg):
        return {"foo": cfg.foo, "bar": cfg.bar, "double": cfg.bar * 2}

    seen = {}
    for name, using in (("basic", []), ("gdexp", GDEXP)):
        sweep = hydra_sweep_runner(
            calling_file=None,
            calling_module="hydra.test_utils.a_module",
            task_function=task,
            config_path="configs",
            config_name="compose.yaml",
            overrides=[*using, CHDIR, "group1=file1,file2", "bar=100,200,300"],
            temp_dir=Path(tmpdir) / name,
        )
        with sweep:
            flat = [r for batch in sweep.returns for r in batch]
            seen[name] = [
                (r.return_value, r.overrides, dict(r.cfg), Path(r.working_dir).relative_to(sweep.temp_dir).as_posix())
                for r in flat
            ]
    assert len(seen["basic"]) == 6 and seen["gdexp"] == seen["basic"]


# Hydra's example apps, run as a user runs them, once with Hydra's own plugins and once with gdexp's
CASES = {
    "basic sweep (sweeper params from the config)": ("5_basic_sweep", "my_app.py", []),
    "composition": ("6_composition", "my_app.py", ["db=mysql,postgresql", "schema=school,support"]),
    "subdir from override_dirname": (
        "6_composition",
        "my_app.py",
        ["db=mysql,postgresql", "ui=full,view", "hydra.sweep.subdir=${hydra.job.override_dirname}"],
    ),
    "working directory, chdir": ("3_working_directory", "my_app.py", ["hydra.job.chdir=True", "+x=1,2,3"]),
    "original cwd": ("3_working_directory", "original_cwd.py", ["hydra.job.chdir=True", "+a=1,2"]),
    "structured config, task name": (
        "3_config_groups",
        "my_app.py",
        ["+db=mysql,postgresql", "db.port=1,2", "hydra.job.name=custom_name"],
    ),
}
_STAMP = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]", re.M)
_PLUGIN_KEYS = ("hydra/launcher", "hydra/sweeper")


def _run_app(app: str, script: str, args: list[str], folder: Path, using: list[str]) -> tuple[str, dict[str, str]]:
    """Run ``script`` of a copy of ``app`` in ``folder``: its output, and every file of its sweep
    (path -> text) with this run's folder, timestamps and the choice of plugins taken out."""
    shutil.copytree(APPS / app, folder / app)
    cmd = [sys.executable, script, "-m", *args, *using, "hydra.sweep.dir=multirun"]
    done = subprocess.run(cmd, cwd=folder / app, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    def clean(text: str) -> str:
        return _STAMP.sub("[TIME]", text.replace(str(folder), "<tmp>"))

    ran = yaml.safe_load((folder / app / "multirun" / "multirun.yaml").read_text())["hydra"]
    plugins = ran["launcher"]["_target_"].rsplit(".", 1)[1], ran["sweeper"]["_target_"].rsplit(".", 1)[1]
    assert plugins == (("BatchedLauncher", "GdexpSweeper") if using else ("BasicLauncher", "BasicSweeper"))
    files = {}
    for path in sorted((folder / app / "multirun").rglob("*")):
        if path.is_file():
            text = path.read_text()
            if path.name in ("hydra.yaml", "multirun.yaml"):
                text = yaml.safe_dump(_without_plugins(yaml.safe_load(text)))
            files[path.relative_to(folder / app).as_posix()] = clean(text)
    return clean(done.stdout), files


def _without_plugins(cfg: dict) -> dict:
    """A saved Hydra config without which launcher and sweeper ran it."""
    hydra = cfg["hydra"]
    hydra.pop("launcher"), hydra.pop("sweeper")
    hydra["overrides"]["hydra"] = [o for o in hydra["overrides"]["hydra"] if not o.startswith(_PLUGIN_KEYS)]
    for key in _PLUGIN_KEYS:
        hydra["runtime"]["choices"].pop(key)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_hydra_example_app_leaves_what_the_basic_launcher_and_sweeper_leave(case, tmp_path):
    app, script, args = CASES[case]
    basic_out, basic_files = _run_app(app, script, args, tmp_path / "basic", [])
    gdexp_out, gdexp_files = _run_app(app, script, args, tmp_path / "gdexp", GDEXP)
    assert any(name.endswith(".hydra/config.yaml") for name in basic_files)
    assert sorted(gdexp_files) == sorted(basic_files)
    for name, text in basic_files.items():
        assert gdexp_files[name] == text, name
    assert gdexp_out == basic_out
