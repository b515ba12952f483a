"""Sidecar mode on a real local cluster: injection (admission), the init-time capture rules in the
pod's namespace, ztunnel leaving sidecar pods alone, the CLI's views, and the lifecycle the kubelet
gives an injected pod (hold the app until the proxy is ready, stop the proxy after the app, restart
a killed proxy without touching the app)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from meshkit import allowed, namespace, pinned_pod, running_pods, service_account
from waiting import until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INJECT = {"istio-injection": "enabled"}
AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def _pod(c, ns, name):
    return c.get("Pod", ns, name)


def _containers(pod) -> list[str]:
    return [x["name"] for x in pod["spec"]["containers"]]


def _status(pod, container) -> dict:
    """The container's status; {"pid": None} while the kubelet has not reported it yet (a pod
    just created has no status)."""
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or ()
    return next((s for s in statuses if s["name"] == container), {"pid": None})


def _ready(pod) -> bool:
    return any(cd["type"] == "Ready" and cd["status"] == "True" for cd in (pod.get("status") or {}).get("conditions") or ())


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cli(c, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reference_impl.cli", "cluster", *argv, "--name", c.name],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO})


@pytest.fixture(scope="module")
def mesh(cluster_factory):
    c = cluster_factory("sidecar")
    c.apply([namespace("side", INJECT), namespace("both", {**INJECT, **AMBIENT}), namespace("amb", AMBIENT),
             namespace("optin"), service_account("web", "side"), service_account("web", "both"),
             service_account("cli", "amb"), service_account("web", "optin")])
    pods = [pinned_pod("web", "side", "node-0", "web", image="docker.io/kennethreitz/httpbin"),
            pinned_pod("out", "side", "node-0", "web", labels={"app": "out", "sidecar.istio.io/inject": "false"}),
            pinned_pod("web", "both", "node-1", "web", image="docker.io/kennethreitz/httpbin"),
            pinned_pod("cli", "amb", "node-1", "cli"),
            pinned_pod("web", "optin", "node-0", "web", labels={"app": "web", "sidecar.istio.io/inject": "true"}),
            pinned_pod("plain", "optin", "node-0", "web")]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "side"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8000, "targetPort": 80}]}}
    c.apply(pods + [service])
    c.wait_ready(90)
    return c


def test_injection_follows_namespace_and_pod_labels(mesh):
    assert _containers(_pod(mesh, "side", "web")) == ["istio-proxy", "main"]
    assert _containers(_pod(mesh, "side", "out")) == ["main"], "sidecar.istio.io/inject=false must opt out"
    assert _containers(_pod(mesh, "optin", "web")) == ["istio-proxy", "main"], "inject=true must opt in"
    assert _containers(_pod(mesh, "optin", "plain")) == ["main"]
    assert _containers(_pod(mesh, "amb", "cli")) == ["main"]
    web = _pod(mesh, "side", "web")
    assert "sidecar.istio.io/status" in web["metadata"]["annotations"]
    assert all(s["ready"] for s in web["status"]["containerStatuses"])


def test_a_pod_created_before_the_label_keeps_its_containers(mesh):
    mesh.apply([pinned_pod("early", "optin", "node-0", "web", labels={"app": "early"})])
    until(lambda: _ready(_pod(mesh, "optin", "early") or {}), 30, what="early pod ready")
    mesh.apply([namespace("optin", INJECT)])
    assert _containers(_pod(mesh, "optin", "early")) == ["main"], "a running pod must not change"
    mesh.delete_pod("optin", "early", grace_period=0)
    until(lambda: _pod(mesh, "optin", "early") is None, 20, what="early pod gone")
    mesh.apply([pinned_pod("early", "optin", "node-0", "web", labels={"app": "early"})])
    until(lambda: _ready(_pod(mesh, "optin", "early") or {}), 30, what="recreated pod ready")
    assert _containers(_pod(mesh, "optin", "early")) == ["istio-proxy", "main"], "a replacement gets the proxy"
    mesh.apply([namespace("optin")])


def test_capture_rules_are_in_the_pods_namespace(mesh):
    table = mesh.exec("side", "web", ["nft", "list", "table", "inet", "istio_sidecar"]).stdout
    assert "redirect to :15001" in table and "redirect to :15006" in table, table
    for port in ("15008", "15020", "15021", "15090"):
        assert port in table.split("chain inbound")[1], f"inbound port {port} must be excluded: {table}"
    assert "meta mark 0x00000539 return" in table or "meta mark 0x539 return" in table, table
    # The pod without the proxy has none.
    assert mesh.exec("side", "out", ["nft", "list", "table", "inet", "istio_sidecar"]).returncode != 0


def test_ztunnel_leaves_a_pod_of_a_namespace_labelled_both_ways_alone(mesh):
    pod = _pod(mesh, "both", "web")
    assert _containers(pod) == ["istio-proxy", "main"]
    # No ztunnel capture table in its namespace: the sidecar owns its traffic ...
    assert mesh.exec("both", "web", ["nft", "list", "table", "inet", "ztunnel"]).returncode != 0
    # ... while the ambient client next to it is captured by ztunnel.
    assert mesh.exec("amb", "cli", ["nft", "list", "table", "inet", "ztunnel"]).returncode == 0
    # And the ambient client's call lands at the sidecar with the client's identity.
    url = f"http://{pod['status']['podIP']}:80/headers"
    until(lambda: allowed(mesh, "amb", "cli", url), 20, what="ambient -> both-labelled sidecar pod")
    log = mesh.logs("both", "web", "istio-proxy")
    assert "src=spiffe://cluster.local/ns/amb/sa/cli" in log and "mtls=yes" in log, log[-1500:]


def test_cli_shows_two_containers_sidecar_mode_the_proxy_log_and_listeners(mesh):
    table = _cli(mesh, "get", "pods", "-n", "side").stdout
    assert any(line.startswith("web") and " 2/2 " in line for line in table.splitlines()), table
    described = _cli(mesh, "describe", "pod", "web", "-n", "side").stdout
    assert "sidecar" in described and "spiffe://cluster.local/ns/side/sa/web" in described, described
    log = _cli(mesh, "logs", "web", "-n", "side", "-c", "istio-proxy").stdout
    assert "sidecar ready" in log, log[-800:]
    listeners = _cli(mesh, "proxy-config", "listeners", "web", "-n", "side")
    assert listeners.returncode == 0, listeners.stderr
    for what in ("0.0.0.0:15001", "0.0.0.0:15006", ":15008", "outbound|8000||web.side.svc.cluster.local", "sidecar mode"):
        assert what in listeners.stdout, listeners.stdout
    ambient = _cli(mesh, "proxy-config", "listeners", "cli", "-n", "amb", "-o", "json")
    assert ambient.returncode == 0, ambient.stderr
    data = json.loads(ambient.stdout)
    assert data["mode"] == "ambient" and data["captured"], data
    assert data["workload"]["identity"] == "spiffe://cluster.local/ns/amb/sa/cli", data


def test_app_is_held_until_the_proxy_is_ready(mesh):
    mesh.scale("istio-system", "istiod", 0)   # no config, no certificate: the proxy cannot get ready
    try:
        until(lambda: not running_pods(mesh, "istio-system", {"app": "istiod"}), 30, what="istiod gone")
        mesh.apply([pinned_pod("held", "side", "node-1", "web", labels={"app": "held"})])
        until(lambda: _status(_pod(mesh, "side", "held"), "istio-proxy")["pid"], 20, what="proxy started")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:   # the proxy runs, not ready; the app must not start
            pod = _pod(mesh, "side", "held")
            assert _status(pod, "main")["pid"] is None, f"app started before the proxy was ready: {pod['status']}"
            time.sleep(0.2)
    finally:
        mesh.scale("istio-system", "istiod", 1)
    until(lambda: _ready(_pod(mesh, "side", "held")), 60, what="held pod ready once istiod is back")
    pod = _pod(mesh, "side", "held")
    assert _status(pod, "main")["restartCount"] == 0


def test_on_delete_the_proxy_stops_after_the_app(mesh):
    # An app that takes 2 s to exit after SIGTERM; the proxy must outlive it.
    slow = pinned_pod("slow", "side", "node-0", "web", labels={"app": "slow"})
    slow["spec"]["containers"][0]["command"] = ["/bin/sh", "-c", "trap 'sleep 2; exit 0' TERM; sleep 3650 & wait; wait"]
    mesh.apply([slow])
    until(lambda: _ready(_pod(mesh, "side", "slow") or {}), 40, what="slow pod ready")
    pod = _pod(mesh, "side", "slow")
    app_pid, proxy_pid = _status(pod, "main")["pid"], _status(pod, "istio-proxy")["pid"]
    mesh.delete_pod("side", "slow", grace_period=20)
    gone: dict[str, float] = {}
    start = time.monotonic()
    while len(gone) < 2 and time.monotonic() - start < 30:
        for name, pid in (("app", app_pid), ("proxy", proxy_pid)):
            if name not in gone and not _alive(pid):
                gone[name] = time.monotonic() - start
        time.sleep(0.02)
    assert set(gone) == {"app", "proxy"}, f"not both stopped within 30 s: {gone}"
    assert gone["app"] >= 1.5, f"the app stopped after {gone['app']:.2f}s; its trap should take 2 s"
    assert gone["proxy"] > gone["app"], f"the proxy stopped before the app: {gone}"


def test_a_killed_proxy_is_restarted_and_counted_while_the_app_keeps_running(mesh):
    pod = _pod(mesh, "side", "web")
    app_pid, proxy_pid = _status(pod, "main")["pid"], _status(pod, "istio-proxy")["pid"]
    before = _status(pod, "istio-proxy")["restartCount"]
    os.killpg(proxy_pid, signal.SIGKILL)
    until(lambda: _status(_pod(mesh, "side", "web"), "istio-proxy")["restartCount"] == before + 1, 20,
          what="proxy restart counted")
    until(lambda: _ready(_pod(mesh, "side", "web")), 30, what="pod ready again")
    pod = _pod(mesh, "side", "web")
    assert _status(pod, "main")["pid"] == app_pid and _status(pod, "main")["restartCount"] == 0
    rows = _cli(mesh, "get", "pods", "-n", "side").stdout
    web = next(line for line in rows.splitlines() if line.startswith("web"))
    assert web.split()[3] == str(before + 1), rows
    url = f"http://{pod['status']['podIP']}:80/get"
    until(lambda: allowed(mesh, "amb", "cli", url), 20, what="traffic through the restarted proxy")


ECHO_PROBE = """
import socket, sys
s = socket.create_connection((sys.argv[1], 9000), timeout=3)
try:
    s.sendall(b"ping-sidecar")
    print(s.recv(64).decode() or "EOF")
