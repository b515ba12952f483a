"""The waypoint's config binding: its xDS snapshot (xds.WaypointSnapshot) -> the L7 engine's config.

The snapshot is what `reference_impl.controlplane.derive.waypoint_config` produces (docs/INTERNALS.md,
"Waypoint config"). Its shape is checked strictly by xds.resources; this module then checks what
the shape cannot (identities parse, fronted services exist, policies compile, JWKS documents), so a
bad snapshot is NACKed whole (the XdsClient then keeps the previous one) instead of failing request
by request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..identity import Identity, IdentityError
from ..l7 import Bound, Endpoint, L7Config, Service, Workload
from ..l7.config import jwks_text
from ..l7.httproute import RouteConfigError, bind as bind_routes
from ..l7.protocols import port_protocol
from ..policy import PolicyError, parse_authorization_policy, parse_jwt_rules
from ..xds import BoundPolicy, SnapshotError, WaypointSnapshot
from ..xds import Service as ServiceResource, Workload as WorkloadResource
from ..xds.resources import HEALTHY


class ConfigError(ValueError):
    """A snapshot the waypoint cannot use; the message names the field and what is wrong."""


@dataclass
class WaypointConfig(L7Config):
    namespace: str | None = None     # the waypoint's Gateway (None: istiod knows none for this pod)
    name: str | None = None

    @property
    def is_waypoint(self) -> bool:
        return self.name is not None

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any], version: int = 0) -> WaypointConfig:
        where = f"waypoint snapshot version {version}"
        try:
            parsed = WaypointSnapshot.from_dict(snapshot, where)
        except SnapshotError as exc:
            raise ConfigError(str(exc)) from None
        return _Binder(parsed, version).bind()


class _Binder:
    def __init__(self, snapshot: WaypointSnapshot, version: int):
        self.snap = snapshot
        self.version = version

    def _fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"waypoint snapshot version {self.version}: {where}: {problem}")

    def bind(self) -> WaypointConfig:
        trust_domain = self.snap.mesh_config.trust_domain
        own = self.snap.waypoint
        namespace = name = identity = None
        if own is not None:
            namespace, name = own.namespace, own.name
            identity = self._identity(own.identity, "waypoint.identity") \
                or Identity(trust_domain, namespace, name)
        config = WaypointConfig(version=self.version, identity=identity, trust_domain=trust_domain,
                                namespace=namespace, name=name)
        for i, raw in enumerate(self.snap.workloads):
            workload = self._workload(raw, f"workloads[{i}]")
            config.workloads[workload.uid] = workload
        fronted_services = set(self.snap.services)
        services_by_key = {}
        for uid in self.snap.workload_uids:
            workload = config.workloads.get(uid)
            if workload is None:
                raise self._fail("workloadUids", f"{uid!r} is not among `workloads`")
            for ip in workload.ips:
                config.fronted_workloads_by_ip[ip] = workload
        for raw in self.snap.all_services:
            service = self._service(raw, config.workloads)
            services_by_key[service.key] = service
            if service.key in fronted_services:
                fronted_services.discard(service.key)
                for vip in service.vips:
                    config.services_by_vip[vip] = service
        if fronted_services:
            raise self._fail("services", f"{sorted(fronted_services)[0]!r} is not among `allServices`")
        for i, bound in enumerate(self.snap.authorization_policies):
            where = f"authorizationPolicies[{i}] ({_object_name(bound)})"
            try:
                policy = parse_authorization_policy(_object(bound))
            except PolicyError as exc:
                raise self._fail(where, str(exc)) from None
            config.authorization.append(Bound(policy, _applies_to(bound), _services(bound)))
        for i, bound in enumerate(self.snap.request_authentications):
            where = f"requestAuthentications[{i}] ({_object_name(bound)})"
            try:
                rules = parse_jwt_rules(_object(bound))
            except PolicyError as exc:
                raise self._fail(where, str(exc)) from None
            config.authentication.append(Bound(rules, _applies_to(bound), _services(bound)))
        for uri, doc in self.snap.jwks_by_uri.items():
            text = jwks_text(doc)
            if text is None:
                raise self._fail(f"jwksByUri[{uri!r}]", "is not a JWKS document (an object with a `keys` list)")
            config.jwks_by_uri[uri] = text
        try:
            config.routes = bind_routes(self.snap.routes, services_by_key)
        except RouteConfigError as exc:
            raise self._fail("routes", str(exc)) from None
        return config

    def _identity(self, uri: str, where: str) -> Identity | None:
        if not uri:
            return None
        try:
            return Identity.parse(uri)
        except IdentityError as exc:
            raise self._fail(where, str(exc)) from None

    def _workload(self, raw: WorkloadResource, where: str) -> Workload:
        if not raw.workload_ips:
            raise self._fail(f"{where} ({raw.uid})", "`workloadIps` must be a non-empty list of addresses")
        return Workload(uid=raw.uid, name=raw.name, namespace=raw.namespace, ips=tuple(raw.workload_ips),
                        identity=self._identity(raw.identity, f"{where}.identity"),
                        protocol=raw.protocol, healthy=raw.status == HEALTHY)

    def _service(self, raw: ServiceResource, workloads: dict[str, Workload]) -> Service:
        endpoints = tuple(
            Endpoint(uid, {int(k): v for k, v in ep.port.items()}, ep.status == HEALTHY)
            for uid, ep in raw.endpoints.items()
            if uid in workloads)  # a workload without an address yet: nothing to send to
        return Service(key=raw.key, name=raw.name, namespace=raw.namespace, hostname=raw.hostname,
                       vips=tuple(raw.vips), ports={int(k): v for k, v in raw.ports.items()},
                       endpoints=endpoints,
                       protocols={int(k): port_protocol(int(k), raw.port_names.get(k), raw.app_protocols.get(k))
                                  for k in raw.ports})


def _object(bound: BoundPolicy) -> dict:
    """The Kubernetes object, without the binding."""
    return bound.model_dump(exclude={"appliesToWorkloads"})


def _object_name(bound: BoundPolicy) -> str:
    return f"{bound.metadata.get('namespace')}/{bound.metadata.get('name')}"


def _applies_to(bound: BoundPolicy) -> frozenset[str] | None:
    return None if bound.appliesToWorkloads is None else frozenset(bound.appliesToWorkloads)


def _services(bound: BoundPolicy) -> frozenset[str] | None:
    return None if bound.appliesToServices is None else frozenset(bound.appliesToServices)
