"""The node proxy's own HTTP endpoints in the node namespace: admin (15000, localhost),
metrics (15020), readiness (15021). All bind with SO_REUSEPORT so a replacement ztunnel can
start while the old one drains."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

log = logging.getLogger("ztunnel")

Route = Callable[[], tuple[int, str, bytes]]


def json_body(obj) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


class HttpEndpoint:
    """A tiny GET-only HTTP/1.1 server; routes map a path to a function returning (status, type, body)."""

    def __init__(self, host: str, port: int, routes: dict[str, Route]):
        self.host, self.port, self.routes = host, port, routes
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> "HttpEndpoint":
        self.server = await asyncio.start_server(self._handle, self.host, self.port,
                                                 reuse_address=True, reuse_port=True)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, _ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path = target.split("?", 1)[0]
            route = self.routes.get(path)
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"only GET\n"
            elif route is None:
                status, ctype, body = 404, "text/plain", f"no such page {path}; try {', '.join(sorted(self.routes))}\n".encode()
            else:
                status, ctype, body = route()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}.get(status, "")
            head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    f"Connection: close\r\n\r\n").encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError, ConnectionError):
            pass
        except Exception:
            log.exception("admin request on port %d failed", self.port)
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
