"""The compiled config the L7 engine consumes: where requests may go and which policies apply.

A proxy binds its own snapshot to this (the waypoint: reference_impl.waypoint.config); the
engine (pipeline, routing, http) reads only this, so the waypoint and a sidecar share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..identity import Identity
from ..policy import AuthorizationPolicy, JwtRule


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
    key: str                 # namespace/hostname
    name: str
    namespace: str
    hostname: str
    vips: tuple[str, ...]
    ports: dict[int, int]    # service port -> target port (0: named, resolved per endpoint)
    endpoints: tuple[Endpoint, ...]
    protocols: dict[int, str] = field(default_factory=dict)  # service port -> l7.protocols HTTP|TCP|UNKNOWN


@dataclass(frozen=True)
class Bound:
    """A policy and the workloads and services it is limited to (None: no limit of that kind)."""

    value: Any
    applies_to: frozenset[str] | None
    applies_to_services: frozenset[str] | None = None

    def covers(self, workload_uid: str | None, service_key: str | None = None) -> bool:
        if self.applies_to_services is not None and service_key not in self.applies_to_services:
            return False
        return self.applies_to is None or (workload_uid is not None and workload_uid in self.applies_to)


@dataclass
class L7Config:
    version: int
    identity: Identity | None
    trust_domain: str
    services_by_vip: dict[str, Service] = field(default_factory=dict)        # fronted services only
    fronted_workloads_by_ip: dict[str, Workload] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)             # uid -> every workload
    authorization: list[Bound] = field(default_factory=list)                 # Bound(AuthorizationPolicy)
    authentication: list[Bound] = field(default_factory=list)                # Bound(list[JwtRule])
    jwks_by_uri: dict[str, str] = field(default_factory=dict)
    routes: dict[str, Any] = field(default_factory=dict)   # service key -> l7.httproute.RouteTable

    # A config is one version, built once and then only read: what applies to a destination is
    # found once per version, not by walking every bound policy per request. The bound lists'
    # lengths are part of the key, as they grow while the config is being built.
    _lookups: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def policies_for(self, workload_uid: str | None, service_key: str | None = None) -> tuple[AuthorizationPolicy, ...]:
        key = ("authz", workload_uid, service_key, len(self.authorization))
        found = self._lookups.get(key)
        if found is None:
            found = self._lookups[key] = tuple(b.value for b in self.authorization
                                               if b.covers(workload_uid, service_key))
        return found

    def jwt_rules_for(self, workload_uid: str | None, service_key: str | None = None) -> tuple[JwtRule, ...]:
        key = ("authn", workload_uid, service_key, len(self.authentication))
        found = self._lookups.get(key)
        if found is None:
            found = self._lookups[key] = tuple(rule for b in self.authentication
                                               if b.covers(workload_uid, service_key) for rule in b.value)
        return found


def jwks_text(doc: Any) -> str | None:
    """A jwksByUri entry (istiod sends the document as text or as an object) as the text the
    engine verifies with, or None if it is not a JWKS document (an object with a `keys` list)."""
    text = doc if isinstance(doc, str) else json.dumps(doc)
    try:
        keys = json.loads(text).get("keys")
    except (ValueError, AttributeError):
        return None
    return text if isinstance(keys, list) else None
