"""One HBONE tunnel: an HTTP/2 CONNECT stream with a reader/writer interface.

Reading hands out whole DATA payloads and only then returns their bytes to the peer's flow
control window, so a slow consumer holds the sender at the window (bounded memory). Writing hands
bytes to HTTP/2 as far as the send window allows; ``drain()`` waits for the rest and for the TLS
transport's own back-pressure.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

if TYPE_CHECKING:
    from .session import H2Session
    from .splice import StreamSplice

# drain() lets this much wait for the peer's window, so the pipe keeps the next chunk in flight.
DRAIN_LOW_WATER = 256 * 1024


class HboneStream:
    def __init__(self, session: H2Session, stream_id: int):
        self._session = session
        self.stream_id = stream_id
        self._recv: deque[list] = deque()  # [payload, flow-controlled bytes not yet returned]
        self._recv_eof = False
        self._reset: BaseException | None = None
        self._read_waiter: asyncio.Future | None = None
        self._send: deque[bytes] = deque()
        self._send_bytes = 0
        self._flush_scheduled = False
        self._eof_wanted = False
        self._reset_after_eof = False
        self._local_done = False
        self._peer_stopped = False
        self._drain_waiter: asyncio.Future | None = None
        self._finished = False
        self.bytes_received = 0
        self.bytes_sent = 0
        self.response: asyncio.Future | None = None  # client side: the CONNECT's :status
        self._sink: StreamSplice | None = None  # set: incoming DATA goes straight to a TCP socket
        # Set by a server that hands the stream to a handler in place of a socket (the waypoint's
        # L7 engine): close() then half-closes and stops reading, as closing a socket does, and
        # DATA that arrives after it resets the stream (a closed socket answers data with RST).
        self.close_stops_reading = False
        self._read_closed = False

    # ---- reader side ----
    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: one whole DATA payload); ``b''`` at END_STREAM; raises on reset."""
        while not self._recv:
            if self._recv_eof or self._read_closed:  # before a reset: it came after the whole answer
                return b""
            if self._reset is not None:
                raise self._reset
            self._read_waiter = self._session.loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        entry = self._recv[0]
        data = entry[0]
        if n < 0 or len(data) <= n:
            self._recv.popleft()
            owed = entry[1]
        else:
            entry[0] = data[n:]
            data = data[:n]
            owed = min(n, entry[1])
            entry[1] -= owed
        if owed:
            self._session.return_window(self.stream_id, owed)
        return data

    def at_eof(self) -> bool:
        return (self._recv_eof or self._read_closed) and not self._recv

    # ---- writer side ----
    def write(self, data: bytes) -> None:
        if self._queue(data):
            if not self._flush_scheduled:
                # Writes coalesce per loop turn: an HTTP/1.1 head and body written back to back
                # (the waypoint's h11 events) leave as one DATA frame, one TLS record, one send.
                self._flush_scheduled = True
                self._session.loop.call_soon(self._flush)

    def send(self, data: bytes) -> None:
        """write() without waiting for the loop turn's end: for a splice, whose every chunk is
        one whole read (nothing to coalesce it with)."""
        if (not self._send and not self._flush_scheduled and self._reset is None and not self._peer_stopped
                and not self._eof_wanted and not self._local_done and type(data) is bytes and data
                and self._session.send_now(self, data)):
            return  # nothing queued before it and the windows have room: one frame, now
        if self._queue(data) and not self._flush_scheduled:
            self._session.send_pending(self)

    def _queue(self, data: bytes) -> bool:
        if self._reset is not None:
            raise self._reset
        if self._peer_stopped:  # the peer asked for no more (RST_STREAM NO_ERROR after its END_STREAM)
            return False
        if self._eof_wanted or self._local_done:
            raise BrokenPipeError(f"HBONE stream {self.stream_id}: write after write_eof()")
        if not data:
            return False
        self._send.append(bytes(data))
        self._send_bytes += len(data)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._session.send_pending(self)

    async def drain(self) -> None:
        while self._reset is None and not self._peer_stopped and (
                self._send_bytes > DRAIN_LOW_WATER or self._session.write_paused):
            self._drain_waiter = self._session.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self._reset is not None:
            raise self._reset

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: END_STREAM once everything written so far has been sent."""
        if self._eof_wanted or self._local_done or self._reset is not None:
            return
        self._eof_wanted = True
        self._session.send_pending(self)

    def reset(self, error_code: int = ErrorCodes.CANCEL) -> None:
        """Abort both directions with RST_STREAM."""
        if self._finished:
            return
        self._session.reset_stream(self, error_code)

    def close(self) -> None:
        """Finish gracefully if the peer already finished, else reset once our data is out.
        Whatever was received and not read is dropped, its bytes handed back to the peer's window."""
        self._discard_received()
        if self._finished:
            return
        if self._recv_eof:
            self.write_eof()
        elif self.close_stops_reading:
            self._read_closed = True
            self.write_eof()
            self._wake_reader()   # a read waiting in the handler returns b'', as after a socket's close
        elif self._send_bytes:
            self._reset_after_eof = True
            self.write_eof()
        else:
            self.reset()

    def is_closing(self) -> bool:
        return self._finished or self._eof_wanted or self._local_done

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default=None):
        return self._session.get_extra_info(name, default)

    @property
    def finished(self) -> bool:
        return self._finished

    # ---- called by a splice ----
    def _attach(self, sink: StreamSplice) -> None:
        """From now on DATA, END_STREAM and a reset go to ``sink``, beginning with what is queued."""
        self._sink = sink
        while self._recv and self._sink is sink:
            data, owed = self._recv.popleft()
            sink.stream_data(data, owed)
        if self._sink is not sink:
            return
        if self._recv_eof:
            sink.stream_eof()
        if self._reset is not None and self._sink is sink:
            sink.stream_reset(self._reset)

    # ---- called by the session ----
    def _feed(self, data: bytes, flow_length: int) -> None:
        if not data:  # an empty (or all-padding) DATA frame: nothing to read, which b'' would say is EOF
            if flow_length:
                self._session.return_window(self.stream_id, flow_length)
            return
        self.bytes_received += len(data)
        if self._read_closed:
            if flow_length:   # an empty DATA frame (END_STREAM's) is no data
                self._session.return_window(self.stream_id, flow_length)
                self.reset()
            return
        if self._sink is not None:
            self._sink.stream_data(data, flow_length)
            return
        self._recv.append([bytes(data), flow_length])  # a view of the read buffer would change under it
        self._wake_reader()

    def _feed_eof(self) -> None:
        self._recv_eof = True
        if self._sink is not None:
            self._sink.stream_eof()
        self._wake_reader()
        self._maybe_finished()

    def _on_reset(self, exc: BaseException) -> None:
        if self._reset is None:
            self._reset = exc
        if self.response is not None and not self.response.done():
            self.response.set_exception(exc)
        if not self._recv_eof:
            # After END_STREAM what arrived is the peer's whole answer, and a reset says only that
            # it reads no more of ours: it stays readable, as a socket's data before FIN then RST.
            self._discard_received()
        self._send.clear()
        self._send_bytes = 0
        if self._sink is not None:
            self._sink.stream_reset(exc)
        self._wake_reader()
        self._wake_writer()
        self._mark_finished()

    def _on_peer_stop(self) -> None:
        """RST_STREAM(NO_ERROR) after the peer's END_STREAM: the peer sent its whole answer and
        wants nothing more of ours (RFC 9113 §8.1). Unlike a reset, what it sent stays readable
        (the client MUST NOT discard it); what we would still send is dropped."""
        self._peer_stopped = True
        self._local_done = True
        self._send.clear()
        self._send_bytes = 0
        self._wake_writer()
        self._mark_finished()

    def _discard_received(self) -> None:
        # Unread bytes still count against the connection's window until returned: dropping them
        # without a WINDOW_UPDATE would shrink it for good, and at 0 every stream on the
        # connection stalls (a CONNECT answered 200, then no byte more).
        owed = sum(entry[1] for entry in self._recv)
        self._recv.clear()
        if owed:
            self._session.return_window(self.stream_id, owed)

    def _on_local_end(self) -> None:
        self._local_done = True
        self._maybe_finished()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self._sink is not None:
            self._sink.stream_writable()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _maybe_finished(self) -> None:
        if self._recv_eof and self._local_done:
            self._mark_finished()

    def _mark_finished(self) -> None:
        if not self._finished:
            self._finished = True
            self._session.stream_finished(self)
