"""Outbound (15001): what a captured pod sends. The original destination is resolved with the
snapshot (ISTIO-SEMANTICS section 4) and either tunnelled over HBONE with the source workload's
certificate or passed through as plain TCP (zt:src/proxy/outbound.rs). Upstream sockets are
made inside the pod namespace with SO_MARK 0x539, so they bypass capture and carry the pod's IP."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..hbone import HboneError, StreamSplice, format_forwarded, workload_baggage
from ..identity import Identity
from . import sockets
from .connection_manager import Live
from .refusal import Refusal, answer
from .state import Route, Workload
from .telemetry import Connection

if TYPE_CHECKING:
    from .proxy import PodProxy, Ztunnel

log = logging.getLogger("ztunnel")

UNPROCESSED_RETRIES = 2
#: how long a connection whose service endpoint refused waits for a snapshot naming another
STALE_STATE_SECONDS = 1.0


class _Refused(Exception):
    """A service endpoint refused the CONNECT before anything of the client's was sent."""

    def __init__(self, refusal: Refusal):
        super().__init__(refusal.reason)
        self.refusal = refusal


class Outbound:
    def __init__(self, proxy: Ztunnel):
        self.proxy = proxy

    async def serve(self, uid: str, sock, peer) -> None:
        dst_ip, dst_port = sockets.original_dst(sock)
        source = self.proxy.workload(uid)
        pod = self.proxy.pods.get(uid)
        conn = Connection("source", f"{peer[0]}:{peer[1]}", f"{dst_ip}:{dst_port}",
                          src_workload=source.raw if source else None,
                          src_principal=source.identity if source else "")
        try:
            await self._serve(pod, source, sock, peer, conn, (dst_ip, dst_port))
        except Refusal as refusal:
            answer(refusal, conn, self.proxy.telemetry, sock)

    async def _serve(self, pod: PodProxy | None, source: Workload | None, sock, peer, conn: Connection,
                     dst: tuple[str, int]) -> None:
        if source is None or pod is None:
            raise Refusal("error", "source pod is no longer captured")
        route = self.proxy.state.route_outbound(source, *dst)
        conn.dst_workload = route.dst_workload.raw if route.dst_workload else None
        conn.dst_service = route.dst_service.info() if route.dst_service else None
        if route.kind == "fail":
            raise Refusal("error", route.reason)
        if route.kind == "passthrough":
            try:
                upstream = await sockets.connect_marked(pod.netns, route.target)
            except (OSError, asyncio.TimeoutError) as exc:
                raise Refusal("connect_failed", f"connect to {route.target} failed: {exc!r}") from None
            await self.proxy.connections.splice(sock, upstream, conn, pod.workload.uid)
            return
        try:
            await self._hbone(pod, source, route, sock, peer, conn)
        except _Refused as refused:
            # A service endpoint that refused before anything was sent (its app not accepting:
            # a pod deleted a moment ago, whose removal has not arrived yet) is not the
            # service's answer: one other ready endpoint is tried, as a sidecar's outbound does.
            other = await self._another_endpoint(source, dst, route)
            if other is None:
                raise refused.refusal from None
            log.debug("%s; trying %s", refused.refusal.reason, other.target)
            conn.dst_workload = other.dst_workload.raw if other.dst_workload else None
            try:
                await self._hbone(pod, source, other, sock, peer, conn)
            except _Refused as again:
                raise again.refusal from None

    async def _another_endpoint(self, source: Workload, dst: tuple[str, int], route: Route) -> Route | None:
        """Another ready endpoint of the service than the one that refused; when the snapshot has
        none, the next snapshots are awaited for up to STALE_STATE_SECONDS (the refusing pod's
        replacement was Ready a moment before it was deleted, and is on its way from istiod)."""
        failed = frozenset({route.dst_workload.uid})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STALE_STATE_SECONDS
        while True:
            other = self.proxy.state.route_outbound(source, *dst, exclude=failed)
            if other.kind == "hbone" and not other.via_waypoint:
                return other
            if other.kind != "fail" or not await self.proxy.changes.wait(deadline - loop.time()):
                return None

    async def _hbone(self, pod: PodProxy, source: Workload, route: Route, sock, peer, conn: Connection) -> None:
        conn.hbone_target = f"{route.target[0]}:{route.target[1]}"
        conn.dst_principal = route.expected_identities[0] if len(route.expected_identities) == 1 else ""
        conn.mtls = True
        host = route.dst_service.hostname if route.dst_service else None
        headers = {
            "baggage": workload_baggage(source.namespace, source.raw.get("workloadName") or source.name,
                                        source.raw.get("canonicalName") or "", source.raw.get("canonicalRevision") or ""),
            "forwarded": format_forwarded(peer[0], peer[1], host),
        }
        try:
            stream = await self._open_tunnel(pod, source, route, headers)
        except HboneError as exc:
            outcome = "denied" if exc.status == 401 else "error"
            refusal = Refusal(outcome, f"HBONE to {conn.hbone_target} ({route.authority}): {exc}")
            if route.dst_service is not None and not route.via_waypoint and route.dst_workload is not None \
                    and (exc.status == 503 or exc.status is None and exc.unreachable):
                raise _Refused(refusal) from None
            raise refusal from None
        except Exception as exc:
            raise Refusal("error", f"HBONE to {conn.hbone_target} failed: {exc!r}") from None
        splice = StreamSplice(sock)
        key = self.proxy.connections.track(Live(conn, splice.reset, pod.workload.uid))
        try:
            await splice.run(stream)
        except asyncio.CancelledError:
            if conn.outcome == "open":
                conn.outcome, conn.reason = "reset", "reset by ztunnel"
        except (ConnectionError, OSError) as exc:
            if conn.outcome == "open":
                conn.outcome, conn.reason = "reset", repr(exc)
        finally:
            conn.sent, conn.received = splice.to_stream, splice.from_stream
            self.proxy.connections.untrack(key)

    async def _open_tunnel(self, pod: PodProxy, source: Workload, route: Route, headers: dict):
        """CONNECT on a pooled connection; a CONNECT the server provably did not process (it
        raced a GOAWAY, or was refused while the server drains) is sent again on a fresh one.
        Nothing of the client's has been sent yet, so this is invisible to it - and it is what
        makes a ztunnel restart lose no new connection (ISTIO-SEMANTICS section 12)."""
        targets = [route.target, *route.fallback_targets]
        attempt = 0
        while True:
            attempt += 1
            try:
                return await pod.client.connect(
                    Identity.parse(source.identity), targets[0],
                    [Identity.parse(i) for i in route.expected_identities], route.authority, headers,
                    source_ip=source.ip)
            except HboneError as exc:
                if exc.unreachable and len(targets) > 1:
                    log.debug("waypoint endpoint %s unreachable (%s): trying %s", targets[0], exc, targets[1])
                    targets.pop(0)
                    continue
                if not exc.unprocessed or attempt > UNPROCESSED_RETRIES:
                    raise
                log.debug("CONNECT to %s not processed (%s): retrying on a new connection", targets[0], exc)
