#!/usr/bin/env bash
# Set up gdexp, then run a command in its environment:
#
#   bash scripts/setup.sh [--test] [-- COMMAND ARGS...]
#
# The environment: the virtual environment already active (VIRTUAL_ENV or CONDA_PREFIX), else
# .venv in this checkout, made with python3 if it is not there yet. So it works on a stock
# Debian/Ubuntu where only `python3` exists and pip refuses to touch the system (PEP 668).
# PyTorch comes first, 2.13.0, its build chosen on purpose (below): the CPU build without an
# NVIDIA GPU, the CUDA build with one. Then gdexp itself, editable; `--test` adds the test
# tools, Chromium (Debian's package, for the report and UI tests) and the packages of a
# single-node Slurm with accounting (scripts/slurm_cluster.sh starts it for the Slurm tests, which
# skip, saying why, where they cannot be installed). After `--`, COMMAND runs
# with the environment's bin/ first on PATH; later shells: `. .venv/bin/activate`.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--test" ]; then
    extras="[dev]"
    shift
fi
if [ "${1:-}" = "--" ]; then
    shift
elif [ $# -gt 0 ]; then
    echo "setup.sh: unknown argument '$1'; allowed: --test, then -- COMMAND ..." >&2
    exit 2
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    env_dir="$VIRTUAL_ENV"
elif [ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ]; then
    env_dir="$CONDA_PREFIX"
else
    env_dir="$PWD/.venv"
    if [ ! -x "$env_dir/bin/python" ]; then
        base="$(command -v python3 || command -v python || true)"
        if [ -z "$base" ]; then
            echo "setup.sh: no python3 on PATH; allowed: Python >= 3.11 (Debian/Ubuntu: apt install python3 python3-venv)" >&2
            exit 1
        fi
        echo "setup.sh: making the virtual environment .venv with $base" >&2
        if ! "$base" -m venv "$env_dir" 2>/dev/null; then
            # Debian and Ubuntu ship venv's pip bootstrap separately.
            rm -rf "$env_dir"
            echo "setup.sh: $base cannot make a venv; installing python3-venv" >&2
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$base" -m venv "$env_dir"
        fi
    fi
fi
export VIRTUAL_ENV="$env_dir"
export PATH="$env_dir/bin:$PATH"
py="$env_dir/bin/python"

# PyTorch first, chosen on purpose (a bare `torch` requirement would pull whatever pip's default
# index serves: on Linux that is the CUDA build, about 4.6 GB). Without an NVIDIA GPU, the CPU
# build from PyTorch's own CPU wheel index; with one (nvidia-smi lists a GPU), the CUDA build
# from PyPI. Where the CPU index cannot be reached, what pip finds, said in one line.
torch_pin="torch==2.13.0"
cpu_index="${GDEXP_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
pip_install() { "$py" -m pip install --quiet --disable-pip-version-check "$@"; }
if "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    :  # installed already: kept as it is
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
    echo "setup.sh: an NVIDIA GPU is here: installing PyTorch's CUDA build (several GB)" >&2
    pip_install "$torch_pin"
elif "$py" - "$cpu_index" 2>/dev/null <<'PY'; then
import sys, urllib.parse, urllib.request
from pathlib import Path
index = sys.argv[1].rstrip("/") + "/torch/"
if index.startswith("file:"):  # a local copy of the index: its page must be there
    sys.exit(not (Path(urllib.parse.urlparse(index).path) / "index.html").is_file())
urllib.request.urlopen(index, timeout=15).read(1)
PY
    echo "setup.sh: no NVIDIA GPU: installing PyTorch's CPU build from $cpu_index" >&2
    pip_install --index-url "$cpu_index" --extra-index-url https://pypi.org/simple "$torch_pin+cpu"
else
    echo "setup.sh: no NVIDIA GPU, and PyTorch's CPU index ($cpu_index) cannot be reached: installing the torch pip finds" >&2
    pip_install "$torch_pin"
fi
"$py" -m pip install --quiet --disable-pip-version-check -e ".$extras"
updated=""
apt_install() {  # apt_install PACKAGE...: Debian packages the tests use, once apt's lists are fresh
    [ -n "$updated" ] || { as_root apt-get update -qq && updated=1; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if [ -n "$extras" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
    apt_install chromium chromium-driver
fi
if [ -n "$extras" ] && ! { command -v sbatch && command -v slurmdbd && command -v mariadbd; } >/dev/null 2>&1; then
    PATH="$PATH:/usr/sbin" command -v slurmdbd >/dev/null 2>&1 ||
        apt_install slurmctld slurmd slurmdbd slurm-client munge mariadb-server ||
        echo "setup.sh: could not install Slurm's packages; the Slurm tests will skip" >&2
fi
# The test suite runs notebooks on the environment's own kernel.
if [ -n "$extras" ]; then
    "$py" -m ipykernel install --sys-prefix --name python3 >/dev/null
fi

# What was installed, and where gdexp will train (accelerator=auto).
"$py" - >&2 <<'PY'
import torch
if torch.cuda.is_available():
    where = f"cuda ({torch.cuda.get_device_name(0)})"
else:
    where = "cpu" + ("" if torch.version.cuda is None else " (a CUDA build, but no CUDA device here)")
print(f"setup.sh: torch {torch.__version__}; gdexp trains on {where} (accelerator=auto)")
PY
if [ $# -gt 0 ]; then
    exec "$@"
fi
echo "setup.sh: gdexp is installed in $env_dir; run commands there with \`. $env_dir/bin/activate\` first" >&2
