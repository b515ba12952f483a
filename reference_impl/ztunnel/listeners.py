"""Accept loops for the proxy's listeners, with a switch that stops accepting (drain).

Accepting happens in a reader callback rather than a task awaiting `sock_accept`: stopping
then removes the reader and closes the socket in one synchronous step, so a connection is
either handed to its handler or left in the kernel's queue (from where tcp_migrate_req moves
it to the replacement proxy's SO_REUSEPORT socket) - never accepted and then dropped, as a
cancelled `sock_accept` can do when its result is already in.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from .sockets import listener, tune

log = logging.getLogger("ztunnel")

Handler = Callable[[socket.socket, tuple], Awaitable[None]]
ACCEPTS_PER_WAKEUP = 64


class Listener:
    def __init__(self, netns: str | None, port: int, handler: Handler, host: str = "0.0.0.0", name: str = ""):
        self.netns, self.port, self.handler, self.name = netns, port, handler, name or str(port)
        self.sock = listener(netns, port, host)
        self.tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> "Listener":
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        return self

    def _on_readable(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self.sock.fileno() >= 0:
                    log.warning("accept on %s failed: %s", self.name, exc)
                return
            conn.setblocking(False)
            tune(conn)
            task = self._loop.create_task(self._serve(conn, peer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve(self, conn: socket.socket, peer) -> None:
        try:
            await self.handler(conn, peer)
        except Exception:
            log.exception("connection on %s from %s failed", self.name, peer)
            conn.close()

    def stop_accepting(self) -> None:
        if self.sock.fileno() < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
