"""The config protocol between the control plane and the proxies (docs/INTERNALS.md).

Both sides import this package, never each other: `XdsServer` (istiod) and `XdsClient` (ztunnel,
waypoint). The config shapes inside snapshots are described in `reference_impl.xds.resources`.
"""

from .client import CsrRejected, XdsClient, XdsUnavailable, debug_query
from .protocol import STREAM_LIMIT, Hello, ProtocolError
from .server import CsrRefused, ProxyStream, XdsServer

__all__ = ["CsrRefused", "CsrRejected", "Hello", "ProtocolError", "ProxyStream", "STREAM_LIMIT",
           "XdsClient", "XdsServer", "XdsUnavailable", "debug_query"]
