"""An index over the store's objects, and the small facts about pods every derivation needs.

The store's objects are Kubernetes-shaped dicts already validated at apply time, so this reads
them as dicts (fast at thousands of pods) rather than re-parsing them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

TRUST_DOMAIN = "cluster.local"
ROOT_NAMESPACE = "istio-system"
CLUSTER_ID = "Kubernetes"
NETNS_ANNOTATION = "ambient-conformance.io/netns"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


def meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def labels_of(obj: dict) -> dict:
    return meta(obj).get("labels") or {}


def annotations_of(obj: dict) -> dict:
    return meta(obj).get("annotations") or {}


def ns_name(obj: dict) -> tuple[str, str]:
    m = meta(obj)
    return m.get("namespace") or "", m.get("name") or ""


@dataclass
class MeshIndex:
    """Objects by kind, with the lookups the derivations use."""

    by_kind: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    namespaces: dict[str, dict] = field(default_factory=dict)
    pods_by_namespace: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def build(cls, objects) -> "MeshIndex":
        index = cls()
        for obj in objects:
            kind = obj.get("kind")
            index.by_kind[kind].append(obj)
            if kind == "Namespace":
                index.namespaces[meta(obj).get("name")] = obj
            elif kind == "Pod":
                index.pods_by_namespace[ns_name(obj)[0]].append(obj)
        for items in index.by_kind.values():
            items.sort(key=lambda o: (meta(o).get("creationTimestamp") or "", ns_name(o)))
        return index

    def kind(self, kind: str) -> list[dict]:
        return self.by_kind.get(kind, [])

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        for obj in self.kind(kind):
            if ns_name(obj) == (namespace, name):
                return obj
        return None

    def namespace_labels(self, namespace: str) -> dict:
        return labels_of(self.namespaces.get(namespace) or {})


# -- pods ----------------------------------------------------------------------------------------

def pod_ip(pod: dict) -> str | None:
    return (pod.get("status") or {}).get("podIP") or None


def pod_node(pod: dict) -> str:
    return (pod.get("spec") or {}).get("nodeName") or ""


def pod_service_account(pod: dict) -> str:
    spec = pod.get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def pod_identity(pod: dict) -> str:
    namespace, _ = ns_name(pod)
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{pod_service_account(pod)}"


def pod_host_network(pod: dict) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


def pod_terminating(pod: dict) -> bool:
    status = pod.get("status") or {}
    return bool(meta(pod).get("deletionTimestamp")) or status.get("phase") in ("Succeeded", "Failed")


def pod_ready(pod: dict) -> bool:
    if pod_terminating(pod):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            return str(condition.get("status")) == "True"
    return False


def pod_has_sidecar(pod: dict) -> bool:
    if "sidecar.istio.io/status" in annotations_of(pod):
        return True
    containers = (pod.get("spec") or {}).get("containers") or ()
    return any(c.get("name") == "istio-proxy" for c in containers)


def workload_uid(pod: dict) -> str:
    """Istio's workload uid for a pod: stable across istiod restarts and readable in dumps."""
    namespace, name = ns_name(pod)
    return f"{CLUSTER_ID}//Pod/{namespace}/{name}"


def dataplane_mode(pod: dict, namespace_labels: dict) -> str:
    """`ambient` (captured by the node's ztunnel), `sidecar` or `none`.

    The pod's own `istio.io/dataplane-mode` wins over its namespace's (`none` opts a pod out of
    an ambient namespace); host-network pods and pods with a sidecar are never captured.
    """
    if pod_host_network(pod):
        return "none"
    if pod_has_sidecar(pod):
        return "sidecar"
    own = labels_of(pod).get(DATAPLANE_MODE_LABEL)
    if own == "none":
        return "none"
    if own == "ambient" or namespace_labels.get(DATAPLANE_MODE_LABEL) == "ambient":
        return "ambient"
    return "none"


def pod_workload_name(pod: dict) -> tuple[str, str]:
    """(workloadName, workloadType) after Istio: the owning Deployment if any, else the pod."""
    for owner in meta(pod).get("ownerReferences") or ():
        kind, name = owner.get("kind"), owner.get("name") or ""
        if kind == "ReplicaSet" and "-" in name:
            return name.rsplit("-", 1)[0], "deployment"
        if kind in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
            return name, kind.lower()
    return ns_name(pod)[1], "pod"
