#!/usr/bin/env bash
# Set everything up, then run simulator → edge agent → core → database end to end (scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
