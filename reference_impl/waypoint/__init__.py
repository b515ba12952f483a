"""The waypoint (L7 proxy): HBONE in, HTTP/1.1 parse, JWT authentication, L7 authorization,
routing to an endpoint, HBONE out with the waypoint's own identity.

Imports hbone, identity, policy, xds and api only (never the control plane or ztunnel).
"""

from .config import ConfigError, WaypointConfig
from .proxy import Waypoint

__all__ = ["ConfigError", "Waypoint", "WaypointConfig"]
