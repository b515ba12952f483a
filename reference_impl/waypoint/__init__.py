"""The waypoint: what is waypoint-specific around the shared L7 engine (reference_impl.l7):
its HBONE listener (proxy), its config binding (config: snapshot -> L7Config), its status port
(health) and its process (run, __main__).

Imports l7, hbone, identity, policy, xds and api only (never the control plane, ztunnel or sidecar).
"""

from .config import ConfigError, WaypointConfig
from .proxy import Waypoint

__all__ = ["ConfigError", "Waypoint", "WaypointConfig"]
