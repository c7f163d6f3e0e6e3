"""What a run and a sweep print: the summary, the seeds' table, links, progress on a terminal.

Progress bars are drawn only when stderr is a terminal: CI logs and Slurm's output files get the
summary lines and nothing else.
"""

from __future__ import annotations

import os
import string
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gdexp.config import ConfigError
from gdexp.outcome import Outcome
from gdexp.tracking.links import run_link, ui_base
from gdexp.training.history import History

TABLE_FIELDS = ("epoch", "epoch0", "loss")


def table_format(fmt: str | None, names: list[str]) -> str:
    """A table row's format: ``fmt``, or the seeds' ``epoch {epoch}: w = {w:.3f}, loss = {loss:.3f}``
    with every parameter named."""
    if fmt is not None:
        return fmt
    params = ", ".join(f"{n} = {{{n}:.3f}}" for n in names)
    return f"epoch {{epoch}}: {params}, loss = {{loss:.3f}}"


def check_table_format(fmt: str | None, names: list[str]) -> None:
    """A bad ``print_format`` is a :class:`ConfigError` before training, not an error after it."""
    if fmt is None:
        return
    allowed = f"a format string of {{epoch}}, {{epoch0}}, {{loss}} and {', '.join('{' + n + '}' for n in names)}"
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None]
        unknown = [f for f in fields if f.split(".")[0].split("[")[0] not in (*TABLE_FIELDS, *names)]
        if unknown:
            raise ConfigError("print_format", fmt, allowed, f"no field {unknown[0]!r}")
        fmt.format(epoch=1, epoch0=0, loss=1.0, **{n: 1.0 for n in names})
    except ConfigError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError("print_format", fmt, allowed, str(err)) from None


def table_rows(history: History, every: int, fmt: str | None) -> list[str]:
    """The seeds' table: rows at epochs 1, 1 + every, 1 + 2 every, ... (their ``epoch % every == 0``
    on a 0-based count); the loss of epoch e and the parameters after it."""
    row = table_format(fmt, history.param_names)
    out = []
    for e in range(1, history.epochs + 1, every):
        values = dict(zip(history.param_names, (float(v) for v in history.params[e])))
        out.append(row.format(epoch=e, epoch0=e - 1, loss=float(history.loss[e - 1]), **values))
    return out


def shown_path(path: str | Path) -> str:
    """A path as a user types it from here: relative when it lies below the working directory."""
    absolute = Path(path).resolve()
    try:
        relative = absolute.relative_to(Path.cwd().resolve())
    except ValueError:
        return str(absolute)
    return str(relative) or "."


def say_skipped(name: str, run_id: str) -> None:
    """Say that ``tracking.skip_finished`` found a job's configuration FINISHED already."""
    print(f"gdexp [{name}] skipped: finished already as MLflow run {run_id}")


def print_summary(cfg: DictConfig, outcome: Outcome, name: str, tracker: Any | None) -> None:
    """A few lines a person reads after a run (the seeds' table between the predictions when
    ``print_every`` asks for it), ending with the seeds' f(5)."""
    h = outcome.history
    first = f"{h.loss[0]:.6g}" if h.loss else "-"
    params = ", ".join(f"{n} = {v:.4f}" for n, v in zip(h.param_names, h.params[-1]))
    print(
        f"gdexp [{name}] {cfg.engine.value} · optimizer={cfg.optimizer.name} lr={cfg.lr:g} · "
        f"{h.epochs}/{cfg.epochs} epochs · {outcome.status}"
    )
    final = outcome.summary.get("final_loss", float("nan"))
    print(
        f"  loss {first} -> {h.loss[-1] if h.loss else float('nan'):.6g} (final {final:.6g})"
        f" · {params} · distance to optimum {outcome.summary.get('dist_to_opt', float('nan')):.3g}"
    )
    print(f"  job directory: {shown_path(outcome.output_dir)} (config.yaml, history.csv, loss_curve.png)")
    if tracker is not None and outcome.run_id is not None:
        print(f"  MLflow run {outcome.run_id} · experiment {tracker.experiment} · {tracker.shown_uri}")
        link = run_link(ui_base(tracker.uri), tracker.ready(), outcome.run_id)
        local = not tracker.uri.startswith(("http://", "https://"))
        print(f"  open it: {link}" + (" (with `gdexp-ui` running)" if local else ""))
    print(f"Prediction before training: {outcome.prediction(after=False)}")
    if cfg.print_every:
        for row in table_rows(h, int(cfg.print_every), cfg.print_format):
            print(row)
    print(f"Prediction after training: {outcome.prediction()}")


def interactive() -> bool:
    """Whether progress bars are wanted: stderr is a terminal and nobody said otherwise."""
    return sys.stderr.isatty() and os.environ.get("GDEXP_PROGRESS", "1") != "0"


@contextmanager
def progress(total: int, description: str, unit: str = "epoch") -> Iterator[Any]:
    """A progress bar on a terminal (``update(n)``); a silent stand-in anywhere else."""
    if not interactive() or total <= 0:
        yield _Silent()
        return
    import shutil

    from tqdm import tqdm  # text only: in Jupyter too, where widgets may be missing

    # A terminal that reports no size (a pty without one) makes tqdm draw nothing: say one.
    size = shutil.get_terminal_size()
    shape = {"ncols": min(size.columns or 100, 120), "nrows": size.lines or 24}
    bar = tqdm(total=total, desc=description[:40], unit=unit, leave=False, mininterval=0.5, **shape)
    try:
        yield bar
    finally:
        bar.close()


class _Silent:
    def update(self, n: int = 1) -> None:
        pass
