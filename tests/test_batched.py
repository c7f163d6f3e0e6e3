"""``hydra/launcher=batched``: populations give every member the per-run Lightning engine's numbers,
and every member is its own complete MLflow run."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OPTIMIZERS, REPO, all_runs, gdexp, make_config, run, start_gdexp
from mlflow import MlflowClient
from omegaconf import open_dict

from gdexp.session import SESSION
from gdexp.training.engines import make_optimizer
from gdexp.training.population import lr_linear

RTOL = 1e-5


def close(batched: np.ndarray, per_run: np.ndarray, scale: float) -> bool:
    """Equal to 1e-5 relative, point by point, with the problem's own ``scale`` as the floor where
    a value passes through zero (a weight oscillating around 0 under momentum, say)."""
    both_bad = ~np.isfinite(batched) & ~np.isfinite(per_run)
    diff = np.where(both_bad, 0.0, np.abs(batched - per_run))
    return batched.shape == per_run.shape and bool(np.all(diff <= RTOL * (np.abs(per_run) + scale)))


def same_curves(folder: Path, outcome) -> bool:
    """A batched member's history.csv against the per-run engine's run of the same config: the
    loss on the scale of the first epoch's, the parameters on the scale of the optimum's."""
    loss, params = read_history(folder)
    h = outcome.history
    optimum = max(abs(v) for k, v in outcome.summary.items() if "_star" in k)
    return close(loss, np.asarray(h.loss), abs(h.loss[0])) and close(params, np.asarray(h.params), optimum)


# --------------------------------------------------------------------------- the lr = 1 step


def stepped(cfg, lrs: torch.Tensor, scaled: bool) -> torch.Tensor:
    """Four members' parameters after six steps of the config's optimizer: each with its own lr, or
    all in one stacked tensor stepped with lr = 1 and each member's step scaled by its lr."""
    torch.manual_seed(0)
    start = torch.randn(4, 3, dtype=torch.float64)
    grads = [torch.randn(4, 3, dtype=torch.float64) for _ in range(6)]
    if not scaled:
        singles = []
        for m, (lr, row) in enumerate(zip(lrs, start)):
            p = torch.nn.Parameter(row.clone())
            opt = make_optimizer(cfg, lr=float(lr))([p])
            for g in grads:
                p.grad = g[m].clone()
                opt.step()
            singles.append(p.detach())
        return torch.stack(singles)
    stacked = torch.nn.Parameter(start.clone())
    opt = make_optimizer(cfg, lr=1.0)([stacked])
    for g in grads:
        before = stacked.detach().clone()
        stacked.grad = g.clone()
        opt.step()
        with torch.no_grad():
            stacked.copy_(before + lrs[:, None] * (stacked - before))
    return stacked.detach()


LRS = torch.tensor([0.001, 0.03, 0.2, 0.7], dtype=torch.float64)


SHIPPED = [[f"optimizer={o}"] for o in OPTIMIZERS] + [["optimizer=adagrad", "optimizer.lr_decay=0.5"]]


@pytest.mark.parametrize("overrides", SHIPPED)
def test_step_with_lr_one_scaled_per_member_is_the_step_with_each_lr(overrides):
    """The hint the population rests on: each shipped optimizer's update is lr times an lr-free
    direction, so one torch.optim step with lr = 1, scaled per member, is each member's own step."""
    cfg = make_config(overrides)
    assert lr_linear(cfg.optimizer)
    torch.testing.assert_close(stepped(cfg, LRS, scaled=True), stepped(cfg, LRS, scaled=False), rtol=1e-12, atol=1e-12)


def test_an_optimizer_not_linear_in_lr_is_not_scaled():
    cfg = make_config(["optimizer=sgd"])
    cfg.optimizer._target_ = "torch.optim.ASGD"  # eta = lr / (1 + lambd * lr * t) ** alpha
    with open_dict(cfg.optimizer):
        for key in ("momentum", "dampening", "nesterov"):
            del cfg.optimizer[key]
    assert not lr_linear(cfg.optimizer)
    assert not torch.allclose(stepped(cfg, LRS, scaled=True), stepped(cfg, LRS, scaled=False), rtol=1e-6)


