"""Inbound plaintext (15006): plain TCP to a captured pod, from outside the mesh or from a pod
that is not captured. No identity: PeerAuthentication decides whether plaintext is accepted at
all, then L4 authorization judges the source address alone (zt:src/proxy/inbound_passthrough.rs)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import sockets
from .capture import PROXY_PORTS
from .connection_manager import Admission
from .refusal import Refusal, answer
from .telemetry import Connection

if TYPE_CHECKING:
    from .proxy import Ztunnel


class InboundPassthrough:
    def __init__(self, proxy: Ztunnel):
        self.proxy = proxy

    async def serve(self, uid: str, sock, peer) -> None:
        dst_ip, dst_port = sockets.original_dst(sock)
        state = self.proxy.state
        dest = self.proxy.workload(uid)
        pod = self.proxy.pods.get(uid)
        conn = Connection("destination", f"{peer[0]}:{peer[1]}", f"{dst_ip}:{dst_port}",
                          dst_workload=dest.raw if dest else None, dst_principal=dest.identity if dest else "")
        src = state.by_ip.get(peer[0])
        conn.src_workload = src.raw if src else None
        service = state.inbound_service(dest, dst_port) if dest else None
        conn.dst_service = service.info() if service else None
        try:
            if dest is None or pod is None or dst_ip not in dest.ips:
                raise Refusal("error", f"{dst_ip} is not a captured pod of this node")
            if dst_port in PROXY_PORTS:
                raise Refusal("denied", f"port {dst_port} is a proxy port")
            if not state.plaintext_allowed(dest, dst_port):
                raise Refusal("denied", "plaintext refused: PeerAuthentication STRICT")
            decision = state.authorize(dest, peer[0], dst_ip, dst_port, None)
            if not decision.allowed:
                raise Refusal("denied", decision.reason)
            try:
                upstream = await sockets.connect_to_app(pod.netns, peer[0], (dst_ip, dst_port),
                                                        self.proxy.original_source)
            except (OSError, asyncio.TimeoutError) as exc:
                raise Refusal("connect_failed", f"app at {dst_ip}:{dst_port}: {exc!r}") from None
        except Refusal as refusal:
            answer(refusal, conn, self.proxy.telemetry, sock)
            return
        admission = Admission(uid, peer[0], dst_ip, dst_port, principal=None)
        await self.proxy.connections.splice(sock, upstream, conn, uid, admission)
