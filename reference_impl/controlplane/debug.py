"""istiod's debug answers (`{"type": "debug", "what": ...}` on istiod.sock), after istioctl.

- `proxies`        (answered by XdsServer) connected proxies, sent/acked versions
- `config_dump`    the derived mesh: ztunnel config, waypoints, sync state
- `proxy_config`   `node`: the config last sent to that node's ztunnel, with sent/acked versions
- `describe_pod`   `namespace`, `name`: data-plane mode, node, ztunnel, waypoint, policies
- `describe_service` `namespace`, `name`: VIPs, endpoints, its waypoint binding (or why none), and
                   the waypoint policies attached to it
Raising LookupError answers with an error message (the CLI prints it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .derive import target_refs, ztunnel_config
from .index import ROOT_NAMESPACE, labels_of, ns_name, pod_node, workload_uid
from .waypoints import Binding

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
    if what == "describe_service":
        return describe_service(istiod, request.get("namespace") or "default", request.get("name") or "")
    raise LookupError(f"unknown debug request {what!r}; use proxies, config_dump, proxy_config, "
                      "describe_pod or describe_service")


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
            "waypointBinding": _binding(mesh.workload_bindings.get(workload.uid) if workload else None),
            "dataplaneMode": workload.dataplane_mode if workload else "unknown (no pod IP yet)",
            "protocol": workload.protocol if workload else None,
            "identity": workload.identity if workload else None,
            "status": workload.status if workload else None,
            "ztunnel": ztunnels[0] if ztunnels else None,
            "waypoint": waypoint, "serviceWaypoints": service_waypoints, "services": services,
            "policies": policies}


def _binding(binding: Binding | None) -> dict | None:
    """How the object's labels resolved: bound to a waypoint, or Istio's reason for not binding."""
    if binding is None:
        return None
    return {"waypoint": binding.waypoint.key if binding.waypoint else None, "via": binding.via,
            "reason": binding.reason, "message": binding.message}


def describe_service(istiod: "Istiod", namespace: str, name: str) -> dict:
    mesh = _require_mesh(istiod)
    obj = mesh.index.get("Service", namespace, name)
    if obj is None:
        raise LookupError(f"service {namespace}/{name} not found")
    key = f"{namespace}/{name}.{namespace}.svc.cluster.local"
    service = mesh.services.get(key)
    waypoint = service.waypoint.destination.model_dump() if service and service.waypoint else None
    attached = [f"{ns_name(p)[0]}/{ns_name(p)[1]}" for p in mesh.index.kind("AuthorizationPolicy")
                if ns_name(p)[0] == namespace and any(r.get("kind") == "Service" and r.get("name") == name
                                                      for r in target_refs(p))]
    return {"service": f"{namespace}/{name}", "hostname": service.hostname if service else None,
            "vips": service.vips if service else [], "endpoints": sorted(service.endpoints) if service else [],
            "useWaypoint": {k: v for k, v in labels_of(obj).items() if k.startswith("istio.io/use-waypoint")},
            "waypoint": waypoint, "waypointBinding": _binding(mesh.service_bindings.get(key)),
            "attachedPolicies": attached}
