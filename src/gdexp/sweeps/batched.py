"""``hydra/launcher=batched``: a multirun's jobs trained as populations, each its own MLflow run.

The launcher (``hydra_plugins.gdexp_plugins.batched_launcher``) hands the job list to :func:`launch`:

1. **Plan** (:mod:`gdexp.sweeps.plan`): group the jobs, compose each group once, prepare every
   member as a :class:`~gdexp.job.Job`.
2. **Train** each population as one :class:`gdexp.training.population.Population`, full batch or
   minibatches of the group's ``batch_size``, each member drawing its own from its seed.
3. **Record** each member through the same job lifecycle as a per-run job
   (:meth:`~gdexp.job.Job.ended`): its job directory and its own child run under the sweep's
   parent, with the same params, tags, summary metrics and artifacts. MLflow curves are thinned to
   an even grid of ``curve_points`` steps; writer processes write finished runs and draw their loss
   curves while the next population trains.

Jobs that cannot join a population run as ordinary Hydra jobs, the way the basic launcher runs them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from omegaconf import DictConfig, open_dict

from gdexp.console import progress, say_skipped
from gdexp.sweeps.overrides import SweepJob, split_jobs
from gdexp.sweeps.plan import Member, Planned, compose, populations
from gdexp.sweeps.pruning import PopulationPruning
from gdexp.sweeps.settings import check_launcher
from gdexp.tracking.client import WriterPool
from gdexp.tracking.protocol import FinishedRun, RunFiles
from gdexp.tracking.record import SweepInfo, read_sweep, sweep_dir
from gdexp.tracking.tags import run_name
from gdexp.tracking.uri import target_of
from gdexp.training.history import History, RunInterrupted, StopSignal, interrupts_stop

if TYPE_CHECKING:
    from hydra_plugins.gdexp_plugins.batched_launcher import BatchedLauncher


def writers_for(uri: str, writers: int | None) -> int:
    """Writer processes for a store: as set, else 2 on SQLite (one store writer, since its writes
    queue for one lock, and one for the artifacts) and 4 on a server or database that takes
    writes in parallel (three store writers). ``benchmarks/bench_scale.py`` measured both."""
    if writers is not None:
        return writers
    return 2 if uri.startswith("sqlite:") else 4


def start_early(config: DictConfig, writers: int | None) -> dict[tuple[str, str], WriterPool]:
    """What the launcher starts while Hydra still checks the sweep: torch and Lightning imported
    in a thread, and the writer processes for the sweep's store (their MLflow import and store
    opening take seconds). The writer pools are returned for :func:`launch` to use."""
    check_launcher(config.hydra.launcher)  # also here: Hydra apps other than gdexp.run have no sweep callback
    threading.Thread(target=lambda: __import__("gdexp.training.population"), daemon=True).start()
    target = target_of(config)
    if target is None:
        return {}
    store = (target.uri, target.experiment)
    # It serves every launch of the sweep (a study launches a batch at a time); the sweep's end
    # closes it (the session's close_pools, from the sweep callback or at exit).
    return {store: WriterPool(*store, writers_for(store[0], writers))}


def _returned(job: SweepJob, value: dict[str, Any] | None, launch_dir: Path) -> JobReturn:
    return JobReturn(
        overrides=job.overrides,
        working_dir=str(launch_dir),
        task_name="batched",
        status=JobStatus.COMPLETED,
        _return_value=value,
    )


def launch(launcher: BatchedLauncher, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run the sweep's jobs: populations where they can share one computation, ordinary Hydra jobs
    where they cannot. One ``JobReturn`` per job, in order."""
    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    assert config is not None and context is not None  # set by the launcher's setup()
    launch_dir = Path(config.hydra.runtime.cwd)
    jobs = split_jobs([list(o) for o in job_overrides], initial_job_idx)
    returns: list[JobReturn | None] = [None] * len(jobs)
    writers = _Writers(launcher.settings.writers, launcher.take_writer_pools())
    singles: list[SweepJob] = []
    started = time.monotonic()
    try:
        sweep = read_sweep(sweep_dir(str(config.hydra.sweep.dir), str(launch_dir)))
        by_rest: dict[tuple[str, ...], list[SweepJob]] = {}
        for job in jobs:
            by_rest.setdefault(job.rest, []).append(job)
        # Planned, trained and recorded one group at a time: a group's jobs (a config each) are
        # let go once recorded, so a 10,000-run sweep never holds every job at once.
        groups, runs, trained_populations = list(by_rest.items()), 0, 0
        for g, (rest, group) in enumerate(groups, 1):
            base = compose(context, config, list(rest))
            plan = populations(base, group, launch_dir, sweep, " ".join(rest) or "default") if base else None
            if plan is None:
                singles.extend(group)
                continue
            for job, run_id in plan.skipped:
                say_skipped(run_name(job.overrides), run_id)
                returns[job.index] = _returned(job, {"status": "skipped"}, launch_dir)
            for job, failure in plan.failed:
                returns[job.index] = _returned(job, failure, launch_dir)
            for n, population in enumerate(plan.populations, 1):
                where = f"{g}/{len(groups)}" + (f" {n}/{len(plan.populations)}" if len(plan.populations) > 1 else "")
                _train_and_record(launcher, population, writers, returns, launch_dir, where, sweep)
                runs, trained_populations = runs + len(population.members), trained_populations + 1
            del plan
        for index, written in writers.finish():
            returned = returns[index]
            if returned is not None:
                returned.return_value["run_id"] = written
        if trained_populations:
            counts = Counter(r.return_value["status"] for r in returns if r is not None and r.return_value)
            shown = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            print(
                f"gdexp batched: {runs} runs in {trained_populations} "
                f"population(s) in {time.monotonic() - started:.1f} s: {shown}",
                flush=True,
            )
    finally:
        writers.close()
    for job in sorted(singles, key=lambda j: j.index):
        returns[job.index] = _run_single(launcher, job)
    return [r if r is not None else _returned(jobs[i], None, launch_dir) for i, r in enumerate(returns)]


