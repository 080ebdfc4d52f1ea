#!/usr/bin/env bash
# Set everything up, then run lint, the type check and the whole test suite (unit and
# integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers or more (one per core): the integration tests mostly wait on services.
exec .venv/bin/pytest --numprocesses=auto "$@"
