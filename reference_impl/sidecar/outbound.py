"""Outbound at the sidecar (15001): the app's captured TCP, by original destination.

- a service VIP: one of its healthy endpoints (round-robin); the service's or the endpoint's
  waypoint is skipped, as Istio's sidecars do (ISTIO-SEMANTICS section 10);
- a workload IP: that workload on the same port;
- an ambient or sidecar destination (it terminates HBONE): HBONE to `pod:15008` with this pod's
  own certificate, requiring the destination workload's identity;
- anything else (an uncaptured pod, outside the mesh): plaintext passthrough to the original
  destination.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..hbone import HboneError, HboneTLSError, abort, pipe
from . import net
from .capture import HBONE_PORT, INBOUND_PORT, OUTBOUND_PORT
from .config import pick_endpoint

if TYPE_CHECKING:
    from .proxy import Sidecar

log = logging.getLogger("sidecar.outbound")
access_log = logging.getLogger("sidecar.access")


#: other endpoints a refused connection to a service VIP may try (Istio's default num_retries)
CONNECT_RETRIES = 2
#: how long a connection that every endpoint of its config refused waits for a newer config
STALE_CONFIG_SECONDS = 1.0


def _retriable(exc: Exception) -> bool:
    """A refusal before the peer acted on anything of the app's: unreachable, never processed,
    or the CONNECT answered 503 (the destination's app not accepting). A TLS or identity failure,
    or a 401 (policy), is the answer."""
    if isinstance(exc, HboneTLSError):
        return False
    if isinstance(exc, HboneError):
        return exc.status == 503 or exc.status is None and (exc.unprocessed or exc.unreachable)
    return isinstance(exc, (OSError, asyncio.TimeoutError))


class Outbound:
    def __init__(self, proxy: Sidecar, hbone_port: int = HBONE_PORT):
        self.proxy = proxy
        self.hbone_port = hbone_port

    def route(self, ip: str, port: int, tried: frozenset = frozenset()):
        """(workload or None, address to reach, how): how is `hbone`, `passthrough` or `no_endpoint`;
        `tried`: endpoints of a service VIP that refused this connection already."""
        config = self.proxy.config
        if config is None:
            return None, (ip, port), "passthrough"
        service = config.mesh_services_by_vip.get(ip)
        if service is not None and port in service.ports:
            picked = pick_endpoint(config, service, port, tried)
            if picked is None:
                return None, (ip, port), "no_endpoint"
            workload, target = picked
        else:
            workload, target = config.workloads_by_ip.get(ip), port
        if workload is None:
            return None, (ip, port), "passthrough"
        if workload.protocol == "HBONE" and workload.identity is not None:
            return workload, (workload.ip, target), "hbone"
        return workload, (workload.ip, target), "passthrough"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        original = net.redirected(writer, "outbound")
        if original is None:
            return
        ip, port = original
        if port in (OUTBOUND_PORT, INBOUND_PORT) and (ip.startswith("127.") or ip == self.proxy.pod_ip):
            abort(writer)  # the app dialled a capture listener itself: relaying it would loop
            return
        me = self.proxy.identity
        tried: set = set()
        stale_until = None
        while True:
            workload, address, how = self.route(ip, port, frozenset(tried))
            if how == "no_endpoint" and tried:
                # Every endpoint this config lists refused before acting on anything. A deleted
                # pod's app stops at once, while its removal and its replacement (ready a moment
                # before it was deleted) are still on their way from istiod: as Envoy's retry
                # picks again from the load-balancing set of its time, wait (bounded) for that.
                loop = asyncio.get_running_loop()
                stale_until = stale_until or loop.time() + STALE_CONFIG_SECONDS
                if await self.proxy.changes.wait(stale_until - loop.time()):
                    continue
            dest = workload.identity.uri if workload is not None and workload.identity else None
            if how == "no_endpoint":
                access_log.info("outbound %s:%d no healthy endpoint%s", ip, port,
                                f" left ({len(tried)} refused)" if tried else "")
                abort(writer)
                return
            try:
                if how == "hbone":
                    stream = await self.proxy.client.connect(
                        me, (address[0], self.hbone_port), [workload.identity], address,
                        {"forwarded": f'for="{peer[0]}"'})
                    up_reader = up_writer = stream
                else:
                    up_reader, up_writer = await net.open_marked(address)
                break
            except (HboneError, HboneTLSError, OSError, asyncio.TimeoutError) as exc:
                access_log.info("outbound %s:%d via %s to %s:%d failed: %s", ip, port, how, *address, exc)
                # Nothing of the app's was sent: like Istio's default retry (connect-failure,
                # refused-stream, 503; previous_hosts; 2 retries), another endpoint of the
                # service VIP is tried, never the same one again.
                if not (_retriable(exc) and ip != address[0] and len(tried) < CONNECT_RETRIES):
                    abort(writer)
                    return
                tried.add(workload.uid)
        self.proxy.telemetry.connection("source", me.uri, dest, how == "hbone")
        access_log.info("outbound %s:%d -> %s %s:%d dst=%s", ip, port, how, *address, dest or "-")
        await self.proxy.track(pipe(reader, writer, up_reader, up_writer))
