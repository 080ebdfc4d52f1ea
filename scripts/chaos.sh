#!/usr/bin/env bash
# The reliability suite at full strength (issue 15): every chaos scenario (tests marked
# `chaos`) with MP_CHAOS=full, each scenario's scorecard appended to reliability-results.jsonl,
# then the README's reliability table rewritten from it. The test suite (scripts/test.sh) runs
# the same scenarios reduced. Extra arguments go to pytest (e.g. -k sigkill).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
results="$PWD/reliability-results.jsonl"
rm -f "$results"
status=0
MP_CHAOS=full MP_CHAOS_RESULTS="$results" \
    .venv/bin/pytest -m chaos -p no:cacheprovider -o timeout=1800 "$@" || status=$?
# the table shows what was measured, broken guarantees included; the exit status says so too
.venv/bin/python scripts/reliability_table.py "$results" README.md
exit "$status"
