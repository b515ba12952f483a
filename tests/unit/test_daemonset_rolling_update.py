"""The reference cluster's DaemonSet controller rolls a changed pod template out as Kubernetes'
RollingUpdate with surge does (Istio's ztunnel chart: maxSurge 1, maxUnavailable 0): on each node
the new pod starts beside the old one, and the old one goes only once the new one is Ready."""
from __future__ import annotations

from reference_impl.cluster import controllers
from reference_impl.cluster.store import Store

NODES = ["node-0", "node-1"]


def daemonset(env_value: str | None) -> dict:
    container = {"name": "istio-proxy", "image": "ambient-conformance/ztunnel"}
    if env_value is not None:
        container["env"] = [{"name": "SECRET_TTL", "value": env_value}]
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ztunnel", "namespace": "istio-system"},
            "spec": {"selector": {"matchLabels": {"app": "ztunnel"}},
                     "template": {"metadata": {"labels": {"app": "ztunnel"}}, "spec": {"containers": [container]}}}}


def live(store):
    return [p for p in store.list("Pod", "istio-system") if not controllers.is_terminating(p)]


def ttl_of(pod) -> str | None:
    env = pod["spec"]["containers"][0].get("env") or []
    return next((e["value"] for e in env if e["name"] == "SECRET_TTL"), "-")


def make_ready(store, pods) -> None:
    for p in pods:
        store.set_status("Pod", "istio-system", p["metadata"]["name"],
                         {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})


def status(store) -> dict:
    return store.get("DaemonSet", "istio-system", "ztunnel")["status"]


def test_changed_template_replaces_each_nodes_pod_only_once_its_replacement_is_ready():
    store = Store()
    store.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}])
    store.apply([daemonset(None)])
    controllers.reconcile_daemonsets(store, NODES)
    old = live(store)
    make_ready(store, old)
    controllers.reconcile_daemonsets(store, NODES)
    assert status(store)["updatedNumberScheduled"] == 2 and status(store)["numberReady"] == 2

    store.apply([daemonset("6s")])
    for _ in range(2):   # idempotent while the new pods are not Ready: the old ones stay
        controllers.reconcile_daemonsets(store, NODES)
    pods = live(store)
    assert sorted((p["spec"]["nodeName"], ttl_of(p)) for p in pods) == [
        ("node-0", "-"), ("node-0", "6s"), ("node-1", "-"), ("node-1", "6s")]
    assert status(store)["updatedNumberScheduled"] == 2
    assert status(store)["observedGeneration"] == store.get("DaemonSet", "istio-system", "ztunnel")["metadata"]["generation"] == 2

    new_on_0 = [p for p in pods if ttl_of(p) == "6s" and p["spec"]["nodeName"] == "node-0"]
    make_ready(store, new_on_0)
    controllers.reconcile_daemonsets(store, NODES)
    assert sorted((p["spec"]["nodeName"], ttl_of(p)) for p in live(store)) == [
        ("node-0", "6s"), ("node-1", "-"), ("node-1", "6s")], "only node-0's replacement is Ready"

    make_ready(store, [p for p in live(store) if ttl_of(p) == "6s"])
    controllers.reconcile_daemonsets(store, NODES)
    assert sorted((p["spec"]["nodeName"], ttl_of(p)) for p in live(store)) == [("node-0", "6s"), ("node-1", "6s")]
    assert status(store)["currentNumberScheduled"] == status(store)["updatedNumberScheduled"] == 2
