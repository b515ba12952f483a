"""Inbound HBONE (15008): a CONNECT to a captured pod, on mutual TLS with the destination
workload's certificate. The authority must be this pod and not a proxy port; L4 authorization
judges the peer's identity and address; then a marked connection to the app carries the
original client's IP (IP_TRANSPARENT, ISTIO-SEMANTICS section 2; zt:src/proxy/inbound.rs)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..hbone import ConnectRequest, Outcome, parse_forwarded
from . import sockets
from .capture import PROXY_PORTS
from .connection_manager import Admission, Live
from .refusal import Refusal, answer
from .telemetry import Connection

if TYPE_CHECKING:
    from .proxy import Ztunnel


class Inbound:
    def __init__(self, proxy: Ztunnel):
        self.proxy = proxy

    async def serve(self, uid: str, req: ConnectRequest) -> Outcome:
        ip, port = req.authority
        state = self.proxy.state
        dest = self.proxy.workload(uid)
        pod = self.proxy.pods.get(uid)
        principal = str(req.peer_identity)
        # The source is the tunnel's TCP peer, as in ztunnel's inbound.rs: a source ztunnel dials
        # from inside the client pod's namespace, so the peer IS the client pod. `forwarded for=`
        # is the client's word and never trusted (it would let any mesh identity claim an
        # address that an ipBlocks rule admits); only its `host=` feeds telemetry.
        forwarded = parse_forwarded(req.forwarded)
        source_ip = req.peer_address[0]
        conn = Connection("destination", f"{source_ip}:{req.peer_address[1]}",
                          f"{ip}:{port}", dst_workload=dest.raw if dest else None,
                          src_principal=principal, dst_principal=dest.identity if dest else "", mtls=True)
        src = state.by_ip.get(source_ip)
        conn.src_workload = src.raw if src else None
        service = state.inbound_service(dest, port, forwarded.get("host")) if dest else None
        conn.dst_service = service.info() if service else None
        try:
            if dest is None or pod is None:
                raise Refusal("error", "pod is no longer captured", status=503,
                              told="destination pod is no longer captured by this ztunnel")
            if ip not in dest.ips:
                raise Refusal("denied", f"authority {ip} is not pod {dest.namespace}/{dest.name}", status=400,
                              told=f"authority IP {ip} is not this pod ({dest.ip})")
            if port in PROXY_PORTS:
                raise Refusal("denied", f"port {port} is a proxy port", status=400,
                              told=f"port {port} is one of the proxy's own ports")
            decision = state.authorize(dest, source_ip, ip, port, principal)
            if not decision.allowed:
                raise Refusal("denied", decision.reason, status=401)
            try:
                upstream = await sockets.connect_to_app(pod.netns, source_ip, (ip, port), self.proxy.original_source)
            except (OSError, asyncio.TimeoutError) as exc:
                raise Refusal("connect_failed", f"app at {ip}:{port}: {exc!r}", status=503,
                              told=f"upstream {ip}:{port} connect failed: {exc!r}") from None
        except Refusal as refusal:
            return answer(refusal, conn, self.proxy.telemetry)
        reader, writer = await asyncio.open_connection(sock=upstream)
        tracked = _TrackedUpstream(reader, writer, conn)
        admission = Admission(uid, source_ip, ip, port, principal)
        key = self.proxy.connections.track(Live(conn, tracked.reset, uid, admission))
        tracked.on_done = lambda: self.proxy.connections.untrack(key)
        return Outcome.connected(tracked, tracked)


class _TrackedUpstream:
    """The app-side reader/writer handed to the HBONE server, counting bytes and resettable
    (a policy change or drain turns into an error the server's pipe propagates as resets)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection):
        self.reader, self.writer, self.conn = reader, writer, conn
        self.transport = writer.transport
        self._reset = False
        self._done = False
        self.on_done: Callable[[], None] | None = None

    async def read(self, n: int = -1) -> bytes:
        data = await self.reader.read(n)
        if self._reset:
            raise ConnectionResetError("reset by ztunnel")
        self.conn.received += len(data)
        return data

    def write(self, data: bytes) -> None:
        if self._reset:
            raise ConnectionResetError("reset by ztunnel")
        self.conn.sent += len(data)
        self.writer.write(data)

    async def drain(self) -> None:
        if self._reset:
            raise ConnectionResetError("reset by ztunnel")
        await self.writer.drain()

    def can_write_eof(self) -> bool:
        return self.writer.can_write_eof()

    def write_eof(self) -> None:
        self.writer.write_eof()

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()
        self._finish()

    def reset(self) -> None:
        self._reset = True
        sockets.reset(self.writer.transport)
        self.reader.feed_eof() if not self.reader.at_eof() else None
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self.on_done is not None:
                self.on_done()
