"""Every credential form a database URI can carry stays out of every file, MLflow field, terminal
line and process command line (the basic-auth test in test_faults.py covers a server's login).

Each form runs a single run and a two-job sweep straight into PostgreSQL (trust authentication:
the password is accepted and ignored, so the runs go through; a parameter libpq does not know
fails the command in one line, which must not show it either). Then every file under the test's
folder, every param, tag and run name in the database, stdout and stderr are searched.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import all_runs, gdexp
from mlflow import MlflowClient

from gdexp.tracking.uri import mask_text

pytestmark = pytest.mark.slow

FORMS = {  # form -> (how the secret is given, whether libpq takes the URI)
    "userinfo password": ("postgresql://postgres:{secret}@{host}/mlflow", True),
    "password parameter": ("postgresql://postgres@{host}/mlflow?password={secret}", True),
    "sslpassword parameter": ("postgresql://postgres@{host}/mlflow?sslmode=disable&sslpassword={secret}", True),
    "PASSWORD in capitals": ("postgresql://postgres@{host}/mlflow?connect_timeout=5&PASSWORD={secret}", False),
    "token parameter": ("postgresql://postgres@{host}/mlflow?token={secret}", False),
    "secret after a hash-like key": ("postgresql://postgres@{host}/mlflow?api_key={secret}", False),
}


def searched(folder, secret: str) -> list[str]:
    """Every file below ``folder`` that holds ``secret``."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            found.append(str(path.relative_to(folder)))
    return found


@pytest.mark.parametrize("form", FORMS)
def test_no_credential_form_is_stored_or_printed(form, postgres, tmp_path, cli_env):
    secret = f"S3cr3t{abs(hash(form)) % 10_000:04d}xyz"
    template, accepted = FORMS[form]
    uri = template.format(secret=secret, host=f"127.0.0.1:{postgres.port}")
    experiment = f"secrets-{abs(hash(form)) % 10_000}"
    cli_env.pop("MLFLOW_TRACKING_URI")
    watcher = subprocess.Popen(  # the process list while the commands run: no secret on a command line gdexp made
        [sys.executable, "-c", WATCH, secret], stdout=subprocess.PIPE, text=True
    )
    try:
        single = gdexp(["epochs=5", f"tracking.uri='{uri}'", f"tracking.experiment={experiment}"], tmp_path, cli_env)
        sweep = gdexp(
            ["-m", "lr=0.01,0.1", "epochs=5", f"tracking.uri='{uri}'", f"tracking.experiment={experiment}"],
            tmp_path,
            cli_env,
        )
    finally:
        watcher.terminate()
        seen, _ = watcher.communicate(timeout=30)
    for done in (single, sweep):
        assert secret not in done.stdout + done.stderr, form
        if accepted:
            assert done.returncode == 0, done.stderr[-2000:]
        else:  # libpq refuses the parameter: one line, before any training, the secret masked
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1 and "***" in lines[0], done.stderr[-2000:]
    assert searched(tmp_path, secret) == [], form
    assert seen.strip() == "", f"a command line showed the secret: {seen}"
    if accepted:
        client = MlflowClient(postgres.uri)
        mine = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        assert len(mine) == 4  # the single run, the sweep's parent and its two jobs
        for run in all_runs(postgres.uri):
            assert secret not in str(run.data.params) + str(run.data.tags) + run.info.run_name, form


WATCH = """
import sys, time, psutil
secret, seen = sys.argv[1], set()
import signal
signal.signal(signal.SIGTERM, lambda *a: (print("\\n".join(seen)), sys.exit(0)))
while True:
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        # the command the user typed holds what they typed; what gdexp starts (writers) must not
        if secret in line and "-c" not in (proc.info["cmdline"] or [])[:2] and "-m gdexp.run" not in line:
            seen.add(line[:200])
    time.sleep(0.05)
"""


def test_the_masking_table():
    """Each form as text, as Hydra escapes it in a swept value, and in any case."""
    cases = {
        "postgresql://u:pw1234@h/db": "postgresql://u:***@h/db",
        "postgresql://u@h/db?password=pw1234&x=1": "postgresql://u@h/db?password=***&x=1",
        "postgresql://u@h/db?SSLPassword=pw1234": "postgresql://u@h/db?SSLPassword=***",
        "http://h:5000/?token=abc123#f": "http://h:5000/?token=***#f",
        "mysql://u@h/db?ssl_key=k;secret=s1234": "mysql://u@h/db?ssl_key=***;secret=***",
        r"tracking.uri=http\://u\:pw1234@h\:5000": r"tracking.uri=http\://u\:***@h\:5000",
        r"tracking.uri=postgresql\://u@h/db?password\=pw1234": r"tracking.uri=postgresql\://u@h/db?password\=***",
        "sqlite:////tmp/mlflow.db": "sqlite:////tmp/mlflow.db",
        "http://h:5000/?keep=1&page=2": "http://h:5000/?keep=1&page=2",
    }
    for text, shown in cases.items():
        assert mask_text(text) == shown, text
