"""Accept loops for the proxy's listeners, with a switch that stops accepting (drain)."""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from .sockets import listener, tune

log = logging.getLogger("ztunnel")

Handler = Callable[[socket.socket, tuple], Awaitable[None]]


class Listener:
    def __init__(self, netns: str | None, port: int, handler: Handler, host: str = "0.0.0.0", name: str = ""):
        self.netns, self.port, self.handler, self.name = netns, port, handler, name or str(port)
        self.sock = listener(netns, port, host)
        self.tasks: set[asyncio.Task] = set()
        self._accept_task: asyncio.Task | None = None

    def start(self) -> "Listener":
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())
        return self

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if self.sock.fileno() < 0:
                    return
                log.warning("accept on %s failed: %s", self.name, exc)
                await asyncio.sleep(0.05)
                continue
            tune(conn)
            task = loop.create_task(self._serve(conn, peer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve(self, conn: socket.socket, peer) -> None:
        try:
            await self.handler(conn, peer)
        except Exception:
            log.exception("connection on %s from %s failed", self.name, peer)
            conn.close()

    def stop_accepting(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
        self.sock.close()
