"""What a run is called and where its code came from: run names and MLflow's source tags."""

from __future__ import annotations

import getpass
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from gdexp.tracking.uri import mask_text

PACKAGE_DIR = Path(__file__).resolve().parents[1]
RUN_NAME_MOST = 250  # MLflow's runs.name column: SQLite takes longer names, PostgreSQL and MySQL refuse them


def fit_run_name(name: str) -> str:
    """A run name every database of MLflow's takes: at most 250 characters, a longer one cut with
    an ellipsis (a 50-value sweep's parent name is longer; its tags keep every override)."""
    return name if len(name) <= RUN_NAME_MOST else name[: RUN_NAME_MOST - 1] + "\u2026"


_GIT_COMMIT: list[str | None] = []


def git_commit() -> str | None:
    """The commit of the gdexp checkout the code runs from, when it is one."""
    if not _GIT_COMMIT:
        try:
            out = subprocess.run(
                ["git", "-C", str(PACKAGE_DIR), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            )
            _GIT_COMMIT.append(out.stdout.strip() if out.returncode == 0 else None)
        except (OSError, subprocess.SubprocessError):
            _GIT_COMMIT.append(None)
    return _GIT_COMMIT[0]


def source_tags() -> dict[str, str]:
    """MLflow's own source tags, which the fluent API would set."""
    tags = {"mlflow.source.name": "gdexp.run", "mlflow.source.type": "LOCAL"}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except Exception:
        pass
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def cluster_tags() -> dict[str, str]:
    """Which Slurm job ran the run, on which node, after how many requeues (none outside Slurm)."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    array = env.get("SLURM_ARRAY_JOB_ID")
    tags = {"gdexp.slurm_job": f"{array}_{env.get('SLURM_ARRAY_TASK_ID')}" if array else env["SLURM_JOB_ID"]}
    if env.get("SLURMD_NODENAME"):
        tags["gdexp.slurm_node"] = env["SLURMD_NODENAME"]
    if env.get("SLURM_RESTART_COUNT", "0") != "0":
        tags["gdexp.slurm_restarts"] = env["SLURM_RESTART_COUNT"]
    return tags


def shown_overrides(overrides: list[str]) -> list[str]:
    """The overrides a run's name and tags show: tracking and Hydra settings left out (a tracking
    URI may hold credentials), swept booleans as the user typed them."""
    shown = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if not key.startswith(("tracking.", "hydra.")):
            # Hydra writes swept booleans back as True/False; show them as the user typed them.
            shown.append(f"{key}={value.lower() if value in ('True', 'False') else value}")
    return shown


def masked_overrides(overrides: list[str]) -> list[str]:
    """The overrides with any credentials in their values masked (``tracking.uri=...``)."""
    return [mask_text(override) for override in overrides]


def run_name(overrides: list[str]) -> str:
    """A run's name: its overrides in command-line order, tracking settings left out."""
    return ",".join(shown_overrides(overrides)) or "default"


def run_tags(
    plain: dict[str, Any], config_hash: str, overrides: list[str], output_dir: Path, parent: str | None
) -> dict[str, str]:
    """A run's tags as it starts (``gdexp.status`` comes at its end); ``config_hash`` is
    :func:`gdexp.config.config_hash` of ``plain``."""
    tags = {
        **source_tags(),
        **cluster_tags(),
        "gdexp.overrides": " ".join(masked_overrides(overrides)),
        "gdexp.engine": plain["engine"],
        "gdexp.config_hash": config_hash,
        "gdexp.output_dir": str(output_dir),
        "gdexp.record_id": uuid.uuid4().hex,
    }
    if parent:
        tags["gdexp.sweep"] = tags["mlflow.parentRunId"] = parent
    return tags
