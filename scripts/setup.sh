#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian bookworm machine, idempotently:
# system packages (Mosquitto, PostgreSQL 15 server, pgaudit), TimescaleDB built for it, and
# the Python virtual environment in .venv with the project and its development tools.
#
# Usage: bash scripts/setup.sh   (as root, or with sudo rights for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
# pgaudit: reads of personal data by role, for `governance audit report` (docs/governance.md).
[ -f /usr/lib/postgresql/15/lib/pgaudit.so ] || need+=(postgresql-15-pgaudit)
# systemd-analyze verifies the units in deploy/systemd (tests/test_deploy.py).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# promtool (Prometheus's own checker) checks and unit-tests the alerting rules in deploy/.
tools=()
command -v promtool >/dev/null 2>&1 || tools+=(prometheus)
if [ ${#need[@]} -gt 0 ] || [ ${#tools[@]} -gt 0 ] \
    || [ ! -f /usr/lib/postgresql/15/lib/timescaledb.so ]; then
  echo "setup: apt-get update" >&2
  $sudo_cmd apt-get update -q >/dev/null
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  $sudo_cmd apt-get install -y -q "${need[@]}" >/dev/null
fi
if [ ${#tools[@]} -gt 0 ]; then
  echo "setup: installing ${tools[*]} (for its promtool)" >&2
  $sudo_cmd apt-get install -y -q --no-install-recommends "${tools[@]}" >/dev/null
fi
$sudo_cmd bash scripts/install-timescaledb.sh >&2

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
# pycanon pins numpy and pandas to exact versions older than transformer-thermal-model's; its
# anonymity measures import only numpy and pandas, so it goes in without its pins.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "pycanon==1.3.6" 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python -c "import edge_agent, core_ingest, substation_sim, governance, proto" \
  || { echo "setup: the project does not import after install" >&2; exit 1; }
echo "setup: ready" >&2
