"""The mutating admission role of the API server: Istio's sidecar injector
(is:manifests/charts/istio-control/istio-discovery/files/injection-template.yaml, ISTIO-SEMANTICS
section 10).

A Pod created in a namespace labelled `istio-injection=enabled`, or carrying the label
`sidecar.istio.io/inject: "true"`, gets an `istio-proxy` container (first, as Istio does with
holdApplicationUntilProxyStarts), the `sidecar.istio.io/status` annotation and the
`security.istio.io/tlsMode: istio` label. `sidecar.istio.io/inject: "false"` opts a pod out, and
host-network pods are never injected. Only creation injects: pods that existed before the label
keep their containers until they are replaced (a rollout). The capture rules (istio-init's job)
are installed by the proxy before it reports ready, and the kubelet holds the app until then.
A pod in a namespace labelled for both injection and ambient is a sidecar pod; ztunnel leaves it
alone because istiod reports it as dataplaneMode `sidecar`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

INJECTION_LABEL = "istio-injection"
INJECT_POD_LABEL = "sidecar.istio.io/inject"
STATUS_ANNOTATION = "sidecar.istio.io/status"
PROXY_CONTAINER = "istio-proxy"
PROXY_IMAGE = "ambient-conformance/sidecar"

NamespaceLabels = Callable[[str], dict]


def wants_sidecar(pod: dict, namespace_labels: dict) -> bool:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return False
    if any(c.get("name") == PROXY_CONTAINER for c in spec.get("containers") or ()):
        return False  # already has one (injected before, or written by hand)
    own = str((meta.get("labels") or {}).get(INJECT_POD_LABEL, "")).lower()
    if own == "false":
        return False
    if own == "true":
        return namespace_labels.get(INJECTION_LABEL) != "disabled"
    return namespace_labels.get(INJECTION_LABEL) == "enabled"


def proxy_container() -> dict:
    return {
        "name": PROXY_CONTAINER,
        "image": PROXY_IMAGE,
        "args": ["proxy", "sidecar"],
        "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
        "env": [{"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"},
                {"name": "TERMINATION_DRAIN_DURATION_SECONDS", "value": "5"}],
    }


def inject(pod: dict, namespace_labels: dict) -> bool:
    """Add the proxy to a Pod being created, in place; True if it did."""
    if not wants_sidecar(pod, namespace_labels):
        return False
    spec = pod.setdefault("spec", {})
    spec["containers"] = [proxy_container(), *(spec.get("containers") or [])]
    meta = pod.setdefault("metadata", {})
    meta.setdefault("labels", {})["security.istio.io/tlsMode"] = "istio"
    meta.setdefault("annotations", {})[STATUS_ANNOTATION] = json.dumps(
        {"containers": [PROXY_CONTAINER], "initContainers": [], "holdApplicationUntilProxyStarts": True,
         "interceptionMode": "REDIRECT", "excludeInboundPorts": "15008,15020,15021,15090"},
        sort_keys=True)
    return True


def is_injected_proxy(container_spec: dict) -> bool:
    """The kubelet's test for the proxy container of an injected pod (a hand-written container
    that merely shares the name does not get the lifecycle)."""
    return container_spec.get("name") == PROXY_CONTAINER and \
        str(container_spec.get("image", "")).startswith(PROXY_IMAGE)


def sidecar_injector(namespace_labels: NamespaceLabels) -> Callable[[dict], None]:
    """The store's mutating hook for new Pods."""
    def mutate(obj: dict) -> None:
        if obj.get("kind") == "Pod":
            inject(obj, namespace_labels((obj.get("metadata") or {}).get("namespace") or "default"))
    return mutate
