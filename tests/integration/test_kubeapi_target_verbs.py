"""The `kubernetes` target's verbs, one by one, through the official client against a reference
cluster's Kubernetes API: real pods behind it, exec running curl in a pod against real servers in
other pods, ztunnel metrics through the pod proxy. (These were tested against a hand-written
emulator in tests/conformance/ before the reference cluster served the API.)"""
from __future__ import annotations

import pytest

from conformance import curl
from conformance import workloads as w
from conformance.targets.base import NotSupported, PodRef, TargetError, wait_until
from conformance.targets.kubernetes import KubernetesTarget
from reference_impl.cluster.kubeapi import kubeconfig_path

# A server in a pod that closes each connection at once, and one that holds it unanswered.
_RAW_SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(16); held = []
while True:
    c, _ = s.accept()
    if sys.argv[1] == "close":
        c.recv(65536); c.close()
    else:
        held.append(c)
"""


@pytest.fixture(scope="module")
def cluster(cluster_factory):
    return cluster_factory("kverbs")


@pytest.fixture(scope="module")
def target(cluster):
    t = KubernetesTarget(kubeconfig=kubeconfig_path(cluster.name))
    t.start()
    return t


def _raw_servers(ns: str) -> list[dict]:
    labels = {"app": "raw"}
    containers = [{"name": mode, "image": w.PYTHON_IMAGE, "command": ["python3", "-c", _RAW_SERVER, mode, str(port)],
                   "ports": [{"containerPort": port}]} for mode, port in (("close", 9001), ("hold", 9002))]
    return [w.service_account(ns, "raw"),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "raw", "namespace": ns},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels},
                                   "spec": {"serviceAccountName": "raw", "containers": containers}}}}]


@pytest.fixture
def ns(target, request):
    """A namespace of this test's own (plain, not ambient: the verbs, not the mesh, are tested),
    with two httpbin replicas on node-1 and a curl client."""
    name = "kv-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    target.apply([w.namespace(name, ambient=False)] + w.httpbin(name, replicas=2, node="node-1")
                 + w.client(name, "client"))
    target.wait_ready(name, timeout=60)
    yield name
    target.delete_namespace(name)


def test_apply_core_kinds_and_crds_then_delete(target, ns):
    policy = w.authorization_policy(ns, "only-a", {"action": "ALLOW", "rules": [{}]}, selector_app="httpbin")
    legacy = f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {{name: gw, namespace: {ns}}}
spec: {{gatewayClassName: some-class, listeners: [{{name: http, port: 8080, protocol: HTTP}}]}}
"""
    target.apply([policy, w.peer_authentication(ns, "default", "PERMISSIVE")])
    target.apply(legacy)
    target.apply([policy])  # a second apply of the same object configures it, no conflict
    assert target.get("AuthorizationPolicy", ns, "only-a")["spec"]["action"] == "ALLOW"
    assert target.get("PeerAuthentication", ns, "default")["spec"]["mtls"]["mode"] == "PERMISSIVE"
    assert target.get("Gateway", ns, "gw")["apiVersion"].startswith("gateway.networking.k8s.io/")
    assert target.get("Deployment", ns, "httpbin") is not None
    target.delete([policy])
    assert target.get("AuthorizationPolicy", ns, "only-a") is None
    target.delete([policy])  # deleting what is gone is not an error


