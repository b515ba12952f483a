"""The sidecar's local HTTP ports, as Envoy / pilot-agent serve them:
15021 `/healthz/ready` (200 once capture, config and certificate are in place, else 503),
15090 `/stats/prometheus` (telemetry.py), and the admin port 127.0.0.1:15000 with `/listeners`
(what `cluster proxy-config listeners POD` prints) and `/config_dump`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import h11

log = logging.getLogger("sidecar.status")

Route = Callable[[], tuple[int, bytes, str]]


async def _handle(reader, writer, routes: dict[str, Route]) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        event = conn.next_event()
        while event is h11.NEED_DATA:
            conn.receive_data(await asyncio.wait_for(reader.read(16 * 1024), 10))
            event = conn.next_event()
        if not isinstance(event, h11.Request):
            return
        path = event.target.decode("latin-1").split("?", 1)[0]
        route = routes.get(path)
        if route is None:
            status, body, ctype = 404, f"not found: try {', '.join(sorted(routes))}\n".encode(), "text/plain"
        else:
            status, body, ctype = route()
        headers = [("content-type", ctype), ("content-length", str(len(body))), ("connection", "close")]
        for out in (h11.Response(status_code=status, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            writer.write(conn.send(out))
        await writer.drain()
    except (ConnectionError, OSError, asyncio.TimeoutError, h11.ProtocolError) as exc:
        log.debug("status request failed: %r", exc)
    finally:
        writer.close()


async def serve(host: str, port: int, routes: dict[str, Route]) -> asyncio.AbstractServer:
    try:
        return await asyncio.start_server(lambda r, w: _handle(r, w, routes), host, port, reuse_address=True)
    except OSError as exc:
        raise OSError(exc.errno, f"sidecar cannot bind {host}:{port}: {exc.strerror}; another process "
                                 f"in the pod holds the port") from None


def text(status: int, body: str) -> tuple[int, bytes, str]:
    return status, body.encode(), "text/plain"


def as_json(value) -> tuple[int, bytes, str]:
    return 200, json.dumps(value, indent=1, sort_keys=True).encode(), "application/json"
