"""Links into MLflow's UI that open on the runs, not on the GenAI overview.

MLflow 3's UI shows an experiment's GenAI "Overview" unless the URL asks for the machine-learning
view (``workflowType=machine_learning``); every link gdexp prints carries it.
"""

from __future__ import annotations

import json
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


# MLflow's UI opens a view someone shared from an experiment tag ``mlflow.sharedViewState.<key>``
# (its "Share" button writes one) when the URL carries ``viewStateShareKey=<key>``: the runs'
# search, and the chart view's layout. gdexp writes one per sweep, so that a link opens on the
# sweep's child runs (not its collapsed parent row) with their loss curves first.
SHARED_VIEW_TAG = "mlflow.sharedViewState."


def curves_view(sweep_run_id: str) -> tuple[str, str]:
    """The shared view (its key and the tag's JSON) of a sweep's child runs, every one visible,
    charted with the loss curve first on a log scale; MLflow adds the other metrics' charts
    after it."""
    section = "gdexp-model-metrics"
    loss = {
        "uuid": "gdexp-loss",
        "type": "LINE",
        "runsCountToCompare": 100,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        "displayName": "loss",
        "metricKey": "loss",
        "selectedMetricKeys": ["loss"],
        "lineSmoothness": 0,
        "xAxisScaleType": "linear",
        "scaleType": "log",
        "range": {},
        "xAxisKey": "step",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": False,
        "useGlobalLineSmoothing": True,
    }
    state = {
        "searchFilter": f"tags.`gdexp.sweep` = '{sweep_run_id}'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "runsHiddenMode": "CUSTOM",  # every run drawn, not the first 10
        "runsHidden": [],
        "compareRunCharts": [loss],
        "compareRunSections": [
            {
                "uuid": section,
                "name": "Model metrics",
                "display": True,
                "isReordered": True,  # its charts in this order, the loss curve first
                "deleted": False,
                "isGenerated": True,
            }
        ],
        "isAccordionReordered": True,
        # The filter brings the sweep's parent along, its children folded under it, and the charts
        # draw only rows shown; grouped by the sweep tag, the children are rows of their own, and
        # the charts draw each of them, not the group's mean.
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "gdexp.sweep"}]},
        "groupsExpanded": {},
        "useGroupedValuesInCharts": False,
    }
    return f"gdexp-curves-{sweep_run_id}", json.dumps(state, separators=(",", ":"))


def curves_link(base: str, experiment_id: str, key: str) -> str:
    """The experiment's chart view, opened on the shared view ``key`` (see :func:`curves_view`)."""
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}&compareRunsMode=CHART&{VIEW}"
