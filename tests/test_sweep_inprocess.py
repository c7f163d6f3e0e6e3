"""A small sweep run in-process through every layer, for the fast tier: the entry point, the sweep
callback, the batched launcher, the writer pool, the record, then the report and sync."""

from __future__ import annotations

import json
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra
from mlflow import MlflowClient

from gdexp import run as entry
from gdexp.compare import report
from gdexp.sync import main as sync_main


@pytest.fixture
def argv(monkeypatch, tmp_path):
    """``gdexp-run ARGS`` as if typed in ``tmp_path``."""

    def use(*args: str) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["gdexp-run", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}"])

    yield use
    GlobalHydra.instance().clear()


def test_a_batched_sweep_in_process_is_tracked_recorded_reported_and_synced(argv, tmp_path, capsys):
    argv("-m", "hydra/launcher=batched", "lr=0.01,0.1", "bias=true,false", "epochs=40", "data=line_intercept")
    entry.main()
    out = capsys.readouterr().out
    assert "gdexp batched: 4 runs in 1 population(s)" in out

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gdexp").experiment_id])
    parent = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == sorted(
        f"lr={lr},bias={b},epochs=40,data=line_intercept" for lr in ("0.01", "0.1") for b in ("true", "false")
    )
    records = sorted((tmp_path / "sweep").glob("*/run.json"))
    assert [json.loads(r.read_text())["status"] for r in records] == ["FINISHED"] * 4
    assert {json.loads(r.read_text())["mlflow_run_id"] for r in records} == {r.info.run_id for r in children}

    page = report.build(sweep=parent[0].info.run_id, uri=uri, out=tmp_path / "report.html").read_text()
    assert page.count("<img") == 3 and "lr=0.1,bias=true" in page

    sync_main([str(tmp_path / "sweep")])
    assert capsys.readouterr().out.strip().splitlines()[-1] == "0 created, 0 completed, 4 up to date"


def test_the_summary_and_the_search_say_where_the_lrs_sit_against_the_theory(argv, tmp_path, capsys):
    argv("-m", "hydra/launcher=batched", "lr=0.05,0.118,0.2", "bias=true", "epochs=20", "data=line_intercept")
    entry.main()
    out = capsys.readouterr().out
    assert (
        "  theory: lr_optimal 0.1176, diverges above lr_max_stable 0.1198 (plain gradient descent); "
        "the lrs swept: 1 below lr_optimal, 1 between the two, 1 above\n"
    ) in out
    GlobalHydra.instance().clear()
    argv("-m", "hydra/launcher=batched", "lr=0.01,0.1", "bias=true,false", "epochs=20", "data=line_intercept")
    entry.main()
    out = capsys.readouterr().out
    assert (
        "  theory: lr_optimal 0.06667 to 0.1176, lr_max_stable 0.1198 to 0.1333 across the runs' data and bias\n" in out
    )
