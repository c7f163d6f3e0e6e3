"""Search: ``hydra/sweeper=optuna`` on Optuna 5, trials through any launcher, a batch of trials as
one population, resume, and the theory's yardstick (``lr_optimal``, contraction per epoch)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import optuna
import pytest
from conftest import all_runs, gdexp, run, start_gdexp
from mlflow import MlflowClient
from optuna.trial import TrialState

import gdexp as api
from gdexp.compare import report
from gdexp.config import ConfigError

SPACE = "lr=tag(log,interval(0.001,0.3))"
LINE_B = {"data": "line_intercept", "bias": True}


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def study(folder, name: str | None = None):
    """The one study in ``folder``'s optuna.db."""
    storage = f"sqlite:///{folder / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage) if name is None else [None]
    return optuna.load_study(study_name=name or summary.study_name, storage=storage)


def search(n_trials: int, n_jobs: int, *extra: str, launcher: str = "batched", **keys):
    overrides = [
        "hydra/sweeper=optuna",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        *extra,
    ]
    return api.sweep(launcher=launcher, overrides=overrides, **keys)


# --------------------------------------------------------------------------- the theory's yardstick


def test_lr_optimal_and_the_contraction_theory_predicts(tmp_path):
    outcome = run(["data=line_intercept", "bias=true", "lr=0.1", "epochs=300", "engine=autograd"], tmp_path)
    s = outcome.summary
    assert s["lr_optimal"] == pytest.approx(2 / 17, rel=1e-9)  # 2 / (lambda_max + lambda_min), trace 17
    assert s["lr_max_stable"] == pytest.approx(0.11976, abs=1e-5)
    assert s["contraction_predicted"] == pytest.approx(0.97006, abs=1e-5)  # |1 - 0.1 * 0.2995|
    assert s["contraction_observed"] == pytest.approx(s["contraction_predicted"], rel=1e-3)
    diverging = run(["lr=0.2", "epochs=50", "engine=autograd"], tmp_path).summary  # lambda 15: |1 - 3| = 2
    assert diverging["contraction_predicted"] == pytest.approx(2.0) and diverging["contraction_observed"] > 1
    momentum = run(["optimizer=momentum", "epochs=50"], tmp_path).summary
    assert "contraction_predicted" not in momentum and "contraction_observed" in momentum


# --------------------------------------------------------------------------- a study


def test_how_a_job_ended_is_what_the_study_is_told():
    from gdexp.sweeps import trials as loop
    from gdexp.sweeps.search import parse_space

    space = parse_space(["lr=interval(0.01,0.1)"])
    found = optuna.create_study()
    returned = [
        {"status": "converged", "final_loss": 1e-9, "run_id": "a"},
        {"status": "max_epochs", "final_loss": float("nan")},
        {"status": "diverged", "final_loss": 1e30},
        {"status": "killed", "final_loss": 3.0},
        {"status": "skipped"},
        {"status": "failed", "error": "boom"},
        None,
    ]
    outcomes = [loop.tell(found, loop.ask(found, space), value, "final_loss") for value in returned]
    assert outcomes == ["complete", "failed", "diverged", "interrupted", "skipped", "failed", "failed"]
    assert found.trials[0].user_attrs["gdexp.run_id"] == "a" and found.trials[0].value == 1e-9
    assert loop.counted(found) == 6  # all but the interrupted one, which is asked again


