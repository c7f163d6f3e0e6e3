"""``python -m gdexp.ui`` (``gdexp-ui``): MLflow's UI for the store gdexp uses from here.

The store is found as ``gdexp.run`` finds it (``--tracking-uri``, else ``MLFLOW_TRACKING_URI``,
else ``mlflow.db`` in this directory). The UI is MLflow's own server, bound to 127.0.0.1 unless
``--host`` says otherwise; gdexp prints links that open straight on the runs (the experiment's run
list, the latest sweep's parent run) in MLflow's machine-learning view, not its GenAI overview.
A tracking server is its own UI: the links are printed and nothing is started. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gdexp.commandline import OneLineParser, user_errors
from gdexp.errors import UserError, warn
from gdexp.tracking.links import (
    DEFAULT_UI_HOST,
    DEFAULT_UI_PORT,
    SHARED_VIEW_TAG,
    curves_link,
    curves_view,
    run_link,
    runs_link,
    ui_base,
)
from gdexp.tracking.store import check_reachable
from gdexp.tracking.uri import masked, resolve_uri

KIND_TAG = "mlflow.experimentKind"


class UIError(UserError):
    """Said in one line, exit status 2 (bad input) or 1 (the server failed)."""


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"--port={text}; allowed: an integer from 1 to 65535")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="gdexp-ui", description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--host", default=DEFAULT_UI_HOST, help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=DEFAULT_UI_PORT, help="default 5000")
    p.add_argument("--experiment", default="gdexp", help="the experiment the links open on (default gdexp)")
    p.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this directory"
    )
    return p


def where(uri: str, experiment: str) -> tuple[str | None, str | None, str | None]:
    """The experiment's id, and the latest sweep's parent run id and name (None when absent).
    An experiment gdexp made before MLflow's UI knew its kind is told it is a training one."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None, None, None
        if KIND_TAG not in found.tags:
            client.set_experiment_tag(found.experiment_id, KIND_TAG, "custom_model_development")
        latest = client.search_runs(
            [found.experiment_id], "tags.`gdexp.role` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
        )
    except Exception as err:
        raise UIError(f"--tracking-uri={masked(uri)}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    if not latest:
        return found.experiment_id, None, None
    sweep = latest[0].info.run_id
    key, view = curves_view(sweep)
    try:  # the shared view its curves link opens; the other links work without it
        if found.tags.get(SHARED_VIEW_TAG + key) != view:
            client.set_experiment_tag(found.experiment_id, SHARED_VIEW_TAG + key, view)
    except Exception as err:
        warn(f"the sweep's curves view could not be written ({type(err).__name__}): its curves link will not open")
    return found.experiment_id, sweep, latest[0].info.run_name


def links(
    base: str, experiment: str, experiment_id: str | None, sweep: str | None, sweep_name: str | None
) -> list[str]:
    """The lines that say where to click."""
    if experiment_id is None:
        return [f"  experiment {experiment} has no runs yet: `python -m gdexp.run` makes one; {base}"]
    out = [f"  runs of experiment {experiment}: {runs_link(base, experiment_id)}"]
    if sweep:
        out.append(f"  latest sweep ({sweep_name}): {run_link(base, experiment_id, sweep)}")
        out.append(f"  its runs' loss curves: {curves_link(base, experiment_id, curves_view(sweep)[0])}")
    return out


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _store_file(uri: str) -> tuple[int, int] | None:
    """A SQLite store's file as (device, inode); None for another store or no file."""
    try:
        found = os.stat(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
    except FileNotFoundError:
        return None
    return (found.st_dev, found.st_ino) if found else None


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def start_server(uri: str, host: str, port: int, log: Any) -> subprocess.Popen[bytes]:
    """MLflow's server on ``uri``; artifacts the UI creates go beside a SQLite store."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port)]
    if uri.startswith("sqlite:///"):
        command += ["--artifacts-destination", str(Path(uri[len("sqlite:///") :]).parent / "mlartifacts")]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def wait_until_up(process: subprocess.Popen[bytes], base: str, log_path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            raise UIError(f"MLflow's server exited ({process.returncode}): {lines[-1] if lines else 'no output'}", 1)
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise UIError(f"MLflow's server did not answer on {base} in {timeout:.0f} s", 1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """The server and its workers gone: a SIGTERM, then a SIGKILL after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """The ``gdexp-ui`` console script."""
    args = parser().parse_args(argv)
    with user_errors("gdexp-ui"):
        _serve(args)


def _serve(args: argparse.Namespace) -> None:
    uri = resolve_uri(args.tracking_uri, Path.cwd())  # resolved once: every step below is given it
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).is_file():
        check_reachable(uri, timeout=5, write=False)  # a line now, not MLflow's minutes of retries
    if uri.startswith(("http://", "https://")):  # a tracking server is its own UI
        base = ui_base(uri)
        print(f"gdexp-ui: {masked(uri)} is a tracking server: its UI is {base}")
        for line in links(base, args.experiment, *where(uri, args.experiment)):
            print(line)
        return
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise UIError(
            f"--tracking-uri={masked(uri)}: no MLflow store there yet; allowed: the directory you ran "
            "`python -m gdexp.run` in, or --tracking-uri / MLFLOW_TRACKING_URI naming its store"
        )
    if not _port_free(args.host, args.port):
        raise UIError(f"--port={args.port}: {args.host}:{args.port} is in use; allowed: a free port (--port 5001)")
    found = where(uri, args.experiment)
    # The store's file as served, taken before any line is printed: one deleted as soon as the
    # first line appears is still told from the one that was served.
    store = _store_file(uri)
    base = ui_base(None, args.host, args.port)
    with tempfile.NamedTemporaryFile(prefix="gdexp-ui-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = start_server(uri, args.host, args.port, log)
    # however this process ends (a kill -9 runs no finally), the guard ends the server with it
    guard = subprocess.Popen(
        [sys.executable, "-m", "gdexp.guard", str(os.getpid()), str(process.pid)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    stopping: list[float] = []

    def on_signal(signum: int, frame: Any) -> None:
        # Only a signal here: waiting on the server inside a handler would deadlock the wait
        # the main loop is in.
        if not stopping and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        stopping.append(time.monotonic())

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        wait_until_up(process, base, log_path)
        print(f"gdexp-ui: MLflow's UI for {masked(uri)} on {base} (Ctrl-C stops it)", flush=True)
        if not _loopback(args.host):
            warn(
                f"--host {args.host}: the store is open to every machine that reaches this one on port "
                f"{args.port}; MLflow's server asks no login, so they can read, change and delete runs"
            )
        for line in links(base, args.experiment, *found):
            print(line, flush=True)
        while process.poll() is None:
            if stopping and time.monotonic() - stopping[0] > 10:
                os.killpg(process.pid, signal.SIGKILL)  # the server's graceful end took too long
            if store and not stopping and _store_file(uri) != store:
                raise UIError(
                    f"--tracking-uri={masked(uri)}: the store was deleted or replaced while served; stopped, "
                    "so that MLflow's server makes no new empty store there",
                    1,
                )
            time.sleep(0.2)
    except UIError:
        if not stopping:
            raise
    finally:
        stop(process)
        guard.kill()
        guard.wait()
    if not stopping:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        raise UIError(f"MLflow's server exited ({process.returncode}): {lines[-1] if lines else ''}", 1)
    log_path.unlink(missing_ok=True)
    print("gdexp-ui: stopped")


if __name__ == "__main__":
    main()
