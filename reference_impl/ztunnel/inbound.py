"""Inbound HBONE (15008): a CONNECT to a captured pod, on mutual TLS with the destination
workload's certificate. The authority must be this pod and not a proxy port; L4 authorization
judges the peer's identity and address; then a marked connection to the app carries the
original client's IP (IP_TRANSPARENT, ISTIO-SEMANTICS section 2; zt:src/proxy/inbound.rs)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..hbone import ConnectRequest, Outcome, StreamSplice, parse_forwarded
from . import sockets
from .capture import PROXY_PORTS
from .connection_manager import Admission, Live
from .refusal import Refusal, answer
from .telemetry import Connection

if TYPE_CHECKING:
    from .proxy import Ztunnel


class Inbound:
    def __init__(self, proxy: Ztunnel):
        self.proxy = proxy

    async def serve(self, uid: str, req: ConnectRequest) -> Outcome:
        ip, port = req.authority
        state = self.proxy.state
        dest = self.proxy.workload(uid)
        pod = self.proxy.pods.get(uid)
        principal = str(req.peer_identity)
        # The source is the tunnel's TCP peer, as in ztunnel's inbound.rs: a source ztunnel dials
        # from inside the client pod's namespace, so the peer IS the client pod. `forwarded for=`
        # is the client's word and never trusted (it would let any mesh identity claim an
        # address that an ipBlocks rule admits); only its `host=` feeds telemetry.
        forwarded = parse_forwarded(req.forwarded)
        source_ip = req.peer_address[0]
        conn = Connection("destination", f"{source_ip}:{req.peer_address[1]}",
                          f"{ip}:{port}", dst_workload=dest.raw if dest else None,
                          src_principal=principal, dst_principal=dest.identity if dest else "", mtls=True)
        src = state.by_ip.get(source_ip)
        conn.src_workload = src.raw if src else None
        service = state.inbound_service(dest, port, forwarded.get("host")) if dest else None
        conn.dst_service = service.info() if service else None
        try:
            if dest is None or pod is None:
                raise Refusal("error", "pod is no longer captured", status=503,
                              told="destination pod is no longer captured by this ztunnel")
            if ip not in dest.ips:
                raise Refusal("denied", f"authority {ip} is not pod {dest.namespace}/{dest.name}", status=400,
                              told=f"authority IP {ip} is not this pod ({dest.ip})")
            if port in PROXY_PORTS:
                raise Refusal("denied", f"port {port} is a proxy port", status=400,
                              told=f"port {port} is one of the proxy's own ports")
            decision = state.authorize(dest, source_ip, ip, port, principal)
            if not decision.allowed:
                raise Refusal("denied", decision.reason, status=401)
            try:
                upstream = await sockets.connect_to_app(pod.netns, source_ip, (ip, port), self.proxy.original_source)
            except (OSError, asyncio.TimeoutError) as exc:
                raise Refusal("connect_failed", f"app at {ip}:{port}: {exc!r}", status=503,
                              told=f"upstream {ip}:{port} connect failed: {exc!r}") from None
        except Refusal as refusal:
            return answer(refusal, conn, self.proxy.telemetry)
        splice = StreamSplice(upstream)
        admission = Admission(uid, source_ip, ip, port, principal)
        key = self.proxy.connections.track(Live(conn, splice.reset, uid, admission))

        def done() -> None:
            # towards the destination = from the tunnel to the app
            conn.sent, conn.received = splice.from_stream, splice.to_stream
            self.proxy.connections.untrack(key)
        splice.on_done = done
        return Outcome.spliced(splice)
