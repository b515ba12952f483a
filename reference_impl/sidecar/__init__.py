"""The sidecar-mode proxy (the injected `istio-proxy` container) used for sidecar <-> ambient interop.

It runs inside its pod's network namespace: capture rules send the app's outbound TCP to 15001
and inbound TCP to 15006 (HBONE on 15008 and the proxy's status ports are left alone); it holds
its pod's own SPIFFE identity, terminates HBONE on 15008, originates HBONE to ambient and sidecar
destinations, passes plaintext to uncaptured ones, and enforces the policies selecting its pod
with the shared L7 engine (ISTIO-SEMANTICS section 10).

Imports l7, hbone, identity, policy, xds, api and netns only (never the control plane, ztunnel or
waypoint).
"""
