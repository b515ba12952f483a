"""An HTTP/2 connection (the `h2` state machine) on an asyncio TLS transport, shared by client and server."""

from __future__ import annotations

import asyncio
import binascii
import logging
import struct

import h2.config
import h2.connection
from h2.connection import ConnectionState
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import hyperframe.frame
from h2.errors import ErrorCodes

from .stream import DRAIN_LOW_WATER, HboneStream

log = logging.getLogger(__name__)

# Large windows and frames keep Python's per-frame work low (ztunnel: 4 MiB stream window, 1 MiB frames).
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
MAX_STREAMS = 100
_TRANSPORT_HIGH_WATER = 1024 * 1024
# DATA frame header: 24-bit length, type 0, flags 0, stream id (RFC 9113 4.1)
_DATA_HEADER = struct.Struct(">HBBBL")
_FRAME_HEADER = struct.Struct(">BHBBL")  # the same 9 bytes read back: length split 8 + 16 bits
_JOIN_LIMIT = 16 * 1024  # one TLS record's worth: joining is cheaper than a record of its own
# The TLS transport decrypts into the session's buffer (BufferedProtocol): at most what one TCP
# read holds (uvloop reads 256 KiB of records at a time), so one buffer takes a read whole.
_READ_BUFFER_MAX = 256 * 1024 + 1024
_READ_BUFFER_MIN = 16 * 1024 + 256
_END_STREAM = 0x1
_RECV_DATA_STATES = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL)
_SEND_DATA_STATES = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE)
_STREAM_CLOSED = h2.stream.StreamState.CLOSED


def _short_raw_data_repr(data) -> str:
    if not data:
        return "None"
    text = binascii.hexlify(data[:10]).decode("ascii")
    return "<hex:" + (text + "..." if len(data) > 10 else text) + ">"


# h2 builds repr(frame) for a trace log on every received frame, even with logging off, and
# hyperframe's repr hex-encodes the WHOLE payload before keeping 20 characters: with 1 MiB DATA
# frames that was 40% of the server's CPU. Same output, from the first 10 bytes only.
hyperframe.frame._raw_data_repr = _short_raw_data_repr


def _open_state(client_side: bool) -> ConnectionState:
    return ConnectionState.CLIENT_OPEN if client_side else ConnectionState.SERVER_OPEN


class _GracefulGoawayConnection(h2.connection.H2Connection):
    """h2 treats any GOAWAY as the end of the connection: its state machine goes to CLOSED and
    refuses every later frame, while RFC 9113 6.8 lets streams up to last_stream_id finish.
    After a NO_ERROR GOAWAY the state goes straight back to open (within the same read, before
    the frames that follow it); the session opens no new stream once a GOAWAY was seen."""

    def _receive_goaway_frame(self, frame):
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == ErrorCodes.NO_ERROR:
            self.state_machine.state = _open_state(self.config.client_side)
        return frames, events


class StreamReset(ConnectionResetError):
    """The peer reset the stream (RST_STREAM) or the whole connection went away.

    ``unprocessed``: the peer certainly never acted on the stream (REFUSED_STREAM, or its id
    is above a GOAWAY's last stream id), so its request may be sent again (RFC 9113 §8.7)."""

    def __init__(self, message: str, *, unprocessed: bool = False):
        super().__init__(message)
        self.unprocessed = unprocessed


