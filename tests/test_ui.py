"""What a new user runs and opens, for real: ``gdexp-ui`` in headless Chromium, the quickstart
notebook on a Jupyter kernel, the set-up on a machine with only ``python3``, and the terminal."""

from __future__ import annotations

import contextlib
import os
import pty
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import browser
import pytest
from conftest import REPO, SEEDS, all_runs, gdexp
from servers import free_port

pytestmark = pytest.mark.slow


def ui_lines(process: subprocess.Popen, until: str, timeout: float = 180) -> list[str]:
    """``gdexp-ui``'s output lines up to the one containing ``until``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"gdexp-ui ended ({process.wait()}): {''.join(lines)}{process.stderr.read()}")
        lines.append(line.rstrip("\n"))
        if until in line:
            return lines
    raise AssertionError(f"no {until!r} from gdexp-ui in {timeout} s: {lines}")


def start_ui(cwd: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, int]:
    """``gdexp-ui`` on a free port (and ``args``), its output read as text; the process and port."""
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "gdexp.ui", "--port", str(port), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return ui, port


def test_gdexp_ui_opens_on_the_sweeps_runs_in_a_browser(tmp_path, cli_env):
    """A batched sweep (on SQLite its runs are written by the bulk path) in MLflow's stock UI: the
    parent, its children, a child's description, dataset and loss chart."""
    why = browser.available()
    if why:
        pytest.skip(why)
    sweep = gdexp(["-m", "hydra/launcher=batched", "lr=0.01,0.1", "bias=true,false", "epochs=40"], tmp_path, cli_env)
    assert sweep.returncode == 0, sweep.stderr
    parent = re.search(r"MLflow parent run ([0-9a-f]{32})", sweep.stdout).group(1)
    best = re.search(r"^\s+(lr=\S+)\s+converged\s+\S+\s+\S+\s+([0-9a-f]{32})$", sweep.stdout, re.M)

    ui, port = start_ui(tmp_path, cli_env)
    try:
        lines = ui_lines(ui, "loss curves")
        base = f"http://127.0.0.1:{port}"
        assert lines[0] == f"gdexp-ui: MLflow's UI for sqlite:///{tmp_path / 'mlflow.db'} on {base} (Ctrl-C stops it)"
        runs_link = re.search(r"runs of experiment gdexp: (\S+)", lines[1]).group(1)
        sweep_link = re.search(r"latest sweep \(sweep .*\): (\S+)", lines[2]).group(1)
        assert runs_link == f"{base}/#/experiments/1/runs?workflowType=machine_learning"
        assert sweep_link == f"{base}/#/experiments/1/runs/{parent}?workflowType=machine_learning"

        with browser.Browser() as page:  # a fresh profile: nothing remembered, the link alone decides
            page.open(runs_link)
            text = page.wait_for("Run Name", "sweep lr=0.01,0.1 bias=true,false epochs=40", "Model training")
            assert "Traces" not in text.split("Run Name")[1][:200]  # the run list, not the GenAI overview
            page.open(sweep_link)
            names = [f"lr={lr},bias={b},epochs=40" for lr in ("0.01", "0.1") for b in ("true", "false")]
            text = page.wait_for("Child runs", "A sweep of 4 runs over lr (0.01, 0.1) x bias (true, false)", *names)
            assert "runs_converged" in text and "best_final_loss" in text
            page.open(f"{base}/#/experiments/1/runs/{best.group(2)}?workflowType=machine_learning")
            text = page.wait_for("Description", "Datasets", "Converged at epoch")
            assert re.search(r"sgd at lr 0\.1 with(out)? a bias on `?line`? \(4 samples\)", text)
            assert re.search(r"line \([0-9a-f]{8}\)", text)  # the dataset input, with its digest
            # the child's loss chart, from the metric history the bulk writer wrote in one transaction
            page.open(f"{base}/#/experiments/1/runs/{best.group(2)}/model-metrics?workflowType=machine_learning")
            page.wait_for("Model metrics", "epochs_run")
            page.type("input[placeholder='Search metric charts']", "^loss$")
            page.wait_until("return document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1")
        # The curves link: the sweep's children as rows of their own (not folded under a "4 matching
        # runs" parent), charted with the loss curve first, a line for each child. A fresh profile
        # again: the link alone, and the view gdexp-ui wrote into the experiment, decide.
        curves_link = re.search(r"its runs' loss curves: (\S+)", lines[3]).group(1)
        key = f"gdexp-curves-{parent}"
        assert curves_link == (
            f"{base}/#/experiments/1/runs?viewStateShareKey={key}&compareRunsMode=CHART&workflowType=machine_learning"
        )
        with browser.Browser() as page:
            page.open(curves_link)
            text = page.wait_for(*(f"{name} (loss)" for name in names), timeout=120)
            charts = text.split("Model metrics", 1)[1]
            assert charts.index("loss") < charts.index("final_loss")  # the loss curve is the first chart
            for name in names:  # each child is a row of the runs list
                assert page.script(
                    "return [...document.querySelectorAll('a')].some(a => a.innerText === arguments[0])", name
                )
    finally:
        ui.send_signal(signal.SIGINT)
        out, err = ui.communicate(timeout=60)
    assert ui.returncode == 0, err
    assert out.strip().endswith("gdexp-ui: stopped")
    with socket.socket() as s:  # the server went with it
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_gdexp_ui_says_what_is_wrong_in_one_line(tmp_path, cli_env):
    (tmp_path / "sub").mkdir()
    env = {k: v for k, v in cli_env.items() if k != "MLFLOW_TRACKING_URI"}
    nothing = gdexp([], tmp_path / "sub", env, module="gdexp.ui")
    assert nothing.returncode == 2 and nothing.stdout == ""
    assert nothing.stderr.startswith(f"gdexp-ui: error: --tracking-uri=sqlite:///{tmp_path / 'sub' / 'mlflow.db'}: ")
    assert "no MLflow store there yet" in nothing.stderr and nothing.stderr.count("\n") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = gdexp(["--port", str(port)], tmp_path, cli_env, module="gdexp.ui")
    in_use = f"--port={port}: 127.0.0.1:{port} is in use; allowed: a free port (--port 5001)"
    assert taken.returncode == 2 and taken.stderr == f"gdexp-ui: error: {in_use}\n"
    bad = gdexp(["--port", "99999"], tmp_path, cli_env, module="gdexp.ui")
    allowed = "--port=99999; allowed: an integer from 1 to 65535"
    assert bad.returncode == 2 and bad.stderr == f"gdexp-ui: error: argument --port: {allowed}\n"


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_sigkilled_gdexp_ui_takes_mlflows_server_and_its_workers_with_it(host, tmp_path, cli_env):
    """``kill -9`` runs no clean-up in gdexp-ui: its guard process sees it gone and ends the
    server's process group, workers included. On 0.0.0.0 gdexp-ui first says the store is open
    to the network."""
    import psutil

    ui, port = start_ui(tmp_path, cli_env, "--host", host)
    try:
        ui_lines(ui, "(Ctrl-C stops it)")
        group = next(c.pid for c in psutil.Process(ui.pid).children() if "mlflow" in " ".join(c.cmdline()))
        served = [p for p in psutil.process_iter() if _group_of(p) == group]
        assert len(served) >= 2, served  # the server and its workers
        ui.kill()
        ui.wait(30)
        gone = time.monotonic() + 30
        while time.monotonic() < gone and any(_group_of(p) == group for p in psutil.process_iter()):
            time.sleep(0.5)
        assert [p.pid for p in psutil.process_iter() if _group_of(p) == group] == []
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        ui.kill()
        err = ui.stderr.read()
    network = "the store is open to every machine that reaches this one"
    assert (network in err) == (host == "0.0.0.0"), err


