"""A record's files written whole or not at all, and the one field a writer process changes in one
(kept apart from :mod:`gdexp.tracking.record`, whose records import the training code, so that the
writer processes need neither torch nor Hydra)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gdexp.errors import UserError

RECORD_FILE = "run.json"


class DamagedRecord(UserError, ValueError):
    """A record file that cannot be read back: named, skipped, never fatal to the others."""


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a reader (or a kill) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value, indent=2, default=float))


def read_record(path: Path) -> dict[str, Any]:
    """A record file's JSON object; a :class:`DamagedRecord` if it is not one."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DamagedRecord(f"{path}: not readable JSON ({err})") from None
    if not isinstance(raw, dict):
        raise DamagedRecord(f"{path}: not a run record (a JSON object)")
    return raw


def set_run_id(folder: Path, run_id: str) -> None:
    """Note in a record the MLflow run that holds it (written once the store has it): the one
    field changed, the rest kept as its job wrote it moments ago."""
    raw = read_record(folder / RECORD_FILE)
    raw["mlflow_run_id"] = run_id
    write_json(folder / RECORD_FILE, raw)
