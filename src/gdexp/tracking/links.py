"""Links into MLflow's UI that open on the runs, not on the GenAI overview.

MLflow 3's UI shows an experiment's GenAI "Overview" unless the URL asks for the machine-learning
view (``workflowType=machine_learning``); every link gdexp prints carries it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

DEFAULT_UI_HOST = "127.0.0.1"
DEFAULT_UI_PORT = 5000
VIEW = "workflowType=machine_learning"


def ui_base(tracking_uri: str | None = None, host: str = DEFAULT_UI_HOST, port: int = DEFAULT_UI_PORT) -> str:
    """Where the UI for ``tracking_uri`` is: a tracking server is its own UI (its address without
    credentials); any other store is browsed with ``gdexp-ui`` on ``host:port``."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        parts = urlsplit(tracking_uri)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def runs_link(base: str, experiment_id: str) -> str:
    """The experiment's run list."""
    return f"{base}/#/experiments/{experiment_id}/runs?{VIEW}"


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{VIEW}"
