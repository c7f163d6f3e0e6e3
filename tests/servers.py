"""Real servers for the tests: PostgreSQL in a temp dir, and `mlflow server` on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root, a developer usually not.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Postgres:
    """A throwaway PostgreSQL cluster with a database ``mlflow``, trust auth, on 127.0.0.1."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        data = folder / "data"
        subprocess.run(
            _as_postgres_user(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres"]),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            _as_postgres_user(
                [
                    "pg_ctl",
                    "-D",
                    str(data),
                    "-l",
                    str(folder / "log"),
                    "-w",
                    "-o",
                    f"-p {self.port} -k {folder} -c listen_addresses=127.0.0.1",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.uri = self.database("mlflow")

    def database(self, name: str) -> str:
        """A new, empty database on this cluster; its URI."""
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", f"create database {name}"],
            check=True,
            capture_output=True,
        )
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            _as_postgres_user(["pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "stop"]), capture_output=True
        )


class MlflowServer:
    """`mlflow server` with a database backend and an artifact root, on 127.0.0.1."""

    def __init__(self, backend: str, artifacts: Path, log: Path, admin_password: str | None = None):
        """With ``admin_password``, MLflow's basic-auth app: every API call needs a login (user
        ``admin``), ``/health`` does not."""
        self.backend, self.artifacts, self.log = backend, artifacts, log
        self.admin_password = admin_password
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 180) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        env = dict(os.environ)
        auth: list[str] = []
        if self.admin_password:
            auth = ["--app-name", "basic-auth"]
            env.update(
                MLFLOW_AUTH_ADMIN_PASSWORD=self.admin_password,
                MLFLOW_FLASK_SERVER_SECRET_KEY="gdexp-test-only",
                MLFLOW_AUTH_CONFIG_PATH=str(self._auth_config()),
            )
        self.process = subprocess.Popen(
            [
                str(mlflow),
                "server",
                *auth,
                "--backend-store-uri",
                self.backend,
                "--artifacts-destination",
                str(self.artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "2",
            ],
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not come up: {self.log.read_text()[-2000:]}")

    def _auth_config(self) -> Path:
        """The basic-auth app's settings, its user database beside the server's log."""
        path = self.log.with_name("basic_auth.ini")
        path.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{self.log.with_name('basic_auth.db')}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return path

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash would."""
        os.killpg(self.process.pid, 9)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()
