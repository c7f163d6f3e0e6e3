"""Replay into the tracking store every run record it lacks (``gdexp-sync PATH``).

PATH is a run's job directory or a sweep directory. Each ``run.json`` (see
:mod:`gdexp.tracking.record`) is matched to the store by its ``gdexp.record_id`` tag: a missing run
is created under its sweep's parent run, an incomplete one gets the metric points, tags and
artifacts it lacks and its final status. A record left RUNNING belongs to a job that died, and is
ended FAILED. A damaged record or history line is named and skipped; the rest is synced. Running
it twice changes nothing the second time.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdexp.tracking import protocol as p
from gdexp.tracking.bulk import open_bulk
from gdexp.tracking.client import Tracker
from gdexp.tracking.record import (
    SWEEP_FILE,
    DamagedRecord,
    RunInfo,
    SweepInfo,
    find_records,
    process_gone,
    recorded_curves,
)
from gdexp.tracking.store import (
    connect,
    file_lock,
    find_finished,
    finished_runs,
    log_whole,
    put_artifacts,
)
from gdexp.tracking.uri import masked

ARTIFACTS = ("config.yaml", "history.csv", "loss_curve.png")


@dataclass
class SyncReport:
    """What a sync did: runs created, completed, already up to date; what it skipped and why."""

    created: int = 0
    completed: int = 0
    up_to_date: int = 0
    duplicates: int = 0  # records of a config that has a FINISHED run already: not created again
    running: int = 0  # records whose job is still training here: left alone
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> str:
        line = f"{self.created} created, {self.completed} completed, {self.up_to_date} up to date"
        extra = {"duplicates": self.duplicates, "still running": self.running, "skipped": len(self.skipped)}
        return line + "".join(f", {n} {what}" for what, n in extra.items() if n)


def _records(path: Path, report: SyncReport) -> Iterator[tuple[Path, RunInfo]]:
    for record_path in find_records(path):
        try:
            yield record_path.parent, RunInfo.load(record_path)
        except DamagedRecord as err:
            report.skipped.append(str(err))
            print(f"skipped    {err}")


def recorded_uri(recorded: str | None) -> str | None:
    """The store a record names. Records keep URIs with credentials masked; the unmasked one is
    ``MLFLOW_TRACKING_URI`` when that masks to the same text."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if recorded and "***" in recorded and env and masked(env) == recorded:
        return env
    return recorded


