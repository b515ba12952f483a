"""Opening the connection to a chosen endpoint: HBONE (through its ztunnel, presenting this
proxy's own identity) for an HBONE workload, plain TCP otherwise. The HBONE client pools its
HTTP/2 connections per peer; http.HttpConnection keeps the opened streams per downstream."""

from __future__ import annotations

import asyncio

from ..hbone import HboneClient, HboneError, HboneTLSError
from ..identity import Identity
from .http import UpstreamUnavailable
from .pipeline import Tunnel
from .routing import Upstream

HBONE_PORT = 15008
UPSTREAM_TCP_TIMEOUT = 10.0


class UpstreamConnector:
    def __init__(self, identity: Identity, client: HboneClient, hbone_port: int = HBONE_PORT):
        self.identity = identity
        self.client = client
        self.hbone_port = hbone_port

    async def open(self, upstream: Upstream, tunnel: Tunnel) -> tuple:
        workload = upstream.workload
        ip, port = upstream.address
        if workload.protocol != "HBONE":
            try:
                return await asyncio.wait_for(asyncio.open_connection(ip, port), UPSTREAM_TCP_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                raise UpstreamUnavailable(f"TCP connect to {ip}:{port} failed: {exc!r}") from None
        if workload.identity is None:
            raise UpstreamUnavailable(f"workload {workload.namespace}/{workload.name} has no identity "
                                      f"to verify its HBONE server against")
        headers = {}
        if tunnel.client_ip:
            headers["forwarded"] = f'for="{tunnel.client_ip}"'
        try:
            stream = await self.client.connect(self.identity, (ip, self.hbone_port), [workload.identity],
                                               (ip, port), headers)
        except (HboneError, HboneTLSError) as exc:
            raise UpstreamUnavailable(str(exc)) from None
        return stream, stream
