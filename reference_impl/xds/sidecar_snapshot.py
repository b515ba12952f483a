"""The snapshot one sidecar (istio-proxy) holds: which pod it is, the mesh's workloads and services
(it originates HBONE to any ambient or sidecar destination and must know which are neither), and
the policies that select its pod, as raw objects (it enforces them itself, L4 and L7, like Envoy).
"""

from __future__ import annotations

from typing import Any

from .resources import BoundPolicy, KubeObject, MeshConfig, Resource, Service, Workload


class SidecarSnapshot(Resource):
    mesh_config: MeshConfig
    workload: str | None = None            # this pod's workload uid (None: istiod does not know it yet)
    workloads: list[Workload] = []
    services: list[Service] = []
    authorization_policies: list[BoundPolicy] = []     # selector / namespace / root policies covering it
    request_authentications: list[BoundPolicy] = []
    peer_authentications: list[KubeObject] = []
    jwks_by_uri: dict[str, Any] = {}