def _train_and_record(
    launcher: BatchedLauncher,
    planned: Planned,
    writers: _Writers,
    returns: list[JobReturn | None],
    launch_dir: Path,
    where: str,
    sweep: SweepInfo | None = None,
) -> None:
    """Train one population, then record every member as the job it is. In a study with a
    pruner, the pruner stops members as they train."""
    from gdexp.training import population  # torch and Lightning: imported early in a thread
    from gdexp.training.engines import make_optimizer
    from gdexp.training.model import make_linear

    started = time.monotonic()
    base, data, members = planned.base, planned.data, planned.members
    dtype = base.dtype.value
    scale_lr = population.lr_linear(base.optimizer)
    shape = (data.n_features, data.n_targets)
    cfgs = [m.job.plain for m in members]  # their resolved configs: no member's DictConfig is made
    pop = [
        population.Member(
            make_linear(*shape, c["bias"], c["init"], c["init_std"], c["seed"], dtype),
            c["lr"],
            c["epochs"],
            c["diverge_above"],
        )
        for c in cfgs
    ]
    print(
        f"gdexp batched [{where}] {planned.label}: training {len(members)} runs, "
        f"optimizer={base.optimizer.name}, up to {max(p.epochs for p in pop)} epochs",
        flush=True,
    )
    assert launcher.config is not None  # set by setup()
    target = target_of(launcher.config)
    pruning = PopulationPruning.open(
        launcher.config.hydra.sweeper,
        sweep,
        [m.sweep_job.number for m in members],
        target.uri if target else None,
        launch_dir,
        [p.epochs for p in pop],
    )
    stop = StopSignal()  # one for the whole population: it stops at the next epoch, recorded
    with interrupts_stop(stop), progress(max(p.epochs for p in pop), planned.label) as bar:

        def epoch_done() -> bool:  # called after every epoch: the bar moves, an interrupt stops
            bar.update(1)
            return stop.received

        curves = population.train_population(
            data.X,
            data.Y,
            pop,
            make_optimizer(base, lr=1.0 if scale_lr else float(cfgs[0]["lr"])),
            reduction=base.loss_reduction.value,
            scale_lr=scale_lr,
            accelerator=base.accelerator.value,
            dtype=dtype,
            batch_size=base.batch_size,
            seeds=[int(c["seed"]) for c in cfgs],
            stop=epoch_done,
            prune=pruning,
        )
    if pruning is not None:  # each member's last epoch too, then every report into the study
        for m in range(len(members)):
            if not curves.pruned[m] and curves.epochs_run[m]:
                pruning.last(m, int(curves.epochs_run[m]), float(curves.loss[int(curves.epochs_run[m]) - 1, m]))
        pruning.save()
    trained = time.monotonic() - started
    statuses: Counter[str] = Counter()
    note = (
        f"{len(members)} runs trained as one population; MLflow curves on an even grid of "
        f"{launcher.settings.curve_points} steps, every epoch in history.csv"
    )
    queued: list[tuple[Member, tuple[FinishedRun, RunFiles]]] = []
    for m, member in enumerate(members):
        job = member.job
        epochs = int(curves.epochs_run[m])
        params = curves.params[: epochs + 1, m]
        if not job.plain["bias"]:
            params = params[:, : data.n_features * data.n_targets]
        history = History.recorded(
            job.param_names,
            curves.loss[:epochs, m].tolist(),
            params.tolist(),
            bool(curves.diverged[m]),
            bool(curves.pruned[m]),
        )
        killed = (
            curves.interrupted and not history.diverged and not history.pruned and epochs < int(job.plain["epochs"])
        )
        end_status = "KILLED" if killed else "FINISHED"
        outcome, run = job.ended(
            history,
            end_status,
            launcher.settings.curve_points,
            launcher.settings.loss_curves,
            **{"gdexp.population": note},
        )
        statuses[outcome.status] += 1
        returns[member.sweep_job.index] = _returned(member.sweep_job, outcome.returned(), launch_dir)
        if run is not None:
            queued.append((member, run))
        if len(queued) >= 16:  # keep the writers busy while the rest are recorded
            writers.submit(queued)
            queued = []
    writers.submit(queued)
    shown = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
    print(f"gdexp batched [{where}] {planned.label}: trained in {trained:.2f} s: {shown}", flush=True)
    if curves.interrupted:
        writers.finish()
        raise RunInterrupted(stop.signum or 2)


