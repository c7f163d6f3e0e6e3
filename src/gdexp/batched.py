"""``hydra/launcher=batched``: a multirun's jobs trained as populations, each its own MLflow run.

The launcher (``hydra_plugins.gdexp_plugins.batched_launcher``) hands the job list to :func:`launch`:

1. **Group.** A job's overrides of :data:`MEMBER_KEYS` (lr, epochs, seed, init, bias, ...) may
   differ inside a population; every other override (optimizer, data, engine, ...) is composed
   by Hydra once per distinct value, not once per job.
2. **Member configs.** Each member's overrides are applied to its group's composed config the way
   Hydra applies them, so its params and config hash are the per-run job's.
3. **Train.** A group is one :class:`gdexp.population.Population` when its engine is ``lightning``
   or ``autograd`` and its optimizer's step is linear in lr (otherwise the members that share an
   lr are one population). Full batch or minibatches of the group's ``batch_size``, each member
   drawing its own from its seed. ``engine=numpy`` jobs run as ordinary Hydra jobs.
4. **Record.** Each member gets the per-run job's directory (``run.json``, ``config.yaml``,
   ``history.csv`` at full resolution) and its own child run under the sweep's parent, with the
   same params, tags, summary metrics and artifacts. Its metric curves are thinned to an even grid
   of ``curve_points`` steps that includes the first and the last; writer processes draw the loss
   curves and write finished runs in parallel while the next population trains.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# Top-level keys that may differ between the members of one population.
MEMBER_KEYS = frozenset(
    {"lr", "epochs", "seed", "init", "init_std", "bias", "predict_at", "converge_tol", "diverge_above"}
)


# Memory for a population's histories (its float32 buffers and their float64 copies).
HISTORY_BYTES = 2 * 1024**3


def member_override(override: Any) -> bool:
    """Whether a parsed override only sets a per-member key (so needs no composition of its own)."""
    plain = not (override.is_add() or override.is_force_add() or override.is_delete())
    return plain and override.package is None and override.key_or_group in MEMBER_KEYS


def apply_overrides(base: DictConfig, overrides: list[Any]) -> DictConfig:
    """A copy of ``base`` with parsed ``overrides`` applied, exactly as Hydra applies them after
    composing (type checks and errors included)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    cfg = copy.deepcopy(base)
    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)
    return cfg


def thin_steps(first: int, last: int, points: int) -> np.ndarray:
    """An even grid of at least ``points`` steps from ``first`` to ``last``, both included; every
    step when there are no more than ``points`` (or ``points`` is 0)."""
    if points <= 0 or last - first + 1 <= points:
        return np.arange(first, last + 1)
    return np.unique(np.rint(np.linspace(first, last, points)).astype(int))


@dataclass
class Job:
    """One job of the sweep, as the launcher was handed it."""

    index: int  # position in the launch call
    number: int  # hydra.job.num
    overrides: list[str]
    member: list[Any] = field(default_factory=list)  # parsed overrides of MEMBER_KEYS
    rest: tuple[str, ...] = ()  # the other overrides: composed once per distinct tuple


def split_jobs(job_overrides: list[list[str]], initial_job_idx: int) -> list[Job]:
    """Parse every job's overrides into per-member ones and the ones that need composing."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed_once: dict[str, Any] = {}  # a grid repeats each value many times; parsing is slow
    jobs = []
    for i, overrides in enumerate(job_overrides):
        job = Job(i, initial_job_idx + i, list(overrides))
        rest = []
        for text in overrides:
            if text not in parsed_once:
                (parsed_once[text],) = parser.parse_overrides([text])
            parsed = parsed_once[text]
            if member_override(parsed):
                job.member.append(parsed)
            else:
                rest.append(text)
        job.rest = tuple(rest)
        jobs.append(job)
    return jobs


def validate_jobs(loader: Any, config: DictConfig, job_overrides: list[list[str]]) -> None:
    """Raise what Hydra's composition of each job would raise, composing each distinct set of
    non-member overrides once and applying each distinct member override to it once."""
    checked: set[tuple[tuple[str, ...], str]] = set()
    bases: dict[tuple[str, ...], DictConfig] = {}
    for job in split_jobs(job_overrides, 0):
        if job.rest not in bases:
            bases[job.rest] = loader.load_sweep_config(config, list(job.rest))
        for override in job.member:
            if (job.rest, override.input_line) not in checked:
                checked.add((job.rest, override.input_line))
                apply_overrides(bases[job.rest], [override])


@dataclass
class MemberJob:
    """A job that trains inside a population."""

    job: Job
    cfg: DictConfig
    output_dir: Path


@dataclass
class Planned:
    """A population to train: its group's composed config and data, and its members."""

    label: str
    base: DictConfig
    data: Any  # gdexp.data.Dataset, in the config's dtype
    members: list[MemberJob]


