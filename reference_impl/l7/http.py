"""HTTP/1.1 over one terminated tunnel: parse requests, decide, answer or forward, relay.

h11 (the sans-I/O HTTP/1.1 state machine) does the parsing and framing on both sides; this module
moves bytes between it and the streams. Requests on one downstream connection are handled one at
a time (HTTP/1.1 has no multiplexing); upstream connections are kept per downstream connection
and reused while both ends allow keep-alive.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11

from ..hbone import abort, pipe
from . import limits
from .access import ACCESS_LOG
from .config import L7Config
from .pipeline import HOP_BY_HOP, Tunnel, Verdict, decide
from .routing import Router, Upstream

log = logging.getLogger("l7.http")

CHUNK = 64 * 1024
# A refused request's body is read and dropped up to this size so the connection stays usable.
MAX_DISCARD = 1024 * 1024
DISCARD_TIMEOUT = 10.0
UPSTREAM_CONNECT_FAILURE = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
UPSTREAM_RESET = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"
NO_CONFIG_BODY = b"no configuration received from the control plane yet"

REQUEST_HEADER_TIMEOUT_BODY = b"request timeout"
#: the one upgrade the waypoint passes through (Istio configures Envoy's `websocket` upgrade)
WEBSOCKET = "websocket"

UpstreamOpener = Callable[[Upstream, Tunnel], Awaitable[tuple]]


class UpstreamUnavailable(Exception):
    """The endpoint could not be reached (HBONE CONNECT refused, TCP connect failed, no identity)."""


class _Abort(Exception):
    """The downstream connection must be torn down (a reset after the response began)."""


class _HeadersTooSlow(Exception):
    """A request's header block did not arrive within limits.REQUEST_HEADERS_TIMEOUT."""


@dataclass
class AccessRecord:
    method: str
    path: str
    status: int
    principal: str
    reason: str
    upstream: str = "-"
    request_principal: str | None = None
    duration_ms: float = 0.0

    def line(self) -> str:
        return (f'"{self.method} {self.path}" {self.status} src={self.principal} '
                f'jwt={self.request_principal or "-"} upstream={self.upstream} '
                f'{self.duration_ms:.1f}ms reason="{self.reason}"')


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _headers(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def header_pairs(event) -> list[tuple[bytes, bytes]]:
    """(lower-case name, value) of a parsed h11 message's headers, as a plain list: h11's Headers
    is a Sequence whose iteration is a Python generator calling __getitem__ per header, so the
    request's headers are taken out once and every check below walks the list."""
    return [(name.lower(), value) for name, value in event.headers.raw_items()]


def head_size(request: h11.Request, pairs: list[tuple[bytes, bytes]]) -> int:
    """The bytes of the request's head on the wire: request line, header lines, blank line."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + len(b": \r\n") for name, value in pairs) + 2


def _bodyless(pairs: list[tuple[bytes, bytes]]) -> bool:
    """No Content-Length (or 0) and no Transfer-Encoding: h11 has the request's end already."""
    for name, value in pairs:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return False
    return True


def _framing_conflict(pairs: list[tuple[bytes, bytes]]) -> str | None:
    """Why the request's body framing is ambiguous (h11 already refuses differing Content-Lengths)."""
    names = {name for name, _ in pairs}
    if b"transfer-encoding" in names and b"content-length" in names:
        return "both Content-Length and Transfer-Encoding are set"
    return None


def websocket_upgrade(headers: list[tuple[str, str]]) -> str | None:
    """The Upgrade value of a WebSocket upgrade request (lower-case header names), else None."""
    upgrade, tokens = None, set()
    for name, value in headers:   # one pass: this runs for every forwarded request
        if name == "upgrade":
            if upgrade is None:
                upgrade = value
        elif name == "connection":
            tokens.update(token.strip().lower() for token in value.split(","))
    if upgrade is not None and "upgrade" in tokens and upgrade.strip().lower() == WEBSOCKET:
        return upgrade
    return None


async def _next_event(conn: h11.Connection, reader) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await reader.read(CHUNK)
        conn.receive_data(data)   # b"" is EOF, which h11 turns into ConnectionClosed or an error


class _Outbox:
    """The bytes of the message being sent on one writer, held until the message ends and then
    handed over at once. When no other request is in flight in this process, an HBONE stream's
    send() puts them in one DATA frame now, before the rest of the request's work (its access
    record, the next request's read); write() would send them at the loop turn's end, after it.
    With other requests in flight they are written as before, to leave at the turn's end with
    theirs: sending each at once measured 10-25 % more waypoint CPU per request with eight busy
    connections (each send wakes a peer that preempts the rest of the turn). What is held also
    goes out once CHUNK is held, and at the end of the loop turn in which it was held, so a
    message whose end has not arrived (a streamed body, a head before a slow body) leaves as
    soon as before and a writer's drain() still sees it."""

    #: HTTP/1.1 requests being handled in this process now (HttpConnection counts them)
    in_flight = 0

    def __init__(self, writer, loop: asyncio.AbstractEventLoop | None = None):
        self.writer = writer
        self._loop = loop
        self._now = getattr(writer, "send", writer.write)   # a socket's write() already sends now
        self._held: list[bytes] = []
        self._size = 0
        self._release_scheduled = False

    def put(self, data: bytes, end: bool) -> bool:
        """Hold `data`; True when it was handed to the writer (then drain() has something to see)."""
        self._held.append(data)
        self._size += len(data)
        if end or self._size >= CHUNK:
            self.release(now=end and _Outbox.in_flight <= 1)
            return True
        if not self._release_scheduled:
            self._release_scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._release_at_turn_end)
        return False

    def release(self, now: bool = False) -> None:
        """Hand what is held to the writer (before anything else is written or closed); `now`:
        to be sent at once, not at the loop turn's end."""
        if not self._size:
            self._held.clear()
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._size = 0
        (self._now if now else self.writer.write)(data)

    def discard(self) -> None:
        self._held.clear()
        self._size = 0

    def _release_at_turn_end(self) -> None:
        self._release_scheduled = False
        try:
            self.release(now=True)   # the turn is over: as the writer's own flush would
        except (ConnectionError, OSError, RuntimeError) as exc:   # reset or closed meanwhile
            log.debug("held bytes not sent: %r", exc)
            self.discard()


