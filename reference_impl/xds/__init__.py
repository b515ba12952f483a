"""The config protocol between the control plane and the proxies (docs/INTERNALS.md).

Both sides import this package, never each other: `XdsServer` (istiod) and `XdsClient` (ztunnel,
waypoint). The config shapes inside snapshots are described in `reference_impl.xds.resources`.
"""

from .client import CsrRejected, XdsClient, XdsUnavailable, debug_query
from .protocol import STREAM_LIMIT, Hello, ProtocolError
from .resources import (Authorization, BoundPolicy, Endpoint, GatewayAddress, KubeObject, MeshConfig,
                        NamespacedHostname, Service, SnapshotError, WaypointInfo, WaypointSnapshot,
                        Workload, ZtunnelSnapshot)
from .server import CsrRefused, ProxyStream, XdsServer
from .sidecar_snapshot import SidecarSnapshot

__all__ = ["Authorization", "BoundPolicy", "CsrRefused", "CsrRejected", "Endpoint", "GatewayAddress",
           "Hello", "KubeObject", "MeshConfig", "NamespacedHostname", "ProtocolError", "ProxyStream",
           "STREAM_LIMIT", "Service", "SidecarSnapshot", "SnapshotError", "WaypointInfo", "WaypointSnapshot", "Workload",
           "XdsClient", "XdsServer", "XdsUnavailable", "ZtunnelSnapshot", "debug_query"]