class _Stores:
    """Each store opened once per sync."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], tuple[Any, str]] = {}

    def get(self, uri: str, experiment: str) -> tuple[Any, str]:
        if (uri, experiment) not in self.open:
            self.open[(uri, experiment)] = connect(uri, experiment)
        return self.open[(uri, experiment)]


def _sweeps(path: Path, report: SyncReport) -> Iterator[tuple[Path, SweepInfo]]:
    sweep_files = [path / SWEEP_FILE] if (path / SWEEP_FILE).is_file() else sorted(path.rglob(SWEEP_FILE))
    for sweep_file in sweep_files:
        try:
            yield sweep_file.parent, SweepInfo.load(sweep_file)
        except DamagedRecord as err:
            report.skipped.append(str(err))
            print(f"skipped    {err}")


def _parent_in(client: Any, experiment_id: str, folder: Path, sweep: SweepInfo) -> str:
    """The sweep's parent run in this store: the recorded one, or the one an earlier sync made
    here (a store other than the recorded one), or a new one made now."""
    from mlflow.exceptions import MlflowException

    recorded = str(sweep.parent_run_id)
    try:
        client.get_run(recorded)
        return recorded
    except MlflowException:
        pass
    with _locked(folder):
        made = client.search_runs([experiment_id], f"tags.`gdexp.synced_from` = '{recorded}'", max_results=1)
        if made:
            return made[0].info.run_id
        tags = {
            "gdexp.role": "sweep",
            "gdexp.overrides": " ".join(sweep.overrides),
            "gdexp.sweep_dir": str(folder),
            "gdexp.jobs": str(sweep.jobs),
            "gdexp.synced_from": recorded,
        }
        run = client.create_run(experiment_id, run_name="sweep " + (" ".join(sweep.overrides) or "default"), tags=tags)
        print(f"created    sweep run {run.info.run_id} (recorded as {recorded} in another store)")
        return run.info.run_id


def sync(path: Path, uri: str | None = None) -> SyncReport:
    """Replay the records at or below ``path`` into their store (or into ``uri``)."""
    report = SyncReport()
    stores = _Stores()
    sweeps = list(_sweeps(path, report))
    parents: dict[str, str] = {}  # recorded parent run id -> the parent's id in the target store
    for folder, sweep in sweeps:
        target = uri or recorded_uri(sweep.tracking_uri)
        if sweep.parent_run_id and target and sweep.experiment:
            parents[sweep.parent_run_id] = _parent_in(*stores.get(target, sweep.experiment), folder, sweep)
    by_store: dict[tuple[str, str], list[tuple[Path, RunInfo, str | None]]] = {}
    for folder, rec in _records(path, report):
        target = uri or recorded_uri(rec.tracking_uri)
        if target is None:
            continue  # tracking was off for this run
        if rec.status == "RUNNING" and rec.host == socket.gethostname() and not process_gone(rec.host, rec.pid):
            report.running += 1
            print(f"running    {rec.run_name} (process {rec.pid} is still training it): left as it is")
            continue
        parent = parents.get(rec.parent_run_id or "", rec.parent_run_id)
        by_store.setdefault((target, rec.experiment), []).append((folder, rec, parent))
    for (target, experiment), items in by_store.items():
        client, experiment_id = stores.get(target, experiment)
        for folder, rec, parent in _create_many(items, client, experiment_id, (target, experiment), report):
            with _locked(folder):  # two syncs of one record at once would both create its run
                _sync_run(folder, rec, parent, client, experiment_id, report)
    for folder, sweep in sweeps:
        target = uri or recorded_uri(sweep.tracking_uri)
        if sweep.status == "RUNNING" and process_gone(sweep.host, sweep.pid):
            sweep.status = "KILLED"  # its command died without ending it (SIGKILL, a crash)
            sweep.save(folder)
        parent = parents.get(sweep.parent_run_id or "")
        if parent and sweep.status in ("FINISHED", "FAILED", "KILLED") and target and sweep.experiment:
            client, _ = stores.get(target, sweep.experiment)
            if client.get_run(parent).info.status != sweep.status:
                client.set_terminated(parent, sweep.status)
                print(f"ended      sweep run {parent} {sweep.status}")
    return report


BULK_CHUNK = 128  # records a transaction on the bulk path (each record's lock is held meanwhile)


def _create_many(
    items: list[tuple[Path, RunInfo, str | None]],
    client: Any,
    experiment_id: str,
    store: tuple[str, str],
    report: SyncReport,
) -> list[tuple[Path, RunInfo, str | None]]:
    """Create at once, many to a transaction (:mod:`gdexp.tracking.bulk`), the runs of the records
    the store has no trace of: what the run-by-run sync would create, without its dozen store
    calls a run. The records left (in the store already, every one where the store takes no bulk
    writes, or a run whose write failed: the run-by-run sync says why) are returned.

    A pipeline: a writer process of its own writes one chunk (the database's time, about half
    the whole) while this process reads the next chunk's records and puts the last one's files
    in place. Each record's lock is held from the lookup of its run until its files are in place."""
    uri, experiment = store
    bulk, _ = open_bulk(client, uri, experiment_id) if len(items) > 1 else (None, None)
    if bulk is None:
        return items
    finished = finished_runs(client, experiment_id)
    # Records whose run the store has (a sync done before): looked up once here, not beside the
    # writer (a reader of SQLite waits out each write). The writer looks each chunk up again
    # under its locks, for a sync running beside this one.
    ids = [rec.record_id for _, rec, _ in items]
    present = set().union(*(bulk.tagged("gdexp.record_id", ids[i : i + 500]) for i in range(0, len(ids), 500)))
    rest: list[tuple[Path, RunInfo, str | None]] = []
    writer = Tracker(uri, experiment)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="gdexp-sync-writer") as feeding, ExitStack() as held:
            landing = None
            for i in range(0, len(items), BULK_CHUNK):
                chunk = items[i : i + BULK_CHUNK]
                locks = held.enter_context(ExitStack())
                for folder, _, _ in chunk:
                    locks.enter_context(_locked(folder))
                new: list[tuple[Path, RunInfo, str | None, p.FinishedRun]] = []
                for folder, rec, parent in chunk:
                    config = rec.tags.get("gdexp.config_hash") if rec.status == "FINISHED" else None
                    if rec.record_id in present:
                        rest.append((folder, rec, parent))
                    elif config and config in finished:
                        _duplicate(rec, finished[config], report)
                    else:
                        new.append((folder, rec, parent, _whole_run(folder, rec, parent, report)))
                        if config:
                            finished[config] = "(this sync)"
                writing = feeding.submit(writer.write_runs, [run for *_, run in new], unless="gdexp.record_id")
                if landing is not None:
                    _land(*landing, finished, rest, uri, report)
                landing = (locks, new, writing)
            if landing is not None:
                _land(*landing, finished, rest, uri, report)
    finally:
        writer.close()
    return rest