class _Writers:
    """Writer pools, one per tracking store, started on first use; records get their run ids.

    Training outpaces any store, so at most ``BACKLOG`` finished runs wait to be written: beyond
    that, recording waits for the oldest (the store sets the pace either way; memory stays flat)."""

    BACKLOG = 1000

    def __init__(self, size: int | None, pools: dict[tuple[str, str], WriterPool]):
        self.size = size
        self.pools = dict(pools)
        self.given = set(pools)  # the launcher's: they serve its later launches too (a study's batches)
        self.pending: deque[tuple[int, Future]] = deque()  # (job index, future of its run id)
        self.done: list[tuple[int, str | None]] = []

    def submit(self, queued: list[tuple[Member, tuple[FinishedRun, RunFiles]]]) -> None:
        by_store: dict[tuple[str, str], list[tuple[Member, tuple[FinishedRun, RunFiles]]]] = {}
        for member, run in queued:
            store = (member.job.uri or "", str(member.job.plain["tracking"]["experiment"]))
            by_store.setdefault(store, []).append((member, run))
        for store, items in by_store.items():
            if store not in self.pools:
                self.pools[store] = WriterPool(*store, writers_for(store[0], self.size))
            futures = self.pools[store].submit([run for _, run in items])
            self.pending.extend((m.sweep_job.index, f) for (m, _), f in zip(items, futures))
        while len(self.pending) > self.BACKLOG:
            self._settle()

    def _settle(self) -> None:
        """Wait for the oldest queued run (the writer notes its MLflow run id in its run.json)."""
        index, future = self.pending.popleft()
        self.done.append((index, future.result()))

    def finish(self) -> list[tuple[int, str | None]]:
        """Wait for every queued run; (job index, MLflow run id or None) for each written since
        the last call."""
        while self.pending:
            self._settle()
        done, self.done = self.done, []
        return done

    def close(self) -> None:
        for store, pool in self.pools.items():
            if store not in self.given:
                pool.close()
        self.pools = {}


def _run_single(launcher: BatchedLauncher, job: SweepJob) -> JobReturn:
    """An ungroupable job, run the way Hydra's basic launcher runs it."""
    config, context, task = launcher.config, launcher.hydra_context, launcher.task_function
    assert config is not None and context is not None and task is not None  # set by setup()
    sweep_config = context.config_loader.load_sweep_config(config, job.overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = sweep_config.hydra.job.num = job.number
    ret = run_job(
        hydra_context=context,
        task_function=task,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return ret