def start_early(config: DictConfig, writers: int) -> dict[tuple[str, str], Any]:
    """What the launcher starts while Hydra still checks the sweep: torch and Lightning imported
    in a thread, and the writer processes for the sweep's store (their MLflow import and store
    opening take seconds). The writer pools are returned for :func:`launch` to use."""
    import threading

    from gdexp.config import ConfigError

    points = config.hydra.launcher.curve_points
    if not isinstance(points, int) or (points != 0 and points < 100):
        raise ConfigError("hydra.launcher.curve_points", points, "0 (every epoch) or an integer >= 100")
    if config.hydra.launcher.writers < 1:
        raise ConfigError("hydra.launcher.writers", config.hydra.launcher.writers, "an integer >= 1")
    threading.Thread(target=lambda: __import__("gdexp.population"), daemon=True).start()
    if not config.tracking.enabled:
        return {}
    from gdexp.tracking import WriterPool, resolve_uri

    store = (resolve_uri(config.tracking.uri, Path(config.hydra.runtime.cwd)), str(config.tracking.experiment))
    return {store: WriterPool(*store, writers)}


def launch(launcher: Any, job_overrides: list[list[str]], initial_job_idx: int) -> list[Any]:
    """Run the sweep's jobs: populations where they can share one computation, ordinary Hydra jobs
    where they cannot. One ``JobReturn`` per job, in order."""
    from hydra.core.utils import JobReturn, JobStatus, setup_globals

    from gdexp.tracking import read_sweep, sweep_dir

    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    launch_dir = Path(config.hydra.runtime.cwd)
    jobs = split_jobs([list(o) for o in job_overrides], initial_job_idx)
    returns: list[Any] = [None] * len(jobs)
    writers = _Writers(launcher.writers, launcher.take_writer_pools())
    singles: list[Job] = []
    started = time.monotonic()
    try:
        by_rest: dict[tuple[str, ...], list[Job]] = {}
        for job in jobs:
            by_rest.setdefault(job.rest, []).append(job)
        populations: list[Planned] = []
        for rest, group in by_rest.items():
            base = _compose(context, config, list(rest))
            label = " ".join(rest) or "default"
            found = _populations(base, group, launch_dir, returns, label) if base is not None else None
            if found is None:
                singles.extend(group)
            else:
                populations.extend(found)
        sweep = read_sweep(sweep_dir(str(config.hydra.sweep.dir), str(launch_dir)))
        for n, planned in enumerate(populations, 1):
            _train_and_record(launcher, planned, sweep, launch_dir, writers, returns, (n, len(populations)))
        written = writers.finish()
        for member_job, run_id in written:
            returns[member_job.index]._return_value["run_id"] = run_id
        if populations:
            counts = Counter(r._return_value["status"] for r in returns if r is not None and r._return_value)
            shown = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            print(
                f"gdexp batched: {sum(len(p.members) for p in populations)} runs in {len(populations)} "
                f"population(s) in {time.monotonic() - started:.1f} s: {shown}",
                flush=True,
            )
    finally:
        writers.close()
    for job in sorted(singles, key=lambda j: j.index):
        returns[job.index] = _run_single(launcher, job)
    for i, ret in enumerate(returns):
        if ret is None:  # a member whose own config failed: reported like a per-run job's error
            returns[i] = JobReturn(overrides=jobs[i].overrides, status=JobStatus.COMPLETED, _return_value=None)
    return returns


