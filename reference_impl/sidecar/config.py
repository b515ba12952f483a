"""The sidecar's config binding: its xDS snapshot (xds.SidecarSnapshot) -> what it enforces and
where its app's outbound traffic goes.

Inbound it is the L7 engine's config with this pod as the only fronted workload, the policies that
select the pod (AuthorizationPolicy for L7, and compiled as ztunnel would for non-HTTP traffic),
RequestAuthentication and PeerAuthentication. Outbound it is the mesh's services by VIP and
workloads by IP. A snapshot that cannot be used raises ConfigError (one sentence naming the
field), which the XdsClient sends back as the NACK, keeping the previous config.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..identity import Identity, IdentityError
from ..l7 import Bound, Endpoint, L7Config, Service, Workload
from ..l7.config import jwks_text
from ..policy import PolicyError, parse_authorization_policy, parse_jwt_rules
from ..policy.authz_l4 import CompiledPolicy, translate_for_ztunnel
from ..policy.peerauth import plaintext_allowed
from ..xds import BoundPolicy, SidecarSnapshot, SnapshotError
from ..xds.resources import HEALTHY

ROOT_NAMESPACE = "istio-system"


class ConfigError(ValueError):
    """A snapshot the sidecar cannot use; the message names the field and what is wrong."""


@dataclass
class SidecarConfig(L7Config):
    own: Workload | None = None                 # this pod (None: istiod does not know it yet)
    labels: dict[str, str] = field(default_factory=dict)
    dataplane_modes: dict[str, str] = field(default_factory=dict)           # uid -> ambient|sidecar|none
    mesh_services_by_vip: dict[str, Service] = field(default_factory=dict)  # every service
    workloads_by_ip: dict[str, Workload] = field(default_factory=dict)
    l4_policies: list[CompiledPolicy] = field(default_factory=list)
    peer_authentications: list[dict] = field(default_factory=list)

    def plaintext_allowed(self, port: int) -> bool:
        if self.own is None:
            return False
        return plaintext_allowed(self.peer_authentications, self.own.namespace, self.labels, port,
                                 ROOT_NAMESPACE)

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any], version: int = 0) -> SidecarConfig:
        where = f"sidecar snapshot version {version}"
        try:
            parsed = SidecarSnapshot.from_dict(snapshot, where)
        except SnapshotError as exc:
            raise ConfigError(str(exc)) from None
        return _bind(parsed, version)


_round_robin: dict[str, itertools.count] = {}


def pick_endpoint(config: SidecarConfig, service: Service, port: int,
                  exclude: frozenset = frozenset()) -> tuple[Workload, int] | None:
    """Round-robin over the service's healthy endpoints: (workload, target port); `exclude`:
    workload uids already tried for this connection (Envoy's previous_hosts)."""
    candidates = []
    for endpoint in service.endpoints:
        workload = config.workloads.get(endpoint.workload_uid)
        target = endpoint.ports.get(port) or service.ports.get(port)
        if workload is not None and endpoint.healthy and workload.healthy and target \
                and workload.uid not in exclude:
            candidates.append((workload, target))
    if not candidates:
        return None
    counter = _round_robin.setdefault(service.key, itertools.count())
    return candidates[next(counter) % len(candidates)]


def _fail(version: int, where: str, problem: str) -> ConfigError:
    return ConfigError(f"sidecar snapshot version {version}: {where}: {problem}")


def _identity(version: int, uri: str, where: str) -> Identity | None:
    if not uri:
        return None
    try:
        return Identity.parse(uri)
    except IdentityError as exc:
        raise _fail(version, where, str(exc)) from None


def _object(bound: BoundPolicy) -> dict:
    return bound.model_dump(exclude={"appliesToWorkloads"})


def _bind(snap: SidecarSnapshot, version: int) -> SidecarConfig:
    config = SidecarConfig(version=version, identity=None, trust_domain=snap.mesh_config.trust_domain)
    for i, raw in enumerate(snap.workloads):
        if not raw.workload_ips:
            continue  # no address yet: nothing can be sent to it
        workload = Workload(uid=raw.uid, name=raw.name, namespace=raw.namespace, ips=tuple(raw.workload_ips),
                            identity=_identity(version, raw.identity, f"workloads[{i}].identity"),
                            protocol=raw.protocol, healthy=raw.status == HEALTHY)
        config.workloads[workload.uid] = workload
        config.dataplane_modes[workload.uid] = raw.dataplane_mode
        for ip in workload.ips:
            config.workloads_by_ip[ip] = workload
        if raw.uid == snap.workload:
            config.own, config.labels, config.identity = workload, dict(raw.labels), workload.identity
            for ip in workload.ips:
                config.fronted_workloads_by_ip[ip] = workload
    for raw in snap.services:
        endpoints = tuple(Endpoint(uid, {int(k): v for k, v in ep.port.items()}, ep.status == HEALTHY)
                          for uid, ep in raw.endpoints.items() if uid in config.workloads)
        service = Service(key=raw.key, name=raw.name, namespace=raw.namespace, hostname=raw.hostname,
                          vips=tuple(raw.vips), ports={int(k): v for k, v in raw.ports.items()},
                          endpoints=endpoints)
        for vip in service.vips:
            config.mesh_services_by_vip[vip] = service
    for i, bound in enumerate(snap.authorization_policies):
        where = f"authorizationPolicies[{i}] ({bound.metadata.get('namespace')}/{bound.metadata.get('name')})"
        try:
            obj = _object(bound)
            config.authorization.append(Bound(parse_authorization_policy(obj), None))
            compiled = translate_for_ztunnel(obj, ROOT_NAMESPACE)
        except PolicyError as exc:
            raise _fail(version, where, str(exc)) from None
        if compiled is not None:
            config.l4_policies.append(compiled)
    for i, bound in enumerate(snap.request_authentications):
        where = f"requestAuthentications[{i}] ({bound.metadata.get('namespace')}/{bound.metadata.get('name')})"
        try:
            config.authentication.append(Bound(parse_jwt_rules(_object(bound)), None))
        except PolicyError as exc:
            raise _fail(version, where, str(exc)) from None
    for uri, doc in snap.jwks_by_uri.items():
        text = jwks_text(doc)
        if text is None:
            raise _fail(version, f"jwksByUri[{uri!r}]", "is not a JWKS document (an object with a `keys` list)")
        config.jwks_by_uri[uri] = text
    config.peer_authentications = [pa.to_dict() for pa in snap.peer_authentications]
    return config
