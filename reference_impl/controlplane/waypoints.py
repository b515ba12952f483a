"""Which Gateways are waypoints, and which workloads and services each one serves.

Current Istio (ISTIO-SEMANTICS section 7, is:pilot/pkg/serviceregistry/ambient/waypoints.go):
class `istio-waypoint`; objects opt in with the `istio.io/use-waypoint` label (the object's own
label beats its namespace's, `none` opts out, `istio.io/use-waypoint-namespace` names another
namespace), filtered by the Gateway's `istio.io/waypoint-for`. A Gateway is a waypoint one can
bind to only once its status carries an address (written by istiod once the waypoint had a ready
pod, never removed afterwards); a label naming anything else binds nothing and the object's
`istio.io/WaypointBound` condition says why (Istio's reasons and messages, `Binding`).
The seed article's form, served here so the article runs as written: a Gateway of class `istio`
with an HBONE 15008 listener (`istio` is Istio's ingress class in every release: a real Istio
provisions no waypoint for it, docs/ISTIO-NOTES.md), or any waypoint with Istio 1.18's
`istio.io/for-service-account` annotation, serves the workloads of its namespace (of that
service account) without labels, and the selector policies of those workloads are enforced at
the waypoint, as Istio 1.18 did for its `istio-waypoint` waypoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from reference_impl.xds import GatewayAddress, NamespacedHostname

from .index import GATEWAY_NAME_LABEL, MeshIndex, annotations_of, labels_of, ns_name, pod_service_account

log = logging.getLogger("controlplane.waypoints")

WAYPOINT_CLASS = "istio-waypoint"
LEGACY_CLASS = "istio"
HBONE_PORT = 15008
USE_WAYPOINT = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR = "istio.io/waypoint-for"
FOR_SERVICE_ACCOUNT = "istio.io/for-service-account"
WAYPOINT_FOR_VALUES = ("service", "workload", "all", "none")

_warned: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Waypoint:
    namespace: str
    name: str
    waypoint_for: str          # service | workload | all | none
    legacy: bool               # 1.18 semantics: binds its namespace's workloads without labels
    for_service_account: str | None
    address: str | None        # the provisioned Service's ClusterIP, once the store assigned it
    bindable: bool = False     # the Gateway's status has an address: it served once (Istio's rule)
    allowed_from: str = "Same"  # the mesh listener's allowedRoutes.namespaces.from
    allowed_selector: dict | None = None  # its matchLabels, for from: Selector

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def hostname(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    def gateway_address(self) -> GatewayAddress:
        """The `waypoint` field of a Workload or Service."""
        return GatewayAddress(destination=NamespacedHostname(namespace=self.namespace, hostname=self.hostname),
                              address=self.address, hbone_mtls_port=HBONE_PORT)

    def serves_workloads(self) -> bool:
        return self.waypoint_for in ("workload", "all")

    def serves_services(self) -> bool:
        return self.waypoint_for in ("service", "all")

    def allows_namespace(self, namespace: str, namespace_labels: dict) -> bool:
        """Gateway API allowedRoutes on the mesh listener: who may bind to this waypoint."""
        if self.allowed_from == "All":
            return True
        if self.allowed_from == "Selector":
            return all(namespace_labels.get(k) == v for k, v in (self.allowed_selector or {}).items())
        return namespace == self.namespace


def _warn_once(key: tuple[str, str, str], message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _hbone_listener(gateway: dict) -> dict | None:
    for listener in (gateway.get("spec") or {}).get("listeners") or ():
        if listener.get("protocol") == "HBONE" and listener.get("port") == HBONE_PORT:
            return listener
    return None


def _allowed_routes(listener: dict | None) -> tuple[str, dict | None]:
    namespaces = ((listener or {}).get("allowedRoutes") or {}).get("namespaces") or {}
    selector = (namespaces.get("selector") or {}).get("matchLabels")
    return namespaces.get("from") or "Same", dict(selector) if isinstance(selector, dict) else None


def has_status_address(gateway: dict) -> bool:
    return bool((gateway.get("status") or {}).get("addresses"))


def as_waypoint(gateway: dict, service_ip: str | None = None) -> Waypoint | None:
    """The Waypoint a Gateway declares, or None if it is not a waypoint."""
    namespace, name = ns_name(gateway)
    gateway_class = (gateway.get("spec") or {}).get("gatewayClassName")
    for_sa = annotations_of(gateway).get(FOR_SERVICE_ACCOUNT)
    if gateway_class == WAYPOINT_CLASS:
        legacy = for_sa is not None
    elif gateway_class == LEGACY_CLASS and _hbone_listener(gateway) is not None:
        legacy = True
        _warn_once(("class", namespace, name),
                   "Gateway %s/%s uses gatewayClassName 'istio' with an HBONE listener: 'istio' is "
                   "Istio's ingress class (a real Istio provisions no waypoint for it); served here as a "
                   "legacy waypoint: use gatewayClassName 'istio-waypoint' and the istio.io/use-waypoint "
                   "label", namespace, name)
    else:
        return None
    if for_sa is not None:
        _warn_once(("sa", namespace, name),
                   "Gateway %s/%s uses the legacy istio.io/for-service-account annotation (Istio 1.18); "
                   "current Istio binds with the istio.io/use-waypoint label", namespace, name)
    waypoint_for = labels_of(gateway).get(WAYPOINT_FOR) or ("workload" if legacy else "service")
    if waypoint_for not in WAYPOINT_FOR_VALUES:
        _warn_once(("for", namespace, name),
                   "Gateway %s/%s has %s=%r; using 'service' (allowed: %s)", namespace, name,
                   WAYPOINT_FOR, waypoint_for, ", ".join(WAYPOINT_FOR_VALUES))
        waypoint_for = "service"
    allowed_from, allowed_selector = _allowed_routes(_hbone_listener(gateway))
    return Waypoint(namespace, name, waypoint_for, legacy, for_sa, service_ip,
                    bindable=has_status_address(gateway), allowed_from=allowed_from,
                    allowed_selector=allowed_selector)


def find_waypoints(index: MeshIndex) -> dict[tuple[str, str], Waypoint]:
    service_ips = {}
    for service in index.kind("Service"):
        ip = (service.get("spec") or {}).get("clusterIP")
        if ip and ip != "None":
            service_ips[ns_name(service)] = ip
    found = {}
    for gateway in index.kind("Gateway"):
        key = ns_name(gateway)
        waypoint = as_waypoint(gateway, service_ips.get(key))
        if waypoint is not None:
            found[key] = waypoint
    return found




# -- binding (is:pilot/pkg/serviceregistry/ambient/waypoints.go fetchWaypointForTarget) ----------

WAYPOINT_BOUND = "istio.io/WaypointBound"
WAYPOINT_ACCEPTED = "WaypointAccepted"
NOT_READY = "WaypointIsNotReady"
ATTACHMENT_DENIED = "AttachmentDenied"
UNSUPPORTED_TRAFFIC_TYPE = "UnsupportedTrafficType"


@dataclass(frozen=True)
class Binding:
    """What an object's labels bound it to: a waypoint, or None with Istio's reason and message
    (reason None: nothing was asked, so there is nothing to report). `via` names the label's
    owner (`Service`, `Pod`, `Namespace`) or `legacy` (the Istio 1.18 form)."""

    waypoint: Waypoint | None
    reason: str | None = None
    message: str = ""
    via: str = ""

    @property
    def condition(self) -> dict | None:
        """The `istio.io/WaypointBound` condition Istio writes (without times), or None."""
        if self.waypoint is not None and self.via != "legacy":
            return {"type": WAYPOINT_BOUND, "status": "True", "reason": WAYPOINT_ACCEPTED,
                    "message": f"Successfully attached to waypoint {self.waypoint.key}"}
        if self.reason:
            return {"type": WAYPOINT_BOUND, "status": "False", "reason": self.reason, "message": self.message}
        return None


UNBOUND = Binding(None)


def _requested(labels: dict, default_namespace: str) -> tuple[bool, tuple[str, str] | None]:
    """(labelled, (namespace, name) or None for `none`) from one object's use-waypoint labels."""
    name = labels.get(USE_WAYPOINT)
    if name is None:
        return False, None
    if name == "none":
        return True, None
    return True, (labels.get(USE_WAYPOINT_NAMESPACE) or default_namespace, name)


