#!/usr/bin/env bash
# Build and install TimescaleDB (Apache-2 edition) for the installed PostgreSQL 15, idempotently.
#
# Debian bookworm ships no TimescaleDB package, so this fetches Debian trixie's source package with
# apt-get source through a private source list (the machine's apt configuration is left as it was)
# and builds it against server headers of exactly the installed server's version: mismatched
# headers build fine but fail at load time with an undefined symbol.
#
# Usage: scripts/install-timescaledb.sh   (as root; prints "installed" or "already installed")
set -euo pipefail

TSDB_VERSION=2.19.3          # upstream version pinned; any Debian revision of it is accepted
PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config

if [ ! -x "$PG_CONFIG" ]; then
  echo "install-timescaledb: PostgreSQL $PG_MAJOR is not installed ($PG_CONFIG missing)" >&2
  exit 1
fi
pkglibdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
if [ -f "$pkglibdir/timescaledb-$TSDB_VERSION.so" ] && [ -f "$sharedir/extension/timescaledb.control" ]; then
  echo "install-timescaledb: timescaledb $TSDB_VERSION already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
server_version=$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR")
if ! apt-cache show "postgresql-server-dev-$PG_MAJOR=$server_version" >/dev/null 2>&1; then
  apt-get update -q >/dev/null  # a fresh machine's package lists may be empty
fi
apt-get install -y -q "postgresql-server-dev-$PG_MAJOR=$server_version" cmake dpkg-dev gcc make >/dev/null

work=$(mktemp -d /tmp/tsdb-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  > "$work/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/parts"
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Sandbox::User=root")
apt-get "${apt_private[@]}" update -q >/dev/null
deb_version=$(apt-cache "${apt_private[@]}" showsrc timescaledb \
  | awk -v v="$TSDB_VERSION" '$1 == "Version:" && index($2, v "+") == 1 {print $2; exit}')
if [ -z "$deb_version" ]; then
  echo "install-timescaledb: no Debian source package of timescaledb $TSDB_VERSION found in trixie" >&2
  exit 1
fi
(cd "$work" && apt-get "${apt_private[@]}" source -q "timescaledb=$deb_version" >/dev/null)
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name "timescaledb-*" | head -n 1)

# Build output goes to a log, shown only on failure (TimescaleDB's CMake asks git for a
# version and complains outside a git checkout; that is harmless).
log="$work/build.log"
trap 'status=$?; [ $status -ne 0 ] && [ -f "$log" ] && tail -n 40 "$log" >&2; rm -rf "$work"; exit $status' EXIT
{
  cmake -S "$src" -B "$work/build" -DPG_CONFIG="$PG_CONFIG" -DAPACHE_ONLY=ON \
    -DSEND_TELEMETRY_DEFAULT=OFF -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
    -DLINTER=OFF -DUSE_OPENSSL=OFF -DCMAKE_BUILD_TYPE=Release
  cmake --build "$work/build" -j "$(nproc)"
  cmake --install "$work/build"
} >"$log" 2>&1
echo "install-timescaledb: installed timescaledb $TSDB_VERSION ($deb_version) for PostgreSQL $PG_MAJOR"
