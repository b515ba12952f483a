"""The kinds the reference mesh understands: accepted apiVersions and scope."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ManifestError


@dataclass(frozen=True)
class KindInfo:
    kind: str
    api_versions: tuple[str, ...]  # first one is the current (preferred) version
    namespaced: bool
    # Name rule Kubernetes applies: "label" (DNS-1123 label), "label1035" (must start with a
    # letter: Service) or "subdomain" (DNS-1123 subdomain).
    name_rule: str = "subdomain"
    # False: the cluster itself owns these objects (Node); users read them but do not apply them.
    writable: bool = True

    @property
    def preferred_version(self) -> str:
        return self.api_versions[0]


_GATEWAY_API = ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1")
_ISTIO_SECURITY = ("security.istio.io/v1", "security.istio.io/v1beta1")

KINDS: dict[str, KindInfo] = {k.kind: k for k in (
    KindInfo("Namespace", ("v1",), namespaced=False, name_rule="label"),
    KindInfo("Node", ("v1",), namespaced=False, writable=False),
    KindInfo("ServiceAccount", ("v1",), namespaced=True),
    KindInfo("Service", ("v1",), namespaced=True, name_rule="label1035"),
    KindInfo("Pod", ("v1",), namespaced=True),
    KindInfo("Deployment", ("apps/v1",), namespaced=True),
    KindInfo("DaemonSet", ("apps/v1",), namespaced=True),
    KindInfo("Gateway", _GATEWAY_API, namespaced=True),
    KindInfo("HTTPRoute", _GATEWAY_API, namespaced=True),
    KindInfo("AuthorizationPolicy", _ISTIO_SECURITY, namespaced=True),
    KindInfo("RequestAuthentication", _ISTIO_SECURITY, namespaced=True),
    KindInfo("PeerAuthentication", _ISTIO_SECURITY, namespaced=True),
    # -- HTTP routing at the waypoint (issue 9, GAMMA) --
    KindInfo("VirtualService", ("networking.istio.io/v1", "networking.istio.io/v1beta1",
                                "networking.istio.io/v1alpha3"), namespaced=True),
    # -- the Kubernetes API (issue 14): ConfigMaps (pods mount them as volumes) and the Gateway
    # classes istiod installs --
    KindInfo("ConfigMap", ("v1",), namespaced=True),
    KindInfo("GatewayClass", _GATEWAY_API, namespaced=False),
    # -- Secrets (issue 14 item 5): where istiod keeps its CA (istio-ca-secret, cacerts) --
    KindInfo("Secret", ("v1",), namespaced=True),
)}


def known_kinds() -> list[str]:
    return sorted(KINDS)


def kind_info(kind: str) -> KindInfo:
    """The KindInfo for `kind`; ManifestError naming the known kinds if it is not one."""
    try:
        return KINDS[kind]
    except (KeyError, TypeError):
        raise ManifestError(f"unknown kind {kind!r}; use one of: {', '.join(known_kinds())}",
                            kind=str(kind)) from None


def object_key(obj: dict) -> tuple[str, str, str]:
    """(kind, namespace or "", name) of a Kubernetes-shaped dict."""
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    info = KINDS.get(kind)
    namespace = ""
    if info is None or info.namespaced:
        namespace = meta.get("namespace") or ("default" if info is not None else "")
    return kind, namespace, meta.get("name", "")
