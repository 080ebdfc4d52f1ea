"""A concentrator whose Modbus TCP wire misbehaves in every way a device and a network can.

It serves ``doc_concentrator.DeviceModel`` (the device of docs/modbus-register-map.md) through a
Modbus TCP server written here on asyncio streams, frame by frame, so a reply can be what no
library server would send: noise, a frame cut short (and the connection closed, or not), an
exception with any code, silence, a closed connection, another reply under another transaction
id or unit, a frame one register short, the right reply cut anywhere into pieces with pauses,
followed by junk, sent twice, or too late. ``misbehave`` maps a request number
(``DeviceModel.requests`` as the request arrives) to what happens to its reply, and ``applied``
records what did; every other request is answered as the document says, from one state.
It runs in the caller's event loop, so a test starts it, drives an agent, and stops it.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from doc_concentrator import SELECTOR, SIZE, DeviceModel

# Replies a client must refuse: each costs the request it answers (and, with no retries, the poll).
COSTLY = (
    "noise",  # bytes that are no frame, in place of the reply
    "cut",  # the reply's first bytes, the rest never sent
    "cut_close",  # the reply's first bytes, then the connection closed
    "exception",  # an exception reply with any code
    "silence",  # no reply at all
    "close",  # the connection closed instead of a reply
    "other_tid",  # another reply (other registers) under another transaction id
    "other_unit",  # another reply (other registers) from another unit id
    "fewer",  # a well-formed read reply one register short
    "late",  # the right reply, after the agent stopped waiting for it
)
# Replies a client can take as they are: the right frame, delivered oddly.
HARMLESS = (
    "split",  # the right reply in pieces cut anywhere (inside the header too), with pauses
    "junk_after",  # the right reply, then noise
    "twice",  # the right reply, sent twice
)
MISBEHAVIOURS = COSTLY + HARMLESS


@dataclass(frozen=True)
class Misbehaviour:
    """What happens to one reply: ``kind`` from ``MISBEHAVIOURS``, and its material."""

    kind: str
    noise: bytes = b"\xff"  # for noise and junk_after
    code: int = 4  # exception code, and where a cut falls (modulo the frame's length)
    pieces: tuple[int, ...] = (3,)  # where a split cuts (modulo the frame's length)
    pause_ms: int = 5  # between the pieces of a split


@dataclass(frozen=True)
class Applied:
    """A misbehaviour as it happened: to which request (its function code), as what kind."""

    request: int
    function: int
    kind: str


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
    applied: list[Applied] = field(default_factory=list)
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
                tid, protocol, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                if length < 2:  # no function code: no Modbus request, no way to resynchronise
                    return
                pdu = await reader.readexactly(length - 1)
                if protocol != 0:  # not Modbus: dropped, as the specification says
                    continue
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
            return self._read(function, *struct.unpack(">HH", pdu[1:]))
        if function == 16 and len(pdu) >= 6:
            return self._write(pdu)
        return _exception(function, 1)

    def _read(self, function: int, address: int, count: int) -> bytes:
        """Holding (3) or input (4) registers, or the exception the specification names."""
        if not 1 <= count <= 125:
            return _exception(function, 3)
        if address + count > SIZE:
            return _exception(function, 2)
        read = self.model.holding if function == 3 else self.model.inputs
        return bytes([function, 2 * count]) + struct.pack(f">{count}H", *read(address, count))

    def _write(self, pdu: bytes) -> bytes:
        """Write multiple registers: only the history selector (registers 10-11) is writable."""
        address, quantity, size = struct.unpack(">HHB", pdu[1:6])
        if quantity != 2 or size != 4 or len(pdu) != 10:
            return _exception(16, 3)
        if address != SELECTOR:
            return _exception(16, 2)
        high, low = struct.unpack(">HH", pdu[6:10])
        self.model.selected = (high << 16) | low
        return struct.pack(">BHH", 16, address, quantity)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        tid: int,
        unit: int,
        reply: bytes,
        how: Misbehaviour | None,
    ) -> bool:
        """Write the reply as ``how`` says; False when the connection is to close."""
        right = frame(tid, unit, reply)
        kind = how.kind if how else "right"
        if kind == "fewer" and not (reply[0] in (3, 4) and reply[1] > 2):
            kind = "right"  # nothing to shorten: a write's reply, or a one-register read
        if how is not None:
            self.applied.append(Applied(self.model.requests - 1, reply[0] & 0x7F, kind))
        if kind == "late":
            await asyncio.sleep(self.late_seconds)
        if kind == "split" and how is not None:
            await _in_pieces(writer, right, how)
            return True
        writer.write(_wire_bytes(kind, right, tid, unit, reply, how or Misbehaviour(kind)))
        await writer.drain()
        return kind not in ("close", "cut_close")


async def _in_pieces(writer: asyncio.StreamWriter, data: bytes, how: Misbehaviour) -> None:
    """``data`` written in pieces cut where ``how.pieces`` says, ``how.pause_ms`` apart."""
    cuts = sorted({1 + piece % (len(data) - 1) for piece in how.pieces})
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        writer.write(data[start:end])
        await writer.drain()
        await asyncio.sleep(how.pause_ms / 1000)


def _other(reply: bytes) -> bytes:
    """A read reply with other registers (every word inverted); any other reply as it is."""
    if reply[0] not in (3, 4):
        return reply
    return reply[:2] + bytes(byte ^ 0xFF for byte in reply[2:])


def _wire_bytes(  # noqa: PLR0911, PLR0913, PLR0917 - one branch per misbehaviour
    kind: str, right: bytes, tid: int, unit: int, reply: bytes, how: Misbehaviour
) -> bytes:
    """The bytes sent for ``kind`` (the right frame for kinds that change no bytes)."""
    if kind == "noise":
        return how.noise
    if kind in ("cut", "cut_close"):
        return right[: 1 + how.code % (len(right) - 1)]
    if kind == "exception":
        return frame(tid, unit, _exception(reply[0], how.code))
    if kind in ("silence", "close"):
        return b""
    if kind == "other_tid":
        return frame((tid + 1) & 0xFFFF or 1, unit, _other(reply))
    if kind == "other_unit":
        return frame(tid, (unit + 1) & 0xFF, _other(reply))
    if kind == "fewer":
        return frame(tid, unit, bytes([reply[0], reply[1] - 2]) + reply[2:-2])
    if kind == "junk_after":
        return right + how.noise
    if kind == "twice":
        return right + right
    return right