def _compose(context: Any, config: DictConfig, overrides: list[str]) -> DictConfig | None:
    """Hydra's composition of the sweep config with ``overrides``; None when it fails (those jobs
    then run as ordinary jobs, whose error report names the bad value)."""
    try:
        return context.config_loader.load_sweep_config(config, overrides)
    except Exception:
        return None


def _populations(
    base: DictConfig, group: list[Job], launch_dir: Path, returns: list[Any], label: str
) -> list[Planned] | None:
    """The populations a group of jobs trains as; None when the group cannot be batched."""
    from hydra.core.utils import JobReturn, JobStatus

    from gdexp.config import ConfigError, config_hash, validate
    from gdexp.data import load_data
    from gdexp.population import lr_linear
    from gdexp.run import record_job_error
    from gdexp.tracking import run_name

    if base.engine.value == "numpy":
        return None
    try:
        validate(base)
        data = load_data(base.data, launch_dir).as_dtype(base.dtype.value)
    except ConfigError:
        return None
    task = copy.deepcopy(base)
    with read_write(task), open_dict(task):
        del task["hydra"]
    finished = _finished_runs(base, launch_dir)
    members = []
    for job, folder in zip(group, _output_dirs(base, group)):
        try:
            cfg = apply_overrides(task, job.member)
            validate(cfg)
        except Exception as err:  # one bad member fails alone, as a per-run job would
            record_job_error(job.overrides, err, multirun=True)
            continue
        done = finished.get(config_hash(cfg)) if finished else None
        if done:
            print(f"gdexp [{run_name(job.overrides)}] skipped: finished already as MLflow run {done}")
            returns[job.index] = JobReturn(
                overrides=job.overrides, status=JobStatus.COMPLETED, _return_value={"status": "skipped"}
            )
            continue
        members.append(MemberJob(job, cfg, folder))
    if lr_linear(base.optimizer):
        groups = [members] if members else []
    else:
        by_lr: dict[float, list[MemberJob]] = {}
        for member in members:
            by_lr.setdefault(float(member.cfg.lr), []).append(member)
        groups = list(by_lr.values())
    # A population keeps every member's whole history in memory until it ends: split the big ones.
    per_epoch = (data.n_targets * (data.n_features + 1) + 1) * (8 if base.dtype.value == "float64" else 4) * 3
    out = []
    for group in groups:
        size = max(1, HISTORY_BYTES // (per_epoch * (1 + max(m.cfg.epochs for m in group))))
        out.extend(Planned(label, base, data, group[i : i + size]) for i in range(0, len(group), size))
    return out


def _finished_runs(base: DictConfig, launch_dir: Path) -> dict[str, str]:
    """For ``tracking.skip_finished``: config hash -> FINISHED run id in the group's experiment,
    from one search (the per-run path asks once per job)."""
    if not (base.tracking.enabled and base.tracking.skip_finished):
        return {}
    from gdexp.tracking import Tracker, resolve_uri

    return Tracker.get(resolve_uri(base.tracking.uri, launch_dir), base.tracking.experiment).finished_runs()


def _output_dirs(base: DictConfig, jobs: list[Job]) -> list[Path]:
    """The jobs' directories, as Hydra names them: ``hydra.sweep.subdir`` resolved with each
    job's number (and its override dirname, when the pattern uses it)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gdexp.tracking import sweep_dir

    hydra_cfg = base.hydra
    folder = sweep_dir(str(hydra_cfg.sweep.dir), str(hydra_cfg.runtime.cwd))
    pattern = str(OmegaConf.to_container(hydra_cfg.sweep)["subdir"])
    if pattern == "${hydra.job.num}":  # Hydra's default: no need to resolve it job by job
        return [folder / str(job.number) for job in jobs]
    naming = hydra_cfg.job.config.override_dirname
    parser = OverridesParser.create()
    out = []
    with open_dict(hydra_cfg):
        for job in jobs:
            hydra_cfg.job.num = hydra_cfg.job.id = job.number
            if "override_dirname" in pattern:
                hydra_cfg.job.override_dirname = get_overrides_dirname(
                    parser.parse_overrides(job.overrides),
                    exclude_keys=list(naming.exclude_keys),
                    item_sep=naming.item_sep,
                    kv_sep=naming.kv_sep,
                )
            out.append(folder / str(hydra_cfg.sweep.subdir))
    return out


def _train_and_record(
    launcher: Any,
    planned: Planned,
    sweep: dict[str, Any] | None,
    launch_dir: Path,
    writers: _Writers,
    returns: list[Any],
    position: tuple[int, int],
) -> None:
    """Train one population, write every member's record and queue its MLflow run."""
    from hydra.core.utils import JobReturn, JobStatus

    from gdexp import population
    from gdexp.engines import make_optimizer
    from gdexp.history import History, RunInterrupted
    from gdexp.model import make_linear
    from gdexp.run import interrupts_stop

    started = time.monotonic()
    label, base, data, members = planned.label, planned.base, planned.data, planned.members
    dtype = base.dtype.value
    scale_lr = population.lr_linear(base.optimizer)
    shape = (data.n_features, data.n_targets)
    pop = [
        population.Member(
            make_linear(*shape, c.bias, c.init.value, c.init_std, c.seed, dtype), c.lr, c.epochs, c.diverge_above
        )
        for c in (m.cfg for m in members)
    ]
    n, total = position
    print(
        f"gdexp batched [{n}/{total}] {label}: training {len(members)} runs, optimizer={base.optimizer.name}, "
        f"up to {max(p.epochs for p in pop)} epochs",
        flush=True,
    )
    # One flag for the whole population: SIGINT/SIGTERM stop it at the next epoch, recorded.
    signals = History([], [], 0.0)
    with interrupts_stop(signals):
        curves = population.train_population(
            data.X,
            data.Y,
            pop,
            make_optimizer(base, lr=1.0 if scale_lr else float(members[0].cfg.lr)),
            reduction=base.loss_reduction.value,
            scale_lr=scale_lr,
            accelerator=base.accelerator.value,
            dtype=dtype,
            batch_size=base.batch_size,
            seeds=[int(m.cfg.seed) for m in members],
            stop=lambda: signals.interrupt is not None,
        )
    trained = time.monotonic() - started
    statuses: Counter[str] = Counter()
    payloads = []
    for m, member in enumerate(members):
        outcome, payload = _record_member(launcher, member, m, curves, data, sweep, len(members), launch_dir)
        statuses[outcome["status"]] += 1
        returns[member.job.index] = JobReturn(
            overrides=member.job.overrides,
            working_dir=str(launch_dir),
            task_name="batched",
            status=JobStatus.COMPLETED,
            _return_value=outcome,
        )
        if payload is not None:
            payloads.append((member, payload))
        if len(payloads) >= 16:  # keep the writers busy while the rest are recorded
            writers.submit(payloads)
            payloads = []
    writers.submit(payloads)
    shown = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
    print(f"gdexp batched [{n}/{total}] {label}: trained in {trained:.2f} s: {shown}", flush=True)
    if curves.interrupted:
        writers.finish()
        raise RunInterrupted(signals.interrupt)


def _record_member(
    launcher: Any,
    member: MemberJob,
    m: int,
    curves: Any,
    data: Any,
    sweep: dict[str, Any] | None,
    size: int,
    launch_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Write one member's job directory; its outcome and the writer's payload for its MLflow run."""
    from gdexp.analysis import pred_names, status
    from gdexp.config import config_yaml, flatten, resolved
    from gdexp.data import predict_points
    from gdexp.history import History, param_names
    from gdexp.record import RunRecord
    from gdexp.run import closing_metrics, run_tags
    from gdexp.tracking import resolve_uri, run_name

    cfg, job, folder = member.cfg, member.job, member.output_dir
    plain = resolved(cfg)
    bias = bool(cfg.bias)
    names = param_names(data.n_features, data.n_targets, bias)
    epochs = int(curves.epochs_run[m])
    params = curves.params[: epochs + 1, m]
    if not bias:
        params = params[:, : data.n_features * data.n_targets]
    history = History.recorded(names, curves.loss[:epochs, m].tolist(), params.tolist(), bool(curves.diverged[m]))
    interrupted = curves.interrupted and not history.diverged and epochs < int(cfg.epochs)
    end_status = "KILLED" if interrupted else "FINISHED"

    points = predict_points(cfg.predict_at, data.n_features)
    pred_cols = pred_names(points, data.n_targets)
    name = run_name(job.overrides)
    uri = resolve_uri(cfg.tracking.uri, launch_dir) if cfg.tracking.enabled else None
    parent = (sweep or {}).get("parent_run_id")
    tags = run_tags(plain, job.overrides, folder, parent)
    tags["gdexp.population"] = (
        f"{size} runs trained as one population; MLflow curves on an even grid of "
        f"{launcher.curve_points} steps, every epoch in history.csv"
    )
    summary, _, _, final_rows = closing_metrics(cfg, history, data, points, pred_cols)
    run_status = status(history, cfg.converge_tol) if end_status == "FINISHED" else "killed"
    tags["gdexp.status"] = run_status
    flat = flatten(plain)
    fields = {
        "status": end_status,  # the run has ended: its record is written once, final
        "record_id": tags["gdexp.record_id"],
        "run_name": name,
        "params": flat,
        "tags": tags,
        "metrics": final_rows,
        "tracking_uri": uri,
        "experiment": cfg.tracking.experiment,
        "parent_run_id": parent,
        "mlflow_run_id": None,
        "curve_points": launcher.curve_points,
    }
    RunRecord(folder, fields, history, data, bias, points, pred_cols).append_history()
    (folder / "config.yaml").write_text(config_yaml(plain))
    outcome = {"run_id": None, "status": run_status, **summary}
    if uri is None:
        return outcome, None
    loss_steps = thin_steps(1, epochs, launcher.curve_points)
    param_steps = thin_steps(0, epochs, launcher.curve_points)
    rows = [("loss", history.loss[s - 1], int(s)) for s in loss_steps]
    for s in param_steps:
        rows.extend((n, v, int(s)) for n, v in zip(names, history.params[s]))
    payload = {
        "store": (uri, cfg.tracking.experiment),
        "name": name,
        "tags": tags,
        "params": flat,
        "metrics": rows + final_rows,
        "artifacts": [str(folder / "config.yaml"), str(folder / "history.csv")],
        "loss": history.loss,
        "loss_curve": str(folder / "loss_curve.png"),
        "status": end_status,
        "record": str(folder),
    }
    return outcome, payload


class _Writers:
    """Writer pools, one per tracking store, started on first use; records get their run ids."""

    def __init__(self, size: int, pools: dict[tuple[str, str], Any]):
        self.size = size
        self.pools = pools
        self.pending: list[tuple[MemberJob, Any]] = []  # (member, future of its MLflow run id)

    def submit(self, payloads: list[tuple[MemberJob, dict[str, Any]]]) -> None:
        from gdexp.tracking import WriterPool

        by_store: dict[tuple[str, str], list[tuple[MemberJob, dict[str, Any]]]] = {}
        for member, payload in payloads:
            by_store.setdefault(payload.pop("store"), []).append((member, payload))
        for store, items in by_store.items():
            if store not in self.pools:
                self.pools[store] = WriterPool(*store, self.size)
            futures = self.pools[store].submit([payload for _, payload in items])
            self.pending.extend(zip((member for member, _ in items), futures))

    def finish(self) -> list[tuple[Job, str | None]]:
        """Wait for every queued run; (job, MLflow run id or None) for each, also in its run.json."""
        from gdexp.record import set_run_id

        written = []
        for member, future in self.pending:
            run_id = future.result()
            if run_id is not None:
                set_run_id(member.output_dir, run_id)
            written.append((member.job, run_id))
        self.pending = []
        return written

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools = {}


def _run_single(launcher: Any, job: Job) -> Any:
    """An ungroupable job, run the way Hydra's basic launcher runs it."""
    from hydra.core.utils import configure_log, run_job

    config, context = launcher.config, launcher.hydra_context
    sweep_config = context.config_loader.load_sweep_config(config, job.overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = sweep_config.hydra.job.num = job.number
    ret = run_job(
        hydra_context=context,
        task_function=launcher.task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return ret
