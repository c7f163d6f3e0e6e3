"""Which study a search runs, and who runs it now.

A study is named by what it searches (:func:`gdexp.sweeps.search.study_name`); a ``uid`` given
when gdexp makes it tells a study made again under that name (its ``optuna.db`` deleted) from the
one before. One command runs a study at a time: it claims the study (host, pid, and the pid's start
time, so that a reused pid is not mistaken for it) under the store's sweep lock, and a second
command is refused in one line before any run; a killed command's claim is found dead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gdexp.sweeps.search import SearchError

if TYPE_CHECKING:
    from optuna import Study

UID = "gdexp.uid"  # a study's identity beside its name, given when gdexp makes it


def study_uid(study: Study) -> str:
    """The study's uid; one is given to a study with no trials yet. A study with trials and none
    (made by an older gdexp) keeps none: its key is its name's, as then."""
    import uuid

    uid = str(study.user_attrs.get(UID, ""))
    if not uid and not study.get_trials(deepcopy=False):
        uid = uuid.uuid4().hex
        study.set_user_attr(UID, uid)
    return uid


OWNER = "gdexp.owner"  # the command running the study now: host, pid and the pid's start time


def _this_process() -> str:
    import os
    import socket

    return f"{socket.gethostname()} {os.getpid()} {_started(os.getpid())}"


def _started(pid: int) -> str:
    """A process's start time (clock ticks since boot): with its pid, one process, not a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _running(owner: str) -> bool:
    """Whether the command ``owner`` names may still run: on another machine nobody here can tell."""
    import socket

    from gdexp.tracking.record import process_gone

    host, pid, started = ([*owner.split(" "), "", "", ""])[:3]
    if not pid.isdigit():
        return False
    if host != socket.gethostname():
        return True
    return not process_gone(host, int(pid)) and _started(int(pid)) == started


def claim(study: Study) -> None:
    """Make this command the study's one runner: two commands asking one study's trials at once
    would each ask the trials still to do, and the study would end with more than ``n_trials``.
    A SearchError, before any run is made, when another command runs it now. Called with the
    store's sweep lock held (see :meth:`SweepRun.open`)."""
    owner = str(study.user_attrs.get(OWNER, ""))
    if owner and owner != _this_process() and _running(owner):
        host, pid = owner.split(" ")[:2]
        raise SearchError(
            "hydra.sweeper.study_name",
            study.study_name,
            "a study no other command is running; wait for it, or name another study",
            f"the command with pid {pid} on {host} is running this study now",
        )
    study.set_user_attr(OWNER, _this_process())


def release(study: Study) -> None:
    """The study is no longer run by this command (a killed one's claim is found dead)."""
    if study.user_attrs.get(OWNER) == _this_process():
        study.set_user_attr(OWNER, "")
