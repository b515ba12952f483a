"""One sidecar: its config, identity, HBONE client and server, and the three listeners
(15001 outbound, 15006 inbound plaintext, 15008 inbound HBONE), with drain on shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from ..hbone import HboneClient, HboneServer
from ..identity import Identity
from ..l7 import Router
from ..process.changes import ConfigChanges
from . import net
from .config import SidecarConfig
from .inbound import Inbound
from .outbound import Outbound
from .telemetry import Telemetry

log = logging.getLogger("sidecar")

ContextProvider = Callable[[Identity, str], Awaitable]


async def _marked_dial(addr: tuple[str, int]) -> socket.socket:
    return await net.connect_marked(addr)


class Sidecar:
    def __init__(self, identity: Identity, tls_context: ContextProvider, *, hbone_port: int = 15008):
        self.identity = identity
        self.config: SidecarConfig | None = None
        self.router = Router()
        self.telemetry = Telemetry()
        self.client = HboneClient(tls_context, sock_factory=_marked_dial)
        self.inbound = Inbound(self)
        self.outbound = Outbound(self, hbone_port)
        self.server = HboneServer(self.inbound.hbone, tls_context)
        self.draining = False
        self.listeners: dict[str, tuple[str, int]] = {}
        self.pod_ip = ""
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Future] = set()
        self._http: dict[asyncio.Future, object] = {}
        self.changes = ConfigChanges()   # wakes connections waiting for a newer config

    # ---- config ----
    def apply(self, snapshot: dict, version: int) -> None:
        """The XdsClient's on_snapshot: a bad snapshot raises (-> NACK) and the last one stays."""
        config = SidecarConfig.from_snapshot(snapshot, version)
        if config.identity is not None and config.identity != self.identity:
            log.warning("snapshot %d names identity %s for this pod but the proxy is %s",
                        version, config.identity, self.identity)
        self.config = config
        self.changes.applied()
        log.info("config version %d: %s, %d workload(s), %d service VIP(s), %d authorization and %d "
                 "authentication polic(ies)", version, "pod known" if config.own else "pod not known yet",
                 len(config.workloads), len(config.mesh_services_by_vip), len(config.authorization),
                 len(config.authentication))

    # ---- connections ----
    def spawn(self, coro) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def track(self, coro, http_connection=None) -> None:
        """Run one connection's relay in the current (spawned) task; HTTP ones can be drained."""
        task = asyncio.current_task()
        if http_connection is not None:
            self._http[task] = http_connection
        try:
            await coro
        except Exception as exc:  # a failed relay ends that connection only
            log.debug("connection ended: %r", exc)
        finally:
            self._http.pop(task, None)

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    # ---- listeners ----
    async def listen(self, pod_ip: str, *, outbound_port=15001, inbound_port=15006, hbone_port=15008) -> None:
        self.pod_ip = pod_ip
        async def serve(handler, port: int, name: str) -> None:
            server = await asyncio.start_server(lambda r, w: self.spawn(handler(r, w)), "0.0.0.0", port,
                                                reuse_address=True, limit=256 * 1024)
            self._servers.append(server)
            self.listeners[name] = ("0.0.0.0", port)

        await serve(self.outbound.handle, outbound_port, "outbound")
        await serve(self.inbound.plaintext, inbound_port, "inbound")
        await self.server.listen((pod_ip, hbone_port), self.identity)
        self.listeners["hbone"] = (pod_ip, hbone_port)

    async def drain(self, deadline_seconds: float) -> None:
        """Stop accepting, let keep-alive HTTP connections close, wait (bounded) for the rest."""
        self.draining = True
        for server in self._servers:
            server.close()
        for listener in self.server.listeners:
            listener.stop_accepting()
        for connection in list(self._http.values()):
            connection.close_if_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_seconds
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, min(0.2, deadline - loop.time())))
            for connection in list(self._http.values()):
                connection.close_if_idle()
        if self._tasks:
            log.info("drain deadline of %gs passed with %d connection(s) open; closing them",
                     deadline_seconds, len(self._tasks))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        await self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.client.close()
