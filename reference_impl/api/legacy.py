"""Forms the seed article uses that current Istio serves differently or not at all.

The reference mesh accepts them so the article runs as written; these sentences tell the user
what a real Istio does with them and what it expects instead (docs/ISTIO-NOTES.md).
"""

from __future__ import annotations

_CURRENT_VERSION = {
    "security.istio.io/v1beta1": "security.istio.io/v1",
    "gateway.networking.k8s.io/v1beta1": "gateway.networking.k8s.io/v1",
}


def _ref(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def legacy_warnings(obj: dict) -> list[str]:
    """Human sentences about legacy forms in a (validated) object; empty when it is current."""
    warnings = []
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    current = _CURRENT_VERSION.get(api_version)
    if current:
        warnings.append(f"{kind} {_ref(obj)} uses apiVersion {api_version}: it still works, "
                        f"but current Istio serves {current} (same fields)")
    if kind == "Gateway":
        spec = obj.get("spec") or {}
        hbone = any(lst.get("protocol") == "HBONE" for lst in spec.get("listeners") or ())
        if spec.get("gatewayClassName") == "istio" and hbone:
            warnings.append(
                f"Gateway {_ref(obj)} uses gatewayClassName 'istio' with an HBONE listener: "
                "'istio' is Istio's ingress gateway class in every release (early ambient's "
                "waypoint class was 'istio-mesh'; Istio 1.18 introduced 'istio-waypoint'), so a "
                "real Istio provisions an ingress gateway and no waypoint for it; the reference "
                "mesh treats it as a waypoint. Use gatewayClassName 'istio-waypoint' and bind "
                "workloads with the istio.io/use-waypoint label")
    return warnings
