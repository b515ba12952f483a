"""Controllers: Deployment, DaemonSet and the scheduler. Each `reconcile` is idempotent and is run
by the daemon after every batch of store changes.

Pods of a Deployment are named `<deploy>-<10 char template hash>-<5 random>` and carry the
`pod-template-hash` label and an owner reference to the (implicit) ReplicaSet `<deploy>-<hash>`,
as Kubernetes does. A deleted pod is replaced at once: terminating pods do not count.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import secrets
import uuid

from .store import Store, now_iso

# Kubernetes' own alphabet for generated name suffixes (no vowels, no look-alikes).
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def _suffix(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def template_hash(template: dict) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])


def is_terminating(pod: dict) -> bool:
    return "deletionTimestamp" in pod["metadata"]


def is_ready(pod: dict) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def owner_of(pod: dict) -> tuple[str, str] | None:
    """(kind, name) of the workload that owns a pod: ("Deployment", d) or ("DaemonSet", ds)."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            return "Deployment", ref["name"].rsplit("-", 1)[0]
        if ref.get("kind") == "DaemonSet":
            return "DaemonSet", ref["name"]
    return None


def _node_labels_and_taints(store: Store, node: str) -> tuple[dict, list[dict]]:
    obj = store.get("Node", "", node)
    if obj is None:  # callers that pass bare names (unit tests): a plain node
        return {HOSTNAME_LABEL: node}, []
    return obj["metadata"].get("labels") or {}, (obj.get("spec") or {}).get("taints") or []


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Kubernetes' toleration match: same key (or none with Exists), value for Equal, effect."""
    for t in tolerations or ():
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def misfit(pod_spec: dict, store: Store, node: str) -> str | None:
    """Why a pod cannot be placed on `node` (scheduler's phrase), or None when it fits."""
    labels, taints = _node_labels_and_taints(store, node)
    selector = pod_spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return f"didn't match the pod's nodeSelector {selector}"
    for taint in taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and \
                not tolerates(pod_spec.get("tolerations") or [], taint):
            return f"had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    return None


def _pod_from_template(template: dict, namespace: str, name: str, owner_ref: dict,
                       extra_labels: dict) -> dict:
    template = copy.deepcopy(template)
    meta = template.get("metadata") or {}
    labels = dict(meta.get("labels") or {}, **extra_labels)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": dict(meta.get("annotations") or {}),
                     "ownerReferences": [owner_ref]},
        "spec": template.get("spec") or {},
        "status": {"phase": "Pending"},
    }


def _owned(store: Store, namespace: str, kind: str, name: str) -> list[dict]:
    return [p for p in store.list("Pod", namespace) if owner_of(p) == (kind, name)]


def _pick_victims(pods: list[dict], count: int) -> list[dict]:
    """Scale-down order as Kubernetes: unscheduled, then not ready, then the youngest."""
    youngest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""),
                            reverse=True)
    ranked = sorted(youngest_first, key=lambda p: (bool(p["spec"].get("nodeName")), is_ready(p)))
    return ranked[:max(0, count)]


def reconcile_deployments(store: Store) -> None:
    for deploy in store.list("Deployment"):
        meta, spec = deploy["metadata"], deploy.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        replicas = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        phash = template_hash(template)
        pods = [p for p in _owned(store, namespace, "Deployment", name) if not is_terminating(p)]
        current = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == phash]
        old = [p for p in pods if p not in current]
        for _ in range(replicas - len(current)):
            ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-{phash}",
                   "controller": True, "blockOwnerDeletion": True,
                   "uid": replicaset_uid(meta.get("uid", ""), phash)}
            store.create(_pod_from_template(template, namespace, f"{name}-{phash}-{_suffix(5)}",
                                            ref, {"pod-template-hash": phash}))
        for pod in _pick_victims(current, len(current) - replicas):
            store.mark_pod_deleted(namespace, pod["metadata"]["name"], None)
        # Rolling update: old pods go once the new ones serve.
        if old and sum(is_ready(p) for p in current) >= replicas:
            for pod in old:
                store.mark_pod_deleted(namespace, pod["metadata"]["name"], None)
        all_pods = _owned(store, namespace, "Deployment", name)
        live = [p for p in all_pods if not is_terminating(p)]
        ready = sum(is_ready(p) for p in live)
        updated = sum(p["metadata"]["labels"].get("pod-template-hash") == phash for p in live)
        status = {"observedGeneration": meta.get("generation", 1), "replicas": len(live),
                  "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
                  "unavailableReplicas": max(0, replicas - ready),
                  "conditions": [{"type": "Available",
                                  "status": "True" if ready >= replicas else "False"}]}
        store.set_status("Deployment", namespace, name, status)


