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


class Outbound:
    def __init__(self, proxy: Sidecar, hbone_port: int = HBONE_PORT):
        self.proxy = proxy
        self.hbone_port = hbone_port

    def route(self, ip: str, port: int):
        """(workload or None, address to reach, how): how is `hbone`, `passthrough` or `no_endpoint`."""
        config = self.proxy.config
        if config is None:
            return None, (ip, port), "passthrough"
        service = config.mesh_services_by_vip.get(ip)
        if service is not None and port in service.ports:
            picked = pick_endpoint(config, service, port)
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
        workload, address, how = self.route(ip, port)
        me = self.proxy.identity
        dest = workload.identity.uri if workload is not None and workload.identity else None
        if how == "no_endpoint":
            access_log.info("outbound %s:%d no healthy endpoint", ip, port)
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
        except (HboneError, HboneTLSError, OSError, asyncio.TimeoutError) as exc:
            access_log.info("outbound %s:%d via %s to %s:%d failed: %s", ip, port, how, *address, exc)
            abort(writer)
            return
        self.proxy.telemetry.connection("source", me.uri, dest, how == "hbone")
        access_log.info("outbound %s:%d -> %s %s:%d dst=%s", ip, port, how, *address, dest or "-")
        await self.proxy.track(pipe(reader, writer, up_reader, up_writer))
