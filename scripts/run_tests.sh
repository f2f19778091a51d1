#!/usr/bin/env bash
# The test command of the README: set up the environment, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest tests -q --timeout 600 "$@"
