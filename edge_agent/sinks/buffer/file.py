"""The buffer file itself: opened or created, capped, and written in whole transactions."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from edge_agent.errors import BufferUnavailable
from edge_agent.sinks.buffer.schema import check_layout, upgrade


class BufferFile:
    """One SQLite file (WAL) and its connection; the other parts of ``Buffer`` build on it."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        read_only: bool = False,
        max_bytes: int | None = None,
    ) -> None:
        """Open the buffer at ``path``, creating it unless ``read_only`` (for status reports).

        Raises:
            BufferUnavailable: the file cannot be opened or created (missing folder, no
                permission, not a buffer).

        """
        self.path = path
        self._synchronous = "FULL" if synchronous == "full" else "NORMAL"
        try:
            if read_only:
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                _owner_only(path)
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                # Checkpoint every 1 MB of WAL and truncate it back to 4 MB at most, so the
                # file's write-ahead log stays small beside the capped database.
                self._db.execute("PRAGMA wal_autocheckpoint = 256")
                self._db.execute("PRAGMA journal_size_limit = 4194304")
                self._db.execute(f"PRAGMA synchronous={self._synchronous}")
                upgrade(self._db, path)
                if max_bytes is not None:
                    # The file never grows past the cap: a write beyond it fails cleanly
                    # (BufferUnavailable) instead of filling the gateway's disk.
                    page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
                    pages = max(64, max_bytes // page_size)
                    self._db.execute(f"PRAGMA max_page_count = {pages}")
                    self._db.execute(
                        "INSERT OR REPLACE INTO agent_state VALUES ('max_pages', ?)", (pages,)
                    )
            check_layout(self._db, path)
            self._db.execute("SELECT value FROM agent_state").fetchone()  # is it a buffer?
        except (sqlite3.Error, OSError) as exc:
            raise BufferUnavailable(f"cannot open the buffer {path}: {exc}") from exc

    def close(self) -> None:
        """Close the file; every committed change is already on disk."""
        self._db.close()

    def _query(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """A read; SQLite failures surface as ``BufferUnavailable``."""
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise BufferUnavailable(f"buffer read failed: {exc}") from exc

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def fill(self) -> float:
        """How full the buffer is, as a share of its cap (pages in use / the page limit).

        The cap is the one the agent set (``max_bytes``), recorded in the file, so a read-only
        status report sees the same share as the agent.
        """
        ((used, free, limit, recorded),) = self._query(
            "SELECT (SELECT page_count FROM pragma_page_count()),"
            " (SELECT freelist_count FROM pragma_freelist_count()),"
            " (SELECT max_page_count FROM pragma_max_page_count()),"
            " (SELECT value FROM agent_state WHERE key = 'max_pages')"
        )
        return (used - free) / (recorded or limit)


def _owner_only(path: Path) -> None:
    """Create the buffer file readable by its owner only (0600), or make it so.

    It holds pseudonymized meter data and the validation state. SQLite creates the WAL and
    shared-memory files with the main file's mode, so they follow.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    path.chmod(0o600)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including cancellation).

    SQLite failures (a full disk, an I/O error) leave nothing half-written and surface as
    ``BufferUnavailable`` with the SQLite error as ``__cause__``.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BufferUnavailable(f"cannot start a buffer transaction: {exc}") from exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, *_: object
    ) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                self._rollback()
                raise BufferUnavailable(f"cannot commit to the buffer: {error}") from error
            return
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise BufferUnavailable(f"buffer write failed: {exc}") from exc

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may have rolled back by itself (e.g. disk full)
            self._db.execute("ROLLBACK")
