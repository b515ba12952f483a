"""TCP passthrough over one terminated tunnel: what a waypoint does with traffic that is not HTTP
(a port declared TCP, or an undeclared one whose first bytes are not HTTP).

Only L4 policy applies, as in Istio's waypoint TCP filter chain (Envoy's network RBAC filter,
built from the same AuthorizationPolicies as the HTTP chain): an ALLOW rule that uses an HTTP
attribute is dropped whole (so it admits nothing), a DENY rule keeps only its L4 parts
(ISTIO-SEMANTICS section 5, the same translation ztunnel makes). A denied connection is reset;
an allowed one is relayed byte for byte to the endpoint the router picks.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from ..hbone import abort, pipe
from ..policy.authz_l4 import Connection, evaluate_l4, translate_for_ztunnel
from ..policy.authz_model import Decision
from .config import L7Config
from .http import AccessRecord, TunnelHandler, UpstreamUnavailable
from .pipeline import Tunnel
from .routing import Upstream

log = logging.getLogger("l7.tcp")

TCP_METHOD = "TCP"   # what the access record shows in place of an HTTP method


def authorize_tcp(config: L7Config, tunnel: Tunnel, upstream: Upstream | None) -> Decision:
    """The L4 decision on a TCP connection through this proxy: the proxy's policies (all of them
    are targetRefs policies, bound by the control plane) in their L4 form."""
    workload_uid = upstream.workload.uid if upstream else None
    service_key = tunnel.destination.service.key if tunnel.destination.service else None
    policies = []
    for policy in config.policies_for(workload_uid, service_key):
        compiled = translate_for_ztunnel(dataclasses.replace(policy, target_refs=(), selector=None))
        if compiled is not None:  # None: CUSTOM / AUDIT / dry-run, which the L7 chain skips too
            policies.append(compiled)
    peer = tunnel.peer_identity
    connection = Connection.of({"source_ip": tunnel.client_ip, "dest_ip": tunnel.destination.ip,
                                "dest_port": tunnel.destination.port,
                                "source_principal": peer.uri if peer else None})
    return evaluate_l4(policies, connection)


class TcpConnection(TunnelHandler):
    """Relays one downstream TCP stream to its endpoint, or resets it."""

    def close_if_idle(self) -> bool:
        return False  # a byte stream has no safe point to stop at; the drain deadline ends it

    async def serve(self) -> None:
        started = time.monotonic()
        destination = self.tunnel.destination
        record = AccessRecord(TCP_METHOD, f"{destination.ip}:{destination.port}", 0, self.principal, "")
        try:
            await self._serve(record)
        finally:
            record.duration_ms = (time.monotonic() - started) * 1000
            self.emit(record)

    async def _serve(self, record: AccessRecord) -> None:
        config = self.get_config()
        if config is None:
            record.status, record.reason = 503, "no configuration from istiod yet"
            abort(self.writer)
            return
        upstream = self.router.pick(config, self.tunnel.destination)
        decision = authorize_tcp(config, self.tunnel, upstream)
        record.reason = decision.reason
        if not decision.allowed:
            record.status = 403
            abort(self.writer)
            return
        if upstream is None:
            record.status, record.reason = 503, f"{decision.reason}; no healthy endpoint for {self.tunnel.destination}"
            abort(self.writer)
            return
        record.upstream = f"{upstream.workload.namespace}/{upstream.workload.name}@" \
                          f"{upstream.address[0]}:{upstream.address[1]}"
        try:
            up_reader, up_writer = await self.open_upstream(upstream, self.tunnel)
        except UpstreamUnavailable as exc:
            record.status, record.reason = 503, f"{decision.reason}; {exc}"
            abort(self.writer)
            return
        record.status = 200
        try:
            if self.initial:
                up_writer.write(self.initial)
            await pipe(self.reader, self.writer, up_reader, up_writer)
        except (ConnectionError, OSError) as exc:
            log.debug("TCP relay for %s ended: %r", self.principal, exc)
        finally:
            for writer in (up_writer, self.writer):
                try:
                    writer.close()
                except Exception:  # closing a half-dead stream must not mask the relay's outcome
                    pass
