"""The pooled HBONE client (ztunnel's outbound role): HTTP/2 CONNECT over mutual TLS 1.3.

Connections are pooled per (source identity, destination identities, source IP, destination
socket), carry up to 100 streams, are pinged every 10 s and released after 5 idle minutes.
Sockets can come from an injected ``sock_factory`` because ztunnel opens them inside the source
pod's network namespace with SO_MARK 0x539.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

from ..identity import CLIENT, Identity, PeerVerificationError, verify_server_identity
from .errors import HboneError, HboneTLSError
from .headers import TRACEPARENT, format_addr, new_traceparent
from .session import H2Session, StreamReset
from .stream import HboneStream

log = logging.getLogger(__name__)

ContextProvider = Callable[[Identity, str], Awaitable[ssl.SSLContext]]
SockFactory = Callable[[tuple[str, int]], Awaitable[socket.socket]]

MAX_STREAMS_PER_CONNECTION = 100
IDLE_TIMEOUT = 300.0
PING_INTERVAL = 10.0
PING_TIMEOUT = 20.0
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class PoolKey:
    source_identity: Identity
    dest_identities: frozenset[Identity]
    source_ip: str | None
    dest: tuple[str, int]

    def __str__(self) -> str:
        ids = ",".join(sorted(map(str, self.dest_identities)))
        return f"{self.source_ip or '*'}({self.source_identity})->{format_addr(*self.dest)}[{ids}]"


class _ClientSession(H2Session):
    client_side = True

    def __init__(self, client: HboneClient, key: PoolKey):
        super().__init__()
        self.client = client
        self.key = key
        self.reserved = 0
        self.verify_error: str | None = None
        self.server_identity: Identity | None = None
        self.pings_acked = 0
        self._ping_waiter: asyncio.Future | None = None
        self._ping_task: asyncio.Task | None = None
        self._idle_handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            self.server_identity = verify_server_identity(transport.get_extra_info("ssl_object"),
                                                          self.key.dest_identities)
        except PeerVerificationError as exc:
            self.verify_error = str(exc)
            transport.abort()
            self._shutdown(self.verify_error)
            return
        self.start_h2(transport)
        self._ping_task = self.loop.create_task(self._ping_loop())

    # ---- pool bookkeeping ----
    @property
    def capacity(self) -> int:
        try:
            peer_limit = self.conn.remote_settings.max_concurrent_streams
        except KeyError:
            peer_limit = MAX_STREAMS_PER_CONNECTION
        limit = min(self.client.max_streams, peer_limit)
        return limit - self.reserved - len(self.streams)

    @property
    def usable(self) -> bool:
        return not self.closed and not self.goaway_received and not self.transport.is_closing()

    def stream_finished(self, stream: HboneStream) -> None:
        super().stream_finished(stream)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.closed or self.streams or self.reserved:
            return
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        self._idle_handle = self.loop.call_later(self.client.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        if not self.streams and not self.reserved:
            log.debug("HBONE connection %s idle for %.0fs: releasing", self.key, self.client.idle_timeout)
            self.close("idle")

    def on_closed(self, reason: str) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self._ping_task is not None and self._ping_task is not asyncio.current_task():
            self._ping_task.cancel()
        self.client._forget(self)

    # ---- keepalive ----
    async def _ping_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.client.ping_interval)
            if self.closed:
                return
            self._ping_waiter = self.loop.create_future()
            try:
                self.conn.ping(os.urandom(8))
            except h2.exceptions.ProtocolError:
                return
            self.flush()
            try:
                await asyncio.wait_for(self._ping_waiter, self.client.ping_timeout)
            except asyncio.TimeoutError:
                log.warning("HBONE connection %s: no PING ack in %.0fs, closing", self.key, self.client.ping_timeout)
                self.abort("PING timeout")
                return

    def on_ping_ack(self, event) -> None:
        self.pings_acked += 1
        if self._ping_waiter is not None and not self._ping_waiter.done():
            self._ping_waiter.set_result(None)

    # ---- streams ----
    def on_event(self, event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.response is not None and not stream.response.done():
                status = dict(event.headers).get(":status", "0")
                stream.response.set_result(int(status))

    async def open_stream(self, headers: list[tuple[str, str]]) -> HboneStream:
        """Send CONNECT (one reserved slot is consumed) and wait for the answer."""
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        try:
            if not self.usable:
                raise HboneError(None, f"HBONE connection {self.key} closed before the CONNECT: {self.close_reason}",
                                 unprocessed=True)
            sid = self.conn.get_next_available_stream_id()
            stream = HboneStream(self, sid)
            stream.response = self.loop.create_future()
            self.conn.send_headers(sid, headers, end_stream=False)
            self.register(stream)
        except h2.exceptions.ProtocolError as exc:
            raise HboneError(None, f"HBONE connection {self.key} cannot open a stream: {exc}",
                             unprocessed=True) from None
        finally:
            self.reserved -= 1
        self.flush()
        try:
            status = await stream.response
        except StreamReset as exc:
            raise HboneError(None, f"HBONE CONNECT to {self.key}: {exc}", unprocessed=exc.unprocessed) from None
        except asyncio.CancelledError:
            stream.reset()
            raise
        if status != 200:
            stream.reset(ErrorCodes.CANCEL)
            raise HboneError(status, f"HBONE CONNECT via {format_addr(*self.key.dest)} answered {status}")
        return stream


class HboneClient:
    def __init__(self, tls_context: ContextProvider, *, sock_factory: SockFactory | None = None,
                 max_streams: int = MAX_STREAMS_PER_CONNECTION, idle_timeout: float = IDLE_TIMEOUT,
                 ping_interval: float = PING_INTERVAL, ping_timeout: float = PING_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT):
        self.tls_context = tls_context
        self.sock_factory = sock_factory
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connect_timeout = connect_timeout
        self._pool: dict[PoolKey, list[_ClientSession]] = {}
        self._locks: dict[PoolKey, asyncio.Lock] = {}
        self.connections_opened = 0

    async def connect(self, source_identity: Identity, dest_addr: tuple[str, int],
                      expected_identities: Iterable[Identity], authority: str | tuple[str, int],
                      headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                      *, source_ip: str | None = None) -> HboneStream:
        """Open a tunnel to ``authority`` through the HBONE server at ``dest_addr``.

        Raises HboneError (``.status`` = the non-200 answer, or None) or HboneTLSError."""
        source_identity = _as_identity(source_identity)
        expected = frozenset(_as_identity(i) for i in expected_identities)
        if not expected:
            raise ValueError("HboneClient.connect needs at least one expected server identity")
        key = PoolKey(source_identity, expected, source_ip, (str(dest_addr[0]), int(dest_addr[1])))
        request_headers = _request_headers(authority, headers)
        session = await self._checkout(key)
        return await session.open_stream(request_headers)

    def connections(self, key: PoolKey | None = None) -> list[_ClientSession]:
        if key is not None:
            return list(self._pool.get(key, ()))
        return [s for sessions in self._pool.values() for s in sessions]

    async def close(self) -> None:
        for session in self.connections():
            session.close("client closed")
        self._pool.clear()

    async def _checkout(self, key: PoolKey) -> _ClientSession:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            for session in self._pool.get(key, ()):
                if session.usable and session.capacity > 0:
                    session.reserved += 1
                    return session
            session = await self._dial(key)
            session.reserved += 1
            self._pool.setdefault(key, []).append(session)
            return session

    def _forget(self, session: _ClientSession) -> None:
        sessions = self._pool.get(session.key)
        if sessions and session in sessions:
            sessions.remove(session)
            if not sessions:
                del self._pool[session.key]
                lock = self._locks.get(session.key)
                if lock is not None and not lock.locked():
                    del self._locks[session.key]

    async def _dial(self, key: PoolKey) -> _ClientSession:
        loop = asyncio.get_running_loop()
        try:
            ctx = await self.tls_context(key.source_identity, CLIENT)
        except Exception as exc:
            raise HboneTLSError(f"no client certificate for {key.source_identity}: {exc}") from None
        started = time.monotonic()
        try:
            sock = await asyncio.wait_for(self._socket(key), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise HboneError(None, f"HBONE TCP connect to {format_addr(*key.dest)} failed: {exc!r}",
                             unreachable=True) from None
        remaining = max(0.1, self.connect_timeout - (time.monotonic() - started))
        try:
            _, session = await loop.create_connection(lambda: _ClientSession(self, key), sock=sock, ssl=ctx,
                                                      server_hostname="", ssl_handshake_timeout=remaining)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            sock.close()
            raise HboneTLSError(f"TLS handshake with {format_addr(*key.dest)} failed: {exc}") from None
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            raise HboneError(None, f"HBONE connection to {format_addr(*key.dest)} failed: {exc!r}") from None
        if session.verify_error:
            raise HboneTLSError(f"refusing HBONE server {format_addr(*key.dest)}: {session.verify_error}")
        self.connections_opened += 1
        return session

    async def _socket(self, key: PoolKey) -> socket.socket:
        if self.sock_factory is not None:
            sock = await self.sock_factory(key.dest)
            sock.setblocking(False)
        else:
            family = socket.AF_INET6 if ":" in key.dest[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                if key.source_ip:
                    sock.bind((key.source_ip, 0))
                await asyncio.get_running_loop().sock_connect(sock, key.dest)
            except BaseException:
                sock.close()
                raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def _as_identity(value: Identity | str) -> Identity:
    return value if isinstance(value, Identity) else Identity.parse(value)


def _request_headers(authority, headers) -> list[tuple[str, str]]:
    if isinstance(authority, tuple):
        authority = format_addr(str(authority[0]), int(authority[1]))
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    result = [(":method", "CONNECT"), (":authority", authority)]
    result += [(name.lower(), str(value)) for name, value in pairs]
    if not any(name == TRACEPARENT for name, _ in result):
        result.append((TRACEPARENT, new_traceparent()))
    return result
