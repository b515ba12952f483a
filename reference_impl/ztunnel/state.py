"""What the node proxy knows from its latest snapshot, and the pure decisions made from it:
where an outbound connection goes (ISTIO-SEMANTICS section 4) and which policies cover an
inbound one (sections 5, 6). The snapshot's shape is reference_impl.xds.resources, read strictly
(a bad snapshot is one ConfigError naming the field, NACKed). No sockets here: unit-testable.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping

from ..policy.authz_l4 import CompiledPolicy, Connection as AuthzConnection, evaluate_l4
from ..policy.authz_model import Decision
from ..policy.errors import PolicyError
from ..policy.peerauth import plaintext_allowed
from ..xds import GatewayAddress, SnapshotError, ZtunnelSnapshot
from ..xds import Service as ServiceResource, Workload as WorkloadResource

HBONE_PORT = 15008
DEFAULT_TRUST_DOMAIN = "cluster.local"
HEALTHY = "Healthy"


class ConfigError(ValueError):
    """The snapshot does not have the shape the node proxy needs."""


@dataclass(frozen=True)
class WaypointRef:
    """A waypoint as named by a workload or service: an address (IP of the waypoint's Service or
    pod) and the HBONE port."""
    address: str | None
    port: int = HBONE_PORT
    hostname: str | None = None

    @classmethod
    def of(cls, gateway: GatewayAddress | None) -> "WaypointRef | None":
        if gateway is None:
            return None
        return cls(gateway.address, gateway.hbone_mtls_port, gateway.destination.hostname)


@dataclass
class Workload:
    uid: str
    name: str
    namespace: str
    ips: tuple[str, ...]
    node: str
    service_account: str = "default"
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    captured: bool = False              # this node's ztunnel proxies it (dataplane mode ambient)
    hbone: bool = False                 # it terminates HBONE itself (captured, or a sidecar)
    labels: dict = field(default_factory=dict)
    waypoint: WaypointRef | None = None
    netns: str | None = None
    pod_uid: str | None = None          # the Kubernetes pod's own uid: differs for a pod re-created under the same name
    healthy: bool = True
    # The WORKLOAD_SELECTOR policies the control plane bound to it (namespace/name keys).
    authorization_policies: frozenset[str] = frozenset()
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def identity(self) -> str:
        return self.raw.get("identity") or f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def ip(self) -> str | None:
        return self.ips[0] if self.ips else None

    @classmethod
    def of(cls, resource: WorkloadResource, raw: Mapping) -> "Workload":
        captured = resource.dataplane_mode == "ambient"
        return cls(
            uid=resource.uid, name=resource.name, namespace=resource.namespace,
            ips=tuple(resource.workload_ips), node=resource.node,
            service_account=resource.service_account, trust_domain=resource.trust_domain,
            captured=captured, hbone=resource.protocol == "HBONE" or captured,
            labels=dict(resource.labels), waypoint=WaypointRef.of(resource.waypoint),
            netns=resource.netns, pod_uid=resource.pod_uid, healthy=resource.status == HEALTHY,
            authorization_policies=frozenset(resource.authorization_policies), raw=dict(raw))


@dataclass
class Endpoint:
    workload_uid: str
    ports: dict[int, int] = field(default_factory=dict)   # service port → target port override
    ready: bool = True


@dataclass
class Service:
    name: str
    namespace: str
    hostname: str
    vips: tuple[str, ...]
    ports: dict[int, int]                                  # service port → target port
    endpoints: list[Endpoint] = field(default_factory=list)
    waypoint: WaypointRef | None = None
    raw: dict = field(default_factory=dict, repr=False)

    def info(self) -> dict:
        return {"name": self.name, "namespace": self.namespace, "hostname": self.hostname}

    @classmethod
    def of(cls, resource: ServiceResource, raw: Mapping) -> "Service":
        endpoints = [Endpoint(e.workload_uid, {int(k): v for k, v in e.port.items()}, e.status == HEALTHY)
                     for e in resource.endpoints.values()]
        return cls(resource.name, resource.namespace, resource.hostname, tuple(resource.vips),
                   {int(k): int(v or 0) for k, v in resource.ports.items()}, endpoints,
                   WaypointRef.of(resource.waypoint), dict(raw))


@dataclass(frozen=True)
class Route:
    """Where an outbound connection goes. kind: 'hbone' | 'passthrough' | 'fail'."""
    kind: str
    target: tuple[str, int] | None = None         # TCP peer to dial (pod:15008 for HBONE)
    authority: str = ""                            # CONNECT :authority
    expected_identities: tuple[str, ...] = ()
    dst_workload: Workload | None = None
    dst_service: Service | None = None
    via_waypoint: bool = False
    reason: str = ""
    #: the waypoint's other ready endpoints, tried in turn when `target` is unreachable
    fallback_targets: tuple[tuple[str, int], ...] = ()


class State:
    """One ztunnel snapshot (xds.ZtunnelSnapshot, strictly parsed), indexed for lookups. An empty
    config is the state before the first snapshot: no workloads, no services."""

    def __init__(self, config: Mapping | None = None, node: str = ""):
        self.node = node
        self.raw = dict(config or {})
        if config:
            try:
                snapshot = ZtunnelSnapshot.from_dict(config, "ztunnel snapshot")
                policies = [CompiledPolicy.from_dict(p) for p in config["policies"]]
            except (SnapshotError, PolicyError) as exc:
                raise ConfigError(str(exc)) from None
            self.workloads = [Workload.of(w, raw) for w, raw in zip(snapshot.workloads, config["workloads"])]
            self.services = [Service.of(s, raw) for s, raw in zip(snapshot.services, config["services"])]
            self.policies = policies
            self.peer_authentications = list(config["peerAuthentications"])
            self.root_namespace = snapshot.mesh_config.root_namespace
        else:
            self.workloads, self.services, self.policies, self.peer_authentications = [], [], [], []
            self.root_namespace = "istio-system"
        self.by_uid = {w.uid: w for w in self.workloads}
        self.by_ip: dict[str, Workload] = {}
        for w in self.workloads:
            for ip in w.ips:
                # Host-network pods share the node IP; a pod with its own IP must win the lookup.
                if ip not in self.by_ip or self.by_ip[ip].raw.get("hostNetwork"):
                    self.by_ip[ip] = w
        self.by_vip: dict[str, list[Service]] = {}
        for s in self.services:
            for vip in s.vips:
                self.by_vip.setdefault(vip, []).append(s)

    # ---- lookups ----
    def local_workloads(self) -> list[Workload]:
        return [w for w in self.workloads if w.node == self.node]

    def captured_local(self) -> list[Workload]:
        return [w for w in self.local_workloads() if w.captured and w.ip and not w.raw.get("hostNetwork")]

    def service_at(self, ip: str, port: int) -> Service | None:
        candidates = self.by_vip.get(ip, [])
        for s in candidates:
            if port in s.ports:
                return s
        return candidates[0] if candidates else None

    def services_of(self, workload: Workload) -> list[Service]:
        return [s for s in self.services if any(e.workload_uid == workload.uid for e in s.endpoints)]

    def inbound_service(self, dest: Workload, port: int, host: str | None = None) -> Service | None:
        """Which service an inbound connection was meant for, for the destination side's
        telemetry (ztunnel's guess_inbound_service): the one the client named in `forwarded
        ;host=` if it really selects this workload (bogus names are not trusted), else the
        first of the workload's services whose target port is the port reached."""
        services = self.services_of(dest)
        if host:
            for s in services:
                if s.hostname == host:
                    return s
        for s in services:
            endpoint = next(e for e in s.endpoints if e.workload_uid == dest.uid)
            if any(endpoint.ports.get(sp, tp) == port for sp, tp in s.ports.items()):
                return s
        return None

    # ---- outbound (section 4) ----
    def route_outbound(self, source: Workload | None, ip: str, port: int,
                       rng: random.Random | None = None, exclude: frozenset = frozenset()) -> Route:
        """`exclude`: uids of a service's endpoints that refused this connection already."""
        rng = rng or random
        service = self.service_at(ip, port)
        if service is not None:
            if service.waypoint and not self._is_waypoint_itself(source, service.waypoint):
                return self._to_waypoint(service.waypoint, f"{ip}:{port}", None, service)
            if port not in service.ports:
                return Route("fail", dst_service=service,
                             reason=f"service {service.hostname} has no port {port}")
            ready = [(e, self.by_uid.get(e.workload_uid)) for e in service.endpoints if e.ready]
            ready = [(e, w) for e, w in ready if w is not None and w.ip and w.healthy
                     and (service.ports[port] or port in e.ports)  # named targetPort: per endpoint
                     and w.uid not in exclude]
            if not ready:
                return Route("fail", dst_service=service, reason=f"service {service.hostname} has no ready endpoints")
            endpoint, workload = rng.choice(ready)
            target_port = endpoint.ports.get(port, service.ports[port])
            return self._to_workload(workload, target_port, service)
        workload = self.by_ip.get(ip)
        if workload is not None and not workload.raw.get("hostNetwork"):
            if workload.waypoint and not self._is_waypoint_itself(source, workload.waypoint):
                return self._to_waypoint(workload.waypoint, f"{ip}:{port}", workload, None)
            return self._to_workload(workload, port, None)
        return Route("passthrough", (ip, port), dst_workload=workload, reason="destination not in the mesh")

    def _to_workload(self, workload: Workload, port: int, service: Service | None) -> Route:
        if workload.hbone:
            return Route("hbone", (workload.ip, HBONE_PORT), f"{workload.ip}:{port}", (workload.identity,),
                         workload, service)
        return Route("passthrough", (workload.ip, port), dst_workload=workload, dst_service=service,
                     reason="destination workload is not captured")

    def _waypoint_workloads(self, ref: WaypointRef) -> list[Workload]:
        svc = self.service_at(ref.address, ref.port) if ref.address else None
        if svc is None and ref.hostname:
            svc = next((s for s in self.services if s.hostname == ref.hostname), None)
        if svc is not None:
            found = [self.by_uid.get(e.workload_uid) for e in svc.endpoints if e.ready]
            return [w for w in found if w is not None and w.ip]
        w = self.by_ip.get(ref.address) if ref.address else None
        return [w] if w else []

    def _is_waypoint_itself(self, source: Workload | None, ref: WaypointRef) -> bool:
        return source is not None and any(w.uid == source.uid for w in self._waypoint_workloads(ref))

    def _to_waypoint(self, ref: WaypointRef, authority: str, workload: Workload | None,
                     service: Service | None, rng=random) -> Route:
        candidates = self._waypoint_workloads(ref)
        if not candidates:
            # Section 4.7: a waypoint with no ready endpoints fails the connection, no fallback.
            return Route("fail", dst_workload=workload, dst_service=service, via_waypoint=True,
                         reason=f"waypoint {ref.hostname or ref.address} has no ready endpoints")
        chosen = rng.choice(candidates)
        identities = tuple(sorted({w.identity for w in candidates}))
        # A replica killed a moment ago is still listed until its endpoint's removal arrives; a
        # refused dial to it must not cost the request while another replica is ready.
        others = [(w.ip, ref.port) for w in candidates if w is not chosen]
        rng.shuffle(others)
        return Route("hbone", (chosen.ip, ref.port), authority, identities, workload, service, via_waypoint=True,
                     fallback_targets=tuple(others))

    # ---- inbound (sections 5, 6) ----
    def local_workload_at(self, ip: str) -> Workload | None:
        w = self.by_ip.get(ip)
        if w is None or w.node != self.node or w.raw.get("hostNetwork"):
            return None
        return w

    def authorize(self, dest: Workload, source_ip: str | None, dest_ip: str, dest_port: int,
                  source_principal: str | None) -> Decision:
        policies = self.policies_for(dest)
        conn = AuthzConnection.of({"source_ip": source_ip, "dest_ip": dest_ip, "dest_port": dest_port,
                                   "source_principal": source_principal})
        return evaluate_l4(policies, conn, self.root_namespace)

    def policies_for(self, dest: Workload) -> list[CompiledPolicy]:
        """The policies covering a workload, as ztunnel finds them: GLOBAL ones, those of its
        namespace, and the selector policies the control plane bound to it (it is sent the
        binding; it does not match selectors itself). Snapshot order is kept."""
        return [p for p in self.policies
                if p.scope == "GLOBAL" or (p.scope == "NAMESPACE" and p.namespace == dest.namespace)
                or (p.scope == "WORKLOAD_SELECTOR" and p.key in dest.authorization_policies)]

    def plaintext_allowed(self, dest: Workload, port: int) -> bool:
        return plaintext_allowed(self.peer_authentications, dest.namespace, dest.labels, port, self.root_namespace)

    def dump(self) -> dict:
        return {"workloads": [w.raw for w in self.workloads], "services": [s.raw for s in self.services],
                "policies": [p.to_dict() for p in self.policies],
                "peerAuthentications": self.peer_authentications}

