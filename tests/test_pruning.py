"""Search without waiting: pruners (``hydra.sweeper.pruner``) on per-run jobs and inside a batched
population, and trials asked as workers free up (no batch barrier)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import all_runs
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_search import LINE_B, SPACE, search, study

from gdexp.config import ConfigError
from gdexp.training.engines import fit
from gdexp.training.population import Member, MemberBatches, Population

SH = ("hydra.sweeper.pruner=successive_halving", "hydra.sweeper.pruner_args={min_resource:30,reduction_factor:4}")


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- a population, pruned


def _population(n: int, prune=None, batch_size=None, optimizer=torch.optim.Adam):
    torch.manual_seed(0)
    X = torch.linspace(-1, 1, 16, dtype=torch.float64)[:, None]
    Y = 3 * X + 1
    members = []
    for i in range(n):
        linear = torch.nn.Linear(1, 1, dtype=torch.float64)
        torch.nn.init.constant_(linear.weight, 0.1 * i)
        members.append(Member(linear, lr=0.01 * (i + 1), epochs=40, diverge_above=1e6))
    loader = MemberBatches(X, Y, batch_size, seeds=list(range(n)))
    module = Population(members, lambda p: optimizer(p, lr=1.0), "mean", True, prune=prune, on_compact=loader.keep)
    fit(module, loader, epochs=40, accelerator="cpu", dtype="float64")
    return module


@pytest.mark.parametrize("batch_size", [None, 4], ids=["full-batch", "minibatches"])
def test_pruned_members_leave_the_program_and_the_others_train_as_if_alone(batch_size):
    asked = []

    def prune(epoch, members, losses):
        asked.append((epoch, list(members)))
        return np.isin(members, [1, 3]) if epoch == 10 else np.zeros(len(members), dtype=bool)

    pruned = _population(5, prune, batch_size)
    alone = _population(5, None, batch_size)
    a, b = pruned.curves(), alone.curves()
    # The pruned members stop after epoch 10 with their curve so far; the rest train all 40, as
    # they would have in a population never pruned (Adam's per-member state moved with them).
    assert list(a.epochs_run) == [40, 10, 40, 10, 40] and list(a.pruned) == [False, True, False, True, False]
    for m in range(5):
        n = int(a.epochs_run[m])
        np.testing.assert_allclose(a.loss[:n, m], b.loss[:n, m], rtol=1e-12)
        np.testing.assert_allclose(a.params[: n + 1, m], b.params[: n + 1, m], rtol=1e-12)
        assert np.isnan(a.loss[n:, m]).all()
    # The work shrank: three rows left in the tensor program, and the pruner is asked about them only.
    assert pruned.weight.shape[0] == 3 and pruned.lr.tolist() == pytest.approx([0.01, 0.03, 0.05])
    assert asked[10] == (11, [0, 2, 4])


# --------------------------------------------------------------------------- studies


def test_a_batched_study_with_successive_halving_prunes_members_and_tracks_each(here, capsys):
    df = search(24, 8, "hydra.sweeper.seed=0", SPACE, *SH, epochs=300, **LINE_B)
    out = capsys.readouterr().out
    found = study(here)
    pruned = [t for t in found.trials if t.state == TrialState.PRUNED]
    complete = [t for t in found.trials if t.state == TrialState.COMPLETE]
    assert pruned and complete and len(found.trials) == 24
    assert "successive_halving pruner" in out and "pruned" in out
    # Every trial reported on its grid (every 3 epochs), a pruned one up to the epoch it stopped.
    assert all(set(t.intermediate_values) >= {3, 30} for t in found.trials if t.state != TrialState.FAIL)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    runs = {r.data.tags.get("gdexp.trial"): r for r in all_runs(uri) if "gdexp.trial" in r.data.tags}
    assert len(runs) == 24 and not [r for r in runs.values() if r.info.status != "FINISHED"]
    for t in pruned:
        run = runs[str(t.number)]
        epochs = int(run.data.metrics["epochs_run"])
        assert run.data.tags["gdexp.status"] == "pruned" and epochs < 300
        assert max(t.intermediate_values) == epochs  # pruned at its last report
        assert max(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == epochs
        assert "Pruned by the search's pruner after" in run.data.tags["mlflow.note.content"]
    # The parent, the table and the summary know pruned trials.
    parent = client.get_run(df.attrs["parent_run_id"])
    assert f"{len(pruned)} pruned by successive_halving" in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["trials_pruned"] == len(pruned)
    assert (df["status"] == "pruned").sum() == len(pruned)
    assert f"{len(pruned)} pruned" in out.split("gdexp sweep:")[-1].splitlines()[0]
    # The best trial is a complete one, and pruning cost the population epochs it did not train.
    assert found.best_trial.state == TrialState.COMPLETE
    assert sum(int(r.data.metrics["epochs_run"]) for r in runs.values()) < 24 * 300 * 0.75


def test_hyperband_with_fewer_trials_than_its_brackets_runs_them_all(here, capsys):
    search(3, 3, "hydra.sweeper.seed=1", SPACE, "hydra.sweeper.pruner=hyperband", epochs=300, quiet=True, **LINE_B)
    # Hyperband's brackets here: floor(log_3(300 / 1)) + 1 = 6, more than the 3 trials. Each trial
    # still reports, is judged in its bracket, and ends by itself.
    found = study(here)
    assert len(found.trials) == 3 and all(t.intermediate_values for t in found.trials)
    assert all(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) or t.user_attrs.get("gdexp.outcome") == "diverged"
        for t in found.trials
    )


def test_a_pruner_on_a_study_run_before_without_one_continues_it(here, capsys):
    common = ("hydra.sweeper.sampler=random", "hydra.sweeper.seed=4", SPACE)
    search(6, 6, *common, epochs=300, quiet=True, **LINE_B)
    before = study(here).trials
    median = ("hydra.sweeper.pruner=median", "hydra.sweeper.pruner_args={n_startup_trials:2,n_warmup_steps:30}")
    search(18, 6, *common, *median, epochs=300, quiet=True, **LINE_B)
    after = study(here)
    assert len(after.trials) == 18 and [t.params for t in after.trials[:6]] == [t.params for t in before]
    assert [t.state for t in after.trials[:6]] == [t.state for t in before]  # the earlier trials as they were
    assert not after.trials[0].intermediate_values  # they never reported: nothing the pruner could compare
    runs = [r for r in all_runs(os.environ["MLFLOW_TRACKING_URI"]) if "gdexp.trial" in r.data.tags]
    assert len(runs) == 18 and len({r.data.tags["gdexp.sweep"] for r in runs}) == 1  # one study, one parent
    assert all(r.info.status == "FINISHED" for r in runs)


BAD_PRUNERS = [
    (("hydra.sweeper.pruner=asha",), "hydra.sweeper.pruner=asha; allowed: none, median, successive_halving, hyperband"),
    (
        ("hydra.sweeper.pruner=successive_halving", "hydra.sweeper.pruner_args={min_resource:0}"),
        'hydra.sweeper.pruner_args={"min_resource": 0}: ',
    ),
    (
        ("hydra.sweeper.pruner=median", "hydra.sweeper.pruner_args={min_resource:5}"),
        'hydra.sweeper.pruner_args={"min_resource": 5}: min_resource is not one; allowed: median\'s arguments: ',
    ),
    (("hydra.sweeper.pruner_args={n_startup_trials:2}",), "allowed: {} with hydra.sweeper.pruner=none"),
]


@pytest.mark.parametrize(("extra", "line"), BAD_PRUNERS, ids=["name", "value", "argument", "no-pruner"])
def test_a_bad_pruner_is_one_line_before_any_run(extra, line, here):
    with pytest.raises(ConfigError) as said:
        search(4, 2, SPACE, *extra, epochs=50, quiet=True)
    assert line in str(said.value) and "\n" not in str(said.value)
    assert all_runs(os.environ["MLFLOW_TRACKING_URI"]) == []


# --------------------------------------------------------------------------- no batch barrier


@pytest.mark.slow
def test_per_run_trials_are_asked_as_workers_free_up(here, capsys):
    """joblib, two workers, trials of 50 or 6,000 epochs: a new trial starts as soon as one ends.
    With a batch barrier, no trial of a later pair would start before both of the pair before it
    had ended."""
    search(
        8,
        2,
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=6",
        "lr=tag(log,interval(0.001,0.1))",
        "epochs=choice(50,6000)",
        launcher="joblib",
        engine="autograd",
    )
    out = capsys.readouterr().out
    assert "2 trials at a time" in out
    uri = os.environ["MLFLOW_TRACKING_URI"]
    runs = {int(r.data.tags["gdexp.trial"]): r for r in all_runs(uri) if "gdexp.trial" in r.data.tags}
    assert sorted(runs) == list(range(8)) and len(study(here).trials) == 8
    start = {k: r.info.start_time for k, r in runs.items()}
    end = {k: r.info.end_time for k, r in runs.items()}
    assert any(start[k] < end[j] for k in range(2, 8) for j in range(2 * (k // 2))), (start, end)


def test_a_per_run_job_reports_at_each_flush_and_stops_when_pruned(here, capsys):
    """Hydra's basic launcher (a trial at a time, in this process), the median pruner: trials whose
    loss is worse than the median of the complete ones at the same step stop while they train."""
    search(
        6,
        1,
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=2",
        "lr=tag(log,interval(0.0005,0.05))",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_args={n_startup_trials:2}",
        "tracking.flush_seconds=0.05",
        launcher="basic",
        engine="autograd",
        epochs=3000,
        quiet=True,
    )
    found = study(here)
    runs = {
        int(r.data.tags["gdexp.trial"]): r
        for r in all_runs(os.environ["MLFLOW_TRACKING_URI"])
        if "gdexp.trial" in r.data.tags
    }
    pruned = [t for t in found.trials if t.state == TrialState.PRUNED]
    assert pruned and len(found.trials) == 6, [(t.params, t.state) for t in found.trials]
    for t in pruned:
        run = runs[t.number]
        epochs = int(run.data.metrics["epochs_run"])
        assert run.info.status == "FINISHED" and run.data.tags["gdexp.status"] == "pruned" and epochs < 3000
        assert max(t.intermediate_values) <= epochs and t.value == t.intermediate_values[max(t.intermediate_values)]
    complete = [t for t in found.trials if t.state == TrialState.COMPLETE]
    assert all(max(t.intermediate_values) == 3000 for t in complete)  # every step of the grid, the last one too
    assert all(set(t.intermediate_values) <= set(range(30, 3001, 30)) for t in found.trials)


@pytest.mark.slow
def test_a_notebooks_second_joblib_sweep_writes_to_the_store_it_names_now(tmp_path, monkeypatch):
    """joblib's workers outlive a call and keep the environment they started with: the store a
    notebook names in MLFLOW_TRACKING_URI is carried to them in the config."""
    for name, seed in (("a", 1), ("b", 3)):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        df = search(
            4, 2, "hydra.sweeper.sampler=random", f"hydra.sweeper.seed={seed}", SPACE, launcher="joblib", epochs=50
        )
        assert len(df) == 4
        children = [r for r in all_runs(os.environ["MLFLOW_TRACKING_URI"]) if "gdexp.trial" in r.data.tags]
        assert len(children) == 4 and {r.data.tags["gdexp.sweep"] for r in children} == {df.attrs["parent_run_id"]}
