"""A TCP socket joined to an HBONE stream by callbacks: no coroutine, no task wake-up per chunk.

`pipe()` copies with two tasks, each chunk a StreamReader read, a future and a task step per
direction; here the TCP side is an asyncio Protocol whose ``data_received`` writes straight into
the stream, and the stream hands its incoming DATA straight to the TCP transport. The semantics
are pipe()'s: EOF one way is a half-close (TCP FIN / END_STREAM) while the other keeps flowing; an
error or reset on either side resets both (TCP RST / RST_STREAM). Back-pressure both ways: the
TCP side stops being read while the stream's send queue is above its low-water mark or the TLS
transport is paused; while the TCP transport's write buffer is above its high-water mark, DATA
already received is not returned to the peer's flow-control window, so the peer stops at the
stream window (bounded memory, as a slow reader of a stream holds it).
"""

from __future__ import annotations

import asyncio
import socket

from .pipe import reset_transport
from .stream import DRAIN_LOW_WATER, HboneStream

HIGH_WATER = 1 << 20


class StreamSplice(asyncio.Protocol):
    """One connected TCP socket and one HBONE stream, joined by ``run(stream)``.

    ``to_stream`` / ``from_stream``: bytes moved each way. ``reset()`` aborts both sides
    (a policy change, the drain deadline). ``on_done`` runs once, however it ended."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.stream: HboneStream | None = None
        self.transport: asyncio.Transport | None = None
        self.to_stream = 0
        self.from_stream = 0
        self.on_done = None
        self._done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._ended = False  # _done is done: a plain flag, read per chunk
        self._tcp_eof = False
        self._stream_eof = False
        self._reading_paused = False
        self._writing_paused = False
        self._owed = 0  # flow-controlled bytes delivered while the TCP side was paused

    async def run(self, stream: HboneStream) -> tuple[int, int]:
        """Splice until both directions end; returns (bytes TCP→stream, bytes stream→TCP)."""
        self.stream = stream
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: self, sock=self._sock)
        except BaseException as exc:
            self._sock.close()
            self._finish(exc if isinstance(exc, Exception) else ConnectionResetError("splice cancelled"))
            raise
        if not self._ended:
            stream._attach(self)  # hands over what arrived before the splice began
        try:
            exc = await asyncio.shield(self._done)
        except asyncio.CancelledError:
            self.reset()
            raise
        if exc is not None:
            raise exc
        return self.to_stream, self.from_stream

    def close(self) -> None:
        """Give up before run(): the stream ended first."""
        self._sock.close()
        self._finish(None)

    def reset(self) -> None:
        self._finish(ConnectionResetError("reset by proxy"))

    # ---- the TCP side (asyncio.Protocol) ----
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data):
        if self._ended:
            return
        self.to_stream += len(data)
        stream = self.stream
        try:
            stream.send(data)
        except (ConnectionError, OSError) as exc:
            self._finish(exc)
            return
        if stream._send_bytes > DRAIN_LOW_WATER or stream._session.write_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self):
        self._tcp_eof = True
        if not self._ended:
            self.stream.write_eof()
            if self._stream_eof:
                self._finish(None)
        return True

    def connection_lost(self, exc):
        if not self._ended:
            self._finish(exc or ConnectionResetError("TCP connection closed before both sides ended"))

    def pause_writing(self):
        self._writing_paused = True

    def resume_writing(self):
        self._writing_paused = False
        owed, self._owed = self._owed, 0
        if owed and not self._ended:
            self.stream._session.return_window(self.stream.stream_id, owed)

    # ---- the stream side (called by HboneStream) ----
    def stream_data(self, data: bytes | memoryview, flow_length: int) -> None:
        self.from_stream += len(data)
        transport = self.transport
        transport.write(data)
        if type(data) is memoryview and transport.get_write_buffer_size():
            self.stream._session.lent_to(transport)  # the view waits in its queue
        if self._writing_paused:
            self._owed += flow_length
        elif flow_length:
            self.stream._session.return_window(self.stream.stream_id, flow_length)

    def stream_eof(self) -> None:
        self._stream_eof = True
        if self.transport.can_write_eof() and not self.transport.is_closing():
            self.transport.write_eof()
        if self._tcp_eof:
            self._finish(None)

    def stream_reset(self, exc: BaseException) -> None:
        if self._stream_eof:
            # The peer's END_STREAM came first (passed on as FIN): its bytes are complete, and the
            # reset says only that it reads no more of ours, as an Envoy waypoint does after a
            # response with `Connection: close`. Deliver them, as a socket closed after its last
            # write does; an abort here would throw away what the TCP transport still holds.
            self._finish(None)
            return
        self._finish(exc)

    def stream_writable(self) -> None:
        stream = self.stream
        if (self._reading_paused and not self._ended and stream._send_bytes <= DRAIN_LOW_WATER
                and not stream._session.write_paused):
            self._reading_paused = False
            self.transport.resume_reading()

    # ---- the end ----
    def _finish(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._done.set_result(exc)
        stream, transport = self.stream, self.transport
        if stream is not None:
            stream._sink = None
            if self._owed:
                stream._session.return_window(stream.stream_id, self._owed)
                self._owed = 0
        if exc is not None:
            if transport is not None and not transport.is_closing():
                reset_transport(transport)
            if stream is not None:
                stream.reset()
        else:
            if transport is not None:
                transport.close()
            if stream is not None:
                stream.close()
        if self.on_done is not None:
            self.on_done()


async def splice(sock: socket.socket, stream: HboneStream) -> tuple[int, int]:
    """Join ``sock`` and ``stream`` until both directions end: (bytes sock→stream, stream→sock)."""
    return await StreamSplice(sock).run(stream)
