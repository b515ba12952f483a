"""The waypoint's listener: terminates HBONE and hands each tunnel to the L7 engine
(reference_impl.l7), which tells by the destination port's declared protocol and the first bytes
whether it carries HTTP/1.1, HTTP/2 (h2c prior knowledge) or other TCP (l7.front), applies L7
policy to HTTP and L4 policy to TCP, and forwards over NEW HBONE connections that present the
waypoint's own identity (ISTIO-SEMANTICS section 4, path 6: the destination ztunnel sees the
waypoint's principal).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from ..hbone import ConnectRequest, HboneClient, HboneServer, Listener, Outcome, parse_forwarded
from ..identity import Identity
from ..l7 import AccessRecord, Router, Tunnel, UpstreamConnector, resolve
from ..l7.front import classify, declared_protocol, handler_for
from ..policy.authz_l7 import unsupported_action
from .config import WaypointConfig

log = logging.getLogger("waypoint")

HBONE_PORT = 15008
ContextProvider = Callable[[Identity, str], Awaitable]


def _forwarded_ip(value: str | None) -> str | None:
    """The IP of a `forwarded: for="ip:port"` value (IPv6 in brackets)."""
    if not value:
        return None
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Waypoint:
    def __init__(self, identity: Identity, tls_context: ContextProvider, *, hbone_port: int = HBONE_PORT,
                 hbone_client: HboneClient | None = None, record_history: int = 1000):
        self.identity = identity
        self.hbone_port = hbone_port
        self.config: WaypointConfig | None = None
        self.router = Router()
        self.client = hbone_client or HboneClient(tls_context)
        self.upstreams = UpstreamConnector(identity, self.client, hbone_port)
        self.server = HboneServer(self.authorize_and_connect, tls_context)
        self.ready = asyncio.Event()
        self.statuses: Counter[int] = Counter()
        self.records: deque[AccessRecord] = deque(maxlen=record_history)
        self._connections: dict[asyncio.Task, object] = {}   # handler, or None while classifying
        self.draining = False

    # ---- config ----
    def apply(self, snapshot: dict, version: int) -> None:
        """The XdsClient's on_snapshot: a bad snapshot raises (→ NACK) and the last one stays."""
        config = WaypointConfig.from_snapshot(snapshot, version)
        if config.is_waypoint and config.identity and config.identity != self.identity:
            log.warning("snapshot %d names waypoint identity %s but this pod is %s; serving as %s",
                        version, config.identity, self.identity, self.identity)
        self.config = config
        self.ready.set()
        for bound in config.authorization:
            if (why := unsupported_action(bound.value)) is not None:
                log.warning("%s", why)
        log.info("config version %d: %d service(s) by VIP, %d workload(s), %d authorization and "
                 "%d authentication polic(ies)", version, len(config.services_by_vip),
                 len(config.fronted_workloads_by_ip), len(config.authorization), len(config.authentication))

    # ---- listening ----
    async def listen(self, address: tuple[str, int]) -> Listener:
        return await self.server.listen(address, self.identity)

    async def drain(self, deadline_seconds: float) -> None:
        """Answer with `connection: close` from now on and wait (bounded) for in-flight connections."""
        self.draining = True
        for connection in list(self._connections.values()):
            if connection is not None:
                connection.close_if_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_seconds
        while self._connections and loop.time() < deadline:
            await asyncio.wait(set(self._connections), timeout=max(0.0, deadline - loop.time()))
        if self._connections:
            log.info("drain deadline of %gs passed with %d connection(s) open; closing them",
                     deadline_seconds, len(self._connections))

    async def close(self) -> None:
        await self.server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.close()

    # ---- HBONE in ----
    async def authorize_and_connect(self, request: ConnectRequest) -> Outcome:
        config = self.config
        if config is None:
            return Outcome.refused(503, "no configuration from istiod yet")
        if not config.is_waypoint:
            return Outcome.refused(503, "istiod does not know this pod as a waypoint (no Gateway for it)")
        destination = resolve(config, request.authority)
        if destination is None:
            ip, port = request.authority
            return Outcome.refused(503, f"{ip}:{port} is neither a service port nor a workload this "
                                        f"waypoint serves")
        client_ip = _forwarded_ip(parse_forwarded(request.forwarded).get("for")) or request.peer_address[0]
        tunnel = Tunnel(request.peer_identity, client_ip, destination)
        # The L7 engine reads and writes the HBONE stream itself: no copy task, pipe or extra
        # loop turn between the tunnel and the HTTP parser.
        return Outcome.handled(lambda stream: self._serve_tunnel(stream, tunnel))

    async def _serve_tunnel(self, stream, tunnel: Tunnel) -> None:
        task = asyncio.current_task()
        self._connections[task] = None
        task.add_done_callback(lambda t: self._connections.pop(t, None))
        initial, kind = await classify(stream, declared_protocol(tunnel.destination))
        if kind is None:  # closed, or stalled in its first line, before its bytes told what it is
            log.info("tunnel from %s to %s closed before its protocol was known (%d byte(s))",
                     tunnel.peer_identity, tunnel.destination, len(initial))
            stream.close()
            return
        connection = handler_for(kind, stream, stream, tunnel, lambda: self.config, self.router,
                                 self.upstreams.open, self._record, lambda: self.draining, initial)
        if task in self._connections:
            self._connections[task] = connection
        await connection.serve()

    def _record(self, record: AccessRecord) -> None:
        self.statuses[record.status] += 1
        self.records.append(record)