def _land(
    locks: ExitStack,
    new: list[tuple[Path, RunInfo, str | None, p.FinishedRun]],
    writing: Future,
    finished: dict[str, str],
    rest: list[tuple[Path, RunInfo, str | None]],
    uri: str,
    report: SyncReport,
) -> None:
    """A written chunk's files put in place, then its records' locks let go; the records whose
    run another sync made meanwhile, or whose write failed, go on to the run-by-run sync."""
    with locks:
        out: p.WrittenRuns = writing.result()
        for (folder, rec, parent, run), where in zip(new, out.written):
            if where is None:
                rest.append((folder, rec, parent))
                continue
            if rec.tags.get("gdexp.config_hash") and run.status == "FINISHED":
                finished[rec.tags["gdexp.config_hash"]] = where.run_id
            put_artifacts(where.artifact_uri, [folder / n for n in ARTIFACTS if (folder / n).is_file()], uri)
            report.created += 1
            print(f"created    {rec.run_name} ({len(run.metrics)} metric points added) -> {where.run_id}")


def _whole_run(folder: Path, rec: RunInfo, parent: str | None, report: SyncReport) -> p.FinishedRun:
    """A record as the run the run-by-run sync would make of it: its tags (under its parent),
    params, every curve and summary metric, and its status (FAILED where its job died)."""
    problems: list[str] = []
    metrics = recorded_curves(folder, rec.curve_points, problems) + list(rec.metrics)
    for problem in problems:
        print(f"skipped    {problem}")
    report.skipped.extend(problems)
    tags = {**rec.tags, "gdexp.record_id": rec.record_id}
    if parent:
        tags["mlflow.parentRunId"] = tags["gdexp.sweep"] = parent
    status = rec.status if rec.status != "RUNNING" else "FAILED"
    return p.FinishedRun(rec.run_name, tags, rec.params, metrics, status, int(folder.stat().st_mtime * 1000))


def _duplicate(rec: RunInfo, twin: str, report: SyncReport) -> None:
    report.duplicates += 1
    print(f"duplicate  {rec.run_name}: its configuration is FINISHED already as run {twin}; not synced")


def _locked(folder: Path) -> AbstractContextManager[None]:
    return file_lock(folder / ".sync.lock")


def _finished_twin(client: Any, experiment_id: str, rec: RunInfo, run_id: str | None) -> str | None:
    """Another FINISHED run of the same configuration in the experiment (a resumed sweep ran it
    again), which a FINISHED record must not duplicate."""
    if rec.status != "FINISHED" or "gdexp.config_hash" not in rec.tags:
        return None
    twin = find_finished(client, experiment_id, rec.tags["gdexp.config_hash"])
    return twin if twin != run_id else None


def _sync_run(
    folder: Path, rec: RunInfo, parent: str | None, client: Any, experiment_id: str, report: SyncReport
) -> None:
    found = client.search_runs([experiment_id], f"tags.`gdexp.record_id` = '{rec.record_id}'", max_results=1)
    twin = _finished_twin(client, experiment_id, rec, found[0].info.run_id if found else None)
    if twin and (not found or found[0].info.status != "FINISHED"):
        if found and found[0].info.status == "RUNNING":  # its writer was killed before ending it
            client.set_terminated(found[0].info.run_id, "KILLED")
        _duplicate(rec, twin, report)
        return
    tags = dict(rec.tags)
    if parent:
        tags["mlflow.parentRunId"] = tags["gdexp.sweep"] = parent
    changed = False
    if found:
        run = found[0]
    else:
        run = client.create_run(
            experiment_id, run_name=rec.run_name, tags=tags, start_time=int(folder.stat().st_mtime * 1000)
        )
        log_whole(client, run.info.run_id, params=rec.params)
        changed = True
    run_id = run.info.run_id

    problems: list[str] = []
    wanted = recorded_curves(folder, rec.curve_points, problems) + list(rec.metrics)
    for problem in problems:
        print(f"skipped    {problem}")
    report.skipped.extend(problems)
    have: dict[str, set[int]] = {}
    missing = []
    for name, value, step in wanted:
        if name not in have:
            have[name] = {m.step for m in client.get_metric_history(run_id, name)} if found else set()
        if step not in have[name]:
            missing.append((name, value, step))
    stored_tags = run.data.tags if found else tags
    new_tags = {k: v for k, v in tags.items() if stored_tags.get(k) != v}
    log_whole(client, run_id, metrics=missing, tags=new_tags)
    present = {a.path for a in client.list_artifacts(run_id)} if found else set()
    for name in ARTIFACTS:
        if name not in present and (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name))
            changed = True
    status = rec.status if rec.status != "RUNNING" else "FAILED"  # its job died
    if client.get_run(run_id).info.status != status:
        client.set_terminated(run_id, status)
        changed = True
    changed = changed or bool(missing) or bool(new_tags)
    what = "created" if not found else "completed" if changed else "up to date"
    if what == "created":
        report.created += 1
    elif what == "completed":
        report.completed += 1
    else:
        report.up_to_date += 1
    print(f"{what:10s} {rec.run_name} ({len(missing)} metric points added) -> {run_id}")
