"""What the main process and its MLflow writer process say to each other.

One dataclass per operation, sent pickled over a socket pair (:mod:`gdexp.tracking.client` sends,
:mod:`gdexp.tracking.writer` handles each with one method). Operations marked ``answered`` get a
:class:`Reply`; the others are fire-and-forget, and a failure among them is reported with the
next reply. Only plain values cross: no MLflow or torch objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

MetricRow = tuple[str, float, int]  # (key, value, step)


WRITER_URI = "GDEXP_WRITER_URI"  # the environment variable a writer process takes its store's URI from


@dataclass(frozen=True)
class Op:
    answered: ClassVar[bool] = False


@dataclass(frozen=True)
class DatasetSpec:
    """A run's training data as MLflow's dataset input: what the UI's Dataset column shows."""

    name: str
    digest: str
    source_type: str
    source: str  # JSON
    schema: str  # JSON
    profile: str  # JSON


@dataclass(frozen=True)
class StartRun(Op):
    """Create a RUNNING run with its tags, params and dataset; answers its run id."""

    answered: ClassVar[bool] = True
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    start_time: int | None = None  # ms since the epoch: when the job started, not when its run did
    dataset: DatasetSpec | None = None


@dataclass(frozen=True)
class LogMetrics(Op):
    run_id: str
    rows: list[MetricRow]


@dataclass(frozen=True)
class SetTags(Op):
    run_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class LogArtifact(Op):
    run_id: str
    path: str
    artifact_path: str | None = None


@dataclass(frozen=True)
class DrawLossCurve(Op):
    """Draw the run's loss curve into ``path`` and log it."""

    run_id: str
    loss: list[float]
    path: str
    title: str


@dataclass(frozen=True)
class EndRun(Op):
    """End the run once every write queued before it is in the store."""

    answered: ClassVar[bool] = True
    run_id: str
    status: str


@dataclass(frozen=True)
class FindFinished(Op):
    """Answers the id of a FINISHED run with this config hash, or None."""

    answered: ClassVar[bool] = True
    config_hash: str


@dataclass(frozen=True)
class RunTags(Op):
    """Answers a run's tags."""

    answered: ClassVar[bool] = True
    run_id: str


@dataclass(frozen=True)
class FindRuns(Op):
    """Answers the ids of the experiment's runs that match an MLflow filter, newest first."""

    answered: ClassVar[bool] = True
    filter: str


@dataclass(frozen=True)
class ReopenRun(Op):
    """A run that ended goes on (a study's parent, continued): RUNNING again."""

    answered: ClassVar[bool] = True
    run_id: str


@dataclass(frozen=True)
class FinishedRuns(Op):
    """Answers config hash -> FINISHED run id for the whole experiment."""

    answered: ClassVar[bool] = True


@dataclass(frozen=True)
class FinishedRun:
    """A run that has ended, written whole: create, one ``log_batch`` per 1000 entries, end."""

    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[MetricRow]
    status: str
    start_time: int | None = None  # ms since the epoch
    end_time: int | None = None
    dataset: DatasetSpec | None = None


@dataclass(frozen=True)
class RunFiles:
    """A written run's files: its loss curve to draw, and files to put in its artifact location."""

    name: str
    artifacts: list[str]
    loss: list[float]
    loss_curve: str  # where to draw loss_curve.png; "" for none (a batched member, by default)
    record: str = ""  # the job directory whose run.json gets the run's id once the store has the run
    artifact_uri: str = ""
    run_id: str = ""


@dataclass(frozen=True)
class Written:
    """Where a :class:`FinishedRun` went."""

    run_id: str
    artifact_uri: str


@dataclass(frozen=True)
class WriteRuns(Op):
    """Answers a :class:`Written` (or None where it failed) per run, and the failures. With
    ``unless``, a tag key: the runs whose value of it a live run of the experiment holds already
    are not written (None, their places in ``WrittenRuns.present``)."""

    answered: ClassVar[bool] = True
    runs: list[FinishedRun]
    unless: str = ""


@dataclass(frozen=True)
class StoreFiles(Op):
    """Answers the failures."""

    answered: ClassVar[bool] = True
    files: list[RunFiles]


@dataclass(frozen=True)
class Close(Op):
    """Stop the writer; runs it opened and nobody ended are ended FAILED."""


@dataclass(frozen=True)
class Ready:
    """The writer's first message: the store is open (``experiment_id``) or not (``error``)."""

    experiment_id: str | None = None
    error: str | None = None
    note: str | None = None  # said once by the main process: why finished runs take the client path


@dataclass(frozen=True)
class Reply:
    """The answer to an ``answered`` operation; ``failure`` reports an earlier unanswered one."""

    value: Any = None
    error: str | None = None
    failure: str | None = None


@dataclass(frozen=True)
class WrittenRuns:
    written: list[Written | None] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    present: list[int] = field(default_factory=list)  # runs not written: the store has them (``unless``)
