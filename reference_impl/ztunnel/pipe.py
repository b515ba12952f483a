"""Moving bytes between two connections with half-close and back-pressure.

Sockets are spliced with asyncio protocols (no per-chunk coroutine switch: the cheapest path
asyncio offers); stream-like endpoints (HBONE streams) are pumped with read/write/drain.
"""
from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from .sockets import reset

HIGH_WATER = 1 << 20


@dataclass
class Counts:
    """Bytes moved; 'up' = from the side that opened the connection towards the destination."""
    up: int = 0
    down: int = 0
    half_closed: set = field(default_factory=set)


class _Side(asyncio.Protocol):
    def __init__(self, splice: "Splice", name: str):
        self.splice = splice
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: "_Side | None" = None
        # What arrived before the other side had a transport: uvloop starts reading as soon as
        # connection_made returns, whatever pause_reading() was called there.
        self.early: list[bytes] | None = []
        self.early_eof = False

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        # Nothing should be read before the other side has a transport to write to.
        transport.pause_reading()

    def data_received(self, data):
        if self.name == "a":
            self.splice.counts.up += len(data)
        else:
            self.splice.counts.down += len(data)
        if self.early is not None:
            self.early.append(data)
            return
        self.peer.transport.write(data)

    def flush_early(self) -> None:
        early, self.early = self.early, None
        for data in early:
            self.peer.transport.write(data)
        if self.early_eof:
            self.eof_received()

    def eof_received(self):
        if self.early is not None:
            self.early_eof = True
            return True
        self.splice.counts.half_closed.add(self.name)
        peer = self.peer.transport
        if peer.can_write_eof() and not peer.is_closing():
            peer.write_eof()
        if len(self.splice.counts.half_closed) == 2:
            self.splice._finish(None)
            return False
        return True

    def connection_lost(self, exc):
        self.splice._finish(exc)

    def pause_writing(self):
        self.peer.transport.pause_reading()

    def resume_writing(self):
        self.peer.transport.resume_reading()


class Splice:
    """Two established sockets joined both ways; `a` is the connection's originator side."""

    def __init__(self):
        self.counts = Counts()
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.a = _Side(self, "a")
        self.b = _Side(self, "b")
        self.a.peer, self.b.peer = self.b, self.a

    async def start(self, sock_a: socket.socket, sock_b: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: self.a, sock=sock_a)
        await loop.connect_accepted_socket(lambda: self.b, sock=sock_b)
        if self.done.done():  # a side was lost while the other was being set up
            for side in (self.a, self.b):
                if side.transport is not None and not side.transport.is_closing():
                    reset(side.transport)
            return
        self.a.flush_early()
        self.b.flush_early()
        self.a.transport.resume_reading()
        self.b.transport.resume_reading()

    def _finish(self, exc):
        if self.done.done():
            return
        for side in (self.a, self.b):
            t = side.transport
            if t is None or t.is_closing():
                continue
            if exc is not None:
                reset(t)
            else:
                t.close()
        self.done.set_result(exc)

    def reset(self) -> None:
        """Abort both sides with RST (policy now denies it, or the drain deadline passed)."""
        for side in (self.a, self.b):
            if side.transport is not None:
                reset(side.transport)
        if not self.done.done():
            self.done.set_result(ConnectionResetError("reset by proxy"))


async def splice(sock_a: socket.socket, sock_b: socket.socket, registry=None) -> Counts:
    s = Splice()
    if registry is not None:
        registry(s)
    await s.start(sock_a, sock_b)
    await s.done
    return s.counts


async def pump(reader, writer, count_cb, chunk: int = 256 * 1024) -> None:
    """Copy one direction of a stream pair until EOF, then half-close the writer."""
    while True:
        data = await reader.read(chunk)
        if not data:
            break
        count_cb(len(data))
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