@pytest.mark.slow
def test_a_batched_study_finds_the_optimal_learning_rate_and_repeats_itself(here, tmp_path, capsys):
    df = search(40, 8, "hydra.sweeper.seed=0", SPACE, epochs=300, **LINE_B)
    out = capsys.readouterr().out
    found = study(here)
    complete = [t for t in found.trials if t.state == TrialState.COMPLETE]
    diverged = [t for t in found.trials if t.user_attrs.get("gdexp.outcome") == "diverged"]
    assert len(found.trials) == 40 and len(complete) + len(diverged) == 40
    assert all(t.params["lr"] > 0.1197 for t in diverged)  # past the stability bound, as theory says
    lr_optimal = df["lr_optimal"].iloc[0] if "lr_optimal" in df else 2 / 17
    assert found.best_params["lr"] == pytest.approx(2 / 17, rel=0.15) and lr_optimal == pytest.approx(2 / 17)
    # Five batches of eight, each trained as one population.
    assert out.count("gdexp batched: 8 runs in 1 population(s)") == 5
    # The last line says where the best lr sits against the theory.
    last = [line for line in out.splitlines() if line.startswith("gdexp search: study")][-1]
    assert last.endswith(f"(trial {found.best_trial.number}); lr_optimal 0.1176, diverges above 0.1198"), last
    # Every trial is a child run of the study's parent, tagged with its number and the study.
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent = client.get_run(df.attrs["parent_run_id"])
    children = [r for r in all_runs(os.environ["MLFLOW_TRACKING_URI"]) if r.data.tags.get("gdexp.sweep")]
    assert sorted(int(r.data.tags["gdexp.trial"]) for r in children) == list(range(40))
    assert {r.data.tags["gdexp.study"] for r in children} == {found.study_name} == {parent.data.tags["gdexp.study"]}
    best_run = client.get_run(parent.data.tags["gdexp.best_run"])
    assert best_run.data.tags["gdexp.trial"] == str(found.best_trial.number)
    assert parent.data.metrics["best_final_loss"] == pytest.approx(found.best_value)
    assert parent.data.metrics["best.lr"] == pytest.approx(found.best_params["lr"])
    steps = [m.step for m in client.get_metric_history(parent.info.run_id, "best_final_loss")]
    assert steps == [8, 16, 24, 32, 40]  # updated as the study went
    assert parent.data.params["lr"] == "tag(log,interval(0.001,0.3))"
    assert (
        "An Optuna study (tpe, minimize final_loss) over lr in tag(log,interval(0.001,0.3))"
        in (parent.data.tags["mlflow.note.content"])
    )
    # The same seed, elsewhere, asks the same trials.
    again = here / "again"
    again.mkdir()
    os.chdir(again)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{again / 'mlflow.db'}"
    search(40, 8, "hydra.sweeper.seed=0", SPACE, epochs=300, quiet=True, **LINE_B)
    assert [t.params for t in study(again).trials] == [t.params for t in found.trials]
    # gdexp-compare works on a study unchanged, and its report adds the study's own plots.
    page = report.build(
        sweep=parent.info.run_id, uri=f"sqlite:///{here / 'mlflow.db'}", out=here / "r.html"
    ).read_text()
    assert 'alt="optimisation history"' in page and "could not be drawn" not in page


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_the_basic_joblib_and_submitit_launchers_run_the_same_study(launcher, here, capsys):
    """submitit_local is the Slurm launcher's code path (pickled jobs, processes of their own)."""
    keys = {"epochs": 200, "engine": "autograd", **LINE_B}
    settings = ("hydra.sweeper.sampler=random", "hydra.sweeper.seed=3", SPACE)
    extra = ("hydra.launcher.timeout_min=10",) if launcher == "submitit_local" else ()
    search(6, 3, *settings, *extra, launcher=launcher, **keys)
    mine = study(here)
    (here / "batched").mkdir()
    os.chdir(here / "batched")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{here / 'batched' / 'mlflow.db'}"
    search(6, 3, *settings, launcher="batched", **keys)
    theirs = study(here / "batched")
    assert [t.params for t in mine.trials] == [t.params for t in theirs.trials]
    assert [t.state for t in mine.trials] == [t.state for t in theirs.trials]
    for a, b in zip(mine.trials, theirs.trials):
        if a.state == TrialState.COMPLETE:
            assert a.value == pytest.approx(b.value, rel=1e-3, abs=1e-9)


def test_a_larger_n_trials_adds_the_difference_and_the_same_command_adds_nothing(here, capsys):
    keys = {"epochs": 100, **LINE_B}
    search(4, 2, "hydra.sweeper.sampler=random", "hydra.sweeper.seed=1", SPACE, **keys)
    search(4, 2, "hydra.sweeper.sampler=random", "hydra.sweeper.seed=1", SPACE, **keys)
    search(7, 2, "hydra.sweeper.sampler=random", "hydra.sweeper.seed=1", SPACE, **keys)
    out = capsys.readouterr().out
    assert "4 of 4 trials done" in out and "4 of 7 trials done" in out
    assert len(study(here).trials) == 7
    runs = all_runs(os.environ["MLFLOW_TRACKING_URI"])
    parents = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # one study, one parent
    assert sorted(int(r.data.tags["gdexp.trial"]) for r in runs if "gdexp.trial" in r.data.tags) == list(range(7))