class H2Session(asyncio.BufferedProtocol):
    """Drives h2 from transport callbacks; subclasses handle requests (server) or responses (client).

    A BufferedProtocol: the TLS transport decrypts a read's records straight into the session's
    buffer, where a Protocol gets each record as its own bytes object and then their join (two
    copies of every byte received), and DATA for a spliced stream leaves as a view of that buffer.
    A view the TCP transport could not write at once stays in its queue, so the buffer is then
    given to it and the next read gets a new one (``lent_to()``)."""

    client_side = False

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.conn = _GracefulGoawayConnection(h2.config.H2Configuration(
            client_side=self.client_side, header_encoding="utf-8", validate_inbound_headers=True))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, HboneStream] = {}
        self.write_paused = False
        self.closed = False
        self.close_reason: str | None = None
        self.goaway_received = False
        self.goaway_sent = False
        self._closed_event = asyncio.Event()
        # a DATA frame cut by a read: its stream, the payload bytes still to come, its END_STREAM
        self._data_sid, self._data_left, self._data_end = 0, 0, False
        self._open_state = _open_state(self.client_side)
        self._rbuf = memoryview(bytearray(0))
        self._rbuf_lent: list[asyncio.Transport] = []  # transports that may still hold views of it

    # ---- lifecycle ----
    def start_h2(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=_TRANSPORT_HIGH_WATER)
        self.conn.initiate_connection()
        self.conn.update_settings({
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        } if self.client_side else {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
        })
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - self.conn.inbound_flow_control_window)
        self.flush()

    def get_extra_info(self, name: str, default=None):
        return self.transport.get_extra_info(name, default) if self.transport else default

    def close(self, reason: str = "closed", error_code: int = ErrorCodes.NO_ERROR) -> None:
        if self.closed:
            return
        try:
            self.conn.close_connection(error_code=error_code)
            self.flush()
        except h2.exceptions.ProtocolError:
            pass
        self._shutdown(reason)
        if self.transport is not None:
            self.transport.close()

    def abort(self, reason: str) -> None:
        self._shutdown(reason)
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def _shutdown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for stream in list(self.streams.values()):
            stream._on_reset(StreamReset(f"HBONE connection closed: {reason}"))
        self.streams.clear()
        self._closed_event.set()
        self.on_closed(reason)

    def on_closed(self, reason: str) -> None:
        pass

    # ---- asyncio.BufferedProtocol ----
    def get_buffer(self, sizehint: int) -> memoryview:
        buf, lent = self._rbuf, self._rbuf_lent
        busy = False
        if lent:
            busy = any(transport.get_write_buffer_size() for transport in lent)
            lent.clear()
        want = min(max(sizehint, _READ_BUFFER_MIN), _READ_BUFFER_MAX)
        if busy or len(buf) < want:  # one allocation, big enough for the read and never shrinking
            buf = self._rbuf = memoryview(bytearray(max(len(buf), want)))
        return buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rbuf[:nbytes])

    def lent_to(self, transport: asyncio.Transport) -> None:
        """``transport`` kept a view of the read buffer in its write queue: until it has written
        it out, reads go to a new buffer."""
        self._rbuf_lent.append(transport)

    def data_received(self, data: bytes | memoryview) -> None:
        if self.closed or self.transport is None:
            return
        try:
            events = self._receive(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("HTTP/2 protocol error from %s: %s", self.get_extra_info("peername"), exc)
            self.flush()
            self.abort(f"HTTP/2 protocol error: {exc}")
            return
        for event in events:
            self._dispatch(event)
        self.flush()

    def _receive(self, data: bytes) -> list:
        """h2's receive_data(), with the DATA frames of open streams taken here, whole or in the
        pieces the reads cut them into: h2 parses each into a frame object, builds a trace repr
        of it even with logging off, and dispatches it, about half of a chunk's receive time; and
        it buffers a frame cut by a read (with 1 MiB frames, every bulk frame) by copying it into
        its buffer and out again. The state machines and flow-control windows advance through
        h2's own calls, as its _receive_data_frame() does, piece by piece (END_STREAM with the
        last); anything else (another frame type, padding, a stream h2 would refuse) goes to h2
        from there on."""
        conn = self.conn
        buf = conn.incoming_buffer
        if buf._preamble_len or buf._headers_buffer:
            return conn.receive_data(bytes(data))
        if buf._data:  # the part of a frame h2 kept from the last read: ours again if it is DATA
            data = bytes(buf._data) + data
            buf._data = bytearray()
        events: list = []
        pos, end, max_size = 0, len(data), conn.max_inbound_frame_size
        try:
            if self._data_left:  # the rest of a DATA frame an earlier read began
                take = min(self._data_left, end)
                self._data_left -= take
                events += self._receive_data(self._data_sid, data, 0, take, self._data_end and not self._data_left)
                pos = take
            while end - pos >= 9:
                length_high, length_low, frame_type, flags, sid = _FRAME_HEADER.unpack_from(data, pos)
                length = length_high << 16 | length_low
                if frame_type != 0 or flags & ~_END_STREAM or length > max_size:
                    break
                sid &= 0x7FFFFFFF
                stream = conn.streams.get(sid)
                if stream is None or sid not in self.streams or stream.state_machine.state not in _RECV_DATA_STATES:
                    break
                take = min(length, end - pos - 9)
                end_stream = bool(flags & _END_STREAM)
                if take < length:
                    self._data_sid, self._data_left, self._data_end = sid, length - take, end_stream
                events += self._receive_data(sid, data, pos + 9, pos + 9 + take, end_stream and take == length)
                pos += 9 + take
        except h2.exceptions.ProtocolError as exc:  # e.g. the peer overran a window: as h2 does
            conn._terminate_connection(exc.error_code)
            raise
        if pos < end:
            events += conn.receive_data(bytes(data[pos:]))
        return events

    def _receive_data(self, sid: int, data: bytes, start: int, stop: int, end_stream: bool) -> list:
        """``data[start:stop]``: one DATA frame's payload, or the piece of it one read holds, for
        stream ``sid``. A stream spliced to a socket gets a view of the read buffer, not a copy:
        the TCP transport writes it straight out (and says if it kept it: ``lent_to()``)."""
        conn = self.conn
        size = stop - start
        if not size and not end_stream:  # a frame's header alone: its payload comes with the next read
            return []
        ours = self.streams.get(sid)
        if ours is not None and ours._sink is not None:
            piece = data if size == len(data) else memoryview(data)[start:stop]
        else:
            piece = bytes(data[start:stop])  # kept until read: its own bytes, not a view of the read buffer
        if not end_stream and conn.state_machine.state is self._open_state:
            stream = conn.streams.get(sid)
            if (ours is not None and stream is not None
                    and stream.state_machine.state in _RECV_DATA_STATES and stream.state_machine.headers_received
                    and stream._expected_content_length is None):
                # DATA of an open stream in the steady state: RECV_DATA changes neither state
                # machine here, and the DataReceived event would only carry the bytes to the
                # stream's _feed(); the windows shrink as h2's receive_data() shrinks them.
                conn._inbound_flow_control_window_manager.window_consumed(size)
                stream._inbound_window_manager.window_consumed(size)
                ours._feed(piece, size)
                return []
        events = conn.state_machine.process_input(h2.connection.ConnectionInputs.RECV_DATA)
        conn._inbound_flow_control_window_manager.window_consumed(size)
        stream = conn.streams.get(sid)
        if stream is None or sid not in self.streams or stream.state_machine.state not in _RECV_DATA_STATES:
            # closed since the frame began (reset here): its bytes still count on the connection
            if size:
                conn.acknowledge_received_data(size, sid)
            return events
        _, stream_events = stream.receive_data(piece, end_stream, size)
        return events + stream_events

    def connection_lost(self, exc: Exception | None) -> None:
        self._shutdown(f"connection lost ({exc})" if exc else "peer closed the connection")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream._wake_writer()

    def eof_received(self):
        return False

    # ---- h2 plumbing ----
    def flush(self) -> None:
        if not self.conn._data_to_send:  # the common case: nothing queued; data_to_send() allocates
            return
        data = self.conn.data_to_send()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _dispatch(self, event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.return_window(event.stream_id, event.flow_controlled_length)
            else:
                stream._feed(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._feed_eof()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None and event.error_code == ErrorCodes.NO_ERROR and stream._recv_eof:
                stream._on_peer_stop()  # RFC 9113 §8.1: its answer is complete; keep it
            elif stream is not None:
                self.on_stream_reset(stream, event.error_code)
                stream._on_reset(StreamReset(f"HBONE stream reset by peer ({_code_name(event.error_code)})",
                                             unprocessed=event.error_code == ErrorCodes.REFUSED_STREAM))
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                for stream in list(self.streams.values()):
                    self.send_pending(stream)
            elif event.stream_id in self.streams:
                self.send_pending(self.streams[event.stream_id])
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for stream in list(self.streams.values()):
                self.send_pending(stream)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_received = True
            self.on_goaway(event)
        elif isinstance(event, h2.events.PingAckReceived):
            self.on_ping_ack(event)
        else:
            self.on_event(event)

    def on_event(self, event) -> None:
        pass

    def on_stream_reset(self, stream: HboneStream, error_code: int) -> None:
        pass

    def on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last:
                stream._on_reset(StreamReset("HBONE connection is going away (GOAWAY)", unprocessed=True))
        if event.error_code != ErrorCodes.NO_ERROR:
            self.abort(f"peer sent GOAWAY ({_code_name(event.error_code)})")
        elif not self.streams:
            self.close("peer sent GOAWAY and no streams are open")

    def send_goaway(self) -> None:
        """Graceful GOAWAY: no new streams on this connection, the open ones run to completion."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        try:
            self.conn.close_connection(ErrorCodes.NO_ERROR)
        except h2.exceptions.ProtocolError:
            return
        self.flush()
        if self.streams:
            self._keep_streams_after_goaway()
        else:
            self.close("GOAWAY sent, no open streams")

    def _keep_streams_after_goaway(self) -> None:
        self.conn.state_machine.state = _open_state(self.client_side)

    def on_ping_ack(self, event) -> None:
        pass

    def register(self, stream: HboneStream) -> None:
        self.streams[stream.stream_id] = stream

    def stream_finished(self, stream: HboneStream) -> None:
        self.streams.pop(stream.stream_id, None)
        if (self.goaway_received or self.goaway_sent) and not self.streams:
            self.close("GOAWAY and no streams left")

    def return_window(self, stream_id: int, size: int) -> None:
        if self.closed or size <= 0:
            return
        # Most returns owe the peer no WINDOW_UPDATE yet (h2 sends one once half a window is
        # processed, or at a window of 0): then count the bytes as h2's window managers do, without
        # its acknowledge_received_data() and the frame list it builds.
        conn_window = self.conn._inbound_flow_control_window_manager
        stream = self.conn.streams.get(stream_id)
        if stream is not None and stream.state_machine.state is not _STREAM_CLOSED:
            stream_window = stream._inbound_window_manager
            if (conn_window.current_window_size and stream_window.current_window_size
                    and conn_window._bytes_processed + size < conn_window.max_window_size // 2
                    and stream_window._bytes_processed + size < stream_window.max_window_size // 2):
                conn_window._bytes_processed += size
                stream_window._bytes_processed += size
                return
        try:
            self.conn.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return
        self.flush()

    def send_pending(self, stream: HboneStream) -> None:
        """Move as much of the stream's queued data into HTTP/2 frames as the send windows allow."""
        if self.closed or stream._reset is not None:
            return
        conn, sid, queue = self.conn, stream.stream_id, stream._send
        try:
            if len(queue) > 1 and sum(map(len, queue)) <= _JOIN_LIMIT:  # a turn's small writes: one frame
                queue.appendleft(b"".join([queue.popleft() for _ in range(len(queue))]))
            while queue:
                window = conn.local_flow_control_window(sid)
                if window <= 0:
                    break
                chunk = queue[0]
                size = min(window, len(chunk), conn.max_outbound_frame_size)
                if size == len(chunk):
                    queue.popleft()
                    self._send_data(sid, chunk)
                else:
                    queue[0] = chunk[size:]
                    self._send_data(sid, chunk[:size])
                stream._send_bytes -= size
                stream.bytes_sent += size
            if not queue and stream._eof_wanted and not stream._local_done:
                conn.end_stream(sid)
                if stream._reset_after_eof and not stream._recv_eof:
                    conn.reset_stream(sid, ErrorCodes.CANCEL)
                    stream._on_reset(StreamReset("HBONE stream closed locally"))
                stream._on_local_end()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            stream._on_reset(StreamReset(f"HBONE stream {sid} can no longer send: {exc}"))
        self.flush()
        if stream._send_bytes <= DRAIN_LOW_WATER or stream._reset is not None:
            stream._wake_writer()

    def send_now(self, stream: HboneStream, data: bytes) -> bool:
        """``data`` as one DATA frame at once, if the windows and the frame size allow it;
        False (nothing sent) otherwise, for the queue and send_pending() to take it."""
        if self.closed:
            return False
        conn, size = self.conn, len(data)
        h2_stream = conn.streams.get(stream.stream_id)
        if (h2_stream is None or size > conn.max_outbound_frame_size or size > conn.outbound_flow_control_window
                or size > h2_stream.outbound_flow_control_window):
            return False
        try:
            self._send_data(stream.stream_id, data)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return False  # raised before anything was sent or counted: send_pending() resets the stream
        stream.bytes_sent += size
        return True

    def _send_data(self, stream_id: int, data: bytes) -> None:
        """One DATA frame (no flags, no padding) straight to the transport, with h2's state
        machines and flow-control windows advanced exactly as its send_data() does. h2 builds a
        frame object, serializes it and copies header and payload through three buffers per
        frame: for 1 MiB frames that was the bulk path's largest cost, and at 1 KiB a fifth of
        a chunk's Python time. The caller checked the windows and the frame size."""
        conn = self.conn
        stream = conn.streams.get(stream_id)
        if (conn.state_machine.state is not self._open_state or stream is None
                or stream.state_machine.state not in _SEND_DATA_STATES):
            # SEND_DATA changes neither state machine in the open states: only elsewhere are
            # they asked (and raise, as send_data() would)
            conn.state_machine.process_input(h2.connection.ConnectionInputs.SEND_DATA)
            stream = conn._get_stream_by_id(stream_id)
            stream.state_machine.process_input(h2.stream.StreamInputs.SEND_DATA)
        size = len(data)
        stream.outbound_flow_control_window -= size
        conn.outbound_flow_control_window -= size
        header = _DATA_HEADER.pack(size >> 8, size & 0xFF, 0, 0, stream_id)
        pending = conn.data_to_send() if conn._data_to_send else b""  # what h2 queued before goes first
        if self.transport is None or self.transport.is_closing():
            return
        if size <= _JOIN_LIMIT:  # one TLS record for header and payload
            self.transport.write(pending + header + data)
        else:
            self.transport.writelines([pending + header, data])

    def reset_stream(self, stream: HboneStream, error_code: int) -> None:
        if not self.closed:
            try:
                self.conn.reset_stream(stream.stream_id, error_code)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self.flush()
        stream._on_reset(StreamReset(f"HBONE stream reset locally ({_code_name(error_code)})"))


def _code_name(code) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)
