"""A TCP proxy on loopback that a test controls: the link between an agent and its cores.

One listening address in front of one or more upstreams (cores): each new connection goes to
the next upstream that accepts it, as a load balancer does. The test can cut the link (every
connection closed, new ones closed at once) and restore it, and make it slow and lossy (each
chunk delayed, and a connection reset now and then, which is what loss looks like above TCP).
It runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Iterator

from pgcluster import free_loopback_port

CHUNK = 65_536


class TcpProxy:
    """``address`` forwards to ``upstreams`` until ``close``."""

    def __init__(self, upstreams: list[str], *, seed: int = 0) -> None:
        """Start listening on a free loopback port."""
        self.upstreams = upstreams
        self.address = f"127.0.0.1:{free_loopback_port()}"
        self.connections = 0
        self._cut = False
        self._delay_s, self._reset_chance = 0.0, 0.0
        self._chance = random.Random(seed)
        self._next = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> asyncio.Server:
        host, port = self.address.rsplit(":", 1)
        return await asyncio.start_server(self._serve, host, int(port))

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in range(len(self.upstreams)):
            host, port = self.upstreams[self._next % len(self.upstreams)].rsplit(":", 1)
            self._next += 1
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(host, int(port))
        raise ConnectionRefusedError("no upstream accepts")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await self._connect_upstream()
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._open.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for end in (writer, up_writer):
            self._open.discard(end)
            end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                if self._delay_s:
                    await asyncio.sleep(self._delay_s)
                if self._cut or self._chance.random() < self._reset_chance:
                    break
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()

    def _call(self, function: Callable[[], object]) -> None:
        """Run ``function`` on the proxy's loop (where its connections live) and wait for it."""

        async def run() -> None:
            function()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def cut(self) -> None:
        """Close every connection and refuse new ones, until ``restore``."""

        def cut() -> None:
            self._cut = True
            for writer in list(self._open):
                writer.close()

        self._call(cut)

    def restore(self) -> None:
        """Forward again, at full speed."""
        self._call(lambda: setattr(self, "_cut", False))

    def degrade(self, *, delay_s: float, reset_chance: float) -> None:
        """Delay each chunk by ``delay_s`` and reset a connection at a chunk with this chance."""

        def degrade() -> None:
            self._delay_s, self._reset_chance = delay_s, reset_chance

        self._call(degrade)

    def close(self) -> None:
        """Stop listening, close every connection, end the thread."""
        self.cut()
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@contextlib.contextmanager
def tcp_proxy(upstreams: list[str], *, seed: int = 0) -> Iterator[TcpProxy]:
    """A ``TcpProxy`` closed at the end of the block."""
    proxy = TcpProxy(upstreams, seed=seed)
    try:
        yield proxy
    finally:
        proxy.close()
