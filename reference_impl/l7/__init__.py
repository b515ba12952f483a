"""The L7 engine shared by the waypoint and the sidecar: HTTP/1.1 parse and proxying (http),
the per-request decision in Envoy's filter order (pipeline: JWT authentication, then L7
authorization), where a request goes (routing), opening the upstream (upstream), and the
compiled config all of them read (config).

Imports policy, hbone, identity and xds only; the proxies (waypoint, sidecar) import it and bind
their own snapshots to its L7Config.
"""

from .config import Bound, Endpoint, L7Config, Service, Workload
from .http import AccessRecord, HttpConnection, UpstreamUnavailable
from .pipeline import Tunnel, Verdict, decide
from .routing import Destination, Router, Upstream, resolve
from .upstream import UpstreamConnector

__all__ = ["AccessRecord", "Bound", "Destination", "Endpoint", "HttpConnection", "L7Config", "Router",
           "Service", "Tunnel", "Upstream", "UpstreamConnector", "UpstreamUnavailable", "Verdict",
           "Workload", "decide", "resolve"]
