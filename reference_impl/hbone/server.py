"""The HBONE server: mutual TLS 1.3 + HTTP/2 CONNECT on port 15008 (ztunnel's inbound role).

It knows nothing of policy: each CONNECT goes to an injected ``authorize_and_connect`` callback
that either returns an upstream connection (→ ``200`` and bytes piped both ways) or a status
(``400``/``401``/``503``) with a reason that is logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

from ..identity import (Identity, PeerVerificationError, SERVER, verify_client_trust_domain)
from .headers import BAGGAGE, FORWARDED, TRACEPARENT, BadAuthority, parse_authority
from .pipe import pipe
from .session import H2Session
from .splice import StreamSplice
from .stream import HboneStream

log = logging.getLogger(__name__)

TLS_HANDSHAKE_TIMEOUT = 10.0
ACCEPTS_PER_WAKEUP = 64
ContextProvider = Callable[[Identity, str], Awaitable[ssl.SSLContext]]


@dataclass(frozen=True)
class ConnectRequest:
    authority: tuple[str, int]
    peer_identity: Identity
    peer_address: tuple[str, int]
    local_identity: Identity
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def baggage(self) -> str | None:
        return self.headers.get(BAGGAGE)

    @property
    def forwarded(self) -> str | None:
        return self.headers.get(FORWARDED)

    @property
    def traceparent(self) -> str | None:
        return self.headers.get(TRACEPARENT)


StreamHandler = Callable[[HboneStream], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """What ``authorize_and_connect`` decided: an upstream (reader, writer), a socket to splice
    the stream to (``spliced``: no copy task per direction), a handler that reads and writes the
    stream itself (``handled``: no copy at all), or a refusal status."""

    status: int
    reason: str = ""
    upstream: tuple | None = None
    splice: StreamSplice | None = None
    handler: StreamHandler | None = None

    @classmethod
    def connected(cls, reader, writer) -> Outcome:
        return cls(200, "connected", (reader, writer))

    @classmethod
    def spliced(cls, splice: StreamSplice) -> Outcome:
        return cls(200, "connected", splice=splice)

    @classmethod
    def handled(cls, handler: StreamHandler) -> Outcome:
        """``handler(stream)`` runs once the CONNECT is answered, the stream its reader and
        writer as a socket would be: its close() half-closes and stops reading (later DATA
        resets the stream); whatever it leaves open is closed so when it returns, reset when it
        raises."""
        return cls(200, "connected", handler=handler)

    @property
    def connects(self) -> bool:
        return self.status == 200 and (self.upstream is not None or self.splice is not None
                                       or self.handler is not None)

    @classmethod
    def refused(cls, status: int, reason: str) -> Outcome:
        if status == 200:
            raise ValueError("a refusal needs a non-200 status (400, 401, 503)")
        return cls(status, reason)


Authorizer = Callable[[ConnectRequest], Awaitable[Outcome]]


def describe_tls_failure(exc: BaseException) -> str:
    """One sentence for a failed server-side handshake, for the log."""
    reason = getattr(exc, "reason", None) or ""
    if reason in ("HTTP_REQUEST", "WRONG_VERSION_NUMBER", "HTTPS_PROXY_REQUEST", "PACKET_LENGTH_TOO_LONG",
                  "RECORD_LENGTH_MISMATCH", "UNEXPECTED_RECORD"):
        return f"plaintext (not TLS) sent to the HBONE port ({reason})"
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "client presented no certificate"
    if reason == "CERTIFICATE_VERIFY_FAILED":
        return f"client certificate rejected: {getattr(exc, 'verify_message', '') or exc}"
    if reason in ("UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE", "TLSV1_ALERT_PROTOCOL_VERSION",
                  "VERSION_TOO_LOW"):
        return f"client did not offer TLS 1.3 ({reason})"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "TLS handshake timed out"
    if isinstance(exc, (ConnectionError, EOFError)) or not reason:
        return f"connection closed during the TLS handshake ({exc.__class__.__name__}: {exc})"
    return f"TLS handshake failed: {exc}"


class _ServerSession(H2Session):
    client_side = False

    def __init__(self, server: HboneServer, listener: Listener):
        super().__init__()
        self.server = server
        self.listener = listener
        self.peer_identity: Identity | None = None
        self.peer_address: tuple[str, int] = ("", 0)
        self.tasks: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The TLS handshake is done (the listener hands over only handshaken connections):
        check the client's trust domain, then speak HTTP/2."""
        try:
            self.peer_identity = verify_client_trust_domain(transport.get_extra_info("ssl_object"),
                                                            self.listener.identity.trust_domain)
        except PeerVerificationError as exc:
            self.server._refuse(self.peer_address, str(exc))
            transport.abort()
            self._shutdown(str(exc))
            return
        self.listener.sessions.add(self)
        self.server.connections_accepted += 1
        self.start_h2(transport)
        if self.listener.closing == "drain":  # its handshake outlived the listener
            self.send_goaway()
        elif self.listener.closing:
            self.close("listener closed")

    def on_closed(self, reason: str) -> None:
        self.listener.sessions.discard(self)
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()

    def on_event(self, event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)

    def _respond(self, stream_id: int, status: int, end: bool) -> None:
        try:
            self.conn.send_headers(stream_id, [(":status", str(status))], end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self.flush()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        headers: dict[str, str] = {}
        for name, value in event.headers:
            name = name.decode() if isinstance(name, bytes) else name
            value = value.decode() if isinstance(value, bytes) else value
            headers[name] = f"{headers[name]},{value}" if name in headers and not name.startswith(":") else value
        sid = event.stream_id
        if self.goaway_sent:  # draining: the client must retry on a new connection
            try:
                self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            except h2.exceptions.ProtocolError:
                pass
            self.flush()
            return
        method = headers.get(":method")
        if method != "CONNECT":
            self.server._refuse_stream(self.peer_address, 400, f"method {method!r} is not CONNECT")
            self._respond(sid, 400, end=True)
            return
        try:
            authority = parse_authority(headers.get(":authority"))
        except BadAuthority as exc:
            self.server._refuse_stream(self.peer_address, 400, str(exc))
            self._respond(sid, 400, end=True)
            return
        stream = HboneStream(self, sid)
        self.register(stream)
        request = ConnectRequest(authority=authority, peer_identity=self.peer_identity,
                                 peer_address=self.peer_address, local_identity=self.listener.identity,
                                 headers={k: v for k, v in headers.items() if not k.startswith(":")})
        task = self.loop.create_task(self._serve(stream, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, stream: HboneStream, request: ConnectRequest) -> None:
        try:
            outcome = await self.server.authorize_and_connect(request)
        except Exception as exc:
            log.exception("authorize_and_connect failed for %s", request)
            outcome = Outcome.refused(503, f"authorize_and_connect raised {exc.__class__.__name__}: {exc}")
        if not isinstance(outcome, Outcome):
            outcome = Outcome.refused(503, f"authorize_and_connect returned {outcome!r}, not an Outcome")
        if not outcome.connects:
            self.server._refuse_stream(self.peer_address, outcome.status, outcome.reason, request)
            if not stream.finished:
                self._respond(stream.stream_id, outcome.status, end=True)
                stream._on_local_end()
                if not stream.finished:  # discard whatever the client still sends on it
                    self.reset_stream(stream, ErrorCodes.NO_ERROR)
            return
        if stream.finished:  # client gave up while we were connecting
            if outcome.splice is not None:
                outcome.splice.close()
            elif outcome.upstream is not None:
                outcome.upstream[1].close()
            return
        self._respond(stream.stream_id, 200, end=False)
        self.server.streams_connected += 1
        try:
            if outcome.splice is not None:
                await outcome.splice.run(stream)
            elif outcome.handler is not None:
                await self._handle(stream, outcome.handler)
            else:
                await pipe(stream, stream, *outcome.upstream)
        except (ConnectionError, OSError) as exc:
            log.debug("HBONE stream %s from %s ended with %s", request.authority, self.peer_address, exc)


    @staticmethod
    async def _handle(stream: HboneStream, handler: StreamHandler) -> None:
        stream.close_stops_reading = True
        try:
            await handler(stream)
        except BaseException:
            stream.reset()
            raise
        stream.close()


class Listener:
    """One listening socket presenting one identity (ztunnel's in-pod model: one per pod).

    It accepts the raw sockets itself and hands each to the loop with its TLS context
    (``connect_accepted_socket(ssl=)``): the context is fetched per connection (certificates
    rotate), and no byte of the ClientHello can reach a plain-TCP protocol first - an upgrade
    with ``start_tls`` from ``connection_made`` relied on ``pause_reading()`` there, which
    uvloop ignores (it starts reading after ``connection_made`` returns)."""

    def __init__(self, server: HboneServer, identity: Identity, sock: socket.socket):
        self.server = server
        self.identity = identity
        self.sessions: set[_ServerSession] = set()
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self._sock = sock
        self._handshakes: set[asyncio.Task] = set()
        self.closing: str | None = None  # "drain" or "close" once close() was called
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        # A reader callback, not a task awaiting sock_accept: stopping removes the reader and
        # closes the socket in one step, so a connection is either handed on or left in the
        # kernel's queue for the replacement's SO_REUSEPORT socket (as ztunnel/listeners.py).
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the listener stays
                if self._sock.fileno() >= 0:
                    log.warning("HBONE listener %s: accept failed: %s", _fmt_peer(self.address), exc)
                return
            task = self._loop.create_task(self._handshake(conn, (peer[0], peer[1])))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        conn.setblocking(False)
        # asyncio sets TCP_NODELAY only on sockets it made with IPPROTO_TCP; without it small
        # replies wait for Nagle.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            ctx = await self.server.tls_context(self.identity, SERVER)
        except Exception as exc:  # e.g. CertificateUnavailable: nothing to present yet
            self.server._refuse(peer, f"no certificate for {self.identity} to present: {exc}")
            conn.close()
            return
        session = _ServerSession(self.server, self)
        session.peer_address = peer
        # The loop gets a duplicate: when a handshake fails it closes its descriptor at once,
        # and the refusal must be in the log before the client sees the connection end.
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: session, conn.dup(), ssl=ctx, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except Exception as exc:  # any handshake failure is a refused connection, never a crash
            self.server._refuse(peer, describe_tls_failure(exc))
        finally:
            conn.close()

    def stop_accepting(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    async def close(self, drain: bool = False) -> None:
        """Stop accepting. ``drain``: send GOAWAY and let open streams finish (each connection
        closes after its last stream); otherwise close every connection now."""
        self.closing = "drain" if drain else "close"
        self.stop_accepting()
        for session in list(self.sessions):
            if drain:
                session.send_goaway()
            else:
                session.close("listener closed")

    async def drain(self, grace: float) -> int:
        """Graceful shutdown (ztunnel's drain): stop accepting, send GOAWAY so clients open no new
        streams here, let open streams finish for up to ``grace`` seconds, then reset what is left.
        Returns how many connections had to be cut at the deadline."""
        await self.close(drain=True)
        deadline = asyncio.get_running_loop().time() + grace
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        cut = len(self.sessions)
        for session in list(self.sessions):
            session.abort(f"drain deadline of {grace:g}s passed")
        return cut

class HboneServer:
    def __init__(self, authorize_and_connect: Authorizer, tls_context: ContextProvider):
        self.authorize_and_connect = authorize_and_connect
        self.tls_context = tls_context
        self.listeners: list[Listener] = []
        self.refusals: deque[tuple[tuple[str, int], int | None, str]] = deque(maxlen=1000)
        self.connections_accepted = 0
        self.streams_connected = 0

    async def listen(self, address: tuple[str, int] | None = None, identity: Identity | None = None,
                     *, sock: socket.socket | None = None, backlog: int = 512) -> Listener:
        """Listen on ``address`` (or an already-bound ``sock``, e.g. opened in a pod's netns)."""
        if identity is None:
            raise ValueError("HboneServer.listen needs the identity whose certificate the listener presents")
        if sock is None:
            host, port = address
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise OSError(exc.errno, f"HBONE listener cannot bind {host}:{port}: {exc.strerror}; "
                                         f"free the port or pick another") from None
        sock.setblocking(False)
        sock.listen(backlog)
        listener = Listener(self, identity, sock)
        self.listeners.append(listener)
        return listener

    async def close(self) -> None:
        for listener in self.listeners:
            await listener.close()
        self.listeners.clear()

    def _refuse(self, peer: tuple[str, int], reason: str) -> None:
        self.refusals.append((peer, None, reason))
        log.warning("HBONE refused connection from %s: %s", _fmt_peer(peer), reason)

    def _refuse_stream(self, peer, status: int, reason: str, request: ConnectRequest | None = None) -> None:
        self.refusals.append((peer, status, reason))
        target = f" to {request.authority[0]}:{request.authority[1]} as {request.peer_identity}" if request else ""
        log.warning("HBONE CONNECT from %s%s answered %d: %s", _fmt_peer(peer), target, status, reason)


def _fmt_peer(peer) -> str:
    return f"{peer[0]}:{peer[1]}" if peer and peer[0] else "unknown peer"