@pytest.mark.slow
def test_a_continued_seeded_study_asks_new_trials_and_the_same_commands_ask_the_same(here):
    keys = {"epochs": 20, **LINE_B}
    seeded = ("hydra.sweeper.sampler=random", "hydra.sweeper.seed=0", SPACE)
    search(2, 2, *seeded, **keys)
    search(4, 2, *seeded, **keys)
    lrs = [t.params["lr"] for t in study(here).trials]
    assert len(lrs) == len(set(lrs)) == 4  # the second command asked two new trials
    runs = all_runs(os.environ["MLFLOW_TRACKING_URI"])
    assert len([r for r in runs if "gdexp.trial" in r.data.tags]) == 4  # one run per configuration
    (here / "again").mkdir()
    os.chdir(here / "again")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{here / 'again' / 'mlflow.db'}"
    search(2, 2, *seeded, **keys)
    search(4, 2, *seeded, **keys)
    assert [t.params["lr"] for t in study(here / "again").trials] == lrs


@pytest.mark.slow
def test_a_study_made_again_after_its_storage_was_deleted_gets_its_own_parent(here, capsys):
    keys = {"epochs": 20, **LINE_B}
    search(2, 2, "hydra.sweeper.sampler=random", SPACE, **keys)
    (here / "optuna.db").unlink()
    search(2, 2, "hydra.sweeper.sampler=random", SPACE, **keys)
    err = capsys.readouterr().err
    parents = [r for r in all_runs(os.environ["MLFLOW_TRACKING_URI"]) if r.data.tags.get("gdexp.role") == "sweep"]
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    first = min(parents, key=lambda r: r.info.start_time)
    assert err.count("gdexp: warning: study ") == 1 and f"parent run {first.info.run_id} holds an earlier" in err
    runs = all_runs(os.environ["MLFLOW_TRACKING_URI"])
    for parent in parents:  # trials 0 and 1 under each: two studies are never mixed under one parent
        children = [r for r in runs if r.data.tags.get("gdexp.sweep") == parent.info.run_id]
        assert sorted(r.data.tags["gdexp.trial"] for r in children) == ["0", "1"]


@pytest.mark.slow
def test_a_space_that_changes_kind_is_one_line_naming_the_key_before_anything_changes(here):
    keys = {"epochs": 20, **LINE_B}
    search(2, 2, "hydra.sweeper.sampler=random", "lr=interval(0.01,0.1)", **keys)
    before = {r.info.run_id: r.info.status for r in all_runs(os.environ["MLFLOW_TRACKING_URI"])}
    with pytest.raises(ConfigError) as raised:
        search(4, 2, "hydra.sweeper.sampler=random", "lr=choice(0.01,0.02)", **keys)
    assert str(raised.value) == (
        "lr=choice(0.01,0.02): study 'gdexp: bias=true data=line_intercept epochs=20 | minimize final_loss' "
        "searched lr as an interval from 0.01 to 0.1; allowed: an interval from 0.01 to 0.1 as the study "
        "holds it, or another hydra.sweeper.study_name"
    )
    after = {r.info.run_id: r.info.status for r in all_runs(os.environ["MLFLOW_TRACKING_URI"])}
    assert after == before  # no run made, the parent still FINISHED
    assert [t.state for t in study(here).trials] == [TrialState.COMPLETE] * 2  # none left RUNNING


@pytest.mark.slow
def test_a_study_another_live_command_runs_is_refused_before_any_run(here):
    from gdexp.sweeps import owner

    keys = {"epochs": 20, **LINE_B}
    search(2, 2, "hydra.sweeper.sampler=random", SPACE, **keys)
    found = study(here)
    other = subprocess.Popen(["sleep", "60"])
    try:
        with open(f"/proc/{other.pid}/stat") as fh:
            started = fh.read().rsplit(")", 1)[1].split()[19]
        found.set_user_attr(owner.OWNER, f"{socket.gethostname()} {other.pid} {started}")
        before = len(all_runs(os.environ["MLFLOW_TRACKING_URI"]))
        with pytest.raises(ConfigError, match=rf"the command with pid {other.pid} on .* is running this study now"):
            search(4, 2, "hydra.sweeper.sampler=random", SPACE, **keys)
        assert len(all_runs(os.environ["MLFLOW_TRACKING_URI"])) == before and len(study(here).trials) == 2
    finally:
        other.kill()
        other.wait()
    # Its process gone (or its pid taken by another process), the claim is stale: the study goes on.
    search(4, 2, "hydra.sweeper.sampler=random", SPACE, **keys)
    assert len(study(here).trials) == 4 and study(here).user_attrs[owner.OWNER] == ""


