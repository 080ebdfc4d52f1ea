"""A concentrator whose Modbus TCP wire misbehaves in every way a device and a network can.

It serves ``doc_concentrator.DeviceModel`` (the device of docs/modbus-register-map.md) through a
Modbus TCP server written here on asyncio streams, frame by frame, so a reply can be what no
library server would send: noise, a frame cut short, an exception, silence, a closed connection,
a reply under another transaction id or unit, a frame announcing fewer registers than asked, a
reply split across segments, followed by junk or sent twice, or the right reply too late.
``misbehave`` maps a request number (``DeviceModel.requests`` as the request arrives) to what
happens to its reply; every other request is answered as the document says, from one state.
It runs in the caller's event loop, so a test starts it, drives an agent, and stops it.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from doc_concentrator import SELECTOR, SIZE, DeviceModel

MISBEHAVIOURS = (
    "noise",  # bytes that are no frame, in place of the reply
    "cut",  # the reply's first bytes, the rest never sent
    "exception",  # an exception reply with any code
    "silence",  # no reply at all
    "close",  # the connection closed instead of a reply
    "other_tid",  # the right reply under another transaction id
    "other_unit",  # the right reply from another unit id
    "fewer",  # a well-formed read reply one register short
    "split",  # the right reply in pieces, a few milliseconds apart
    "junk_after",  # the right reply, then noise
    "twice",  # the right reply, sent twice
    "late",  # the right reply, after the agent stopped waiting for it
)


@dataclass(frozen=True)
class Misbehaviour:
    """What happens to one reply: ``kind`` from ``MISBEHAVIOURS``, and its material."""

    kind: str
    noise: bytes = b"\xff"  # for noise and junk_after
    code: int = 4  # exception code, and where a cut falls (modulo the frame's length)


def frame(tid: int, unit: int, pdu: bytes) -> bytes:
    """The MBAP header (transaction, protocol 0, length, unit) and the PDU."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def _exception(function: int, code: int) -> bytes:
    return bytes([function | 0x80, code])


@dataclass
class WireConcentrator:
    """``model`` served on a loopback port; ``misbehave`` says which replies go wrong, how."""

    model: DeviceModel
    misbehave: dict[int, Misbehaviour] = field(default_factory=dict)
    late_seconds: float = 1.0
    port: int = 0
    _server: asyncio.Server | None = None
    _clients: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def device(self) -> str:
        """The agent's name for this device (``ModbusSourceConfig.device``)."""
        return f"modbus://127.0.0.1:{self.port}/1"

    async def start(self) -> None:
        """Listen on a free loopback port (``port`` once started)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every connection."""
        if self._server is not None:
            self._server.close()
            for writer in self._clients:
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                tid, length, unit = struct.unpack(">H2xHB", await reader.readexactly(7))
                pdu = await reader.readexactly(max(length - 1, 0))
                request = self.model.requests
                self.model.before_request()  # closes what the model's schedule holds
                reply = self.answer(pdu)
                how = self.misbehave.pop(request, None)
                if not await self._send(writer, tid, unit, reply, how):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._clients.discard(writer)
            writer.close()

    def answer(self, pdu: bytes) -> bytes:
        """The document's reply PDU to a request PDU, from the model's state now."""
        function = pdu[0] if pdu else 0
        if function in (3, 4) and len(pdu) == 5:
            address, count = struct.unpack(">HH", pdu[1:])
            if not 1 <= count <= 125 or address + count > SIZE:
                return _exception(function, 2)
            read = self.model.holding if function == 3 else self.model.inputs
            return bytes([function, 2 * count]) + struct.pack(f">{count}H", *read(address, count))
        if function == 16 and len(pdu) >= 6:
            address, quantity, size = struct.unpack(">HHB", pdu[1:6])
            if address != SELECTOR or quantity != 2 or size != 4 or len(pdu) != 10:
                return _exception(function, 2)
            high, low = struct.unpack(">HH", pdu[6:10])
            self.model.selected = (high << 16) | low
            return struct.pack(">BHH", function, address, quantity)
        return _exception(function, 1)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        tid: int,
        unit: int,
        reply: bytes,
        misbehaviour: Misbehaviour | None,
    ) -> bool:
        """Write the reply as ``misbehaviour`` says; False when the connection is to close."""
        right = frame(tid, unit, reply)
        kind = misbehaviour.kind if misbehaviour else "right"
        if kind == "close":
            return False
        if kind == "late":
            await asyncio.sleep(self.late_seconds)
        if kind == "split":
            for start in range(0, len(right), 5):
                writer.write(right[start : start + 5])
                await writer.drain()
                await asyncio.sleep(0.005)
            return True
        writer.write(self._wrong(kind, right, tid, unit, reply, misbehaviour))
        await writer.drain()
        return True

    @staticmethod
    def _wrong(  # noqa: PLR0911, PLR0913, PLR0917 - one branch per misbehaviour
        kind: str, right: bytes, tid: int, unit: int, reply: bytes, how: Misbehaviour | None
    ) -> bytes:
        """The bytes sent for ``kind`` (the right frame when it changes no bytes)."""
        noise = how.noise if how else b""
        code = how.code if how else 0
        if kind == "noise":
            return noise
        if kind == "cut":
            return right[: 1 + code % (len(right) - 1)]
        if kind == "exception":
            return frame(tid, unit, _exception(reply[0], code))
        if kind == "silence":
            return b""
        if kind == "other_tid":
            return frame((tid + 1) & 0xFFFF or 1, unit, reply)
        if kind == "other_unit":
            return frame(tid, (unit + 1) & 0xFF, reply)
        if kind == "fewer" and reply[0] in (3, 4) and reply[1] > 2:
            return frame(tid, unit, bytes([reply[0], reply[1] - 2]) + reply[2:-2])
        if kind == "junk_after":
            return right + noise
        if kind == "twice":
            return right + right
        return right
