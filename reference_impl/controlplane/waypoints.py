"""Which Gateways are waypoints, and which workloads and services each one serves.

Current Istio (ISTIO-SEMANTICS section 7): class `istio-waypoint`; objects opt in with the
`istio.io/use-waypoint` label (own label beats the namespace's, `none` opts out), filtered by the
Gateway's `istio.io/waypoint-for`. Istio 1.18 (section 9, the seed article): a Gateway of class
`istio` with an HBONE 15008 listener, or any waypoint with the `istio.io/for-service-account`
annotation, serves the workloads of its namespace (of that service account) without labels, and
the selector policies of those workloads are enforced at the waypoint.
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


def _warn_once(key: tuple[str, str, str], message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _has_hbone_listener(gateway: dict) -> bool:
    for listener in (gateway.get("spec") or {}).get("listeners") or ():
        if listener.get("protocol") == "HBONE" and listener.get("port") == HBONE_PORT:
            return True
    return False


def as_waypoint(gateway: dict, service_ip: str | None = None) -> Waypoint | None:
    """The Waypoint a Gateway declares, or None if it is not a waypoint."""
    namespace, name = ns_name(gateway)
    gateway_class = (gateway.get("spec") or {}).get("gatewayClassName")
    for_sa = annotations_of(gateway).get(FOR_SERVICE_ACCOUNT)
    if gateway_class == WAYPOINT_CLASS:
        legacy = for_sa is not None
    elif gateway_class == LEGACY_CLASS and _has_hbone_listener(gateway):
        legacy = True
        _warn_once(("class", namespace, name),
                   "Gateway %s/%s uses gatewayClassName 'istio' with an HBONE listener, the Istio 1.18 "
                   "waypoint form; current Istio rejects it: use gatewayClassName 'istio-waypoint' "
                   "and the istio.io/use-waypoint label", namespace, name)
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
    return Waypoint(namespace, name, waypoint_for, legacy, for_sa, service_ip)


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


def _labelled_waypoint(own: dict, namespace: str, namespace_labels: dict,
                       waypoints: dict) -> tuple[bool, Waypoint | None]:
    """(decided, waypoint) from use-waypoint labels: the object's own label, else its namespace's.

    decided is False when neither carries the label, so legacy binding may still apply.
    """
    for source in (own, namespace_labels):
        name = source.get(USE_WAYPOINT)
        if name is None:
            continue
        if name == "none":
            return True, None
        target_ns = source.get(USE_WAYPOINT_NAMESPACE) or namespace
        # A label naming a Gateway that does not exist is ignored: traffic stays L4.
        return True, waypoints.get((target_ns, name))
    return False, None


def is_waypoint_pod(pod: dict) -> bool:
    return GATEWAY_NAME_LABEL in labels_of(pod)


def workload_waypoint(pod: dict, index: MeshIndex, waypoints: dict) -> Waypoint | None:
    if is_waypoint_pod(pod):
        return None  # a waypoint never serves itself
    namespace, _ = ns_name(pod)
    decided, waypoint = _labelled_waypoint(labels_of(pod), namespace,
                                           index.namespace_labels(namespace), waypoints)
    if decided:
        return waypoint if waypoint is not None and waypoint.serves_workloads() else None
    return legacy_waypoint(pod, waypoints)


def legacy_waypoint(pod: dict, waypoints: dict) -> Waypoint | None:
    namespace, _ = ns_name(pod)
    for waypoint in waypoints.values():
        if not waypoint.legacy or waypoint.namespace != namespace:
            continue
        if waypoint.for_service_account in (None, pod_service_account(pod)):
            return waypoint
    return None


def service_waypoint(service: dict, index: MeshIndex, waypoints: dict,
                     endpoint_waypoints: list[Waypoint | None]) -> Waypoint | None:
    """A service's waypoint from labels; else, in the 1.18 form, the legacy waypoint that serves
    every one of its endpoints (so service-addressed traffic is rerouted like the article says)."""
    namespace, name = ns_name(service)
    if GATEWAY_NAME_LABEL in labels_of(service) or (namespace, name) in waypoints:
        return None
    decided, waypoint = _labelled_waypoint(labels_of(service), namespace,
                                           index.namespace_labels(namespace), waypoints)
    if decided:
        return waypoint if waypoint is not None and waypoint.serves_services() else None
    if endpoint_waypoints and all(w is not None and w.legacy for w in endpoint_waypoints):
        first = endpoint_waypoints[0]
        if all(w.key == first.key for w in endpoint_waypoints):
            return first
    return None
