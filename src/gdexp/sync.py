"""``python -m gdexp.sync PATH``: replay into the tracking store every run record it lacks.

PATH is a run's job directory or a sweep directory. Each ``run.json`` (see :mod:`gdexp.record`)
is matched to the store by its ``gdexp.record_id`` tag: a missing run is created under its sweep's
parent run, an incomplete one gets the metric points, tags and artifacts it lacks and its final
status. A record left RUNNING belongs to a job that died, and is ended FAILED. Running it twice
changes nothing the second time.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from gdexp.record import find_records
from gdexp.tracking import SWEEP_FILE, TrackingError, _connect, log_whole

ARTIFACTS = ("config.yaml", "history.csv", "loss_curve.png")


def _curves(folder: Path, curve_points: int = 0) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of every curve in a job directory's history.csv; for a run of a
    batched sweep, on the even grid of ``curve_points`` steps its MLflow curves were written on."""
    from gdexp.batched import thin_steps

    with (folder / "history.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    last = int(lines[-1]["epoch"]) if lines else 0
    keep = {name: set(thin_steps(first, last, curve_points).tolist()) for name, first in (("loss", 1), ("", 0))}
    rows = []
    for line in lines:
        step = int(line["epoch"])
        for key, value in line.items():
            if key == "epoch" or value == "" or key.startswith("pred_"):
                continue
            if step in keep["loss" if key == "loss" else ""]:
                rows.append((key, float(value), step))
    return rows


def sync(path: Path, uri: str | None = None) -> dict[str, int]:
    """Replay the records at or below ``path``; counts of runs created, completed, up to date."""

    counts = {"created": 0, "completed": 0, "up to date": 0}
    stores: dict[tuple[str, str], tuple] = {}
    for record_path in find_records(path):
        rec = json.loads(record_path.read_text())
        folder = record_path.parent
        target = uri or rec["tracking_uri"]
        if target is None:
            continue  # tracking was off for this run
        key = (target, rec["experiment"])
        if key not in stores:
            stores[key] = _connect(*key)
        client, experiment_id = stores[key]
        found = client.search_runs([experiment_id], f"tags.`gdexp.record_id` = '{rec['record_id']}'", max_results=1)
        tags = dict(rec["tags"])
        if rec.get("parent_run_id"):
            tags["mlflow.parentRunId"] = rec["parent_run_id"]
        changed = False
        if found:
            run = found[0]
        else:
            run = client.create_run(
                experiment_id, run_name=rec["run_name"], tags=tags, start_time=int(folder.stat().st_mtime * 1000)
            )
            log_whole(client, run.info.run_id, params=rec["params"])
            changed = True
        run_id = run.info.run_id

        wanted = _curves(folder, rec.get("curve_points", 0)) + [tuple(m) for m in rec.get("metrics", [])]
        have: dict[str, set[int]] = {}
        missing = []
        for name, value, step in wanted:
            if name not in have:
                have[name] = {m.step for m in client.get_metric_history(run_id, name)} if found else set()
            if step not in have[name]:
                missing.append((name, value, step))
        stored_tags = run.data.tags if found else {}
        new_tags = {k: v for k, v in rec["tags"].items() if stored_tags.get(k) != v}
        log_whole(client, run_id, metrics=missing, tags=new_tags)
        present = {a.path for a in client.list_artifacts(run_id)} if found else set()
        for name in ARTIFACTS:
            if name not in present and (folder / name).is_file():
                client.log_artifact(run_id, str(folder / name))
                changed = True
        status = rec["status"] if rec["status"] != "RUNNING" else "FAILED"  # its job died
        if client.get_run(run_id).info.status != status:
            client.set_terminated(run_id, status)
            changed = True
        changed = changed or bool(missing) or bool(new_tags)
        counts["created" if not found else "completed" if changed else "up to date"] += 1
        print(
            f"{'created' if not found else 'completed' if changed else 'up to date':10s} {rec['run_name']}"
            f" ({len(missing)} metric points added) -> {run_id}"
        )
    for sweep_file in [path / SWEEP_FILE] if (path / SWEEP_FILE).is_file() else path.rglob(SWEEP_FILE):
        _end_parent(json.loads(sweep_file.read_text()), uri, stores)
    return counts


def _end_parent(sweep: dict, uri: str | None, stores: dict) -> None:
    """A sweep whose end the store missed: its parent run is ended as the sweep record says."""
    if not sweep.get("parent_run_id") or sweep.get("status") != "FINISHED":
        return
    key = (uri or sweep["tracking_uri"], sweep["experiment"])
    if key not in stores:
        stores[key] = _connect(*key)
    client = stores[key][0]
    if client.get_run(sweep["parent_run_id"]).info.status != "FINISHED":
        client.set_terminated(sweep["parent_run_id"], "FINISHED")
        print(f"ended      sweep run {sweep['parent_run_id']} FINISHED")


def main(argv: list[str] | None = None) -> None:
    """The ``gdexp-sync`` console script."""
    parser = argparse.ArgumentParser(prog="gdexp-sync", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run's job directory or a sweep directory")
    parser.add_argument("--tracking-uri", default=None, help="replay into this store instead of the recorded one")
    args = parser.parse_args(argv)
    if not find_records(args.path):
        print(
            f"gdexp-sync: error: path={args.path}: holds no run record (run.json); allowed: a job or sweep "
            "directory of gdexp.run",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        counts = sync(args.path, args.tracking_uri)
    except TrackingError as err:
        print(f"gdexp-sync: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(", ".join(f"{n} {what}" for what, n in counts.items()))


if __name__ == "__main__":
    from gdexp.sync import main as _main

    _main()
