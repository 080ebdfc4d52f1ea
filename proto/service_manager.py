"""Tell systemd how a daemon stands: ready, alive (watchdog), stopping (``sd_notify``).

A few lines over the socket systemd names in ``NOTIFY_SOCKET`` (the protocol of
``sd_notify(3)``: one datagram of ``KEY=value`` lines), instead of a dependency. Outside
systemd (no ``NOTIFY_SOCKET``) every call does nothing. Both daemons use it: ``Type=notify``
units start their dependents only once the daemon said READY=1, and ``WatchdogSec=`` restarts a
daemon whose event loop stops feeding the watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*lines: str) -> bool:
    """Send ``lines`` (e.g. ``READY=1``) to systemd; False when not run by systemd or failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)
        return False
    return True


def watchdog_seconds() -> float | None:
    """The watchdog's period (``WatchdogSec=``) when it watches this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


async def feed_watchdog() -> None:
    """Say WATCHDOG=1 at half the watchdog's period, for ever (nothing without a watchdog).

    It runs on the daemon's event loop: a loop blocked or wedged stops feeding it, and
    systemd restarts the daemon.
    """
    period = watchdog_seconds()
    if period is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(period / 2)
