"""The waypoint's view of one xDS snapshot: what it fronts, where the endpoints are, which policies apply.

The snapshot is what `reference_impl.controlplane.derive.waypoint_config` produces (documented in
docs/INTERNALS.md, "Waypoint config"). Parsing validates everything up front so a bad snapshot is
NACKed whole (the XdsClient then keeps the previous one) instead of failing request by request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..identity import Identity, IdentityError
from ..policy import AuthorizationPolicy, JwtRule, PolicyError, parse_authorization_policy, parse_jwt_rules

HEALTHY = "Healthy"


class ConfigError(ValueError):
    """A snapshot the waypoint cannot use; the message names the field and what is wrong."""


@dataclass(frozen=True)
class Workload:
    uid: str
    name: str
    namespace: str
    ips: tuple[str, ...]
    identity: Identity | None
    protocol: str            # HBONE: reach it through its ztunnel on :15008; TCP: connect directly
    healthy: bool

    @property
    def ip(self) -> str:
        return self.ips[0]


@dataclass(frozen=True)
class Endpoint:
    workload_uid: str
    ports: dict[int, int]    # service port -> target port on this endpoint
    healthy: bool


@dataclass(frozen=True)
class Service:
    key: str                 # namespace/hostname, as the snapshot's `services` list names it
    name: str
    namespace: str
    hostname: str
    vips: tuple[str, ...]
    ports: dict[int, int]    # service port -> target port (0: named, resolved per endpoint)
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Bound:
    """A policy and the workloads it is limited to (None: all traffic of this waypoint)."""

    value: Any
    applies_to: frozenset[str] | None

    def covers(self, workload_uid: str | None) -> bool:
        return self.applies_to is None or (workload_uid is not None and workload_uid in self.applies_to)


@dataclass
class WaypointConfig:
    version: int
    namespace: str | None
    name: str | None
    identity: Identity | None
    trust_domain: str
    services_by_vip: dict[str, Service] = field(default_factory=dict)        # fronted services only
    fronted_workloads_by_ip: dict[str, Workload] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)             # uid -> every workload
    authorization: list[Bound] = field(default_factory=list)                 # Bound(AuthorizationPolicy)
    authentication: list[Bound] = field(default_factory=list)                # Bound(list[JwtRule])
    jwks_by_uri: dict[str, str] = field(default_factory=dict)

    @property
    def is_waypoint(self) -> bool:
        return self.name is not None

    def policies_for(self, workload_uid: str | None) -> list[AuthorizationPolicy]:
        return [b.value for b in self.authorization if b.covers(workload_uid)]

    def jwt_rules_for(self, workload_uid: str | None) -> list[JwtRule]:
        return [rule for b in self.authentication if b.covers(workload_uid) for rule in b.value]

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any], version: int = 0) -> WaypointConfig:
        return _Parser(snapshot, version).parse()


def _object_name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if isinstance(meta, Mapping):
        return f"{meta.get('namespace')}/{meta.get('name')}"
    return "(unnamed)"


class _Parser:
    def __init__(self, snapshot: Mapping[str, Any], version: int):
        if not isinstance(snapshot, Mapping):
            raise ConfigError(f"waypoint snapshot version {version} must be a JSON object, "
                              f"got {type(snapshot).__name__}")
        self.snap = snapshot
        self.version = version

    def _list(self, key: str) -> list:
        value = self.snap.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"waypoint snapshot version {self.version}: `{key}` must be a list, "
                              f"got {type(value).__name__}")
        return value

    def _fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"waypoint snapshot version {self.version}: {where}: {problem}")

    def parse(self) -> WaypointConfig:
        mesh = self.snap.get("meshConfig") or {}
        trust_domain = mesh.get("trustDomain") or "cluster.local"
        own = self.snap.get("waypoint")
        namespace = name = identity = None
        if own is not None:
            if not isinstance(own, Mapping) or not own.get("name") or not own.get("namespace"):
                raise self._fail("waypoint", "needs `name` and `namespace` (or null when this pod "
                                             "is not a waypoint)")
            namespace, name = own["namespace"], own["name"]
            identity = self._identity(own.get("identity"), "waypoint.identity") \
                or Identity(trust_domain, namespace, name)
        config = WaypointConfig(self.version, namespace, name, identity, trust_domain)
        for i, raw in enumerate(self._list("workloads")):
            workload = self._workload(raw, f"workloads[{i}]")
            config.workloads[workload.uid] = workload
        fronted_services = set(self._strings("services"))
        for uid in self._strings("workloadUids"):
            workload = config.workloads.get(uid)
            if workload is None:
                raise self._fail("workloadUids", f"{uid!r} is not among `workloads`")
            for ip in workload.ips:
                config.fronted_workloads_by_ip[ip] = workload
        for i, raw in enumerate(self._list("allServices")):
            service = self._service(raw, f"allServices[{i}]", config.workloads)
            if service.key in fronted_services:
                fronted_services.discard(service.key)
                for vip in service.vips:
                    config.services_by_vip[vip] = service
        if fronted_services:
            raise self._fail("services", f"{sorted(fronted_services)[0]!r} is not among `allServices`")
        for i, raw in enumerate(self._list("authorizationPolicies")):
            where = f"authorizationPolicies[{i}] ({_object_name(raw)})"
            try:
                policy = parse_authorization_policy(_without_binding(raw, where, self))
            except PolicyError as exc:
                raise self._fail(where, str(exc)) from None
            config.authorization.append(Bound(policy, self._applies_to(raw, where)))
        for i, raw in enumerate(self._list("requestAuthentications")):
            where = f"requestAuthentications[{i}] ({_object_name(raw)})"
            try:
                rules = parse_jwt_rules(_without_binding(raw, where, self))
            except PolicyError as exc:
                raise self._fail(where, str(exc)) from None
            config.authentication.append(Bound(rules, self._applies_to(raw, where)))
        jwks = self.snap.get("jwksByUri") or {}
        if not isinstance(jwks, Mapping):
            raise self._fail("jwksByUri", "must map a jwksUri to its JWKS document")
        for uri, doc in jwks.items():
            text = doc if isinstance(doc, str) else json.dumps(doc)
            try:
                keys = json.loads(text).get("keys")
            except (ValueError, AttributeError):
                keys = None
            if not isinstance(keys, list):
                raise self._fail(f"jwksByUri[{uri!r}]", "is not a JWKS document (an object with a `keys` list)")
            config.jwks_by_uri[uri] = text
        return config

    def _strings(self, key: str) -> list[str]:
        values = self._list(key)
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise self._fail(f"{key}[{i}]", f"must be a string, got {type(value).__name__}")
        return values

    def _identity(self, uri: Any, where: str) -> Identity | None:
        if not uri:
            return None
        try:
            return Identity.parse(uri)
        except IdentityError as exc:
            raise self._fail(where, str(exc)) from None

    def _workload(self, raw: Any, where: str) -> Workload:
        if not isinstance(raw, Mapping) or not raw.get("uid"):
            raise self._fail(where, "a workload needs a `uid`")
        ips = raw.get("workloadIps") or []
        if not isinstance(ips, list) or not ips or not all(isinstance(ip, str) for ip in ips):
            raise self._fail(f"{where} ({raw['uid']})", "`workloadIps` must be a non-empty list of addresses")
        return Workload(uid=raw["uid"], name=raw.get("name") or "", namespace=raw.get("namespace") or "",
                        ips=tuple(ips), identity=self._identity(raw.get("identity"), f"{where}.identity"),
                        protocol=raw.get("protocol") or "HBONE",
                        healthy=(raw.get("status") or HEALTHY) == HEALTHY)

    def _ports(self, raw: Any, where: str) -> dict[int, int]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise self._fail(where, "must map a service port to a target port")
        try:
            return {int(k): int(v) for k, v in raw.items()}
        except (TypeError, ValueError):
            raise self._fail(where, f"ports must be numbers, got {dict(raw)!r}") from None

    def _service(self, raw: Any, where: str, workloads: dict[str, Workload]) -> Service:
        if not isinstance(raw, Mapping) or not raw.get("hostname") or not raw.get("namespace"):
            raise self._fail(where, "a service needs `namespace` and `hostname`")
        key = f"{raw['namespace']}/{raw['hostname']}"
        endpoints = []
        raw_endpoints = raw.get("endpoints") or {}
        if not isinstance(raw_endpoints, Mapping):
            raise self._fail(f"{where}.endpoints", "must map a workload uid to an endpoint")
        for uid, ep in raw_endpoints.items():
            if uid not in workloads:
                continue  # a workload without an address yet: nothing to send to
            ep = ep or {}
            endpoints.append(Endpoint(uid, self._ports(ep.get("port"), f"{where}.endpoints[{uid}].port"),
                                      (ep.get("status") or HEALTHY) == HEALTHY))
        vips = raw.get("vips") or []
        if not isinstance(vips, list):
            raise self._fail(f"{where}.vips", "must be a list of addresses")
        return Service(key=key, name=raw.get("name") or "", namespace=raw["namespace"],
                       hostname=raw["hostname"], vips=tuple(vips),
                       ports=self._ports(raw.get("ports"), f"{where}.ports"), endpoints=tuple(endpoints))

    def _applies_to(self, raw: Mapping, where: str) -> frozenset[str] | None:
        uids = raw.get("appliesToWorkloads")
        if uids is None:
            return None
        if not isinstance(uids, list) or not all(isinstance(u, str) for u in uids):
            raise self._fail(f"{where}.appliesToWorkloads", "must be null or a list of workload uids")
        return frozenset(uids)


def _without_binding(raw: Any, where: str, parser: _Parser) -> dict:
    if not isinstance(raw, Mapping):
        raise parser._fail(where, "must be a Kubernetes-shaped object")
    return {k: v for k, v in raw.items() if k != "appliesToWorkloads"}
