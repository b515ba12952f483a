"""HTTP/2 over one terminated tunnel: h2c with prior knowledge, as gRPC clients and
`curl --http2-prior-knowledge` speak it.

The h2 library (sans-I/O) does the framing, HPACK and flow control; each stream is one request,
decided by the same pipeline as HTTP/1.1 (JWT authentication, L7 authorization) and forwarded
over HTTP/1.1 to the endpoint, as Envoy does for a cluster without an HTTP/2 upgrade policy.
Streams are independent: each forwarded one holds its own upstream connection (kept for reuse
while the downstream connection lives), so a slow stream never blocks the others.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from dataclasses import dataclass, field

import h11
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from . import limits
from .http import (CHUNK, NO_CONFIG_BODY, UPSTREAM_CONNECT_FAILURE, UPSTREAM_RESET, AccessRecord,
                   TunnelHandler, UpstreamUnavailable, _UpstreamClosed, _UpstreamConnection)
from .pipeline import Verdict, decide, hop_by_hop

log = logging.getLogger("l7.http2")

#: RFC 9113 section 8.2.2: connection-specific fields, never sent in HTTP/2
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
#: Envoy's body for a route timeout (as l7/retry.py answers it over HTTP/1.1)
ROUTE_TIMEOUT_BODY = b"upstream request timeout"
#: RFC 7541 section 4.1: each field counts its name, its value and 32 octets
_FIELD_OVERHEAD = 32


def header_list_size(headers) -> int:
    return sum(len(name) + len(value) + _FIELD_OVERHEAD for name, value in headers)


@dataclass
class _Stream:
    stream_id: int
    headers: list[tuple[str, str]]
    body: asyncio.Queue = field(default_factory=asyncio.Queue)  # bytes chunks, then None at the end
    window_open: asyncio.Event = field(default_factory=asyncio.Event)
    reset: bool = False
    ended: bool = False              # the client's END_STREAM (or reset) is in `body`
    response_started: bool = False   # our HEADERS went out

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.body.put_nowait(None)


class Http2Connection(TunnelHandler):
    """Serves one downstream HTTP/2 connection until either side closes it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="latin-1", validate_inbound_headers=True))
        # HPACK may decode a little more than the limit, so the stream gets a 431 rather than the
        # whole connection a COMPRESSION_ERROR.
        self.h2.decoder.max_header_list_size = 2 * limits.MAX_HEADER_LIST_SIZE
        self.streams: dict[int, _Stream] = {}
        self.tasks: set[asyncio.Task] = set()
        self.idle_upstreams: dict[tuple, list[_UpstreamConnection]] = {}
        self.goaway_sent = False

    def close_if_idle(self) -> bool:
        if self.streams:
            return False
        self._goaway()
        self.writer.close()
        return True

    # ---- the connection ----
    async def serve(self) -> None:
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.MAX_HEADER_LIST_SIZE})
        self.h2.initiate_connection()
        try:
            await self._flush()
            data = self.initial
            while True:
                if data:
                    try:
                        events = self.h2.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        log.info("bad HTTP/2 from %s: %s", self.principal, exc)
                        await self._flush()  # h2 queued the GOAWAY naming the error
                        break
                    for event in events:
                        self._on_event(event)
                    await self._flush()
                data = await self.reader.read(CHUNK)
                if not data:
                    break
        except (ConnectionError, OSError) as exc:
            log.debug("HTTP/2 connection from %s ended: %r", self.principal, exc)
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for pool in self.idle_upstreams.values():
                for upstream in pool:
                    upstream.close()
            self.idle_upstreams.clear()
            try:
                self.writer.close()
            except Exception:  # closing a half-dead stream must not mask the connection's outcome
                pass

    def _on_event(self, event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            stream = _Stream(event.stream_id, [(n, v) for n, v in event.headers])
            self.streams[event.stream_id] = stream
            if event.stream_ended is not None:
                stream.end()
            task = asyncio.ensure_future(self._serve_stream(stream, event.stream_ended is not None))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            stream.body.put_nowait((event.data, event.flow_controlled_length))
            if event.stream_ended is not None:
                stream.end()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.reset = True
                stream.window_open.set()
                stream.end()
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self.streams.values() if event.stream_id == 0 else \
                [s for s in (self.streams.get(event.stream_id),) if s is not None]
            for stream in targets:
                stream.window_open.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                stream.window_open.set()

    async def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    def _goaway(self) -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            self.h2.close_connection()
            data = self.h2.data_to_send()
            if data:
                self.writer.write(data)

    # ---- one stream ----
    async def _serve_stream(self, stream: _Stream, no_body: bool) -> None:
        started = time.monotonic()
        pseudo = {name: value for name, value in stream.headers if name.startswith(":")}
        method, target = pseudo.get(":method", ""), pseudo.get(":path", "")
        headers = [(name.lower(), value) for name, value in stream.headers if not name.startswith(":")]
        if not any(name == "host" for name, _ in headers) and ":authority" in pseudo:
            headers.insert(0, ("host", pseudo[":authority"]))
        record = AccessRecord(method, target.split("?", 1)[0], 0, self.principal, "")
        try:
            if header_list_size(stream.headers) > limits.MAX_HEADER_LIST_SIZE:
                record.reason = f"request headers exceed {limits.MAX_HEADER_LIST_SIZE} bytes"
                record.status = await self._local_reply(stream, 431, b"")
                return
            config = self.get_config()
            if config is None:
                verdict = Verdict(503, "no configuration from istiod yet", body=NO_CONFIG_BODY)
            else:
                verdict = decide(config, self.router, self.tunnel, method, target, headers)
            record.reason, record.request_principal = verdict.reason, verdict.request_principal
            route = verdict.route
            if route is not None and route.delay:
                await asyncio.sleep(route.delay)   # fault injection: the request waits before anything else
            if not verdict.forwards:
                record.status = await self._local_reply(stream, verdict.status, verdict.body, verdict.reply_headers)
                return
            upstream = verdict.upstream
            record.upstream = f"{upstream.workload.namespace}/{upstream.workload.name}@" \
                              f"{upstream.address[0]}:{upstream.address[1]}"
            record.status, failure = await self._forward_within_timeout(stream, verdict, no_body)
            if failure:
                record.reason = f"{verdict.reason}; {failure}"
        except (ConnectionError, OSError, h2.exceptions.ProtocolError) as exc:
            record.reason = f"{record.reason}; stream failed: {exc!r}"
        finally:
            self.streams.pop(stream.stream_id, None)
            record.duration_ms = (time.monotonic() - started) * 1000
            if record.status == 0:
                record.reason = f"{record.reason}; downstream reset"
            self.emit(record)

    async def _local_reply(self, stream: _Stream, status: int, body: bytes,
                           extra: list[tuple[str, str]] = ()) -> int:
        headers = [(":status", str(status)), ("content-type", "text/plain"), ("content-length", str(len(body))),
                   ("date", email.utils.formatdate(usegmt=True)), *extra]
        if stream.reset:
            return 0
        self.h2.send_headers(stream.stream_id, headers, end_stream=not body)
        stream.response_started = True
        if body:
            await self._send_body(stream, body, end=True)
        await self._flush()
        if not stream.ended:  # the request's body is not wanted: ask the client to stop sending it
            self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            await self._flush()
        return status

    async def _send_body(self, stream: _Stream, data: bytes, end: bool) -> None:
        view = memoryview(data)
        while view and not stream.reset:
            window = min(self.h2.local_flow_control_window(stream.stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                stream.window_open.clear()
                await self._flush()
                await stream.window_open.wait()
                continue
            chunk, view = view[:window], view[window:]
            self.h2.send_data(stream.stream_id, bytes(chunk), end_stream=end and not view)
            await self._flush()
        if end and not data and not stream.reset:
            self.h2.end_stream(stream.stream_id)
            await self._flush()

    async def _upstream_for(self, verdict: Verdict) -> _UpstreamConnection:
        upstream = verdict.upstream
        pool = self.idle_upstreams.setdefault((upstream.workload.uid, *upstream.address), [])
        while pool:
            connection = pool.pop()
            if connection.reusable():
                return connection
            connection.close()
        reader, writer = await self.open_upstream(upstream, self.tunnel)
        return _UpstreamConnection(upstream, reader, writer)

    async def _forward_within_timeout(self, stream: _Stream, verdict: Verdict, no_body: bool) -> tuple[int, str]:
        """A route's `timeout` bounds the exchange (504 before the response began, a reset after);
        its retries are not made over HTTP/2 (each HTTP/2 request is tried once)."""
        timeout = verdict.route.timeout if verdict.route is not None else None
        if not timeout:
            return await self._forward(stream, verdict, no_body)
        try:
            return await asyncio.wait_for(self._forward(stream, verdict, no_body), timeout)
        except asyncio.TimeoutError:
            if stream.response_started:
                self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
                await self._flush()
                return 0, f"route timeout of {timeout:g}s passed mid-response"
            return await self._local_reply(stream, 504, ROUTE_TIMEOUT_BODY), f"route timeout of {timeout:g}s"

    async def _forward(self, stream: _Stream, verdict: Verdict, no_body: bool) -> tuple[int, str]:
        try:
            up = await self._upstream_for(verdict)
        except UpstreamUnavailable as exc:
            return await self._local_reply(stream, 503, UPSTREAM_CONNECT_FAILURE), str(exc)
        forward = list(verdict.forward_headers)
        if not no_body and not any(name in ("content-length", "transfer-encoding") for name, _ in forward):
            forward.append(("transfer-encoding", "chunked"))  # HTTP/2 frames the body; HTTP/1.1 needs it said
        body_task = None
        try:
            target = verdict.route.target if verdict.route is not None else _pseudo(stream, ":path")
            await up.send(h11.Request(method=_latin(_pseudo(stream, ":method")), target=_latin(target),
                                      headers=[(_latin(n), _latin(v)) for n, v in forward]))
            body_task = asyncio.ensure_future(self._copy_request_body(stream, up))
            status = await self._relay_response(stream, up, verdict.route)
            await body_task
        except asyncio.CancelledError:   # a route timeout: this upstream is mid-exchange, never reused
            up.close()
            if body_task is not None:
                body_task.cancel()
            raise
        except (ConnectionError, OSError, h11.ProtocolError) as exc:
            up.close()
            if body_task is not None:
                body_task.cancel()
                await asyncio.gather(body_task, return_exceptions=True)
            if self.h2.state_machine.state != h2.connection.ConnectionState.CLOSED and not stream.reset:
                if stream.response_started:
                    self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    await self._flush()
                    return 0, f"upstream failed mid-response: {exc!r}"
                return await self._local_reply(stream, 503, UPSTREAM_RESET), f"upstream failed: {exc!r}"
            return 0, f"stream ended: {exc!r}"
        if up.reusable():
            self.idle_upstreams.setdefault(up.key, []).append(up)
        else:
            up.close()
        return status, ""

    async def _copy_request_body(self, stream: _Stream, up: _UpstreamConnection) -> None:
        while True:
            item = await stream.body.get()
            if item is None:
                if stream.reset:
                    raise _UpstreamClosed("client reset the stream before its body was complete")
                await up.send(h11.EndOfMessage())
                return
            data, flow_controlled = item
            if data:
                await up.send(h11.Data(data=data))
            if stream.stream_id in self.streams:
                self.h2.acknowledge_received_data(flow_controlled, stream.stream_id)
                await self._flush()

    async def _relay_response(self, stream: _Stream, up: _UpstreamConnection, route=None) -> int:
        status = 0
        while True:
            event = await up.next_event()
            if stream.reset:
                raise _UpstreamClosed("client reset the stream")
            if isinstance(event, h11.InformationalResponse):
                continue  # 1xx are not relayed over HTTP/2 here (100-continue is hop-local)
            if isinstance(event, h11.Response):
                status = event.status_code
                pairs = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in event.headers]
                drop = hop_by_hop(pairs) | _CONNECTION_SPECIFIC
                if route is not None:
                    pairs = route.modify_response(pairs)
                self.h2.send_headers(stream.stream_id, [(":status", str(status)),
                                                        *[(n, v) for n, v in pairs if n not in drop]])
                stream.response_started = True
                await self._flush()
            elif isinstance(event, h11.Data):
                await self._send_body(stream, event.data, end=False)
            elif isinstance(event, h11.EndOfMessage):
                self.h2.end_stream(stream.stream_id)
                await self._flush()
                return status
            else:
                raise _UpstreamClosed("upstream closed before the response was complete")


def _pseudo(stream: _Stream, name: str) -> str:
    return next((value for n, value in stream.headers if n == name), "")


def _latin(text: str) -> bytes:
    return text.encode("latin-1")