@pytest.mark.slow
def test_the_same_search_twice_at_once_holds_n_trials_under_one_parent(tmp_path, cli_env):
    args = [*_long_study(n_trials=4, seed=3)[:-2], "epochs=3000"]
    # Each in its own sweep directory (two in the same second would share one, which is refused).
    both = [start_gdexp([*args, f"hydra.sweep.dir=multirun/{d}"], tmp_path, cli_env) for d in "ab"]
    ended = [(p.communicate(timeout=600)[1], p.returncode)[::-1] for p in both]
    codes = sorted(code for code, _ in ended)
    assert codes == [0, 2], ended
    (refused,) = [err for code, err in ended if code == 2]
    assert refused.startswith("gdexp: error: hydra.sweeper.study_name=") and "is running this study now" in refused
    assert refused.count("\n") == 1
    assert len(study(tmp_path).trials) == 4
    runs = all_runs(cli_env["MLFLOW_TRACKING_URI"])
    assert len([r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]) == 1
    assert len([r for r in runs if "gdexp.trial" in r.data.tags]) == 4


@pytest.mark.slow
def test_n_trials_below_the_trials_done_asks_nothing_and_says_so(here, capsys):
    keys = {"epochs": 20, **LINE_B}
    search(4, 2, "hydra.sweeper.sampler=random", SPACE, **keys)
    before = {r.info.run_id for r in all_runs(os.environ["MLFLOW_TRACKING_URI"])}
    capsys.readouterr()
    search(2, 2, "hydra.sweeper.sampler=random", SPACE, **keys)
    out = capsys.readouterr().out
    assert "4 of 2 trials done" in out and "gdexp search: trials" not in out  # no batch asked
    assert len(study(here).trials) == 4
    runs = all_runs(os.environ["MLFLOW_TRACKING_URI"])
    assert {r.info.run_id for r in runs} == before  # the parent reopened and closed, nothing new
    (parent,) = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_a_study_where_every_trial_diverges_ends_saying_so(here, capsys):
    df = search(4, 2, "hydra.sweeper.sampler=random", "lr=interval(0.5,1)", epochs=50)
    out = capsys.readouterr().out
    found = study(here)
    assert [t.user_attrs.get("gdexp.outcome") for t in found.trials] == ["diverged"] * 4
    assert [t.state for t in found.trials] == [TrialState.FAIL] * 4
    searched = [line for line in out.splitlines() if line.startswith("gdexp search: ")]
    assert searched[-1] == f"gdexp search: study {found.study_name!r}: no complete trial yet", out
    parent = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(df.attrs["parent_run_id"])
    assert (
        parent.info.status == "FINISHED"
        and "0 complete trials, 4 diverged, of 4" in parent.data.tags["mlflow.note.content"]
    )
    assert set(df["status"]) == {"diverged"} and len(df) == 4