def _resolve(ref: tuple[str, str], namespace: str, namespace_labels: dict, waypoints: dict,
             via: str) -> Binding:
    waypoint = waypoints.get(ref)
    key = f"{ref[0]}/{ref[1]}"
    if waypoint is None or not waypoint.bindable:
        # A label naming a Gateway that does not exist (or has not served yet) binds nothing:
        # traffic stays L4 (TestBogusUseWaypoint).
        return Binding(None, NOT_READY, f'waypoint "{key}" is not ready', via)
    if not waypoint.allows_namespace(namespace, namespace_labels):
        return Binding(None, ATTACHMENT_DENIED,
                       f'we are not permitted to attach to waypoint "{key}" (missing allowedRoutes?)', via)
    return Binding(waypoint, via=via)


def _labelled(own_labels: dict, own_kind: str, namespace: str, index: MeshIndex,
              waypoints: dict) -> tuple[bool, Binding]:
    """(decided, binding): the object's own label, else its namespace's. decided is False when
    neither carries the label, so the legacy (1.18) binding may still apply."""
    namespace_labels = index.namespace_labels(namespace)
    labelled, ref = _requested(own_labels, namespace)
    if labelled:
        if ref is None:
            return True, UNBOUND  # `none`: opted out, even of its namespace's waypoint
        return True, _resolve(ref, namespace, namespace_labels, waypoints, own_kind)
    labelled, ref = _requested(namespace_labels, namespace)
    if labelled:
        if ref is None:
            return True, UNBOUND
        return True, _resolve(ref, namespace, namespace_labels, waypoints, "Namespace")
    return False, UNBOUND


