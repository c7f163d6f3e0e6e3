"""A sweep has an identity: the same grid run again is the same sweep (issue: sweeps with an
identity). A plain rerun warns, naming the earlier parent; a resume reopens the sweep's own
parent, so that the summary's ``next:`` command always works."""

from __future__ import annotations

import re

import pytest
from conftest import all_runs, gdexp_here, start_gdexp

GRID = ["-m", "lr=0.01,0.1", "epochs=5"]


def parents(uri: str) -> list:
    return [r for r in all_runs(uri) if r.data.tags.get("gdexp.role") == "sweep"]


def test_a_rerun_warns_and_a_resume_reopens_its_own_parent(tmp_path, cli_env):
    uri = cli_env["MLFLOW_TRACKING_URI"]
    first = gdexp_here(GRID, tmp_path, cli_env)
    assert first.returncode == 0 and first.stderr == "", first.stderr
    (earlier,) = [r.info.run_id for r in parents(uri)]

    again = gdexp_here([*GRID[:1], "epochs=5", "lr=0.01,0.1"], tmp_path, cli_env)  # the same grid, reordered
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 0 and len(lines) == 1, again.stderr
    assert lines[0].startswith("gdexp: warning: this sweep ran once before")
    assert earlier in lines[0] and "tracking.skip_finished=true" in lines[0]
    assert len(parents(uri)) == 2
    latest = re.search(r"MLflow parent run ([0-9a-f]{32})", again.stdout).group(1)

    # every job finished already: no new parent, the sweep's own (the latest) reopened and closed
    resumed = gdexp_here([*GRID, "tracking.skip_finished=true"], tmp_path, cli_env)
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert len(parents(uri)) == 2 and f"MLflow parent run {latest}" in resumed.stdout
    assert {r.info.status for r in parents(uri)} == {"FINISHED"}
    kept = [r for r in parents(uri) if r.info.run_id == latest][0]
    assert kept.data.tags["mlflow.note.content"].startswith("A sweep of 2 runs")  # not emptied by the resume
    command = re.search(r"next: gdexp-compare (table --sweep [0-9a-f]{32})", resumed.stdout).group(1).split()
    table = gdexp_here(command, tmp_path, cli_env, module="gdexp.compare")
    assert table.returncode == 0 and table.stdout.count("lr=0.") == 2, table.stderr


@pytest.mark.slow
def test_another_launcher_or_folder_is_the_same_sweep_another_grid_is_not(tmp_path, cli_env):
    uri = cli_env["MLFLOW_TRACKING_URI"]
    assert gdexp_here(GRID, tmp_path, cli_env).returncode == 0
    batched = gdexp_here([*GRID, "hydra/launcher=batched", "tracking.skip_finished=true"], tmp_path, cli_env)
    assert batched.returncode == 0 and len(parents(uri)) == 1, batched.stderr
    other = gdexp_here(["-m", "lr=0.01,0.2", "epochs=5"], tmp_path, cli_env)
    assert other.returncode == 0 and other.stderr == "" and len(parents(uri)) == 2


@pytest.mark.slow
def test_the_same_sweep_twice_at_once_finds_the_other(tmp_path, cli_env):
    """Two commands of one grid started together on one SQLite store: the parent is found or made
    under a lock, so the one that comes second sees the first's parent and says so."""
    procs = [start_gdexp([*GRID, f"hydra.sweep.dir={tmp_path / f'sweep{i}'}"], tmp_path, cli_env) for i in (0, 1)]
    done = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in done]
    warned = [err for _, err in done if "this sweep ran once before" in err]
    assert len(warned) == 1, [err for _, err in done]
    assert len(parents(cli_env["MLFLOW_TRACKING_URI"])) == 2
