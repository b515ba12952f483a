"""The status istiod writes for waypoints: Gateway `Accepted` / `Programmed` and `status.addresses`,
and a Service's `istio.io/WaypointBound` condition. Pure: `status_updates(mesh, now)` returns the
(kind, namespace, name, status) to write, only for objects whose status would change.

As Istio (is:pilot/pkg/config/kube/gateway/conversion.go, gatewaycommon.SetProgrammedCondition,
is:pilot/pkg/model/service.go GetConditions): `Accepted` says the Gateway is valid, `Programmed`
that its Service has an address ("Resource programmed, assigned to service(s) ..."). The Gateway's
`status.addresses` is set once the waypoint has had a ready pod and is never removed afterwards:
only then may objects bind to it (waypoints.Waypoint.bindable), so binding a service to a
waypoint that is still starting does not blackhole its traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .index import GATEWAY_NAME_LABEL, labels_of, meta, ns_name, pod_ready
from .waypoints import HBONE_PORT, WAYPOINT_BOUND, Waypoint

if TYPE_CHECKING:
    from .derive import Mesh

ACCEPTED, PROGRAMMED = "Accepted", "Programmed"


def _generation(obj: dict) -> int:
    return int(meta(obj).get("generation") or 1)


def _condition(obj: dict, current: list[dict], ctype: str, status: bool, reason: str, message: str,
               now: str) -> dict:
    """A Gateway API condition; lastTransitionTime moves only when the status does."""
    text = "True" if status else "False"
    previous = next((c for c in current if c.get("type") == ctype), None)
    since = previous.get("lastTransitionTime") if previous and previous.get("status") == text else None
    return {"type": ctype, "status": text, "reason": reason, "message": message,
            "observedGeneration": _generation(obj), "lastTransitionTime": since or now}


def _listener_status(gateway: dict, listener: dict, status: dict, now: str) -> dict:
    """A listener's status as Istio reports a waypoint's (no routes attach to the mesh listener)."""
    name = listener.get("name") or ""
    previous = next((l for l in status.get("listeners") or () if l.get("name") == name), {})
    current = list(previous.get("conditions") or ())
    fine = "No errors found"
    return {"name": name, "attachedRoutes": 0, "supportedKinds": [],
            "conditions": [_condition(gateway, current, ACCEPTED, True, ACCEPTED, fine, now),
                           _condition(gateway, current, "Conflicted", False, "NoConflicts", fine, now),
                           _condition(gateway, current, PROGRAMMED, True, PROGRAMMED, fine, now),
                           _condition(gateway, current, "ResolvedRefs", True, "ResolvedRefs", fine, now)]}


def gateway_status(gateway: dict, waypoint: Waypoint, has_ready_pod: bool, now: str) -> dict:
    status = dict(gateway.get("status") or {})
    current = list(status.get("conditions") or ())
    internal = f"{waypoint.hostname}:{HBONE_PORT}"
    if waypoint.address:
        programmed = (True, PROGRAMMED, f"Resource programmed, assigned to service(s) {internal}")
    else:
        programmed = (False, "AddressNotUsable",
                      f'Failed to assign to any requested addresses: hostname "{waypoint.hostname}" not found')
    status["conditions"] = [
        _condition(gateway, current, ACCEPTED, True, ACCEPTED, "Resource accepted", now),
        _condition(gateway, current, PROGRAMMED, *programmed, now),
        _condition(gateway, current, "ResolvedRefs", True, "ResolvedRefs", "All references resolved", now),
    ]
    status["listeners"] = [_listener_status(gateway, listener, status, now)
                           for listener in (gateway.get("spec") or {}).get("listeners") or ()]
    # Do not report an address until the waypoint has served; once reported, never remove it.
    if waypoint.address and has_ready_pod and not status.get("addresses"):
        status["addresses"] = [{"type": "Hostname", "value": waypoint.hostname}]
    return status


def service_status(service: dict, condition: dict | None, now: str) -> dict:
    status = dict(service.get("status") or {})
    current = list(status.get("conditions") or ())
    others = [c for c in current if c.get("type") != WAYPOINT_BOUND]
    if condition is None:
        # Istio prunes the condition when nothing asks for a waypoint any more.
        if len(others) != len(current):
            status["conditions"] = others
        return status
    bound = _condition(service, current, WAYPOINT_BOUND, condition["status"] == "True",
                       condition["reason"], condition["message"], now)
    status["conditions"] = others + [bound]
    return status


def status_updates(mesh: "Mesh", now: str) -> list[tuple[str, str, str, dict]]:
    index = mesh.index
    updates = []
    ready_gateways = {(ns_name(p)[0], labels_of(p)[GATEWAY_NAME_LABEL])
                      for p in index.kind("Pod") if GATEWAY_NAME_LABEL in labels_of(p) and pod_ready(p)}
    for key, waypoint in sorted(mesh.waypoints.items()):
        gateway = index.get("Gateway", *key)
        if gateway is None:
            continue
        status = gateway_status(gateway, waypoint, key in ready_gateways, now)
        if status != (gateway.get("status") or {}):
            updates.append(("Gateway", *key, status))
    for service in index.kind("Service"):
        namespace, name = ns_name(service)
        binding = mesh.service_bindings.get(f"{namespace}/{name}.{namespace}.svc.cluster.local")
        status = service_status(service, binding.condition if binding else None, now)
        if status != (service.get("status") or {}):
            updates.append(("Service", namespace, name, status))
    return updates