BAD_SPACES = [
    ("lr=interval(1,0)", "lr=interval(1,0): an empty interval; allowed: interval(low, high) with low < high"),
    ("optimizer=choice()", "optimizer=choice(): empty choice is not legal; allowed: Hydra's override grammar"),
    ("lr=tag(log,interval(0,1))", "lr=tag(log,interval(0,1)): a log scale from 0; allowed: tag(log, interval("),
    ("epochs=range(5,1)", "epochs=range(5,1): an empty range"),
    ("lr=interval(-1,1)", "lr=-1.0; allowed: a finite number > 0"),
    ("optimizer=choice(sgd,nope)", "optimizer=nope: no such option"),
    ("hydra.sweeper.sampler=grid lr=interval(0.1,1)", "hydra.sweeper.sampler=grid: lr is one; allowed: tpe, random"),
    ("hydra.sweeper.objective=nope lr=interval(0.1,1)", "hydra.sweeper.objective=nope; allowed: a summary metric:"),
    ("hydra.sweeper.n_jobs=0 lr=interval(0.1,1)", "hydra.sweeper.n_jobs=0; allowed: an integer >= 1"),
    ("epochs=5", "hydra/sweeper=optuna: no search space in"),
    ("hydra.sweeper.pruner=asha lr=interval(0.1,1)", "hydra.sweeper.pruner=asha; allowed: none, median, succ"),
    (
        "hydra.sweeper.pruner=hyperband hydra.sweeper.pruner_args={reduction_factor:1} lr=interval(0.1,1)",
        'hydra.sweeper.pruner_args={"reduction_factor": 1}: ',
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("space", "line"), BAD_SPACES, ids=[s for s, _ in BAD_SPACES])
def test_a_bad_search_space_is_one_line_before_any_trial(space, line, tmp_path, cli_env):
    done = gdexp(["-m", "hydra/sweeper=optuna", *space.split()], tmp_path, cli_env)
    assert done.returncode == 2 and done.stderr.startswith(f"gdexp: error: {line}"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert all_runs(cli_env["MLFLOW_TRACKING_URI"]) == []
    storage = tmp_path / "optuna.db"
    assert not storage.exists() or all(not s.n_trials for s in optuna.get_all_study_summaries(f"sqlite:///{storage}"))


def _long_study(n_trials: int, seed: int) -> list[str]:
    """A study of per-run jobs long enough (6,000 autograd epochs, seconds a trial) to be stopped
    mid-batch."""
    return [
        "-m",
        "hydra/sweeper=optuna",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler=random",
        f"hydra.sweeper.seed={seed}",
        "lr=interval(0.01,0.1)",
        "engine=autograd",
        "epochs=6000",
        "tracking.flush_seconds=0.2",
    ]


def _started_until(args: list[str], line: str, tmp_path, cli_env):
    """The study started, once it has printed ``line`` and a trial of the next batch has logged
    its first epochs to the store (a fixed sleep was too short on a loaded machine: the batch's
    processes had not yet opened their runs)."""
    sweep = start_gdexp(args, tmp_path, cli_env)
    deadline = time.time() + 240
    seen = ""
    while time.time() < deadline and line not in seen:
        seen += sweep.stdout.readline()
    assert line in seen, seen

    def training():
        runs = all_runs(cli_env["MLFLOW_TRACKING_URI"])
        return [r for r in runs if "gdexp.trial" in r.data.tags and r.info.status == "RUNNING" and r.data.metrics]

    while time.time() < deadline and not training():
        time.sleep(0.2)
    assert training(), "no trial of the next batch logged an epoch"
    return sweep


# A median pruner that stops slow learners while they train: pruned and unpruned trials in flight.
PRUNED = ["hydra.sweeper.pruner=median", "hydra.sweeper.pruner_args={n_startup_trials:1}"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "launcher", "pruner"),
    [(signal.SIGINT, "basic", []), (signal.SIGTERM, "joblib", []), (signal.SIGINT, "joblib", PRUNED)],
    ids=["sigint-basic", "sigterm-joblib", "sigint-joblib-pruned"],
)
def test_a_study_interrupted_mid_batch_resumes_to_exactly_n_trials(stop, launcher, pruner, tmp_path, cli_env):
    n = 6  # stopped once four trials ended, while the fifth (and, with two workers, the sixth) trains
    args = [*_long_study(n_trials=n, seed=5), f"hydra/launcher={launcher}", *pruner]
    sweep = _started_until(args, f"4/{n} done;", tmp_path, cli_env)
    sweep.send_signal(stop)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + stop, err
    first = study(tmp_path)
    interrupted = [t for t in first.trials if t.user_attrs.get("gdexp.outcome") == "interrupted"]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    assert not [t for t in first.trials if t.state == TrialState.RUNNING]

    again = gdexp(args, tmp_path, cli_env, timeout=600)
    assert again.returncode == 0, again.stderr
    final = study(tmp_path)
    ended = [t for t in final.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(ended) == n and bool(pruner) == any(t.state == TrialState.PRUNED for t in ended)
    runs = all_runs(cli_env["MLFLOW_TRACKING_URI"])
    children = [r for r in runs if "gdexp.trial" in r.data.tags]
    finished = [r for r in children if r.info.status == "FINISHED"]
    killed = [r for r in children if r.info.status == "KILLED"]
    # The trial that was training is KILLED with its curve so far (with a pruner, it may have been
    # pruned first); one not yet started has no run. Nothing is left RUNNING, nothing is doubled;
    # a pruned trial's run is FINISHED, pruned.
    assert len(finished) == n and len(killed) <= len(interrupted) and len(children) == n + len(killed)
    assert killed or pruner
    assert len({r.data.tags["gdexp.trial"] for r in children}) == len(children)  # one run per trial
    assert {r.data.tags["gdexp.trial"] for r in killed} <= {str(t.number) for t in interrupted}
    assert all("epochs_run" in r.data.metrics for r in killed)  # its curve so far (none if stopped at once)
    statuses = {str(t.number): t.state for t in ended}
    assert all(
        (r.data.tags["gdexp.status"] == "pruned") == (statuses[r.data.tags["gdexp.trial"]] == TrialState.PRUNED)
        for r in finished
    )
    complete = sum(t.state == TrialState.COMPLETE for t in ended)
    (parent,) = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    assert parent.info.status == "FINISHED" and re.search(
        rf"{complete} complete trials, 0 diverged, of {n}", parent.data.tags["mlflow.note.content"]
    )


def test_a_two_parameter_study_reports_its_importances(here, capsys):
    df = search(
        6,
        3,
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=2",
        SPACE,
        "bias=choice(true,false)",
        epochs=60,
        quiet=True,
        data="line_intercept",
    )
    parent = df.attrs["parent_run_id"]
    page = report.build(sweep=parent, uri=os.environ["MLFLOW_TRACKING_URI"], out=here / "r.html").read_text()
    assert 'alt="optimisation history"' in page and 'alt="parameter importances"' in page
    children = [r for r in all_runs(os.environ["MLFLOW_TRACKING_URI"]) if r.data.tags.get("gdexp.sweep") == parent]
    assert sorted(r.data.params["bias"] for r in children) == sorted(
        str(t.params["bias"]).lower() for t in study(here).trials
    )


@pytest.mark.slow
def test_a_batched_study_stopped_by_sigterm_mid_population_resumes_to_exactly_n_trials(tmp_path, cli_env):
    args = [*_long_study(n_trials=6, seed=5)[:-2], "epochs=6000", "hydra/launcher=batched"]
    sweep = start_gdexp(args, tmp_path, cli_env)
    seen, deadline = "", time.time() + 240
    while time.time() < deadline and "trials 0-1:" not in seen:  # the first population trained
        seen += sweep.stdout.readline()
    while time.time() < deadline and not seen.endswith("up to 6000 epochs\n"):  # the second one trains
        seen += sweep.stdout.readline()
    time.sleep(1.0)
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM, err
    assert "2 killed" in out, out
    first = study(tmp_path)
    assert [t.user_attrs.get("gdexp.outcome") for t in first.trials[2:]] == ["interrupted"] * 2
    runs = all_runs(cli_env["MLFLOW_TRACKING_URI"])
    killed = [r for r in runs if r.info.status == "KILLED" and "gdexp.trial" in r.data.tags]
    # The population's members end KILLED with their curves so far, each its own run.
    assert len(killed) == 2 and all(0 < r.data.metrics["epochs_run"] < 6000 for r in killed)

    again = gdexp(args, tmp_path, cli_env, timeout=600)
    assert again.returncode == 0, again.stderr
    final = study(tmp_path)
    assert len([t for t in final.trials if t.state == TrialState.COMPLETE]) == 6
    runs = all_runs(cli_env["MLFLOW_TRACKING_URI"])
    children = [r for r in runs if "gdexp.trial" in r.data.tags]
    assert len([r for r in children if r.info.status == "FINISHED"]) == 6
    assert len(children) == 8 and not [r for r in runs if r.info.status == "RUNNING"]  # 6 + the 2 killed
    (parent,) = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("pruner", [[], PRUNED], ids=["unpruned", "pruned"])
def test_a_study_killed_hard_resumes_and_fails_the_trial_it_left_running(pruner, tmp_path, cli_env):
    args = [*_long_study(n_trials=6, seed=7), *pruner]
    sweep = _started_until(args, "2/6 done;", tmp_path, cli_env)  # the next trials are training
    sweep.kill()
    sweep.communicate(timeout=60)
    left = [t for t in study(tmp_path).trials if t.state == TrialState.RUNNING]
    assert left  # a SIGKILL leaves the storage as it was: the trials of the batch still RUNNING

    again = gdexp(args, tmp_path, cli_env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{len(left)} trials of a killed run failed" in again.stdout
    final = study(tmp_path)
    assert len([t for t in final.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 6
    assert {t.number for t in final.trials if t.user_attrs.get("gdexp.outcome") == "interrupted"} == {
        t.number for t in left
    }
    runs = all_runs(cli_env["MLFLOW_TRACKING_URI"])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len([r for r in runs if "gdexp.trial" in r.data.tags and r.info.status == "FINISHED"]) == 6
