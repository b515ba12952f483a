"""Inbound at the sidecar: HBONE on 15008 (mTLS with this pod's certificate; the peer's SPIFFE
identity is the source) and captured plaintext on 15006 (no identity; PeerAuthentication STRICT
refuses it with a reset). What arrives is sniffed: HTTP/1.1 goes through the L7 engine
(RequestAuthentication 401, AuthorizationPolicy 403, then the local app), anything else is judged
by the same policies compiled for L4 (a deny is a reset) and spliced to the app.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import TYPE_CHECKING

from ..hbone import ConnectRequest, Outcome, abort, pipe
from ..identity import Identity
from ..l7 import AccessRecord, HttpConnection, Tunnel, UpstreamUnavailable, resolve
from ..policy import evaluate_l4
from ..policy.authz_l4 import Connection
from ..policy.match import parse_ip
from . import net
from .capture import HBONE_PORT, INBOUND_PORT, OUTBOUND_PORT, READY_PORT

if TYPE_CHECKING:
    from .proxy import Sidecar

log = logging.getLogger("sidecar.inbound")
access_log = logging.getLogger("sidecar.access")

PROXY_PORTS = frozenset({OUTBOUND_PORT, INBOUND_PORT, HBONE_PORT, READY_PORT})
SNIFF_TIMEOUT = 0.3
_HTTP_REQUEST_LINE = re.compile(rb"^[A-Z]{3,10} [^ ]+ HTTP/1\.[01]\r?\n|^[A-Z]{3,10} /")


class _Prefixed:
    """A reader that first returns bytes already read while sniffing the protocol."""

    def __init__(self, prefix: bytes, reader: asyncio.StreamReader):
        self.prefix, self.reader = prefix, reader

    async def read(self, n: int = -1) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix, b""
            return data
        return await self.reader.read(n)

    def at_eof(self) -> bool:
        return not self.prefix and self.reader.at_eof()


class Inbound:
    def __init__(self, proxy: Sidecar):
        self.proxy = proxy

    # ---- HBONE (15008) ----
    async def hbone(self, request: ConnectRequest) -> Outcome:
        config = self.proxy.config
        if config is None or config.own is None:
            return Outcome.refused(503, "no configuration for this pod from istiod yet")
        ip, port = request.authority
        if ip not in config.own.ips:
            return Outcome.refused(400, f"authority IP {ip} is not this pod ({config.own.ip})")
        if port in PROXY_PORTS:
            return Outcome.refused(400, f"port {port} is one of the proxy's own ports")
        # The app is dialled before the CONNECT is answered, as ztunnel's inbound does: an app that
        # is gone (its pod terminating) refuses the CONNECT, which the caller may take to another
        # endpoint, instead of accepting it and then answering the request 503.
        try:
            app = await net.open_marked((ip, port))
        except (OSError, asyncio.TimeoutError) as exc:
            return Outcome.refused(503, f"app at {ip}:{port} is not accepting connections: {exc!r}")
        ours, theirs = socket.socketpair()
        try:
            our_reader, our_writer = await asyncio.open_connection(sock=ours, limit=256 * 1024)
            their_reader, their_writer = await asyncio.open_connection(sock=theirs, limit=256 * 1024)
        except OSError as exc:
            ours.close()
            theirs.close()
            app[1].close()
            return Outcome.refused(503, f"cannot set up the inbound handler: {exc}")
        self.proxy.spawn(self.serve(our_reader, our_writer, request.peer_identity, request.peer_address[0],
                                    ip, port, app))
        return Outcome.connected(their_reader, their_writer)

    # ---- captured plaintext (15006) ----
    async def plaintext(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        original = net.redirected(writer, "plaintext")
        if original is None:
            return
        ip, port = original
        if port in PROXY_PORTS:  # a direct call to the listener itself: relaying it would loop
            abort(writer)
            return
        config = self.proxy.config
        if config is None or config.own is None or not config.plaintext_allowed(port):
            why = "no configuration yet" if config is None or config.own is None else \
                "plaintext refused: PeerAuthentication STRICT"
            self.proxy.telemetry.refused("destination", None, self.proxy.identity.uri, False, why)
            access_log.info("tcp %s:%d -> %s:%d src=- refused reason=%r", peer[0], peer[1], ip, port, why)
            abort(writer)
            return
        await self.serve(reader, writer, None, peer[0], ip, port)

    # ---- both ----
    async def serve(self, reader, writer, peer: Identity | None, client_ip: str, ip: str, port: int,
                    app=None) -> None:
        """`app`: a connection to the app at (ip, port) already made (HBONE dials it before the
        CONNECT's answer), used first; closed if nothing uses it."""
        mtls = peer is not None
        spare = [app] if app is not None else []
        try:
            try:
                first = await asyncio.wait_for(reader.read(64 * 1024), SNIFF_TIMEOUT)
            except asyncio.TimeoutError:
                first = b""   # a server-first protocol: no HTTP
            except (ConnectionError, OSError):
                abort(writer)
                return
            config = self.proxy.config
            destination = resolve(config, (ip, port)) if config is not None else None
            if config is None or destination is None:
                abort(writer)
                return
            if first and _HTTP_REQUEST_LINE.match(first):
                tunnel = Tunnel(peer, client_ip, destination)

                async def open_app(upstream, tunnel):
                    if spare and tuple(upstream.address) == (ip, port):
                        return spare.pop()
                    return await self._open_app(upstream, tunnel)
                connection = HttpConnection(_Prefixed(first, reader), writer, tunnel, lambda: self.proxy.config,
                                            self.proxy.router, open_app,
                                            lambda record: self._record(record, peer, mtls),
                                            lambda: self.proxy.draining)
                await self.proxy.track(connection.serve(), connection)
                return
            await self._tcp(reader, writer, first, peer, client_ip, ip, port, spare.pop() if spare else None)
        finally:
            for _, app_writer in spare:
                app_writer.close()

    async def _tcp(self, reader, writer, first: bytes, peer, client_ip, ip, port, app=None) -> None:
        config = self.proxy.config
        source = peer.uri if peer else None
        decision = evaluate_l4(config.l4_policies, Connection(
            source_ip=parse_ip(client_ip), dest_ip=parse_ip(ip), dest_port=port,
            source_principal=source))
        me = self.proxy.identity.uri
        if not decision.allowed:
            self.proxy.telemetry.refused("destination", source, me, peer is not None, decision.reason)
            access_log.info("tcp %s -> %s:%d src=%s denied reason=%r", client_ip, ip, port, source or "-",
                            decision.reason)
            abort(writer)
            if app is not None:
                app[1].close()
            return
        try:
            up_reader, up_writer = app if app is not None else await net.open_marked((ip, port))
        except (OSError, asyncio.TimeoutError) as exc:
            access_log.info("tcp %s -> %s:%d src=%s connect failed: %r", client_ip, ip, port, source or "-", exc)
            abort(writer)
            return
        self.proxy.telemetry.connection("destination", source, me, peer is not None)
        access_log.info("tcp %s -> %s:%d src=%s allowed reason=%r", client_ip, ip, port, source or "-",
                        decision.reason)
        if first:
            up_writer.write(first)
        await self.proxy.track(pipe(reader, writer, up_reader, up_writer))

    async def _open_app(self, upstream, tunnel):
        try:
            return await net.open_marked(upstream.address)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamUnavailable(f"app at {upstream.address[0]}:{upstream.address[1]}: {exc!r}") from None

    def _record(self, record: AccessRecord, peer: Identity | None, mtls: bool) -> None:
        self.proxy.telemetry.request("destination", peer.uri if peer else None, self.proxy.identity.uri,
                                     mtls, record.status)
        access_log.info("http %s mtls=%s", record.line(), "yes" if mtls else "no")
