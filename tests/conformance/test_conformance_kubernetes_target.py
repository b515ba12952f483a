"""The `kubernetes` target, driven through the official client against an HTTP-level
Kubernetes API emulator (k8s_emulator.py) on loopback; exec runs real curl on this machine
against real local servers, so outcome mapping is exercised end to end over the WebSocket."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conformance import curl
from conformance import workloads as w
from conformance.targets.base import PodRef, TargetError
from conformance.targets.kubernetes import KubernetesTarget
from k8s_emulator import Emulator, free_port


class _StatusHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/status/") else 200
        body = b"ztunnel_up 1\n" if self.path == "/metrics" else b"ok"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def _raw_server(behaviour):
    """A TCP server that either closes each connection at once or holds it without answering."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held, stop = [], threading.Event()

    def loop():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            if behaviour == "close":
                conn.recv(65536)
                conn.close()
            else:
                held.append(conn)
    threading.Thread(target=loop, daemon=True).start()
    return sock, stop, held


@pytest.fixture
def emulator(tmp_path):
    with Emulator() as emu:
        yield emu


@pytest.fixture
def target(emulator, tmp_path):
    t = KubernetesTarget(kubeconfig=emulator.kubeconfig(tmp_path / "kubeconfig"), context="emulator")
    t.start()
    return t


def _workloads(ns="cf-k8s"):
    return ([w.namespace(ns, ambient=True)] + w.httpbin(ns, replicas=2, node="node-b")
            + w.client(ns, "client"))


def test_apply_core_kinds_and_crds_then_delete(target, emulator):
    policy = w.authorization_policy("cf-k8s", "only-a", {"action": "ALLOW", "rules": [{}]}, selector_app="httpbin")
    legacy = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: waypoint, namespace: cf-k8s}
