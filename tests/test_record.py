"""The on-disk run record: what each step leaves, and what sync makes of damaged records."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import make_config

from gdexp.job import Job
from gdexp.tracking.record import DamagedRecord, RunInfo, SweepInfo, recorded_curves, thin_steps
from gdexp.training.history import History


def prepared(tmp_path, overrides=()):
    cfg = make_config(["tracking.enabled=false", *overrides])
    return Job.prepare(cfg, overrides=list(overrides), output_dir=tmp_path / "job", launch_dir=tmp_path)


def history_of(job: Job, epochs: int) -> History:
    history = job.history([0.0] * len(job.param_names))
    for e in range(epochs):
        history.batch_loss(10.0 / (e + 1))
        history.end_epoch([0.1 * (e + 1)] * len(job.param_names))
    return history


def read_csv(path):
    with path.open() as fh:
        return list(csv.reader(fh))


def test_a_started_run_is_running_with_its_config_and_header_only(tmp_path):
    job = prepared(tmp_path, ["bias=true"])
    history = job.history([0.0, 0.0])
    job.record(history).start(job.config_yaml)
    info = RunInfo.load(tmp_path / "job" / "run.json")
    assert info.status == "RUNNING" and info.run_name == "bias=true" and info.metrics == []
    assert read_csv(tmp_path / "job" / "history.csv") == [["epoch", "loss", "w", "b", "pred_5"]]
    assert "lr: 0.01" in (tmp_path / "job" / "config.yaml").read_text()


def test_flushes_append_each_step_once_and_finish_commits_the_status_last(tmp_path):
    job = prepared(tmp_path)
    history = history_of(job, 0)
    record = job.record(history)
    record.start(job.config_yaml)
    for e in range(3):
        history.batch_loss(1.0 + e)
        history.end_epoch([0.5 * (e + 1)])
        record.append_history()
    outcome = job.close(history, "FINISHED")
    record.finish("FINISHED", job.final_tags(outcome), outcome.metric_rows)
    rows = read_csv(tmp_path / "job" / "history.csv")
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3"]  # step 0: the initial parameters
    assert rows[1][1] == "" and float(rows[2][1]) == 1.0 and float(rows[3][2]) == 1.0
    info = RunInfo.load(tmp_path / "job" / "run.json")
    assert info.status == "FINISHED" and info.tags["gdexp.status"] == outcome.status
    assert dict((k, v) for k, v, _ in info.metrics)["final_loss"] == pytest.approx(outcome.summary["final_loss"])


def test_a_run_written_whole_leaves_no_temporary_files(tmp_path):
    job = prepared(tmp_path)
    history = history_of(job, 5)
    outcome, run = job.ended(history, "FINISHED", curve_points=0)
    assert run is None  # tracking off: nothing for MLflow
    files = sorted(p.name for p in (tmp_path / "job").iterdir())
    assert files == ["config.yaml", "history.csv", "run.json"]
    assert len(read_csv(tmp_path / "job" / "history.csv")) == 1 + 6
    assert RunInfo.load(tmp_path / "job" / "run.json").status == "FINISHED" and outcome.status == "max_epochs"


def test_a_tracked_member_gets_its_curves_on_an_even_grid_and_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x.db'}")
    cfg = make_config(["epochs=250"])
    job = Job.prepare(cfg, overrides=[], output_dir=tmp_path / "job", launch_dir=tmp_path)
    _, (run, files) = job.ended(history_of(job, 250), "FINISHED", curve_points=100)
    loss_steps = [s for k, _, s in run.metrics if k == "loss"]
    assert loss_steps[0] == 1 and loss_steps[-1] == 250 and len(loss_steps) == 100
    assert run.status == "FINISHED" and run.params["epochs"] == "250"
    assert files.artifacts == [str(tmp_path / "job" / "config.yaml"), str(tmp_path / "job" / "history.csv")]
    assert len(files.loss) == 250


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not readable JSON"),
        ("[]", "not a run record"),
        ("{}", "missing"),
        (
            '{"record_id": "a", "run_name": "x", "params": [], "tags": {}, "tracking_uri": null, "experiment": "e"}',
            "params",
        ),
        (
            '{"record_id": "a", "run_name": "x", "params": {}, "tags": {}, "tracking_uri": null, "experiment": "e",'
            ' "status": "DONE"}',
            "status",
        ),
        (
            '{"record_id": "a", "run_name": "x", "params": {}, "tags": {}, "tracking_uri": null, "experiment": "e",'
            ' "metrics": [["loss", "abc", 0]]}',
            "metrics",
        ),
    ],
)
def test_a_damaged_record_is_named_not_trusted(tmp_path, text, problem):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(DamagedRecord, match=problem):
        RunInfo.load(tmp_path / "run.json")


def test_a_damaged_sweep_record_is_named(tmp_path):
    (tmp_path / "gdexp_sweep.json").write_text('{"overrides": 3}')
    with pytest.raises(DamagedRecord):
        SweepInfo.load(tmp_path / "gdexp_sweep.json")


def test_sync_reads_the_intact_lines_of_a_torn_history(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,w\n0,,0.0\n1,3.5,0.5\n2,3.0,0.7\n3,2.5\n")
    problems: list[str] = []
    rows = recorded_curves(tmp_path, 0, problems)
    assert rows == [("w", 0.0, 0), ("loss", 3.5, 1), ("w", 0.5, 1), ("loss", 3.0, 2), ("w", 0.7, 2)]
    assert len(problems) == 1 and "line 5" in problems[0]


@pytest.mark.parametrize(("first", "last", "points"), [(1, 1000, 100), (0, 1000, 100), (1, 250, 100), (0, 90, 100)])
def test_thinned_curves_keep_first_and_last_on_an_even_grid(first, last, points):
    steps = thin_steps(first, last, points)
    assert steps[0] == first and steps[-1] == last
    assert len(steps) == min(points, last - first + 1) and len(set(steps)) == len(steps)
    gaps = np.diff(steps)
    assert gaps.max() - gaps.min() <= 1


def test_a_record_keeps_no_credentials(tmp_path):
    cfg = make_config(["tracking.uri=postgresql://ann:s3cret@db.example/mlflow"])
    job = Job.prepare(
        cfg,
        overrides=["tracking.uri=postgresql://ann:s3cret@db.example/mlflow"],
        output_dir=tmp_path / "j",
        launch_dir=tmp_path,
    )
    job.ended(history_of(job, 2), "FINISHED", curve_points=0)
    for path in (tmp_path / "j").iterdir():
        assert "s3cret" not in path.read_text(), path.name
    assert json.loads((tmp_path / "j" / "run.json").read_text())["tracking_uri"].endswith("ann:***@db.example/mlflow")


def test_config_yaml_is_omegaconfs_yaml_whatever_emitter_writes_it():
    """config.yaml is written with libyaml's C emitter where there is one: the same text as
    OmegaConf's own dumper, tricky strings included."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    from gdexp.configfile import config_yaml

    plain = {
        "lr": 0.1,
        "name": "1e-3",
        "flag": "yes",
        "none": None,
        "empty": "",
        "text": "a: b # c",
        "nested": {"xs": [1.0, 2.5e-9, 1e300], "s": "null", "u": "é ∞"},
        "tracking": {"uri": "postgresql://u:pw@h/db", "experiment": "gdexp"},
    }
    expected = dict(plain, tracking={"experiment": "gdexp"})
    python = yaml.dump(
        expected, Dumper=get_omega_conf_dumper(), default_flow_style=False, allow_unicode=True, sort_keys=False
    )
    assert config_yaml(plain) == python