def replicaset_uid(deployment_uid: str, phash: str) -> str:
    """The uid of a Deployment's ReplicaSet for one template hash: the same every time."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"replicaset:{deployment_uid}:{phash}"))


def replicasets(store: Store, namespace: str | None = None) -> list[dict]:
    """The ReplicaSets the Deployment controller works through, one per pod template a
    Deployment has had pods of (the current one always): owned by the Deployment, owning its pods
    (their ownerReferences name it), scaled to the Deployment's replicas when current, else 0.
    The store keeps no ReplicaSet objects; this is how the API shows them."""
    out = []
    for deploy in store.list("Deployment", namespace):
        meta, spec = deploy["metadata"], deploy.get("spec") or {}
        template = spec.get("template") or {}
        phash = template_hash(template)
        pods = _owned(store, meta["namespace"], "Deployment", meta["name"])
        by_hash: dict[str, list[dict]] = {phash: []}
        for pod in pods:
            by_hash.setdefault(pod["metadata"]["labels"].get("pod-template-hash", ""), []).append(pod)
        for h, owned in by_hash.items():
            live = [p for p in owned if not is_terminating(p)]
            labels = dict((template.get("metadata") or {}).get("labels") or {}, **{"pod-template-hash": h})
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            created = min([p["metadata"].get("creationTimestamp", "") for p in owned]
                          or [meta.get("creationTimestamp", "")])
            ready = sum(is_ready(p) for p in live)
            out.append({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"{meta['name']}-{h}", "namespace": meta["namespace"],
                             "uid": replicaset_uid(meta.get("uid", ""), h), "labels": labels,
                             "resourceVersion": meta.get("resourceVersion", ""),
                             "creationTimestamp": created, "generation": 1,
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                  "name": meta["name"], "uid": meta.get("uid"),
                                                  "controller": True, "blockOwnerDeletion": True}]},
                "spec": {"replicas": int(spec.get("replicas", 1)) if h == phash else 0,
                         "selector": selector,
                         "template": dict(template, metadata=dict(template.get("metadata") or {},
                                                                  labels=labels))},
                "status": {"replicas": len(live), "fullyLabeledReplicas": len(live),
                           "readyReplicas": ready, "availableReplicas": ready,
                           "observedGeneration": 1}})
    return out


def reconcile_daemonsets(store: Store, nodes: list[str]) -> None:
    for ds in store.list("DaemonSet"):
        meta, spec = ds["metadata"], ds.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        template = spec.get("template") or {}
        wanted = [n for n in nodes if misfit(template.get("spec") or {}, store, n) is None]
        revision = template_hash(template)
        pods = [p for p in _owned(store, namespace, "DaemonSet", name) if not is_terminating(p)]
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault(p["spec"].get("nodeName"), []).append(p)
        for node in wanted:
            on_node = by_node.get(node, [])
            current = [p for p in on_node if p["metadata"]["labels"].get("controller-revision-hash") == revision]
            if not current:
                ref = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name,
                       "controller": True, "uid": meta.get("uid")}
                pod = _pod_from_template(template, namespace, f"{name}-{_suffix(5)}", ref,
                                         {"controller-revision-hash": revision})
                pod["spec"]["nodeName"] = node
                store.create(pod)
            elif any(is_ready(p) for p in current):
                # Rolling update with surge, as Istio's ztunnel chart asks (maxSurge 1,
                # maxUnavailable 0): a node's old pod goes once its replacement is Ready.
                for p in on_node:
                    if p not in current:
                        store.mark_pod_deleted(namespace, p["metadata"]["name"], None)
        for node, node_pods in by_node.items():
            if node not in wanted:
                for p in node_pods:
                    store.mark_pod_deleted(namespace, p["metadata"]["name"], None)
        live = [p for p in _owned(store, namespace, "DaemonSet", name) if not is_terminating(p)]
        status = {"desiredNumberScheduled": len(wanted), "currentNumberScheduled": len(live),
                  "updatedNumberScheduled": sum(p["metadata"]["labels"].get("controller-revision-hash") == revision
                                                for p in live),
                  "numberReady": sum(is_ready(p) for p in live),
                  "numberAvailable": sum(is_ready(p) for p in live),
                  "observedGeneration": meta.get("generation", 1)}
        store.set_status("DaemonSet", namespace, name, status)


def schedule(store: Store, nodes: list[str]) -> None:
    """Give every unscheduled pod a node: its nodeSelector and the nodes' taints decide which
    nodes fit, then spread by owner, then load."""
    pods = store.list("Pod")
    load = {n: 0 for n in nodes}
    by_owner: dict[tuple, dict[str, int]] = {}
    for pod in pods:
        node = pod["spec"].get("nodeName")
        if node in load and not is_terminating(pod):
            load[node] += 1
            owner = (pod["metadata"]["namespace"], owner_of(pod))
            by_owner.setdefault(owner, {n: 0 for n in nodes})[node] += 1
    for pod in pods:
        if pod["spec"].get("nodeName") or is_terminating(pod):
            continue
        misfits = {n: misfit(pod["spec"], store, n) for n in nodes}
        fits = [n for n, why in misfits.items() if why is None]
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if not fits:
            reasons: dict[str, int] = {}
            for why in misfits.values():
                reasons[why] = reasons.get(why, 0) + 1
            message = (f"0/{len(nodes)} nodes are available: "
                       + ", ".join(f"{count} node(s) {why}" for why, count in sorted(reasons.items())))

            def unschedulable(p: dict, message=message) -> None:
                p.setdefault("status", {})["phase"] = "Pending"
                p["status"]["conditions"] = [{"type": "PodScheduled", "status": "False",
                                              "reason": "Unschedulable", "message": message}]
            store.update("Pod", namespace, name, unschedulable)
            continue
        owner = (namespace, owner_of(pod))
        spread = by_owner.setdefault(owner, {n: 0 for n in nodes})
        node = min(fits, key=lambda n: (spread[n], load[n], nodes.index(n)))
        spread[node] += 1
        load[node] += 1

        def bind(p: dict, node=node) -> None:
            p["spec"]["nodeName"] = node
            p.setdefault("status", {})["conditions"] = [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_iso()}]
        store.update("Pod", namespace, name, bind)


def collect_garbage(store: Store) -> None:
    """Delete pods whose Deployment or DaemonSet is gone (Kubernetes' owner-reference GC)."""
    for pod in store.list("Pod"):
        owner = owner_of(pod)
        if owner is None or is_terminating(pod):
            continue
        namespace = pod["metadata"]["namespace"]
        if store.get(owner[0], namespace, owner[1]) is None:
            store.mark_pod_deleted(namespace, pod["metadata"]["name"], None)


# -- what istiod writes into the Kubernetes API on a real cluster (issue 14) -------------------
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"
MESH_CONTROLLER = "istio.io/mesh-controller"


def publish_mesh_objects(store: Store, root_cert_path: str) -> None:
    """Istio's namespace controller publishes the mesh CA's root in ConfigMap
    `istio-ca-root-cert` of every namespace (clients verify 15008 with it), and its gateway class
    controller accepts the classes it owns. The reference istiod keeps its root in the run
    directory; the cluster publishes it on istiod's behalf once it exists."""
    for cls in store.list("GatewayClass"):
        if (cls.get("spec") or {}).get("controllerName") == MESH_CONTROLLER and \
                not (cls.get("status") or {}).get("conditions"):
            store.set_status("GatewayClass", "", cls["metadata"]["name"], {"conditions": [{
                "type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "Handled by Istio controller", "lastTransitionTime": now_iso(),
                "observedGeneration": cls["metadata"].get("generation", 1)}]})
    try:
        with open(root_cert_path) as f:
            root = f.read()
    except OSError:
        return  # istiod has not made its CA yet
    _publish_ca_secret(store, root, os.path.join(os.path.dirname(root_cert_path), ROOT_KEY_FILE))
    for ns in store.list("Namespace"):
        name = ns["metadata"]["name"]
        current = store.get("ConfigMap", name, ROOT_CERT_CONFIGMAP)
        if "deletionTimestamp" in ns["metadata"] or \
                (current is not None and (current.get("data") or {}).get(ROOT_CERT_KEY) == root):
            continue
        if current is not None:
            store.remove("ConfigMap", name, ROOT_CERT_CONFIGMAP)
        store.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": ROOT_CERT_CONFIGMAP, "namespace": name,
                                   "labels": {"istio.io/config": "true"}},
                      "data": {ROOT_CERT_KEY: root}})


