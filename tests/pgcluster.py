"""A throwaway PostgreSQL cluster on a loopback port, for the demo and the integration tests.

It runs the installed server binaries (``initdb``, ``pg_ctl``) in a fresh directory; as root it
runs them as the ``postgres`` user, since PostgreSQL refuses to run as root. TimescaleDB is
preloaded when its extension is installed, unless the caller opts out.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
# Logins every cluster gets, as a deployment has them: the owner of the databases, who runs the
# migrations (no superuser), the core's login and an operator's (members of `ingest` and
# `operations` once `governance access init` has made those group roles).
OWNER_LOGIN = "meterpipe_owner"
CORE_LOGIN = "meterpipe_core"
OPERATOR_LOGIN = "meterpipe_operator"
PORT_LIMIT = 65_536  # TCP ports are 16-bit


def server_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory (override: ``PG_BINDIR``)."""
    if override := os.environ.get("PG_BINDIR"):
        return Path(override)
    candidates = sorted(PG_ROOT.glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        raise RuntimeError(f"no PostgreSQL server found under {PG_ROOT}; install postgresql-15")
    return candidates[-1].parent


def _pg_config(bindir: Path, what: str) -> Path:
    return Path(
        subprocess.run(
            [str(bindir / "pg_config"), what], check=True, capture_output=True, text=True
        ).stdout.strip()
    )


def timescaledb_installed(bindir: Path) -> bool:
    """Whether the TimescaleDB extension is installed for this server."""
    return (_pg_config(bindir, "--sharedir") / "extension" / "timescaledb.control").exists()


def pgaudit_installed(bindir: Path) -> bool:
    """Whether pgaudit (Debian's postgresql-15-pgaudit) is installed for this server."""
    return (_pg_config(bindir, "--pkglibdir") / "pgaudit.so").exists()


class PostgresCluster:
    """``start()`` creates and starts the cluster; ``stop()`` stops it and deletes its files."""

    def __init__(self, *, port: int, timescaledb: bool = True, durable: bool = False) -> None:
        """Set up, do not start.

        Args:
            port: loopback TCP port.
            timescaledb: preload TimescaleDB when it is installed.
            durable: keep PostgreSQL's crash safety (fsync, synchronous commit) as in
                production, for benchmarks; tests trade it for speed.

        """
        self.port = port
        self.durable = durable
        self.bindir = server_bindir()
        self.timescaledb = timescaledb and timescaledb_installed(self.bindir)
        self.directory = Path(tempfile.mkdtemp(prefix="meterpipe-pg-"))
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True)

    def start(self) -> None:
        """initdb, write a loopback-only configuration, and start the server; waits until ready."""
        if self._as_root:
            shutil.chown(self.directory, SERVER_USER, SERVER_USER)
        data = self.directory / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
            "max_connections": "200",
            "shared_buffers": "256MB",
        }
        if not self.durable:
            # A throwaway cluster: durability traded for speed. Never use these in production.
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        preload = ["timescaledb"] if self.timescaledb else []
        if self.timescaledb:
            settings["timescaledb.telemetry_level"] = "off"
        if pgaudit_installed(self.bindir):
            # Loaded, logging nothing until `governance audit reads enable` names the tables;
            # its lines go to the CSV log the audit report reads (log/postgresql.csv).
            preload.append("pgaudit")
        settings |= {
            "shared_preload_libraries": f"'{','.join(preload)}'",
            "logging_collector": "on",
            "log_destination": "'stderr,csvlog'",
            "log_directory": "'log'",
            "log_filename": "'postgresql.log'",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.restart()
        for login in (OWNER_LOGIN, CORE_LOGIN, OPERATOR_LOGIN):
            self._run("createuser", *self._client_options(), login)

    def _client_options(self) -> tuple[str, ...]:
        return ("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres")

    def restart(self) -> None:
        """Start the server on its existing data (after ``crash``); waits until ready."""
        data = self.directory / "data"
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """Connection string for a database of this cluster (as the superuser by default)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database owned by ``OWNER_LOGIN``, empty or a copy of ``template``.

        Returns its superuser DSN.
        """
        copy = ("-T", template) if template else ()
        self._run("createdb", *self._client_options(), "-O", OWNER_LOGIN, *copy, name)
        return self.dsn(name)

    def crash(self) -> None:
        """Stop the server as a crash would (immediate shutdown), keeping its files.

        Whatever a commit had not written to the WAL is lost, as after a power cut.
        """
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files."""
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def as_login(dsn: str, login: str) -> str:
    """The same database's DSN for another login (test clusters trust loopback logins)."""
    return dsn.replace("postgresql://postgres@", f"postgresql://{login}@", 1)


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it; another process could take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_loopback_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports free on 127.0.0.1 now."""
    while True:
        first = free_loopback_port()
        if first + count <= PORT_LIMIT and all(_bindable(first + i) for i in range(1, count)):
            return first


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