# --------------------------------------------------------------------------- whole sweeps


def read_history(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    with (folder / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    names = [k for k in rows[0] if k not in ("epoch", "loss") and not k.startswith("pred_")]
    loss = np.array([float(r["loss"]) for r in rows[1:]])
    return loss, np.array([[float(r[n]) for n in names] for r in rows])


def job_dirs(tmp_path: Path) -> dict[str, Path]:
    """Run name -> job directory of every run in the sweep."""
    out = {}
    for record in tmp_path.glob("multirun/*/*/*/run.json"):
        out[json.loads(record.read_text())["run_name"]] = record.parent
    return out


GRID = ["lr=0.01,0.08,0.2", "bias=true,false", "epochs=30,70", "data=line_intercept"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One batched sweep of every optimizer group: mixed lr (0.2 diverges for plain SGD on this
    problem), mixed epochs, bias on and off; plus jobs that cannot join a population."""
    tmp = tmp_path_factory.mktemp("batched")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    env.pop("HYDRA_FULL_ERROR", None)
    # loss_curves=true: every member's loss_curve.png, to compare its artifacts with a per-run job's
    args = [
        "-m",
        "hydra/launcher=batched",
        "hydra.launcher.loss_curves=true",
        f"optimizer={','.join(OPTIMIZERS)}",
        *GRID,
    ]
    result = gdexp(args, tmp, env, timeout=600)
    assert result.returncode == 0, result.stderr
    return tmp, env["MLFLOW_TRACKING_URI"], result


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_member_equals_the_per_run_lightning_engine(optimizer, sweep, tmp_path):
    tmp, _, result = sweep
    dirs = job_dirs(tmp)
    diverged = 0
    for lr in ("0.01", "0.08", "0.2"):
        for bias in ("true", "false"):
            for epochs in ("30", "70"):
                overrides = [f"optimizer={optimizer}", f"lr={lr}", f"bias={bias}", f"epochs={epochs}"]
                name = f"optimizer={optimizer},lr={lr},bias={bias},epochs={epochs},data=line_intercept"
                outcome = run([*overrides, "data=line_intercept", "engine=lightning"], tmp_path)
                assert same_curves(dirs[name], outcome), name
                diverged += outcome.history.diverged
                record = json.loads((dirs[name] / "run.json").read_text())
                assert record["tags"]["gdexp.status"] == outcome.status, name
    if optimizer in ("sgd", "nesterov"):
        assert diverged  # a diverging member was frozen while its population went on
    assert f"optimizer={optimizer}" in result.stdout  # trained as a population, not job by job


@pytest.mark.slow
def test_every_member_is_its_own_complete_child_run(sweep, tmp_path):
    tmp, uri, _ = sweep
    runs = all_runs(uri)
    parents = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(OPTIMIZERS) * 12 and {r.info.status for r in children} == {"FINISHED"}
    client = MlflowClient(uri)
    by_name = {r.info.run_name: r for r in children}

    # the same params, tags, summary metrics and artifacts as the per-run path's run of that config
    overrides = ["optimizer=adam", "lr=0.08", "bias=true", "epochs=70", "data=line_intercept"]
    own_store = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the test's store, not the sweep's
    reference_id = run(overrides, tmp_path, tracking=True).run_id
    SESSION.close_writers()  # its writer draws loss_curve.png after the run ends
    reference = own_store.get_run(reference_id)
    member = by_name[",".join(overrides)]
    assert member.data.params == reference.data.params
    assert set(reference.data.tags) - {"gdexp.population"} <= set(member.data.tags)
    for key in ("gdexp.config_hash", "gdexp.status", "gdexp.engine", "mlflow.source.name"):
        assert member.data.tags[key] == reference.data.tags[key], key
    assert member.data.tags["gdexp.sweep"] == parents[0].info.run_id
    assert set(member.data.metrics) == set(reference.data.metrics)
    for key, value in reference.data.metrics.items():
        assert member.data.metrics[key] == pytest.approx(value, rel=RTOL, abs=1e-9), key
    artifacts = {a.path for a in client.list_artifacts(member.info.run_id)}
    assert artifacts == {a.path for a in own_store.list_artifacts(reference.info.run_id)}
    assert artifacts == {"config.yaml", "history.csv", "loss_curve.png"}
    png = Path(client.download_artifacts(member.info.run_id, "loss_curve.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

    # every curve in full: 70 epochs is under the 100-point grid
    loss = client.get_metric_history(member.info.run_id, "loss")
    assert [m.step for m in loss] == list(range(1, 71))
    assert [m.step for m in client.get_metric_history(member.info.run_id, "b")] == list(range(0, 71))


@pytest.mark.slow
def test_members_with_their_own_seed_and_init_equal_the_per_run_engine(tmp_path, cli_env):
    grid = ["init=default,normal", "seed=0,1,2", "bias=true,false", "lr=0.05", "epochs=50", "data=line_intercept"]
    result = gdexp(["-m", "hydra/launcher=batched", *grid], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert "training 12 runs" in result.stdout  # one population
    dirs = job_dirs(tmp_path)
    assert len(dirs) == 12
    starts = set()
    for name, folder in dirs.items():
        outcome = run(name.split(","), tmp_path)
        assert same_curves(folder, outcome), name
        starts.add(tuple(outcome.history.params[0]))
    assert len(starts) == 12  # every member started from its own initial parameters


@pytest.mark.slow
def test_long_curves_are_thinned_in_mlflow_and_whole_in_history_csv(tmp_path, cli_env):
    args = ["-m", "hydra/launcher=batched", "lr=0.01,0.05", "epochs=250,1000", "bias=true", "data=line_intercept"]
    result = gdexp(args, tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(cli_env["MLFLOW_TRACKING_URI"])
    children = [r for r in all_runs(cli_env["MLFLOW_TRACKING_URI"]) if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 4
    dirs = job_dirs(tmp_path)
    for child in children:
        epochs = int(child.data.params["epochs"])
        loss = [m.step for m in client.get_metric_history(child.info.run_id, "loss")]
        w = [m.step for m in client.get_metric_history(child.info.run_id, "w")]
        assert len(loss) == 100 and (loss[0], loss[-1]) == (1, epochs)
        assert len(w) == 100 and (w[0], w[-1]) == (0, epochs)
        full, _ = read_history(dirs[child.info.run_name])
        assert len(full) == epochs
        assert {m.step: m.value for m in client.get_metric_history(child.info.run_id, "loss")} == {
            s: pytest.approx(full[s - 1]) for s in loss
        }
    # gdexp.sync finds every thinned run up to date: it does not fill the grid back in
    synced = gdexp([str(tmp_path / "multirun")], tmp_path, cli_env, module="gdexp.sync")
    assert synced.returncode == 0, synced.stderr
    assert "0 created, 0 completed, 4 up to date" in synced.stdout


@pytest.mark.slow
def test_minibatch_members_draw_their_own_batches_and_equal_the_per_run_engine(tmp_path, cli_env):
    # float64: at lr 1.5, momentum and Adam members blow up without reaching diverge_above, and
    # such unstable float32 trajectories amplify rounding differences past 1e-5 (1e-4 measured).
    data = ["data=synthetic", "data.n_samples=10", "data.noise=0.1", "batch_size=3", "dtype=float64"]
    grid = ["optimizer=sgd,momentum,adam", "lr=0.01,0.1,1.5", "seed=0,1", "bias=true,false", "epochs=30", *data]
    result = gdexp(["-m", "hydra/launcher=batched", *grid], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("training 12 runs") == 3  # one population per optimizer
    diverged = 0
    for name, folder in job_dirs(tmp_path).items():
        outcome = run(name.split(","), tmp_path)
        assert same_curves(folder, outcome), name
        diverged += outcome.history.diverged
    assert diverged  # lr=1.5 diverges on some members' batches, beside converging ones


@pytest.mark.slow
def test_jobs_that_cannot_join_a_population_still_run_and_are_tracked(tmp_path, cli_env):
    # the numpy engine: ordinary Hydra jobs inside the batched sweep, beside two populations
    args = ["-m", "hydra/launcher=batched", "engine=numpy,lightning", "batch_size=null,2", "lr=0.01,0.05", "epochs=20"]
    result = gdexp(args, tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("training 2 runs") == 2
    children = [r for r in all_runs(cli_env["MLFLOW_TRACKING_URI"]) if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 8 and {r.info.status for r in children} == {"FINISHED"}
    singles = {r.info.run_name for r in children if "gdexp.population" not in r.data.tags}
    numpy_jobs = [f"engine=numpy,batch_size={b},lr={lr},epochs=20" for b in ("null", "2") for lr in ("0.01", "0.05")]
    assert singles == set(numpy_jobs)
    client = MlflowClient(cli_env["MLFLOW_TRACKING_URI"])
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "loss")) == 20
        outcome = run(child.info.run_name.split(","), tmp_path)
        assert child.data.metrics["final_loss"] == pytest.approx(outcome.summary["final_loss"], rel=RTOL)


@pytest.mark.slow
def test_an_added_optimizer_not_known_linear_in_lr_trains_one_population_per_lr(tmp_path, cli_env):
    # A researcher adds torch.optim.ASGD in their own config folder: its step is not linear in lr.
    extra = tmp_path / "my_conf"
    (extra / "optimizer").mkdir(parents=True)
    (extra / "optimizer" / "asgd.yaml").write_text(
        "name: asgd\n_target_: torch.optim.ASGD\n_partial_: true\nlr: ${lr}\nweight_decay: 0.0\n"
    )
    common = [f"hydra.searchpath=[file://{extra}]", "optimizer=asgd", "epochs=30", "data=line_intercept"]
    result = gdexp(["-m", "hydra/launcher=batched", *common, "lr=0.01,0.05", "bias=true,false"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("training 2 runs") == 2  # one population per lr
    dirs = job_dirs(tmp_path)
    for lr in ("0.01", "0.05"):
        for bias in ("true", "false"):
            name = f"optimizer=asgd,epochs=30,data=line_intercept,lr={lr},bias={bias}"
            assert same_curves(dirs[name], run([*common, f"lr={lr}", f"bias={bias}"], tmp_path)), name


@pytest.mark.slow
def test_bad_values_stop_a_batched_sweep_before_any_run(tmp_path, cli_env):
    for args, expected in [
        (["lr=0.1,-1"], "lr=-1.0; allowed: a finite number > 0"),
        (["hydra.launcher.curve_points=10"], "hydra.launcher.curve_points=10"),
        (["hydra.launcher.writers=0"], "hydra.launcher.writers=0; allowed: an integer >= 1, or null (by store)"),
        (["hydra.launcher.loss_curves=maybe"], "hydra.launcher.loss_curves"),
    ]:
        result = gdexp(["-m", "hydra/launcher=batched", "epochs=5", *args], tmp_path, cli_env)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], result.stderr
    assert all(r.info.status != "RUNNING" for r in all_runs(cli_env["MLFLOW_TRACKING_URI"]))


@pytest.mark.slow
def test_interrupted_population_is_recorded_as_killed(tmp_path, cli_env):
    args = ["-m", "hydra/launcher=batched", "lr=0.001,0.002", "epochs=3000000", "data=line_intercept", "bias=true"]
    proc = start_gdexp(args, tmp_path, cli_env)
    for line in proc.stdout:  # signal once the population trains, not while Python still imports
        if "training 2 runs" in line:
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    children = [r for r in all_runs(cli_env["MLFLOW_TRACKING_URI"]) if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2 and {r.info.status for r in children} == {"KILLED"}
    client = MlflowClient(cli_env["MLFLOW_TRACKING_URI"])
    for child in children:
        epochs = int(child.data.metrics["epochs_run"])
        assert 0 < epochs < 3000000
        assert client.get_metric_history(child.info.run_id, "loss")[-1].step == epochs
        assert child.data.tags["gdexp.status"] == "killed"


def test_writers_by_store_unless_set():
    from gdexp.sweeps.batched import writers_for

    assert writers_for("sqlite:////tmp/mlflow.db", None) == 2  # one lock: one store writer, one for artifacts
    assert writers_for("http://127.0.0.1:5000", None) == 4  # a server takes writes in parallel
    assert writers_for("postgresql://u@h/db", None) == 4 and writers_for("http://h", 1) == 1


@pytest.mark.slow
def test_members_keep_their_files_and_draw_no_curve_unless_asked(tmp_path, cli_env):
    """By default a member's loss curve is not drawn (8 ms a run): its run keeps config.yaml and
    history.csv, MLflow charts its loss from the metrics, and the summary says where curves are."""
    done = gdexp(["-m", "hydra/launcher=batched", "lr=0.01,0.1", "epochs=30"], tmp_path, cli_env)
    assert done.returncode == 0, done.stderr
    assert "(a directory per job: config.yaml, history.csv; curves: gdexp-compare plot, MLflow's UI)" in done.stdout
    client = MlflowClient(cli_env["MLFLOW_TRACKING_URI"])
    children = [r for r in all_runs(cli_env["MLFLOW_TRACKING_URI"]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"config.yaml", "history.csv"}
        assert len(client.get_metric_history(child.info.run_id, "loss")) == 30


@pytest.mark.parametrize("interpolated", [False, True])
@pytest.mark.parametrize(
    "member",
    [
        ["lr=0.05", "seed=3", "epochs=20", "bias=false"],
        ["init=normal", "init_std=0.5", "predict_at=[1.0,2.5]", "converge_tol=0", "diverge_above=1e6"],
        ["lr=-1", "lr=0.2"],  # the last value wins, as in Hydra: it passes although the first fails alone
        ["lr=0.2", "epochs=0"],
        ["epochs=0", "lr=-1"],  # two bad values: the first the whole check meets, as a per-run job says
        ["lr=abc"],
        ["init=sideways"],
        ["seed=-4", "init_std=0"],
        ["init_std=0.25", "lr=0.125"],
    ],
)
def test_member_configs_are_the_copy_and_check_of_each_member(member, interpolated):
    """A population's member config (unpickled from its group's, each distinct override checked
    once) is what a deep copy, Hydra's application of the overrides and the whole check give,
    values, types and errors alike."""
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import DictConfig, OmegaConf

    from gdexp.checks import validate
    from gdexp.config import flatten, resolved
    from gdexp.configfile import config_yaml
    from gdexp.sweeps.overrides import apply_overrides
    from gdexp.sweeps.plan import MemberConfigs

    # As composed, without Hydra's node (optimizer.lr is ${lr}); and with one more value that follows a member's.
    task = make_config(["data=line_intercept", "optimizer=adam", *(["diverge_above=${init_std}"] * interpolated)])
    configs = MemberConfigs(task)
    expected_follows = {("optimizer", "lr"): ("lr",), **({("diverge_above",): ("init_std",)} if interpolated else {})}
    assert configs.follows == expected_follows  # optimizer.lr: ${lr}, and diverge_above: ${init_std}
    configs.config(OverridesParser.create().parse_overrides(["lr=0.3"]))  # the cache holds others first
    parsed = OverridesParser.create().parse_overrides(member)

    def outcome(make):
        try:
            cfg, plain = make()
        except Exception as err:
            return type(err), str(err)
        cfg = cfg if isinstance(cfg, DictConfig) else cfg()  # made on demand, where it can be
        return OmegaConf.get_type(cfg), config_yaml(cfg), plain, flatten(plain), OmegaConf.is_struct(cfg), cfg.init

    def reference():
        cfg = apply_overrides(copy.deepcopy(task), parsed)
        validate(cfg)
        return cfg, resolved(cfg)

    expected = outcome(reference)
    assert outcome(lambda: configs.config(parsed)) == expected
    assert outcome(lambda: configs.config(parsed)) == expected  # and again, from the cache


@pytest.mark.slow
def test_a_5000_run_batched_sweep_stays_under_1_gib(tmp_path):
    """The peak of the summed RSS of the command and every process it starts (its writers), for
    a 5,000-run batched sweep into SQLite, measured as benchmarks/bench_scale.py measures it
    (845 MiB at 10,000 runs there); every run FINISHED under one parent afterwards."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "bench_scale.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.sweep(f"sqlite:///{tmp_path / 'mlflow.db'}", 5000, None, tmp_path)
    print(f"5,000 runs: {result}")
    assert result["peak_mib"] < 1024, result
