#!/usr/bin/env bash
# Set up gdexp in the current Python environment. `--test` adds the test tools and Chromium
# (for the HTML report test). PyTorch comes first, pinned to the CPU wheel 2.13.0: a bare
# `torch` requirement with no torch installed would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
if [ "${1:-}" = "--test" ]; then
    python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
    if ! command -v chromium >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        fi
    fi
else
    python -m pip install --quiet --disable-pip-version-check -e .
fi