# A message's last event (or a 1xx, after which the client waits): its bytes go out now.
_MESSAGE_ENDS = (h11.EndOfMessage, h11.InformationalResponse)


class _UpstreamConnection:
    def __init__(self, upstream: Upstream, reader, writer, loop: asyncio.AbstractEventLoop | None = None):
        self.upstream = upstream
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)
        self.out = _Outbox(writer, loop)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.upstream.workload.uid, *self.upstream.address)

    async def send(self, event, whole: bool = False) -> None:
        """`whole`: the event's bytes complete the message (a request head without a body)."""
        data = self.conn.send(event)
        if (data or type(event) is h11.EndOfMessage) and self.out.put(data, whole or type(event) in _MESSAGE_ENDS):
            await self.writer.drain()

    async def next_event(self):
        return await _next_event(self.conn, self.reader)

    def reusable(self) -> bool:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        at_eof = getattr(self.reader, "at_eof", lambda: False)()
        return self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE and not at_eof

    def close(self) -> None:
        self.out.discard()   # a connection closed mid-message: the rest of it is not sent
        try:
            self.writer.close()
        except Exception:  # closing a half-dead stream must never mask the request's outcome
            pass


class TunnelHandler:
    """What each handler of one terminated tunnel (HTTP/1.1, HTTP/2, TCP) holds; `initial` is
    the bytes already read from `reader` (by protocol sniffing)."""

    def __init__(self, reader, writer, tunnel: Tunnel, get_config: Callable[[], L7Config | None],
                 router: Router, open_upstream: UpstreamOpener,
                 on_record: Callable[[AccessRecord], None] | None = None,
                 draining: Callable[[], bool] = lambda: False, initial: bytes = b""):
        self.reader, self.writer = reader, writer
        self.tunnel = tunnel
        self.get_config = get_config
        self.router = router
        self.open_upstream = open_upstream
        self.on_record = on_record
        self.draining = draining
        self.initial = initial
        self.principal = tunnel.peer_identity.uri if tunnel.peer_identity else "-"
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The connection's event loop, looked up once (each lookup is a getpid() system call)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def emit(self, record: AccessRecord) -> None:
        try:
            loop = self.loop
        except RuntimeError:   # a request's end finalised outside its loop (the loop is gone)
            loop = None
        ACCESS_LOG.write(record, loop)
        if self.on_record is not None:
            self.on_record(record)


