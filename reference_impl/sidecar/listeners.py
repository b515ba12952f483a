"""The sidecar's listeners as `istioctl proxy-config listeners` shows an Envoy's: the virtual
outbound (15001) and inbound (15006) listeners, HBONE (15008), one outbound entry per service port
it can reach (and how: HBONE to the endpoint pod, or plaintext passthrough), and the inbound ports
of its own app."""

from __future__ import annotations

from .config import SidecarConfig


def listeners(config: SidecarConfig | None, bound: dict[str, tuple[str, int]]) -> list[dict]:
    rows = [
        {"name": "virtualOutbound", "address": f"{bound['outbound'][0]}:{bound['outbound'][1]}",
         "match": "ALL", "destination": "PassthroughCluster (captured outbound TCP)"},
        {"name": "virtualInbound", "address": f"{bound['inbound'][0]}:{bound['inbound'][1]}",
         "match": "ALL", "destination": "Inbound plaintext (PeerAuthentication decides)"},
        {"name": "connect_terminate", "address": f"{bound['hbone'][0]}:{bound['hbone'][1]}",
         "match": "HBONE", "destination": "Inbound HBONE (mTLS, peer identity)"},
    ]
    if config is None:
        return rows
    for vip, service in sorted(config.mesh_services_by_vip.items()):
        for port in sorted(service.ports):
            modes = {config.workloads[e.workload_uid].protocol for e in service.endpoints
                     if e.workload_uid in config.workloads}
            how = "HBONE to endpoint:15008" if modes == {"HBONE"} else \
                "passthrough" if modes <= {"TCP"} else "HBONE or passthrough per endpoint"
            rows.append({"name": f"outbound|{port}||{service.hostname}", "address": f"{vip}:{port}",
                         "match": "ALL", "destination": f"Cluster: outbound|{port}||{service.hostname} ({how})"})
    if config.own is not None:
        rows.append({"name": f"inbound|{config.own.name}", "address": f"{config.own.ip}:*", "match": "ALL",
                     "destination": f"Inline Route: inbound app of {config.own.namespace}/{config.own.name} "
                                    f"as {config.own.identity}"})
    return rows
