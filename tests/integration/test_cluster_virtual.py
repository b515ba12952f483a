"""Virtual nodes on a real local cluster: simulated pods are Ready with IPs and nothing else, the
mesh sees them like real ones (every ztunnel holds them), real nodes are unaffected, teardown is
clean."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from waiting import until
from reference_impl.cluster import client as cluster
from reference_impl.cluster import naming, teardown
from reference_impl.cluster.errors import ClusterError
from reference_impl.cluster.virtual import KWOK_TOLERATION

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft"),
]

NS = "sim"
REPLICAS = 300


def objects():
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NS, "labels": {"istio.io/dataplane-mode": "ambient"}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sim", "namespace": NS},
         "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "sim"}},
                  "template": {"metadata": {"labels": {"app": "sim"}},
                               "spec": {"nodeSelector": {"type": "kwok"}, "tolerations": [KWOK_TOLERATION],
                                        "containers": [{"name": "app", "image": "ambient-conformance/tcp-echo",
                                                        "ports": [{"containerPort": 9000}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sim", "namespace": NS},
         "spec": {"selector": {"app": "sim"}, "ports": [{"port": 9000}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "real", "namespace": NS, "labels": {"app": "real"}},
         "spec": {"containers": [{"name": "main", "image": "curlimages/curl", "command": ["/bin/sleep", "3650d"]}]}},
    ]



@pytest.fixture(scope="module")
def c():
    name = f"tb-v{os.getpid() % 10000}"
    client = cluster.up(name, nodes=2, virtual_nodes=2, manifests=objects(), timeout=120)
    try:
        yield client
    finally:
        client.down()
        assert teardown.remaining(name) == {"netns": [], "etc_netns": [], "pids": [], "run_dir": []}


def sim_pods(c):
    return [p for p in c.list("Pod", NS) if p["metadata"]["name"].startswith("sim-")]


def test_virtual_pods_are_ready_with_addresses_and_no_process(c):
    pods = sim_pods(c)
    assert len(pods) == REPLICAS
    assert sorted({p["spec"]["nodeName"] for p in pods}) == ["virtual-0", "virtual-1"]
    for pod in pods:
        status = pod["status"]
        assert status["phase"] == "Running"
        assert {"type": "Ready", "status": "True"}.items() <= status["conditions"][1].items()
        node = int(pod["spec"]["nodeName"].split("-")[1])
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(naming.virtual_pod_cidr(node))
        assert [cs["pid"] for cs in status["containerStatuses"]] == [None]
    assert len({p["status"]["podIP"] for p in pods}) == REPLICAS
    # no namespace, DNS files or process for any of them: only real pods have namespaces
    state = json.load(open(naming.state_path(c.name)))
    real_pods = [p for p in c.list("Pod") if not naming.is_virtual_node(p["spec"].get("nodeName"))
                 and not p["spec"].get("hostNetwork")]
    pod_netns = [n for n in teardown.cluster_netns(c.name) if re.fullmatch(rf"ac-{c.name}-p\d+", n)]
    assert len(pod_netns) == len(real_pods) == 1
    assert len(state["pids"]) == len(c.list("Pod")) - REPLICAS
    assert state["virtualNodes"] == 2
    with pytest.raises(ClusterError, match="virtual node .* simulated"):
        c.exec(NS, pods[0]["metadata"]["name"], ["true"])
    with pytest.raises(ClusterError, match="is a virtual node"):
        c.node_netns("virtual-0")


def test_real_nodes_are_unaffected(c):
    real = c.get("Pod", NS, "real")
    assert real["spec"]["nodeName"] in ("node-0", "node-1")
    assert ipaddress.ip_address(real["status"]["podIP"]) in ipaddress.ip_network("10.244.0.0/16")
    assert c.exec(NS, "real", ["true"]).returncode == 0
    ztunnels = c.list("Pod", "istio-system", selector={"app": "ztunnel"})
    assert sorted(p["spec"]["nodeName"] for p in ztunnels) == ["node-0", "node-1"]
    nodes = {n["metadata"]["name"]: n for n in c.list("Node")}
    assert sorted(nodes) == ["node-0", "node-1", "virtual-0", "virtual-1"]
    assert nodes["virtual-1"]["metadata"]["labels"]["type"] == "kwok"
    assert "type" not in nodes["node-0"]["metadata"]["labels"]


def test_every_ztunnel_holds_the_virtual_workloads(c):
    ips = {p["status"]["podIP"] for p in sim_pods(c)}

    def dump(node):
        r = subprocess.run(["ip", "netns", "exec", c.node_netns(node), "curl", "-s", "--max-time", "5",
                            "http://127.0.0.1:15000/config_dump"], capture_output=True, text=True, timeout=15)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    for node in ("node-0", "node-1"):
        def has_all(node=node):
            d = dump(node)
            if not d:
                return None
            held = {ip for w in d["workloads"] for ip in w.get("workloadIps") or ()}
            svc = [s for s in d["services"] if s["name"] == "sim"]
            return ips <= held and svc and len(svc[0]["endpoints"]) == REPLICAS and d
        d = until(has_all, what=f"the ztunnel on {node} to hold {REPLICAS} virtual workloads", timeout=60)
        assert not any(p["namespace"] == NS and p["name"].startswith("sim-") for p in d["capturedPods"])


def test_scaling_down_removes_virtual_pods_at_once(c):
    c.scale(NS, "sim", 10)
    until(lambda: len(sim_pods(c)) == 10, what="scale-down to 10 virtual pods", timeout=20)
    c.scale(NS, "sim", REPLICAS)
    until(lambda: len([p for p in sim_pods(c) if p["status"].get("podIP")]) == REPLICAS,
          what="scale-up back to the full set", timeout=20)


def test_cli_bounds_virtual_nodes():
    r = subprocess.run([sys.executable, "-m", "reference_impl.cli", "cluster", "up", "--name", "tb-bad",
                        "--virtual-nodes", "65"], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 1
    assert "--virtual-nodes 65: choose between 0 and 64" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
