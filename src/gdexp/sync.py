"""``python -m gdexp.sync PATH`` (``gdexp-sync``): replay on-disk run records into a store that
lacks them. The work is :func:`gdexp.tracking.sync.sync`; this is its command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdexp.tracking.record import find_records
from gdexp.tracking.store import TrackingError
from gdexp.tracking.sync import sync


def main(argv: list[str] | None = None) -> None:
    """The ``gdexp-sync`` console script."""
    parser = argparse.ArgumentParser(
        prog="gdexp-sync", description="Replay into the tracking store every run record it lacks."
    )
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
        report = sync(args.path, args.tracking_uri)
    except TrackingError as err:
        print(f"gdexp-sync: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(report.counts())


if __name__ == "__main__":
    main()
