"""Virtual nodes' pure parts: taint-aware scheduling and the simulated kubelet, on a real Store."""
from __future__ import annotations

import ipaddress

import pytest

from reference_impl.cluster import controllers, naming, virtual
from reference_impl.cluster.errors import ClusterError
from reference_impl.cluster.store import Store

REAL = ["node-0", "node-1"]
VIRTUAL = ["virtual-0", "virtual-1"]


def deployment(name, replicas, selector=None, tolerations=None):
    spec = {"containers": [{"name": "c", "image": "sleep"}]}
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "apps"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def pods_of(store, name):
    return [p for p in store.list("Pod", "apps") if p["metadata"]["name"].startswith(name + "-")
            and not controllers.is_terminating(p)]


@pytest.fixture
def store():
    s = Store()
    for node in REAL:
        s.create({"apiVersion": "v1", "kind": "Node",
                  "metadata": {"name": node, "labels": {controllers.HOSTNAME_LABEL: node}}})
    for i in range(len(VIRTUAL)):
        s.create(virtual.node_object(i))
    s.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}])
    return s


def settle(store, kubelet):
    controllers.reconcile_deployments(store)
    controllers.schedule(store, REAL + VIRTUAL)
    kubelet.sync()


def test_virtual_nodes_look_like_kwok_nodes_with_their_own_22():
    node = virtual.node_object(3)
    assert node["metadata"]["name"] == "virtual-3"
    assert node["metadata"]["labels"]["type"] == "kwok"
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["spec"]["taints"] == [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
    cidrs = [ipaddress.ip_network(naming.virtual_pod_cidr(i)) for i in range(naming.MAX_VIRTUAL_NODES)]
    assert all(c.prefixlen == 22 for c in cidrs)
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1:])
    assert not any(c.overlaps(ipaddress.ip_network(naming.pod_cidr(i))) for c in cidrs for i in range(200))


def test_untolerating_pods_never_land_on_virtual_nodes(store):
    kubelet = virtual.VirtualKubelet(store, len(VIRTUAL))
    store.apply([deployment("plain", 6)])
    settle(store, kubelet)
    assert {p["spec"]["nodeName"] for p in pods_of(store, "plain")} == set(REAL)
    assert all("podIP" not in (p.get("status") or {}) for p in pods_of(store, "plain"))


def test_selector_without_toleration_stays_pending_naming_the_taint(store):
    store.apply([deployment("picky", 1, selector={"type": "kwok"})])
    controllers.reconcile_deployments(store)
    controllers.schedule(store, REAL + VIRTUAL)
    (pod,) = pods_of(store, "picky")
    assert "nodeName" not in pod["spec"]
    message = pod["status"]["conditions"][0]["message"]
    assert "2 node(s) had untolerated taint {kwok.x-k8s.io/node: fake}" in message
    assert "2 node(s) didn't match the pod's nodeSelector {'type': 'kwok'}" in message


def test_tolerating_pods_spread_over_virtual_nodes_and_run_without_processes(store):
    kubelet = virtual.VirtualKubelet(store, len(VIRTUAL))
    store.apply([deployment("sim", 40, selector={"type": "kwok"}, tolerations=[virtual.KWOK_TOLERATION])])
    settle(store, kubelet)
    pods = pods_of(store, "sim")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["virtual-0"] * 20 + ["virtual-1"] * 20
    for pod in pods:
        status = pod["status"]
        assert status["phase"] == "Running" and controllers.is_ready(pod)
        i = VIRTUAL.index(pod["spec"]["nodeName"])
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(naming.virtual_pod_cidr(i))
        assert status["hostIP"] == naming.virtual_node_ip(i)
        assert [c["pid"] for c in status["containerStatuses"]] == [None]
        assert "ambient-conformance.io/netns" not in (pod["metadata"].get("annotations") or {})
    assert len({p["status"]["podIP"] for p in pods}) == 40


def test_deleted_virtual_pods_go_at_once_and_free_their_address(store):
    kubelet = virtual.VirtualKubelet(store, 1)
    store.apply([deployment("sim", 3, selector={"kubernetes.io/hostname": "virtual-0"},
                            tolerations=[{"operator": "Exists"}])])
    controllers.reconcile_deployments(store)
    controllers.schedule(store, REAL + ["virtual-0"])
    kubelet.sync()
    before = {p["status"]["podIP"] for p in pods_of(store, "sim")}
    victim = pods_of(store, "sim")[0]
    store.mark_pod_deleted("apps", victim["metadata"]["name"], 30)
    kubelet.sync()
    assert store.get("Pod", "apps", victim["metadata"]["name"]) is None
    controllers.reconcile_deployments(store)
    controllers.schedule(store, REAL + ["virtual-0"])
    kubelet.sync()
    after = {p["status"]["podIP"] for p in pods_of(store, "sim")}
    assert len(after) == 3 and victim["status"]["podIP"] in after and before - after == set()


def test_a_full_virtual_node_says_so(store):
    kubelet = virtual.VirtualKubelet(store, 1)
    kubelet._free["virtual-0"] = kubelet._free["virtual-0"][-2:]  # two addresses left
    store.apply([deployment("sim", 3, selector={"type": "kwok"}, tolerations=[virtual.KWOK_TOLERATION])])
    controllers.reconcile_deployments(store)
    controllers.schedule(store, REAL + ["virtual-0"])
    kubelet.sync()
    pods = pods_of(store, "sim")
    assert sum(controllers.is_ready(p) for p in pods) == 2
    (stuck,) = [p for p in pods if not controllers.is_ready(p)]
    assert "no free address left in 10.245.0.0/22" in stuck["status"]["conditions"][1]["message"]


def test_daemonsets_skip_virtual_nodes_unless_they_tolerate(store):
    agent, tolerant = deployment("agent", 0), deployment("tolerant", 0, tolerations=[{"operator": "Exists"}])
    for ds in (agent, tolerant):
        ds["kind"] = "DaemonSet"
        del ds["spec"]["replicas"]
    store.apply([agent, tolerant])
    controllers.reconcile_daemonsets(store, REAL + VIRTUAL)
    assert sorted(p["spec"]["nodeName"] for p in pods_of(store, "agent")) == REAL
    assert sorted(p["spec"]["nodeName"] for p in pods_of(store, "tolerant")) == REAL + VIRTUAL


def test_virtual_node_count_is_bounded():
    assert naming.check_virtual_nodes(0) == 0
    with pytest.raises(ClusterError, match="--virtual-nodes 65: choose between 0 and 64"):
        naming.check_virtual_nodes(65)