def _unsupported(binding: Binding, traffic: str) -> Binding:
    key = binding.waypoint.key
    return Binding(None, UNSUPPORTED_TRAFFIC_TYPE,
                   f'attempting to bind to traffic type "{traffic}" which the waypoint "{key}" does not support',
                   binding.via)


def is_waypoint_pod(pod: dict) -> bool:
    return GATEWAY_NAME_LABEL in labels_of(pod)


def workload_binding(pod: dict, index: MeshIndex, waypoints: dict) -> Binding:
    if is_waypoint_pod(pod):
        return UNBOUND  # a waypoint never serves itself
    namespace, _ = ns_name(pod)
    decided, binding = _labelled(labels_of(pod), "Pod", namespace, index, waypoints)
    if decided:
        if binding.waypoint is None or binding.waypoint.serves_workloads():
            return binding
        # A namespace-wide label naming a service waypoint is no error for the pod (Istio).
        return UNBOUND if binding.via == "Namespace" else _unsupported(binding, "workload")
    waypoint = legacy_waypoint(pod, waypoints)
    return Binding(waypoint, via="legacy") if waypoint is not None else UNBOUND


def workload_waypoint(pod: dict, index: MeshIndex, waypoints: dict) -> Waypoint | None:
    return workload_binding(pod, index, waypoints).waypoint


def legacy_waypoint(pod: dict, waypoints: dict) -> Waypoint | None:
    namespace, _ = ns_name(pod)
    for waypoint in waypoints.values():
        if not waypoint.legacy or not waypoint.bindable or waypoint.namespace != namespace:
            continue
        if waypoint.for_service_account in (None, pod_service_account(pod)):
            return waypoint
    return None


def service_binding(service: dict, index: MeshIndex, waypoints: dict,
                    endpoint_waypoints: list[Waypoint | None]) -> Binding:
    """A service's waypoint from labels; else, in the 1.18 form, the legacy waypoint that serves
    every one of its endpoints (so service-addressed traffic is rerouted like the article says)."""
    namespace, name = ns_name(service)
    if GATEWAY_NAME_LABEL in labels_of(service) or (namespace, name) in waypoints:
        return UNBOUND  # a waypoint's own Service
    decided, binding = _labelled(labels_of(service), "Service", namespace, index, waypoints)
    if decided:
        if binding.waypoint is None or binding.waypoint.serves_services():
            return binding
        return _unsupported(binding, "service")
    if endpoint_waypoints and all(w is not None and w.legacy for w in endpoint_waypoints):
        first = endpoint_waypoints[0]
        if all(w.key == first.key for w in endpoint_waypoints):
            return Binding(first, via="legacy")
    return UNBOUND


def service_waypoint(service: dict, index: MeshIndex, waypoints: dict,
                     endpoint_waypoints: list[Waypoint | None]) -> Waypoint | None:
    return service_binding(service, index, waypoints, endpoint_waypoints).waypoint
