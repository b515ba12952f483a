"""An in-process byte pipe with both ends shaped like asyncio streams (reader and writer in one),
so the HBONE server can hand a terminated tunnel to the L7 engine without a socket pair.

Each direction is an asyncio.StreamReader whose "transport" is the writing end: when the reader's
buffer passes its limit, StreamReader pauses that transport and the writer's drain() waits until
the reader has caught up (the same back-pressure a socket gives). EOF is a half-close; reset()
makes the other end's reads fail with ConnectionResetError, which the HBONE pipe turns into a
RST_STREAM, as a socket's RST would be.
"""

from __future__ import annotations

import asyncio

LIMIT = 256 * 1024


class _Flow:
    """The writing side of one direction, as the StreamReader of that direction sees it."""

    def __init__(self) -> None:
        self.resumed = asyncio.Event()
        self.resumed.set()

    def pause_reading(self) -> None:
        self.resumed.clear()

    def resume_reading(self) -> None:
        self.resumed.set()


class DuplexEnd:
    def __init__(self, inbox: asyncio.StreamReader, outbox: asyncio.StreamReader, outbox_flow: _Flow):
        self._inbox, self._outbox, self._flow = inbox, outbox, outbox_flow
        self._write_closed = False
        self.peer: DuplexEnd | None = None

    # ---- reader ----
    async def read(self, n: int = -1) -> bytes:
        return await self._inbox.read(n)

    async def readexactly(self, n: int) -> bytes:
        return await self._inbox.readexactly(n)

    def at_eof(self) -> bool:
        return self._inbox.at_eof()

    # ---- writer ----
    def write(self, data: bytes) -> None:
        if self._write_closed or self._outbox.exception() is not None:
            raise ConnectionResetError("the other end of the pipe is closed")
        if data:
            try:
                self._outbox.feed_data(data)
            except AssertionError:   # StreamReader refuses data after EOF: the other end closed
                raise BrokenPipeError("the other end of the pipe is closed") from None

    async def drain(self) -> None:
        if self._outbox.exception() is not None:
            raise ConnectionResetError("the other end of the pipe is closed")
        await self._flow.resumed.wait()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._write_closed:
            self._write_closed = True
            self._outbox.feed_eof()

    def is_closing(self) -> bool:
        return self._write_closed

    def close(self) -> None:
        """Like closing a socket: the other end reads EOF, and nothing more is read here."""
        self.write_eof()
        self._flow.resume_reading()   # a writer waiting in drain() must not wait for a reader that left
        if self.peer is not None:
            self.peer._flow.resume_reading()
        if not self._inbox.at_eof() and self._inbox.exception() is None:
            self._inbox.feed_eof()

    async def wait_closed(self) -> None:
        return None

    def reset(self) -> None:
        """Like a TCP RST: the other end's reads and writes fail."""
        self._write_closed = True
        for reader in (self._outbox, self._inbox):
            if reader.exception() is None:
                reader.set_exception(ConnectionResetError("reset by the other end of the pipe"))
        self._flow.resume_reading()
        if self.peer is not None:
            self.peer._flow.resume_reading()


def duplex_pair(limit: int = LIMIT) -> tuple[DuplexEnd, DuplexEnd]:
    a_to_b, b_to_a = asyncio.StreamReader(limit=limit), asyncio.StreamReader(limit=limit)
    a_flow, b_flow = _Flow(), _Flow()
    a_to_b.set_transport(a_flow)
    b_to_a.set_transport(b_flow)
    a, b = DuplexEnd(b_to_a, a_to_b, a_flow), DuplexEnd(a_to_b, b_to_a, b_flow)
    a.peer, b.peer = b, a
    return a, b
