"""What a run saw, epoch by epoch: the loss of each epoch and the parameters after it.

Step convention (the seeds'): epoch ``e`` is 1-based; ``loss[e]`` is the mean squared error of
epoch e's forward pass, before its update; ``params[e]`` are the parameters after epoch e's update,
and ``params[0]`` the initial ones.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM during a run; a BaseException so that no ``except Exception`` eats it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple[type, tuple[int]]:  # a launcher's worker may send it back pickled
        return (RunInterrupted, (self.signum,))


@dataclass
class StopSignal:
    """A SIGINT or SIGTERM received during training, set by a signal handler and acted on between
    batches (never in the middle of a write): by a :class:`History`, or by a whole population."""

    signum: int | None = None

    @property
    def received(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`RunInterrupted` when a signal has arrived."""
        if self.signum is not None:
            raise RunInterrupted(self.signum)


@contextmanager
def interrupts_stop(stop: StopSignal) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop``, which training acts on at the next batch boundary (a second
    signal raises at once), so the history so far is recorded and no write is cut in half."""

    def handler(signum: int, frame: Any) -> None:
        if stop.received:
            raise RunInterrupted(signum)
        stop.signum = signum

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals to whoever owns them
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def param_names(n_features: int, n_targets: int, bias: bool) -> list[str]:
    """Metric names of the parameters, in the order :meth:`History.end_epoch` takes them."""
    if n_targets == 1:
        names = ["w"] if n_features == 1 else [f"w_{i}" for i in range(n_features)]
        return names + (["b"] if bias else [])
    names = [f"w_{t}_{i}" for t in range(n_targets) for i in range(n_features)]
    return names + ([f"b_{t}" for t in range(n_targets)] if bias else [])


class History:
    """Per-epoch record of one run, with divergence detection and periodic flushing.

    ``on_flush(first_step)`` is called at most every ``flush_seconds`` with the first step not
    yet flushed, so a tracker can stream the curves in chunks instead of one write per epoch.
    """

    def __init__(
        self,
        names: list[str],
        initial: list[float],
        diverge_above: float,
        on_flush: Callable[[int], None] | None = None,
        flush_seconds: float = 1.0,
        stop: StopSignal | None = None,
    ):
        self.param_names = names
        self.params: list[list[float]] = [list(initial)]
        self.loss: list[float] = []
        self.diverged = False
        self.pruned = False  # stopped by a search's pruner (gdexp.sweeps.pruning)
        self.diverge_above = diverge_above
        self._batch_sum = 0.0
        self._batches = 0
        self.on_flush = on_flush
        self._flush_seconds = flush_seconds
        self._flushed = 0  # first step not yet handed to on_flush
        self._last_flush = time.monotonic()
        self.stop = stop or StopSignal()

    @classmethod
    def recorded(
        cls, names: list[str], loss: list[float], params: list[list[float]], diverged: bool, pruned: bool = False
    ) -> History:
        """A history recorded elsewhere (a population's member), for the same summaries and records."""
        history = cls(names, params[0], math.inf)
        history.loss, history.params, history.diverged, history.pruned = loss, params, diverged, pruned
        return history

    @property
    def epochs(self) -> int:
        return len(self.loss)

    def batch_loss(self, loss: float) -> bool:
        """Record one batch's MSE; False when it diverged and its update must be skipped."""
        self.stop.check()
        self._batch_sum += loss
        self._batches += 1
        if not (math.isfinite(loss) and loss <= self.diverge_above):
            self.diverged = True
        return not self.diverged

    def end_epoch(self, params: list[float]) -> bool:
        """Close the epoch with the parameters after its updates; True when training must stop."""
        self.loss.append(self._batch_sum / self._batches if self._batches else math.nan)
        self.params.append(list(params))
        self._batch_sum, self._batches = 0.0, 0
        self.stop.check()
        if self.on_flush is not None and time.monotonic() - self._last_flush >= self._flush_seconds:
            self.flush()
        return self.diverged or self.pruned

    def flush(self) -> None:
        """Hand every step recorded since the last flush to ``on_flush``."""
        if self.on_flush is not None and self._flushed <= self.epochs:
            self.on_flush(self._flushed)
            self._flushed = self.epochs + 1
        self._last_flush = time.monotonic()

    def metrics(self, first_step: int = 0) -> list[tuple[str, float, int]]:
        """``(key, value, step)`` triples of every curve from ``first_step`` on."""
        out = []
        for step in range(first_step, self.epochs + 1):
            if step > 0:
                out.append(("loss", self.loss[step - 1], step))
            out.extend(zip(self.param_names, self.params[step], [step] * len(self.param_names)))
        return out

    def epochs_to_converge(self, tol: float) -> int | None:
        """The first epoch whose loss is at most ``tol``."""
        return next((e for e, loss in enumerate(self.loss, 1) if loss <= tol), None)
