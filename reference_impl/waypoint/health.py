"""The waypoint's status port (15021): `/healthz/ready` and a small JSON `/stats`.

Ready means: a config snapshot is held and the waypoint's own certificate has been issued, so
a CONNECT arriving now can be served end to end.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import h11

log = logging.getLogger("waypoint.health")

READY_PORT = 15021
Probe = Callable[[], tuple[bool, str]]


async def _respond(writer: asyncio.StreamWriter, conn: h11.Connection, status: int,
                   body: bytes, content_type: str) -> None:
    headers = [("content-type", content_type), ("content-length", str(len(body))), ("connection", "close")]
    for event in (h11.Response(status_code=status, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
        writer.write(conn.send(event))
    await writer.drain()


async def _handle(reader, writer, ready: Probe, stats: Callable[[], dict]) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        event = conn.next_event()
        while event is h11.NEED_DATA:
            conn.receive_data(await asyncio.wait_for(reader.read(16 * 1024), 10))
            event = conn.next_event()
        if not isinstance(event, h11.Request):
            return
        path = event.target.decode("latin-1").split("?", 1)[0]
        if path == "/healthz/ready":
            ok, reason = ready()
            await _respond(writer, conn, 200 if ok else 503, (reason + "\n").encode(), "text/plain")
        elif path == "/stats":
            await _respond(writer, conn, 200, json.dumps(stats(), indent=1).encode(), "application/json")
        else:
            await _respond(writer, conn, 404, b"not found: try /healthz/ready or /stats\n", "text/plain")
    except (ConnectionError, OSError, asyncio.TimeoutError, h11.ProtocolError) as exc:
        log.debug("status port request failed: %r", exc)
    finally:
        writer.close()


async def serve_status(host: str, port: int, ready: Probe, stats: Callable[[], dict]) -> asyncio.AbstractServer:
    try:
        return await asyncio.start_server(lambda r, w: _handle(r, w, ready, stats), host, port,
                                          reuse_address=True)
    except OSError as exc:
        raise OSError(exc.errno, f"waypoint status port cannot bind {host}:{port}: {exc.strerror}; "
                                 f"free the port or pass another --status-port") from None
