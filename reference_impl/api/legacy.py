"""Forms real Istio accepted once (the seed article's Istio 1.18) and no longer wants.

The reference mesh accepts them so the article runs as written; these sentences tell the user
what current Istio expects instead.
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
                "that is the Istio 1.18 waypoint form; current Istio wants 'istio-waypoint' "
                "(and binds workloads with the istio.io/use-waypoint label)")
    return warnings
