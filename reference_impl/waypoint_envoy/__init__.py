"""The Envoy waypoint: a real Envoy configured from the same waypoint snapshot the Python
waypoint gets. `translate` (pure) turns the snapshot into Envoy listeners and clusters; `agent`
(the container's process, as Istio's pilot-agent) delivers them and the certificates to an
Envoy child by file-based dynamic resources (LDS/CDS/SDS files replaced by rename).

Imports waypoint (its config binding, identity, status port), l7, policy, xds, api and identity.
"""