class HttpConnection(TunnelHandler):
    """Serves one downstream HTTP/1.1 connection until either side closes it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.MAX_REQUEST_HEADERS_BYTES)
        if self.initial:
            self.down.receive_data(self.initial)
        self.upstreams: dict[tuple[str, str, int], _UpstreamConnection] = {}
        self.out = _Outbox(self.writer)
        self.idle = True   # between requests: safe to close when draining
        self._no_body: asyncio.Future | None = None

    def _finished(self) -> asyncio.Future:
        """A request-body relay that is already done (the request had no body): one per
        connection, as each asyncio.get_running_loop() is a getpid() system call."""
        if self._no_body is None:
            self._no_body = self.loop.create_future()
            self._no_body.set_result(None)
        return self._no_body

    def close_if_idle(self) -> bool:
        """Close a keep-alive connection that waits for its next request (drain)."""
        if self.idle and self.down.their_state is h11.IDLE:
            self._close_downstream()
            return True
        return False

    async def serve(self) -> None:
        try:
            while True:
                self.idle = True
                event = await self._next_request_head()
                self.idle = False
                if not isinstance(event, h11.Request):
                    break  # ConnectionClosed: the client is done
                pairs = header_pairs(event)
                # h11 bounds a head that arrives in pieces; one that arrives whole is measured here.
                if head_size(event, pairs) > limits.MAX_REQUEST_HEADERS_BYTES:
                    raise h11.RemoteProtocolError(f"request headers exceed {limits.MAX_REQUEST_HEADERS_BYTES} bytes",
                                                  error_status_hint=431)
                conflict = _framing_conflict(pairs)
                if conflict:
                    raise h11.RemoteProtocolError(conflict, error_status_hint=400)
                _Outbox.in_flight += 1
                try:
                    await self._handle(event, pairs)
                finally:
                    _Outbox.in_flight -= 1
                if self.down.our_state is h11.DONE and self.down.their_state is h11.DONE:
                    self.down.start_next_cycle()
                else:
                    break
        except h11.RemoteProtocolError as exc:
            log.info("bad HTTP/1.1 from %s: %s", self.principal, exc)
            await self._reply_and_close(exc.error_status_hint, f"bad request: {exc}".encode())
        except _HeadersTooSlow:
            log.info("request headers from %s not complete within %gs; closing", self.principal,
                     limits.REQUEST_HEADERS_TIMEOUT)
            await self._reply_and_close(408, REQUEST_HEADER_TIMEOUT_BODY)
        except (_Abort, ConnectionError, OSError, h11.LocalProtocolError) as exc:
            log.debug("downstream connection from %s ended: %r", self.principal, exc)
            self._abort_downstream()
        finally:
            for upstream in self.upstreams.values():
                upstream.close()
            self.upstreams.clear()
            self._close_downstream()

    async def _next_request_head(self):
        """The next event of a request's head; once its first byte is in, the rest of the head
        must follow within the bound (an idle keep-alive connection is not timed)."""
        loop = deadline = None
        while True:
            event = self.down.next_event()
            if event is not h11.NEED_DATA:
                return event
            if deadline is None and self.down.trailing_data[0]:
                loop = self.loop
                deadline = loop.time() + limits.REQUEST_HEADERS_TIMEOUT
            if deadline is None:
                data = await self.reader.read(CHUNK)
            else:
                try:
                    data = await asyncio.wait_for(self.reader.read(CHUNK), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    raise _HeadersTooSlow() from None
            self.down.receive_data(data)

    # ---- one request ----
    async def _handle(self, request: h11.Request, pairs: list[tuple[bytes, bytes]]) -> None:
        started = time.monotonic()
        method, target = _text(request.method), _text(request.target)
        headers = [(_text(n), _text(v)) for n, v in pairs]
        config = self.get_config()
        if config is None:
            verdict = Verdict(503, "no configuration from istiod yet", body=NO_CONFIG_BODY)
        else:
            verdict = decide(config, self.router, self.tunnel, method, target, headers)
        record = AccessRecord(method, target.split("?", 1)[0], 0, self.principal, verdict.reason,
                              request_principal=verdict.request_principal)
        try:
            if verdict.route is not None and verdict.forwards and websocket_upgrade(headers):
                # A routed upgrade: the route chose the backend and the target; after the 101 the
                # connection is a byte stream, which no retry or request timeout applies to (Envoy's
                # upgrade handling). The fault delay still holds the request back.
                if verdict.route.delay:
                    await asyncio.sleep(verdict.route.delay)
                upstream = verdict.upstream
                record.upstream = f"{upstream.workload.namespace}/{upstream.workload.name}@" \
                                  f"{upstream.address[0]}:{upstream.address[1]}"
                record.status, failure = await self._forward(request, pairs, headers, verdict,
                                                             target=verdict.route.target.encode("latin-1"))
                if failure:
                    record.reason = f"{record.reason}; {failure}"
            elif verdict.route is not None:   # an HTTP route decided: l7/retry.py forwards (timeouts, retries)
                from .retry import exchange
                record.status, failure = await exchange(self, request, verdict, record)
                if failure:
                    record.reason = f"{record.reason}; {failure}"
            elif verdict.forwards:
                upstream = verdict.upstream
                record.upstream = f"{upstream.workload.namespace}/{upstream.workload.name}@" \
                                  f"{upstream.address[0]}:{upstream.address[1]}"
                record.status, failure = await self._forward(request, pairs, headers, verdict)
                if failure:
                    record.reason = f"{verdict.reason}; {failure}"
            else:
                record.status = verdict.status
                await self._local_reply(verdict.status, verdict.body, verdict.reply_headers)
                await self._discard_request_body()
        finally:
            record.duration_ms = (time.monotonic() - started) * 1000
            if record.status == 0:
                record.reason = f"{record.reason}; downstream reset"
            self.emit(record)

    async def _send_down(self, event) -> None:
        data = self.down.send(event)
        if (data or type(event) is h11.EndOfMessage) and self.out.put(data, type(event) in _MESSAGE_ENDS):
            await self.writer.drain()

    async def _local_reply(self, status: int, body: bytes, extra: list[tuple[str, str]] = ()) -> None:
        headers = [("content-type", "text/plain"), ("content-length", str(len(body))),
                   ("date", email.utils.formatdate(usegmt=True)), *extra]
        if self.down.they_are_waiting_for_100_continue or self.draining():
            # Waiting for 100-continue: the client holds its body back; close rather than guess.
            headers.append(("connection", "close"))
        await self._send_down(h11.Response(status_code=status, headers=_headers(headers)))
        if body and self.down.our_state is h11.SEND_BODY:
            await self._send_down(h11.Data(data=body))
        await self._send_down(h11.EndOfMessage())

    async def _discard_request_body(self) -> None:
        if self.down.their_state is not h11.SEND_BODY:
            return
        dropped = 0

        async def drain() -> None:
            nonlocal dropped
            while True:
                event = await _next_event(self.down, self.reader)
                if isinstance(event, h11.Data):
                    dropped += len(event.data)
                    if dropped > MAX_DISCARD:
                        raise _Abort(f"refused request's body exceeds {MAX_DISCARD} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    return
                else:
                    raise _Abort("client closed while sending a refused request's body")

        try:
            await asyncio.wait_for(drain(), DISCARD_TIMEOUT)
        except asyncio.TimeoutError:
            raise _Abort(f"refused request's body not finished within {DISCARD_TIMEOUT:g}s") from None

    async def _upstream_for(self, upstream: Upstream) -> _UpstreamConnection:
        key = (upstream.workload.uid, *upstream.address)
        existing = self.upstreams.pop(key, None)
        if existing is not None:
            if existing.reusable():
                self.upstreams[key] = existing
                return existing
            existing.close()
        reader, writer = await self.open_upstream(upstream, self.tunnel)
        connection = _UpstreamConnection(upstream, reader, writer, self.loop)
        self.upstreams[key] = connection
        return connection

    def _drop_upstream(self, connection: _UpstreamConnection) -> None:
        self._drop_upstream_entry(connection)
        connection.close()

    def _drop_upstream_entry(self, connection: _UpstreamConnection) -> None:
        if self.upstreams.get(connection.key) is connection:
            del self.upstreams[connection.key]

    async def _splice(self, up: _UpstreamConnection) -> None:
        """After a 101: both connections carry the upgraded protocol; copy bytes both ways until
        either side closes, then close both."""
        early_down, early_up = self.down.trailing_data[0], up.conn.trailing_data[0]
        self.out.release()
        up.out.release()
        try:
            if early_down:
                up.writer.write(early_down)
            if early_up:
                self.writer.write(early_up)
            await pipe(self.reader, self.writer, up.reader, up.writer)
        finally:
            up.close()

    async def _forward(self, request: h11.Request, pairs: list[tuple[bytes, bytes]],
                       headers: list[tuple[str, str]], verdict: Verdict,
                       target: bytes | None = None) -> tuple[int, str]:
        """Relay one request (to `target`, a route's rewritten one, or as sent) and its response;
        `pairs` are its headers as header_pairs() took them and `headers` the same as text.
        Returns (status sent downstream, failure or '')."""
        try:
            up = await self._upstream_for(verdict.upstream)
        except UpstreamUnavailable as exc:
            await self._local_reply(503, UPSTREAM_CONNECT_FAILURE)
            await self._discard_request_body()
            return 503, str(exc)
        body_task = None
        status = 0
        try:
            upgrade = websocket_upgrade(headers)
            forward = verdict.forward_headers
            if upgrade is not None:  # hop-by-hop, so the pipeline dropped them: this hop upgrades too
                forward = [*forward, ("connection", "upgrade"), ("upgrade", upgrade)]
            bodyless = _bodyless(pairs)
            # Without a body the head is the whole message: it leaves before the request's end is
            # taken from h11 (whose EndOfMessage adds no bytes).
            await up.send(h11.Request(method=request.method, target=target or request.target,
                                      headers=_headers(forward),
                                      _parsed=verdict.forward_validated and target is None), whole=bodyless)
            if bodyless:
                # Nothing to relay but its end: no task (nor the wait on it) per GET.
                event = self.down.next_event()
                if not isinstance(event, h11.EndOfMessage):
                    raise h11.LocalProtocolError(f"a request without body framing read as {event!r}")
                await up.send(h11.EndOfMessage())
                body_task = self._finished()
            else:
                body_task = asyncio.ensure_future(self._copy_request_body(up))
            status = await self._relay_response(up, body_task, upgrade)
        except (ConnectionError, OSError, h11.ProtocolError, _UpstreamClosed) as exc:
            self._drop_upstream(up)
            if body_task is not None:
                body_task.cancel()
                await asyncio.gather(body_task, return_exceptions=True)
            if self.down.our_state in (h11.IDLE, h11.SEND_RESPONSE) and not isinstance(exc, _DownstreamGone):
                await self._local_reply(503, UPSTREAM_RESET)
                await self._discard_request_body()
                return 503, f"upstream failed before the response: {exc!r}"
            raise _Abort(f"upstream or client failed mid-response: {exc!r}") from None
        if status == 101:
            await body_task
            self._drop_upstream_entry(up)
            await self._splice(up)
            return status, ""
        # The response is complete; the request body may still be arriving (an early answer).
        if not body_task.done():
            body_task.cancel()
            await asyncio.gather(body_task, return_exceptions=True)
            self._drop_upstream(up)
            raise _Abort("upstream answered before the request body was complete")
        if body_task.exception() is not None:
            self._drop_upstream(up)
            raise _Abort(f"request body relay failed: {body_task.exception()!r}")
        if not up.reusable():
            self._drop_upstream(up)
        return status, ""

    async def _copy_request_body(self, up: _UpstreamConnection) -> None:
        while True:
            try:
                event = await _next_event(self.down, self.reader)
            except (ConnectionError, OSError) as exc:
                raise _DownstreamGone(str(exc)) from None
            if isinstance(event, h11.Data):
                await up.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await up.send(h11.EndOfMessage())  # trailers dropped: only chunked framing carries them
                return
            else:
                raise _DownstreamGone("client closed before the request body was complete")

    async def _next_event_or_body_failure(self, up: _UpstreamConnection, body_task: asyncio.Future):
        next_event = asyncio.ensure_future(up.next_event())
        # A failing request-body relay must not leave us waiting for a response forever.
        done, _ = await asyncio.wait({next_event, body_task}, return_when=asyncio.FIRST_COMPLETED)
        if next_event not in done:
            if body_task.exception() is not None:
                next_event.cancel()
                await asyncio.gather(next_event, return_exceptions=True)
                raise body_task.exception()
            return await next_event
        return next_event.result()

    async def _relay_response(self, up: _UpstreamConnection, body_task: asyncio.Future,
                              upgrade: str | None = None) -> int:
        status = 0
        while True:
            if body_task.done() and body_task.exception() is None:
                event = await up.next_event()   # the request is sent: nothing else to watch for
            else:
                event = await self._next_event_or_body_failure(up, body_task)
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101 and upgrade is not None:
                    headers = [*_strip_hop_by_hop(event), (b"connection", b"upgrade"),
                               (b"upgrade", upgrade.encode("latin-1"))]
                    await self._send_down(h11.InformationalResponse(status_code=101, headers=headers))
                    return 101
                if event.status_code != 101:
                    await self._send_down(h11.InformationalResponse(
                        status_code=event.status_code, headers=_strip_hop_by_hop(event)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = _strip_hop_by_hop(event)
                if self.draining():  # like Envoy draining: finish this response, then the client reconnects
                    headers.append((b"connection", b"close"))
                # The upstream's headers were validated when h11 parsed them: not again per response.
                await self._send_down(h11.Response(status_code=status, reason=event.reason, headers=headers,
                                                   _parsed=True))
            elif isinstance(event, h11.Data):
                await self._send_down(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self._send_down(h11.EndOfMessage())
                return status
            else:
                raise _UpstreamClosed("upstream closed before the response was complete")

    # ---- errors and teardown ----
    async def _reply_and_close(self, status: int, body: bytes) -> None:
        """Answer a request h11 could not take (or did not get in time) and close: written by
        hand, as h11 sends no response to a request whose head it never completed."""
        if self.down.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
                f"date: {email.utils.formatdate(usegmt=True)}\r\nconnection: close\r\n\r\n")
        try:
            self.out.release()
            self.writer.write(head.encode("latin-1") + body)
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass

    def _abort_downstream(self) -> None:
        self.out.discard()
        abort(self.writer)

    def _close_downstream(self) -> None:
        try:
            self.out.release()
            if self.writer.can_write_eof() and not self.writer.is_closing():
                self.writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            pass
        self.writer.close()


class _UpstreamClosed(ConnectionError):
    """The upstream closed or reset before its response was complete."""


class _DownstreamGone(ConnectionError):
    """The client went away while its request body was being relayed."""


_HOP_BY_HOP_NAMES = frozenset(name.encode("ascii") for name in HOP_BY_HOP)


def _strip_hop_by_hop(event) -> list[tuple[bytes, bytes]]:
    """The headers of `event` (an h11 response) without the hop-by-hop ones, those a Connection
    header lists included: pipeline.hop_by_hop on bytes, as a response's headers are relayed as bytes."""
    pairs = header_pairs(event)
    drop = _HOP_BY_HOP_NAMES
    for name, value in pairs:
        if name == b"connection":
            drop = drop | {token.strip().lower() for token in value.split(b",") if token.strip()}
    return [(name, value) for name, value in pairs if name not in drop]
