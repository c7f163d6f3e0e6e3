"""Where runs are tracked, and what of it may be shown: the tracking URI and its credentials.

A reader of a URI never imports a store (as MLflow keeps ``tracking/_tracking_service/utils.py``
apart from its stores): :func:`resolve_uri` says which store a process writes to,
:class:`Target` carries it (resolved once, with its experiment), and :func:`masked` and
:func:`mask_text` make any URI or text safe to print or keep. Imports nothing heavy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gdexp.errors import UserError

TRACKING_ALLOWED = "a reachable MLflow tracking URI (sqlite:///path.db, http://host:port, postgresql://...)"
# Where MLflow's own client takes a server's credentials from: their values are masked in any text.
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be used: one line, reported before any training."""


def resolve_uri(uri: str | None, launch_dir: Path) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the launch directory; a
    relative SQLite path is made absolute so that jobs never split the store, and a bare
    ``postgresql://`` gets the psycopg2 driver."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{launch_dir / 'mlflow.db'}"
    if uri.startswith(("postgresql://", "postgres://")):
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; gdexp ships psycopg2.
        uri = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///") :]
        if path and path != ":memory:":
            uri = f"sqlite:///{(launch_dir / path).resolve()}"
    return uri


@dataclass(frozen=True)
class Target:
    """A store and an experiment in it: where a run or a sweep is tracked. Resolved once, at the
    edge (:meth:`of`), then carried; it pickles, so it crosses into launcher workers as it is."""

    uri: str
    experiment: str

    @classmethod
    def of(cls, tracking: Any, launch_dir: Path) -> Target | None:
        """The target of a config's ``tracking`` node (or its resolved dict); None when tracking is off."""
        if not tracking["enabled"]:
            return None
        return cls(resolve_uri(tracking["uri"], launch_dir), str(tracking["experiment"]))

    @property
    def shown(self) -> str:
        """The URI as it may be printed or kept: credentials masked."""
        return masked(self.uri)

    @property
    def remote(self) -> bool:
        """A tracking server (its UI is its own; it is reached over HTTP)."""
        return is_server(self.uri)


def target_of(config: Any) -> Target | None:
    """The target of a composed job or sweep config (its ``tracking`` node, its launch directory
    in ``hydra.runtime.cwd``); None when tracking is off."""
    return Target.of(config.tracking, Path(config.hydra.runtime.cwd))


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


# --------------------------------------------------------------------------- credentials

# scheme://user:password@ in any text, also as Hydra writes a swept value (``http\\://u\\:p@h``)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*\\?://[^:/@\s'\"\\]*\\?:)[^@/\s'\"]+@")
# ?password=..., &sslpassword=..., ;token=... (any case; a name that holds pass, pwd, token,
# secret, key, auth or credential): the query parameters a database or HTTP URI carries secrets in.
_QUERY_SECRET = re.compile(
    r"([?&;][^=&?;#\s'\"\\]*?(?:pass|pwd|token|secret|key|auth|credential)[^=&?;#\s'\"\\]*\\?=)[^&;#\s'\"]+",
    re.IGNORECASE,
)


def mask_text(text: str) -> str:
    """``text`` with every credential of a URI in it masked: a userinfo password
    (``scheme://user:***@host``), a secret query parameter (``?password=***``), and the values of
    ``MLFLOW_TRACKING_PASSWORD`` and ``MLFLOW_TRACKING_TOKEN`` wherever they appear."""
    text = _QUERY_SECRET.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
    for name in SECRET_ENV:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4 and secret in text:  # a 1-3 character "secret" would mask at random
            text = text.replace(secret, "***")
    return text


def masked(uri: str) -> str:
    """``uri`` as it may be shown or stored: every credential in it becomes ``***``."""
    return mask_text(uri)


def scrub_credentials(paths: list[Path]) -> None:
    """Mask the credentials of URIs in files other tools wrote (Hydra's ``.hydra/*.yaml`` and
    ``multirun.yaml`` keep the command line as typed)."""
    for path in paths:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        scrubbed = mask_text(text)
        if scrubbed != text:
            path.write_text(scrubbed)
