#!/usr/bin/env bash
# The GPU path in one command: on a machine with CUDA, run the seed tables and the engine-equivalence
# tests with accelerator=gpu, the `gpu` tests (a batched population of 100,000 members, Lightning on
# the GPU against the CPU, accelerator=auto), and time per-run and batched sweeps on the GPU against
# accelerator=cpu on the same machine. Writes gpu_check.json and gpu_check.md to DIR.
#
#   bash scripts/gpu_check.sh [DIR]     # DIR defaults to $OUT if set, else ./gpu_check
#
# Without CUDA it says so in one line and exits 0. A few minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${OUT:-gpu_check}}
py=${PYTHON:-python}

if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not installed')): nothing to check"
    exit 0
fi
mkdir -p "$dir"
echo "gpu_check: $("$py" -c 'import torch; print(torch.cuda.get_device_name(0), "· torch", torch.__version__, "· CUDA", torch.version.cuda)')"

status=0
echo "gpu_check: seed tables and engine equivalence with accelerator=gpu"
GDEXP_TEST_ACCELERATOR=gpu "$py" -m pytest -m "" -q -p no:cacheprovider tests/test_seeds.py tests/test_engines.py \
    --junitxml="$dir/suites_on_gpu.xml" >"$dir/suites_on_gpu.log" 2>&1 || status=1
tail -1 "$dir/suites_on_gpu.log"
echo "gpu_check: the gpu tests (100,000-member population, GPU against CPU, auto)"
"$py" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py --junitxml="$dir/gpu_tests.xml" \
    >"$dir/gpu_tests.log" 2>&1 || status=1
tail -1 "$dir/gpu_tests.log"
echo "gpu_check: timing sweeps, accelerator=cpu against gpu"
"$py" scripts/gpu_timings.py "$dir" || status=1
exit $status
