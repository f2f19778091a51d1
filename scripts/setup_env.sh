#!/usr/bin/env bash
# Creates .venv (if missing) and installs everything from the project's own files.
# torch/torchvision are pinned to the builds served locally on CPU machines here
# (dynamic-network-architectures pulls timm, which needs torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.diffoseg_installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/python -m pip install -q -e ".[test]"
    touch "$stamp"
fi