except OSError as exc:
    print(type(exc).__name__)
"""


def _echo(c, url_ip) -> str:
    done = c.exec("amb", "cli", [sys.executable, "-c", ECHO_PROBE, url_ip], timeout=15)
    return (done.stdout or done.stderr).strip().splitlines()[-1] if (done.stdout or done.stderr) else ""


def test_non_http_traffic_at_the_sidecar_is_judged_by_l4_policy(mesh):
    echo = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo", "namespace": "side", "labels": {"app": "echo"}},
            "spec": {"serviceAccountName": "web", "nodeSelector": {"kubernetes.io/hostname": "node-0"},
                     "containers": [{"name": "main", "image": "ambient-conformance/tcp-echo",
                                     "ports": [{"containerPort": 9000}]}]}}
    mesh.apply([echo])
    until(lambda: _ready(_pod(mesh, "side", "echo") or {}), 40, what="echo pod ready")
    ip = _pod(mesh, "side", "echo")["status"]["podIP"]
    until(lambda: _echo(mesh, ip) == "ping-sidecar", 20, what="echo through the sidecar")

    def policy(principal):
        return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "echo", "namespace": "side"},
                "spec": {"selector": {"matchLabels": {"app": "echo"}},
                         "rules": [{"from": [{"source": {"principals": [principal]}}]}]}}
    try:
        mesh.apply([policy("cluster.local/ns/amb/sa/someone-else")])
        until(lambda: _echo(mesh, ip) in ("EOF", "ConnectionResetError"), 20, what="echo refused by L4 policy")
        mesh.apply([policy("cluster.local/ns/amb/sa/cli")])
        until(lambda: _echo(mesh, ip) == "ping-sidecar", 20, what="echo admitted by the client's principal")
    finally:
        mesh.delete([policy("x")])
    log = mesh.logs("side", "echo", "istio-proxy")
    assert "tcp " in log and "denied" in log and "src=spiffe://cluster.local/ns/amb/sa/cli" in log, log[-1500:]


def test_the_app_dialling_the_capture_listeners_is_refused_not_looped(mesh):
    pod = _pod(mesh, "side", "web")
    for target in ("127.0.0.1:15001", "127.0.0.1:15006", f"{pod['status']['podIP']}:15006"):
        done = mesh.exec("side", "web", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3",
                                         f"http://{target}/"], timeout=10)
        assert done.returncode in (7, 52, 56) and done.stdout == "000", f"{target}: exit {done.returncode} {done.stdout}"
    until(lambda: allowed(mesh, "amb", "cli", f"http://{pod['status']['podIP']}:80/get"), 20,
          what="the proxy still serves after those calls")