# Istio's self-signed CA (security/pkg/pki/ca/ca.go) keeps its signing certificate and key in
# Secret istio-system/istio-ca-secret, type istio.io/ca-root, with these keys; cert-chain.pem,
# key.pem and root-cert.pem are empty for a self-signed root (the CA cert is the root). The
# reference istiod's CA is such a root, kept in its run directory beside root-cert.pem.
CA_SECRET = "istio-ca-secret"
CA_SECRET_NAMESPACE = "istio-system"
CA_SECRET_TYPE = "istio.io/ca-root"
ROOT_KEY_FILE = "root-key.pem"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _publish_ca_secret(store: Store, root: str, key_path: str) -> None:
    ns = store.get("Namespace", "", CA_SECRET_NAMESPACE)
    if ns is None or "deletionTimestamp" in ns["metadata"]:
        return
    try:
        with open(key_path) as f:
            key = f.read()
    except OSError:
        return
    data = {"ca-cert.pem": _b64(root), "ca-key.pem": _b64(key),
            "cert-chain.pem": "", "key.pem": "", "root-cert.pem": ""}
    current = store.get("Secret", CA_SECRET_NAMESPACE, CA_SECRET)
    if current is not None and current.get("data") == data:
        return
    if current is not None:
        store.remove("Secret", CA_SECRET_NAMESPACE, CA_SECRET)
    store.create({"apiVersion": "v1", "kind": "Secret", "type": CA_SECRET_TYPE,
                  "metadata": {"name": CA_SECRET, "namespace": CA_SECRET_NAMESPACE},
                  "data": data})
