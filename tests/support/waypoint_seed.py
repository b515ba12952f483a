"""Snapshots for tests and scratch runs of the waypoint without a control plane, built with the
same xds.resources classes the control plane sends.

`seed_snapshot` is the seed article's waypoint as `controlplane.derive.waypoint_config` produces
it: the Istio 1.18 waypoint of the httpbin-ambient service account, carrying the selector-based
RequestAuthentication and AuthorizationPolicy of the workload it serves. `memory_pipe` is an
in-memory byte pipe with the stream methods the L7 engine uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from reference_impl.xds import (BoundPolicy, Endpoint, MeshConfig, Service, WaypointInfo, WaypointSnapshot,
                                Workload)

SEED_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "seed"
NAMESPACE = "ambient-apps"
WAYPOINT_NAME = "httpbin-ambient-waypoint"
HTTPBIN_UID = "Kubernetes//Pod/ambient-apps/httpbin-ambient-0"
SLEEP_IDENTITY_URI = "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"
HTTPBIN_IDENTITY_URI = "spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient"
WAYPOINT_IDENTITY_URI = f"spiffe://cluster.local/ns/{NAMESPACE}/sa/{WAYPOINT_NAME}"


def seed_object(name: str) -> dict:
    return yaml.safe_load((SEED_DIR / name).read_text())


def seed_jwks() -> dict:
    return json.loads((SEED_DIR / "jwks.json").read_text())


def seed_token() -> str:
    return (SEED_DIR / "demo.jwt").read_text().strip()


def workload(name: str, ip: str, identity: str, namespace: str = NAMESPACE, protocol: str = "HBONE",
             status: str = "Healthy") -> dict:
    """A Workload as the control plane derives it (uid `Kubernetes//Pod/<ns>/<name>`), wire form."""
    account = identity.rsplit("/", 1)[-1]
    return Workload(uid=f"Kubernetes//Pod/{namespace}/{name}", name=name, namespace=namespace,
                    workload_ips=[ip], service_account=account, identity=identity, protocol=protocol,
                    dataplane_mode="ambient" if protocol == "HBONE" else "none", status=status,
                    workload_name=name, canonical_name=name).to_dict()


def _bound(obj: dict, applies_to: list[str] | None) -> BoundPolicy:
    return BoundPolicy(**obj, appliesToWorkloads=applies_to, appliesToServices=None)


def seed_snapshot(*, vip: str = "10.96.0.50", service_port: int = 8000, httpbin_ip: str = "10.244.0.5",
                  target_port: int = 80, policies: bool = True, jwks_inline: bool = False) -> dict:
    """The waypoint config for the article's L7 step (policies=False: before they are applied)."""
    hostname = f"httpbin-ambient.{NAMESPACE}.svc.cluster.local"
    authz, authn = [], []
    if policies:
        ra = seed_object("jwt-policy.yaml")
        if jwks_inline:  # what a control plane that inlines jwksUri sends
            rule = ra["spec"]["jwtRules"][0]
            rule.pop("jwksUri")
            rule["jwks"] = json.dumps(seed_jwks())
        authn = [_bound(ra, [HTTPBIN_UID])]
        authz = [_bound(seed_object("l7-authz-policy.yaml"), [HTTPBIN_UID])]
    jwt_rule = seed_object("jwt-policy.yaml")["spec"]["jwtRules"][0]
    ports = {str(service_port): target_port}
    return WaypointSnapshot(
        mesh_config=MeshConfig(),
        waypoint=WaypointInfo(namespace=NAMESPACE, name=WAYPOINT_NAME,
                              hostname=f"{WAYPOINT_NAME}.{NAMESPACE}.svc.cluster.local", waypoint_for="workload",
                              legacy=True, identity=WAYPOINT_IDENTITY_URI),
        services=[f"{NAMESPACE}/{hostname}"],
        workload_uids=[HTTPBIN_UID],
        authorization_policies=authz,
        request_authentications=authn,
        jwks_by_uri={} if jwks_inline else {jwt_rule["jwksUri"]: seed_jwks()},
        workloads=[Workload.model_validate(workload("httpbin-ambient-0", httpbin_ip, HTTPBIN_IDENTITY_URI))],
        all_services=[Service(name="httpbin-ambient", namespace=NAMESPACE, hostname=hostname, vips=[vip],
                              ports=ports, port_names={str(service_port): "http"},
                              endpoints={HTTPBIN_UID: Endpoint(workload_uid=HTTPBIN_UID, port=ports)})],
    ).to_dict()


class MemoryEnd:
    """One end of an in-memory byte pipe with the reader/writer methods the waypoint uses."""

    def __init__(self, inbox, peer_inbox):
        self._inbox, self._peer_inbox = inbox, peer_inbox
        self._closed = False
        self.was_reset = False

    async def read(self, n: int = -1) -> bytes:
        return await self._inbox.read(n)

    def at_eof(self) -> bool:
        return self._inbox.at_eof()

    def write(self, data: bytes) -> None:
        if self._closed:
            raise BrokenPipeError("write after close")
        try:
            self._peer_inbox.feed_data(data)
        except AssertionError:  # the peer closed its end: StreamReader refuses data after EOF
            raise BrokenPipeError("peer closed") from None

    async def drain(self) -> None:
        return None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._closed:
            self._closed = True
            self._peer_inbox.feed_eof()

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Like closing a socket transport: the peer sees EOF and so do our own pending reads."""
        self.write_eof()
        if not self._inbox.at_eof() and self._inbox.exception() is None:
            self._inbox.feed_eof()

    def reset(self) -> None:
        """Like RST_STREAM: the peer's reads fail."""
        self.was_reset = True
        if not self._closed:
            self._closed = True
            self._peer_inbox.set_exception(ConnectionResetError("reset by peer"))


def memory_pipe() -> tuple[MemoryEnd, MemoryEnd]:
    import asyncio

    a_inbox, b_inbox = asyncio.StreamReader(), asyncio.StreamReader()
    return MemoryEnd(a_inbox, b_inbox), MemoryEnd(b_inbox, a_inbox)
