"""The front end of one terminated tunnel: decide what it carries, then hand it to the handler
for that protocol (HTTP/1.1, HTTP/2 with prior knowledge, or TCP passthrough).

The destination port's declared protocol (l7.protocols.port_protocol) decides first: a TCP port
is never parsed as HTTP, and an HTTP port is HTTP/1.1 or HTTP/2 by its first bytes (Envoy's
codec AUTO). An undeclared port, or a workload-addressed one, is sniffed like Envoy's
http_inspector: HTTP when the first bytes open an HTTP/1.x request or the HTTP/2 preface, TCP
when they cannot. As in Istio, there is no sniffing timeout: a connection whose client sends
nothing waits (server-first protocols must be declared), so slowness never turns HTTP into TCP
and past the L7 policy; a client that starts a request line and stalls is cut off after the
request-headers bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from . import limits
from .config import L7Config
from .http import CHUNK, AccessRecord, HttpConnection, TunnelHandler, UpstreamOpener
from .http2 import Http2Connection
from .pipeline import Tunnel
from .protocols import H2_PREFACE, HTTP, TCP, UNKNOWN, sniff
from .routing import Destination, Router
from .tcp import TcpConnection

HTTP1, HTTP2 = "http/1.1", "h2c"


def declared_protocol(destination: Destination) -> str:
    if destination.service is None:
        return UNKNOWN
    return destination.service.protocols.get(destination.port, UNKNOWN)


def _classify_bytes(data: bytes, declared: str) -> str | None:
    if data.startswith(H2_PREFACE):
        return HTTP2
    if H2_PREFACE.startswith(data):
        return None                      # still a prefix of the HTTP/2 preface (or of "POST", "PUT")
    if declared == HTTP:
        return HTTP1
    kind = sniff(data)
    return None if kind is None else (HTTP1 if kind == HTTP else TCP)


async def classify(reader, declared: str) -> tuple[bytes, str | None]:
    """(bytes read, HTTP1 | HTTP2 | TCP), or (bytes, None) when the client stalled mid-request-line
    or closed before its bytes told."""
    if declared == TCP:
        return b"", TCP
    data = b""
    deadline = None
    loop = asyncio.get_running_loop()
    while True:
        if data:
            kind = _classify_bytes(data, declared)
            if kind is not None:
                return data, kind
            if deadline is None:
                deadline = loop.time() + limits.REQUEST_HEADERS_TIMEOUT
        try:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            chunk = await asyncio.wait_for(reader.read(CHUNK), timeout)
        except asyncio.TimeoutError:
            return data, None
        if not chunk:
            return data, (HTTP1 if data and declared == HTTP else None)
        data += chunk


def handler_for(kind: str, reader, writer, tunnel: Tunnel, get_config: Callable[[], L7Config | None],
                router: Router, open_upstream: UpstreamOpener,
                on_record: Callable[[AccessRecord], None] | None, draining: Callable[[], bool],
                initial: bytes) -> TunnelHandler:
    handler = {HTTP2: Http2Connection, TCP: TcpConnection}.get(kind, HttpConnection)
    return handler(reader, writer, tunnel, get_config, router, open_upstream, on_record, draining, initial)
