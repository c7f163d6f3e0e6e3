"""``python -m gdexp.sync PATH`` (``gdexp-sync``): replay on-disk run records into a store that
lacks them. The work is :func:`gdexp.tracking.sync.sync`; this is its command line."""

from __future__ import annotations

from pathlib import Path

from gdexp.commandline import OneLineParser, fail, user_errors
from gdexp.tracking.record import find_records
from gdexp.tracking.sync import sync


def parser() -> OneLineParser:
    p = OneLineParser(prog="gdexp-sync", description="Replay into the tracking store every run record it lacks.")
    p.add_argument("path", type=Path, help="a run's job directory or a sweep directory")
    p.add_argument("--tracking-uri", default=None, help="replay into this store instead of the recorded one")
    return p


def main(argv: list[str] | None = None) -> None:
    """The ``gdexp-sync`` console script."""
    args = parser().parse_args(argv)
    if not find_records(args.path):
        fail(
            "gdexp-sync",
            f"path={args.path}: holds no run record (run.json); allowed: a job or sweep directory of gdexp.run",
        )
    with user_errors("gdexp-sync"):
        report = sync(args.path, args.tracking_uri)
    print(report.counts())


if __name__ == "__main__":
    main()