@pytest.mark.parametrize("store", ["http", "postgresql"])
def test_gdexp_ui_on_a_store_that_does_not_answer_is_one_line_at_once(store, tmp_path, cli_env):
    """A tracking server that is down, a database port nobody listens on: one line, exit 2,
    within seconds (it hung, or printed MLflow's retries for 110 s)."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}" if store == "http" else f"postgresql://u:pw@127.0.0.1:{port}/mlflow"
    start = time.monotonic()
    result = gdexp(["--tracking-uri", uri, "--port", str(free_port())], tmp_path, cli_env, module="gdexp.ui")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("gdexp-ui: error: tracking.uri=") and "pw@" not in lines[0]
    assert time.monotonic() - start < 30


def test_gdexp_ui_stops_when_its_store_is_deleted_and_makes_no_new_one(tmp_path, cli_env):
    ui, port = start_ui(tmp_path, cli_env)
    try:
        ui_lines(ui, "(Ctrl-C stops it)")
        (tmp_path / "mlflow.db").unlink()
        out, err = ui.communicate(timeout=60)
    finally:
        ui.kill()
    assert ui.returncode == 1, err
    assert err.strip().splitlines() == [
        f"gdexp-ui: error: --tracking-uri=sqlite:///{tmp_path / 'mlflow.db'}: the store was deleted or replaced "
        "while served; stopped, so that MLflow's server makes no new empty store there"
    ]
    assert not (tmp_path / "mlflow.db").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def _group_of(process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_the_quickstart_notebook_runs_on_a_real_kernel(tmp_path, cli_env, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("MLFLOW_TRACKING_URI", cli_env["MLFLOW_TRACKING_URI"])
    nb = nbformat.read(REPO / "docs" / "quickstart.ipynb", as_version=4)
    # Opened where a user opens it, in a checkout's docs/: it works from the checkout's root.
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "docs").mkdir()
    where = {"metadata": {"path": str(tmp_path / "docs")}}
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources=where)
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    (seed,) = SEEDS.glob("004_*.txt")
    table = [line for line in seed.read_text().splitlines() if line.startswith("epoch ")][:20]
    expected = ["Prediction before training: f(5) = 0.000", *table, "Prediction after training: f(5) = 9.612"]
    assert "\n".join(expected) in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the seed's curve, the NumPy against PyTorch curves, the sweep's curves
    assert "lr=-1.0; allowed: a finite number > 0" in text
    assert (tmp_path / "mlflow.db").is_file() and list((tmp_path / "outputs").iterdir())
    assert list((tmp_path / "docs").iterdir()) == []  # nothing of its runs inside docs/
    stderr = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "Warning" not in stderr, stderr  # no TqdmWarning (IProgress not found), nor any other


def test_set_up_on_a_stock_machine_makes_its_own_venv(tmp_path):
    """Where only Debian's python3 is on PATH and pip is externally managed (PEP 668), the README's
    first command still works: setup.sh makes .venv and runs the command in it."""
    system = Path("/usr/bin/python3")
    if not system.is_file():
        pytest.skip("no /usr/bin/python3: this machine has no system Python to stand for a stock one")
    copy = tmp_path / "gdexp"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    # PyTorch's CPU wheel index, as a user without a GPU reaches it (here a local copy: this machine
    # reaches only the package registries): setup.sh must take the CPU build from it on purpose.
    wheel = next(Path("/opt/wheels").glob("torch-2.13.0+cpu-*.whl"), None) if Path("/opt/wheels").is_dir() else None
    if wheel is None:
        pytest.skip("no local copy of PyTorch's CPU wheel to serve as its CPU index")
    index = tmp_path / "cpu-index"
    (index / "torch").mkdir(parents=True)
    (index / "torch" / "index.html").write_text(f'<a href="{wheel.as_uri()}">{wheel.name}</a>\n')
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    env["GDEXP_TORCH_CPU_INDEX"] = index.as_uri()
    done = subprocess.run(
        ["bash", "scripts/setup.sh", "--", "python", "-m", "gdexp.run", "epochs=5", "engine=numpy"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "making the virtual environment .venv" in done.stderr
    assert f"setup.sh: no NVIDIA GPU: installing PyTorch's CPU build from {index.as_uri()}" in done.stderr
    assert "setup.sh: torch 2.13.0+cpu; gdexp trains on cpu (accelerator=auto)" in done.stderr.splitlines()
    assert (
        "nvidia"
        not in subprocess.run(
            [str(copy / ".venv" / "bin" / "python"), "-m", "pip", "list"], capture_output=True, text=True
        ).stdout
    )  # no CUDA stack
    assert done.stdout.rstrip().endswith("Prediction after training: f(5) = 5.563")
    assert (copy / ".venv" / "bin" / "gdexp-run").is_file() and (copy / "mlflow.db").is_file()
    # The system Python was left alone.
    assert subprocess.run([str(system), "-c", "import gdexp"], env=env, capture_output=True).returncode != 0


# --------------------------------------------------------------------------- the terminal


def test_seed_004_from_the_command_line_prints_the_notebooks_table(tmp_path, cli_env):
    done = gdexp(["+experiment=seed_004"], tmp_path, cli_env)
    assert done.returncode == 0, done.stderr
    (seed,) = SEEDS.glob("004_*.txt")
    table = [line for line in seed.read_text().splitlines() if line.startswith("epoch ")][:20]
    assert done.stdout.splitlines()[-22:] == [
        "Prediction before training: f(5) = 0.000",
        *table,
        "Prediction after training: f(5) = 9.612",
    ]
    assert done.stderr == ""


def test_help_describes_gdexp_and_offers_no_schema(tmp_path, cli_env):
    from gdexp.config import group_options

    done = gdexp(["--help"], tmp_path, cli_env)
    assert done.returncode == 0 and done.stdout.startswith("gdexp: gradient descent on linear models")
    assert "schema" not in done.stdout.split("The configuration with these overrides")[0]
    groups = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ") and line.split()}
    for group in ("optimizer", "data", "experiment"):
        listed = re.findall(r"[a-z_0-9]+", groups[group].split(None, 1)[1].split("(")[0].replace("+experiment=", ""))
        assert listed == group_options(group)
    assert "python -m gdexp.run -m lr=0.01,0.1 optimizer=sgd,adam" in done.stdout


def test_lightning_says_nothing_about_srun_where_slurm_is_installed(tmp_path, cli_env):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    env = dict(cli_env, PATH=f"{fake}:{cli_env['PATH']}")
    done = gdexp(["-m", "lr=0.01,0.1", "epochs=5"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "srun" not in done.stdout + done.stderr
    assert "warn" not in done.stderr.lower()


def _on_a_terminal(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    """What ``python -m gdexp.run ARGS`` writes on a pseudo-terminal."""
    main, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gdexp.run", *args], cwd=cwd, env=env, stdin=child, stdout=child, stderr=child
    )
    os.close(child)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(30)
    os.close(main)
    return b"".join(chunks).decode(errors="replace")


def test_progress_shows_on_a_terminal_and_not_in_a_log(tmp_path, cli_env):
    env = dict(cli_env, COLUMNS="120")
    args = ["engine=autograd", "epochs=6000", "tracking.enabled=false", "tracking.flush_seconds=0.2"]
    shown = _on_a_terminal(args, tmp_path, env)
    assert re.search(r"\d+/6000 \[", shown), shown[-2000:]
    assert "Prediction after training" in shown
    logged = gdexp(args, tmp_path, cli_env)
    assert logged.returncode == 0 and "/6000 [" not in logged.stdout + logged.stderr
    batched = ["-m", "hydra/launcher=batched", "lr=0.01,0.02", "epochs=6000", "tracking.enabled=false"]
    assert re.search(r"\d+/6000 \[", _on_a_terminal(batched, tmp_path, env))
    logged = gdexp(batched, tmp_path, cli_env)
    assert logged.returncode == 0 and "/6000 [" not in logged.stdout + logged.stderr


@pytest.mark.parametrize("keys", [["lr=-1"], ["optimizer=foo"], ["epochs=0"], ["data=csv"], ["bias=maybe"]])
def test_the_api_and_the_command_say_the_same_line(keys, tmp_path, cli_env, monkeypatch):
    import gdexp as api

    done = gdexp(keys, tmp_path, cli_env)
    monkeypatch.chdir(tmp_path)
    key, value = keys[0].split("=")
    with pytest.raises(api.ConfigError) as raised:
        api.train(**{key: value})
    assert done.returncode == 2 and done.stderr == f"gdexp: error: {raised.value}\n"


def test_ctrl_c_in_a_batched_sweep_in_a_notebook_kernel(tmp_path, cli_env, monkeypatch):
    """A batched gdexp.sweep interrupted from Jupyter (the kernel gets SIGINT): the cell raises
    KeyboardInterrupt, every member's run ends KILLED with its curve so far, nothing is left
    RUNNING, and the same kernel runs the next sweep."""
    from jupyter_client.manager import start_new_kernel

    monkeypatch.setenv("MLFLOW_TRACKING_URI", cli_env["MLFLOW_TRACKING_URI"])
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        kc.execute_interactive("import gdexp", timeout=120)
        outputs: list[str] = []
        cell = 'gdexp.sweep(lr=[0.01, 0.02], epochs=2_000_000, launcher="batched")'
        msg_id = kc.execute(cell)
        said = ""  # the cell's output, up to the launcher's line that the population starts training
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "training 2 runs" not in said:
            with contextlib.suppress(queue.Empty):
                msg = kc.get_iopub_msg(timeout=1)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                    said += msg["content"]["text"]
        assert "training 2 runs" in said, said
        time.sleep(3.0)  # the population trains (2,000,000 epochs: minutes)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=180)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=180)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt", reply
        runs = all_runs(cli_env["MLFLOW_TRACKING_URI"])
        members = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(members) == 2 and {r.info.status for r in members} == {"KILLED"}
        assert all(0 < r.data.metrics["epochs_run"] < 2_000_000 for r in members)
        assert not [r for r in runs if r.info.status == "RUNNING"]
        after = kc.execute_interactive(
            'print(len(gdexp.sweep(lr=[0.1], epochs=20, launcher="batched", quiet=True)))',
            timeout=180,
            output_hook=lambda m: outputs.append(m["content"].get("text", "")),
        )
        assert after["content"]["status"] == "ok" and "".join(outputs).strip() == "1", outputs
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