spec: {gatewayClassName: istio, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
"""
    target.apply(_workloads() + [policy, w.peer_authentication("cf-k8s", "default", "STRICT")])
    target.apply(legacy)
    target.apply([policy])  # a second apply of the same object configures it, no conflict
    kinds = {k for (k, ns, _) in emulator.cluster.objects if ns == "cf-k8s"}
    assert {"ServiceAccount", "Service", "Deployment", "Pod", "AuthorizationPolicy",
            "PeerAuthentication", "Gateway"} <= kinds
    assert target.get("AuthorizationPolicy", "cf-k8s", "only-a")["spec"]["action"] == "ALLOW"
    target.delete([policy])
    assert target.get("AuthorizationPolicy", "cf-k8s", "only-a") is None
    target.delete([policy])  # deleting what is gone is not an error


def test_unknown_kind_is_one_clear_sentence(target):
    with pytest.raises(TargetError, match="does not serve example.com/v1 Widget; install its CRD"):
        target.apply({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x", "namespace": "d"}})


def test_pods_nodes_and_readiness(target):
    target.apply(_workloads())
    target.wait_ready("cf-k8s", timeout=10)
    assert target.nodes() == ["node-a", "node-b"], "the tainted control-plane node must not be offered"
    pods = target.pods("cf-k8s", {"app": "httpbin"})
    assert len(pods) == 2 and all(p.node == "node-b" and p.ready for p in pods)
    assert pods[0].containers == ("httpbin",) and pods[0].restarts == 0
    assert target.pod_node(pods[0]) == "node-b"
    assert set(target.restart_counts("cf-k8s")) == {p.name for p in target.pods("cf-k8s")}


def test_label_namespace_sets_and_removes(target):
    target.apply(_workloads())
    target.label_namespace("cf-k8s", {"team": "mesh"})
    labels = target.get("Namespace", None, "cf-k8s")["metadata"]["labels"]
    assert labels == {"istio.io/dataplane-mode": "ambient", "team": "mesh"}
    target.label_namespace("cf-k8s", {"istio.io/dataplane-mode": None})
    assert target.get("Namespace", None, "cf-k8s")["metadata"]["labels"] == {"team": "mesh"}


def test_call_is_one_exec_and_maps_outcomes(target, emulator, http_server):
    target.apply(_workloads())
    client = target.pods("cf-k8s", {"app": "client"})[0]
    host, port = http_server
    before = len(emulator.cluster.exec_log)
    assert target.call(client, f"http://{host}:{port}/status/418", count=4) == [418] * 4
    assert len(emulator.cluster.exec_log) == before + 1, "count=4 must be ONE exec"
    assert emulator.cluster.exec_log[-1]["container"] == "curl"
    assert target.call(client, f"http://127.0.0.1:{free_port()}/", count=2) == [curl.REFUSED] * 2

    closer, stop_closer, _ = _raw_server("close")
    holder, stop_holder, _ = _raw_server("hold")
    try:
        assert target.call(client, f"http://127.0.0.1:{closer.getsockname()[1]}/") == [curl.RESET]
        assert target.call(client, f"http://127.0.0.1:{holder.getsockname()[1]}/", timeout=1) == [curl.TIMEOUT]
    finally:
        stop_closer.set(), stop_holder.set(), closer.close(), holder.close()


def test_exec_returns_exit_code_and_streams(target):
    target.apply(_workloads())
    client = target.pods("cf-k8s", {"app": "client"})[0]
    ok = target.exec(client, ["sh", "-c", "echo out; echo err >&2"])
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "out\n", "err\n")
    assert target.exec(client, ["sh", "-c", "exit 3"]).returncode == 3
    with pytest.raises(TargetError, match="exec in pod cf-k8s/nope"):
        target.exec(PodRef("cf-k8s", "nope"), ["true"])


def test_delete_pod_is_replaced_and_scale(target):
    target.apply(_workloads())
    [first, second] = target.pods("cf-k8s", {"app": "httpbin"})
    target.delete_pod(first, grace_period=0)
    names = {p.name for p in target.pods("cf-k8s", {"app": "httpbin"})}
    assert first.name not in names and second.name in names and len(names) == 2
    target.scale("cf-k8s", "httpbin", 3)
    target.wait_ready("cf-k8s", timeout=10)
    assert len(target.pods("cf-k8s", {"app": "httpbin"})) == 3


def test_metrics_through_pod_proxy_and_kill_ztunnel(target, emulator, http_server):
    emulator.cluster.upsert(w.namespace("istio-system", ambient=False))
    for node in ("node-a", "node-b"):
        emulator.cluster.add_pod("istio-system", f"ztunnel-{node}", {"app": "ztunnel"}, node)
    emulator.backend("istio-system", "ztunnel-node-a", 15020, http_server)
    assert target.metrics("node-a") == "ztunnel_up 1\n"
    target.kill_ztunnel("node-b")
    assert [p.name for p in target.pods("istio-system")] == ["ztunnel-node-a"]
    with pytest.raises(TargetError, match="no ztunnel pod"):
        target.metrics("node-b")


def test_info_reads_istiod_version(target, emulator):
    assert target.info().implementation == "unknown"
    target.apply([w.namespace("istio-system", ambient=False), {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "istiod", "namespace": "istio-system"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istiod"}}, "template": {
            "metadata": {"labels": {"app": "istiod"}},
            "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.24.0"}]}}}}])
    info = target.info()
    assert (info.implementation, info.version) == ("istio", "1.24.0")


def test_delete_namespace_removes_its_objects(target, emulator):
    target.apply(_workloads())
    target.delete_namespace("cf-k8s")
    assert not [k for k in emulator.cluster.objects if k[1] == "cf-k8s"]
    target.delete_namespace("cf-k8s")


def test_unreachable_cluster_is_one_clear_sentence(tmp_path):
    with Emulator() as emu:
        path = emu.kubeconfig(tmp_path / "kubeconfig")
    t = KubernetesTarget(kubeconfig=path)
    with pytest.raises(TargetError, match="is not reachable"):
        t.start()
    with pytest.raises(TargetError, match="cannot load kubeconfig"):
        KubernetesTarget(kubeconfig=str(tmp_path / "missing")).start()


# -- waypoints (issue 9) -------------------------------------------------------------------------
def test_waypoint_verbs_and_labels_on_services_and_pods(target):
    from conformance.targets.base import NotSupported
    target.apply(_workloads())
    # What Istio provisions for a waypoint Gateway: a Deployment named after it whose pods carry
    # the Gateway API gateway-name label.
    labels = {target.WAYPOINT_POD_LABEL: "wp"}
    target.apply([{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "wp", "namespace": "cf-k8s"},
                   "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels},
                                         "spec": {"containers": [{"name": "istio-proxy", "image": "proxyv2"}]}}}}])
    [first] = target.waypoint_pods("cf-k8s", "wp")
    target.scale_waypoint("cf-k8s", "wp", 2)
    target.wait_ready("cf-k8s", timeout=10)
    assert len(target.waypoint_pods("cf-k8s", "wp")) == 2
    target.kill_waypoint_pod(first)
    assert first.name not in {p.name for p in target.waypoint_pods("cf-k8s", "wp")}

    target.label("Service", "cf-k8s", "httpbin", {"istio.io/use-waypoint": "wp"})
    assert target.get("Service", "cf-k8s", "httpbin")["metadata"]["labels"] == \
        {"app": "httpbin", "istio.io/use-waypoint": "wp"}
    target.label("Service", "cf-k8s", "httpbin", {"istio.io/use-waypoint": None})
    assert target.get("Service", "cf-k8s", "httpbin")["metadata"]["labels"] == {"app": "httpbin"}
    pod = target.pods("cf-k8s", {"app": "client"})[0]
    target.label("Pod", "cf-k8s", pod.name, {"istio.io/use-waypoint": "wp"})
    assert target.get("Pod", "cf-k8s", pod.name)["metadata"]["labels"]["istio.io/use-waypoint"] == "wp"
    with pytest.raises(NotSupported, match="not Deployment"):
        target.label("Deployment", "cf-k8s", "wp", {"a": "b"})


def test_scaling_a_waypoint_that_has_no_deployment_is_one_clear_sentence(target):
    target.apply(_workloads())
    with pytest.raises(TargetError, match="scale waypoint cf-k8s/ghost: its Deployment"):
        target.scale_waypoint("cf-k8s", "ghost", 2)
