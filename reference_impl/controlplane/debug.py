"""istiod's debug answers (`{"type": "debug", "what": ...}` on istiod.sock), after istioctl.

- `proxies`        (answered by XdsServer) connected proxies, sent/acked versions
- `config_dump`    the derived mesh: ztunnel config, waypoints, sync state
- `proxy_config`   `node`: the config last sent to that node's ztunnel, with sent/acked versions
- `describe_pod`   `namespace`, `name`: data-plane mode, node, ztunnel, waypoint, policies
Raising LookupError answers with an error message (the CLI prints it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .derive import ztunnel_config
from .index import ROOT_NAMESPACE, labels_of, ns_name, pod_node, workload_uid

if TYPE_CHECKING:
    from .istiod import Istiod


def answer(istiod: "Istiod", request: dict):
    what = request.get("what")
    if what == "config_dump":
        return config_dump(istiod)
    if what == "proxy_config":
        return proxy_config(istiod, request.get("node") or "")
    if what == "describe_pod":
        return describe_pod(istiod, request.get("namespace") or "default", request.get("name") or "")
    raise LookupError(f"unknown debug request {what!r}; use proxies, config_dump, proxy_config or describe_pod")


def _require_mesh(istiod: "Istiod"):
    if istiod.mesh is None:
        raise LookupError("istiod has not synced with the cluster store yet; try again in a moment")
    return istiod.mesh


def config_dump(istiod: "Istiod") -> dict:
    mesh = _require_mesh(istiod)
    return {"storeResourceVersion": istiod.store.resource_version, "storeSyncs": istiod.store.syncs,
            "derivedAt": istiod.derived_at, "deriveSeconds": istiod.derive_seconds,
            "waypoints": [{"namespace": w.namespace, "name": w.name, "waypointFor": w.waypoint_for,
                           "legacy": w.legacy, "address": w.address} for w in mesh.waypoints.values()],
            "policiesAtWaypoints": mesh.moved_to_waypoint,
            "proxies": [s.status() for s in istiod.server.streams.values()],
            "ztunnel": ztunnel_config(mesh)}


def proxy_config(istiod: "Istiod", node: str) -> dict:
    streams = [s for s in istiod.server.streams.values()
               if s.hello.proxy == "ztunnel" and s.hello.node == node]
    if not streams:
        known = sorted({s.hello.node for s in istiod.server.streams.values() if s.hello.proxy == "ztunnel"})
        raise LookupError(f"no ztunnel on node {node!r} is connected to istiod; connected nodes: "
                          f"{', '.join(known) or 'none'}")
    return streams[0].status(include_config=True)


def describe_pod(istiod: "Istiod", namespace: str, name: str) -> dict:
    mesh = _require_mesh(istiod)
    pod = mesh.index.get("Pod", namespace, name)
    if pod is None:
        raise LookupError(f"pod {namespace}/{name} not found")
    workload = mesh.workloads.get(workload_uid(pod))
    node = pod_node(pod)
    ztunnels = [ns_name(p)[1] for p in mesh.index.pods_by_namespace.get(ROOT_NAMESPACE, ())
                if pod_node(p) == node and any("ztunnel" in (c.get("image") or "")
                                                for c in (p.get("spec") or {}).get("containers") or ())]
    labels = labels_of(pod)
    policies = []
    for policy in mesh.policies:
        compiled = policy.compiled
        scope = compiled["scope"]
        if scope == "GLOBAL" or (scope == "NAMESPACE" and compiled["namespace"] == namespace) or (
                workload and policy.key in workload.authorization_policies):
            policies.append({"name": policy.key, "action": compiled["action"], "scope": scope,
                             "enforcedBy": "ztunnel", "error": policy.error})
        elif policy.key in mesh.moved_to_waypoint and scope == "WORKLOAD_SELECTOR" and all(
                labels.get(k) == v for k, v in (policy.selector or {}).items()):
            policies.append({"name": policy.key, "action": compiled["action"], "scope": scope,
                             "enforcedBy": f"waypoint {mesh.moved_to_waypoint[policy.key]}",
                             "error": policy.error})
    services = []
    if workload:
        services = workload.services
    waypoint = None
    if workload and workload.waypoint:
        waypoint = workload.waypoint.destination.model_dump()
    service_waypoints = sorted({f"{s} -> {mesh.services[s].waypoint.destination.hostname}"
                                for s in services if s in mesh.services and mesh.services[s].waypoint})
    return {"pod": f"{namespace}/{name}", "node": node,
            "dataplaneMode": workload.dataplane_mode if workload else "unknown (no pod IP yet)",
            "protocol": workload.protocol if workload else None,
            "identity": workload.identity if workload else None,
            "status": workload.status if workload else None,
            "ztunnel": ztunnels[0] if ztunnels else None,
            "waypoint": waypoint, "serviceWaypoints": service_waypoints, "services": services,
            "policies": policies}