def test_unknown_kind_is_one_clear_sentence(target):
    with pytest.raises(TargetError, match="does not serve example.com/v1 Widget; install its CRD"):
        target.apply({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x", "namespace": "d"}})


def test_pods_nodes_and_readiness(target, ns):
    assert target.nodes() == ["node-0", "node-1"]
    pods = target.pods(ns, {"app": "httpbin"})
    assert len(pods) == 2 and all(p.node == "node-1" and p.ready for p in pods)
    assert pods[0].containers == ("httpbin",) and pods[0].restarts == 0
    assert pods[0].ip.startswith("10.244.1.")
    assert target.pod_node(pods[0]) == "node-1"
    assert set(target.restart_counts(ns)) == {p.name for p in target.pods(ns)}


def test_label_namespace_sets_and_removes(target, ns):
    target.label_namespace(ns, {"team": "mesh", "istio.io/dataplane-mode": "ambient"})
    labels = target.get("Namespace", None, ns)["metadata"]["labels"]
    assert labels["team"] == "mesh" and labels["istio.io/dataplane-mode"] == "ambient"
    target.label_namespace(ns, {"istio.io/dataplane-mode": None})
    labels = target.get("Namespace", None, ns)["metadata"]["labels"]
    assert "istio.io/dataplane-mode" not in labels and labels["team"] == "mesh"


def test_call_is_one_exec_and_maps_outcomes(target, ns, monkeypatch):
    target.apply(_raw_servers(ns))
    target.wait_ready(ns, timeout=60)
    client = target.pods(ns, {"app": "client"})[0]
    [raw] = target.pods(ns, {"app": "raw"})
    execs = []
    real_exec = target.exec
    monkeypatch.setattr(target, "exec", lambda *a, **kw: execs.append(a) or real_exec(*a, **kw))
    url = f"http://httpbin.{ns}.svc.cluster.local:{w.HTTP_PORT}/status/418"
    assert target.call(client, url, count=4) == [418] * 4
    assert len(execs) == 1, "count=4 must be ONE exec"
    assert target.call(client, f"http://{raw.ip}:9003/", count=2) == [curl.REFUSED] * 2
    assert target.call(client, f"http://{raw.ip}:9001/") == [curl.RESET]
    assert target.call(client, f"http://{raw.ip}:9002/", timeout=1) == [curl.TIMEOUT]


def test_exec_returns_exit_code_and_streams(target, ns):
    client = target.pods(ns, {"app": "client"})[0]
    ok = target.exec(client, ["sh", "-c", "echo out; echo err >&2"])
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "out\n", "err\n")
    assert target.exec(client, ["sh", "-c", "exit 3"]).returncode == 3
    # one curl with many URLs: a request head of 100 KB (h11's default limit of 16 KiB dropped it)
    many = target.exec(client, ["sh", "-c", 'echo "$#"', "sh", *["u" * 99] * 1000])
    assert (many.returncode, many.stdout) == (0, "1000\n")
    with pytest.raises(TargetError, match=f"exec in pod {ns}/nope"):
        target.exec(PodRef(ns, "nope"), ["true"])


def test_delete_pod_is_replaced_and_scale(target, ns):
    [first, second] = target.pods(ns, {"app": "httpbin"})
    target.delete_pod(first, grace_period=0)
    names = {p.name for p in target.pods(ns, {"app": "httpbin"})}
    assert first.name not in names and second.name in names
    target.wait_ready(ns, timeout=60)
    assert len(target.pods(ns, {"app": "httpbin"})) == 2
    target.scale(ns, "httpbin", 3)
    target.wait_ready(ns, timeout=60)
    assert len(target.pods(ns, {"app": "httpbin"})) == 3


def test_metrics_through_pod_proxy_and_kill_ztunnel(target):
    assert "# TYPE istio_tcp_connections_opened_total" in target.metrics("node-0")
    before = target.ztunnel_pod("node-1")
    target.kill_ztunnel("node-1")
    # the DaemonSet replaces the killed pod with one of another name on the same node
    wait_until(lambda: any(p.node == "node-1" and p.name != before.name
                           for p in target.pods(target.MESH_NAMESPACE, target.ZTUNNEL_SELECTOR)), 30, 0.2,
               "a new ztunnel pod on node-1")
    with pytest.raises(TargetError, match="no ztunnel pod"):
        target.metrics("node-9")


def test_info_reads_istiod_version(target):
    info = target.info()
    # istiod's image here carries no tag: the target says so instead of guessing
    assert (info.implementation, info.version) == ("istio", "unknown")


def test_delete_namespace_removes_its_objects(target):
    name = "kv-delete-namespace"
    target.apply([w.namespace(name, ambient=False)] + w.client(name, "client"))
    target.delete_namespace(name)
    assert target.get("Namespace", None, name) is None or \
        target.get("Namespace", None, name)["metadata"].get("deletionTimestamp")
    target.delete_namespace(name)  # deleting what is gone is not an error


def test_unreachable_cluster_is_one_clear_sentence(tmp_path, cluster):
    import yaml
    config = yaml.safe_load(open(kubeconfig_path(cluster.name)))
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(TargetError, match="is not reachable"):
        KubernetesTarget(kubeconfig=str(path)).start()
    with pytest.raises(TargetError, match="cannot load kubeconfig"):
        KubernetesTarget(kubeconfig=str(tmp_path / "missing")).start()


# -- waypoints (issue 9) -------------------------------------------------------------------------
def test_waypoint_verbs_and_labels_on_services_and_pods(target, ns):
    # What Istio provisions for a waypoint Gateway: a Deployment named after it whose pods carry
    # the Gateway API gateway-name label.
    labels = {target.WAYPOINT_POD_LABEL: "wp"}
    target.apply([{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "wp", "namespace": ns},
                   "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels},
                                         "spec": {"containers": [{"name": "proxy", "image": w.PYTHON_IMAGE,
                                                                  "command": ["sleep", "infinity"]}]}}}}])
    target.wait_ready(ns, timeout=60)
    [first] = target.waypoint_pods(ns, "wp")
    target.scale_waypoint(ns, "wp", 2)
    target.wait_ready(ns, timeout=60)
    assert len(target.waypoint_pods(ns, "wp")) == 2
    target.kill_waypoint_pod(first)
    assert first.name not in {p.name for p in target.waypoint_pods(ns, "wp")}

    target.label("Service", ns, "httpbin", {"istio.io/use-waypoint": "wp"})
    assert target.get("Service", ns, "httpbin")["metadata"]["labels"]["istio.io/use-waypoint"] == "wp"
    target.label("Service", ns, "httpbin", {"istio.io/use-waypoint": None})
    assert "istio.io/use-waypoint" not in target.get("Service", ns, "httpbin")["metadata"]["labels"]
    pod = target.pods(ns, {"app": "client"})[0]
    target.label("Pod", ns, pod.name, {"istio.io/use-waypoint": "wp"})
    assert target.get("Pod", ns, pod.name)["metadata"]["labels"]["istio.io/use-waypoint"] == "wp"
    with pytest.raises(NotSupported, match="not Deployment"):
        target.label("Deployment", ns, "wp", {"a": "b"})


def test_scaling_a_waypoint_that_has_no_deployment_is_one_clear_sentence(target, ns):
    with pytest.raises(TargetError, match=f"scale waypoint {ns}/ghost: its Deployment"):
        target.scale_waypoint(ns, "ghost", 2)
