"""The integration tests' one helper kit (manifests, clusters, traffic, node proxies); no tests.

Each test module starts its own small 2-node cluster named `tm-<xdist worker>-<suffix>` with the
seed's namespaces and workloads, pinned so that traffic crosses nodes where it matters, and
drives real curl inside pod namespaces (conformance/curl.py, one process for N requests). Outcomes are polled with deadlines (`converge`), never
inferred from a sleep.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import yaml

from conformance import curl
from waiting import until  # noqa: F401 (re-exported to the mesh tests)
from reference_impl.cluster import client as cluster_client, naming
from reference_impl.xds import XdsUnavailable, debug_query

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "fixtures" / "seed"
NS = "ambient-apps"
URL = "http://httpbin-ambient.ambient-apps:8000/get"
L4_POLICY = SEED / "l4-policy.yaml"
ISTIOD_ADDON = REPO / "reference_impl" / "cluster" / "addons" / "istiod.yaml"
REQUEST_SECONDS = curl.DEFAULT_MAX_TIME   # the conformance suite's per-request limit
HOSTNAME = "kubernetes.io/hostname"


# ---------------------------------------------------------------- manifests
def seed_objects(pin: dict[str, str] | None = None) -> list[dict]:
    """The seed's namespaces, httpbin-ambient, sleep-ambient and rogue-client; `pin` maps a
    Deployment name to the node its pods must run on."""
    objects = []
    for name in ("namespaces.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml", "rogue-client.yaml"):
        objects += [o for o in yaml.safe_load_all((SEED / name).read_text()) if o]
    for obj in objects:
        node = (pin or {}).get(obj["metadata"]["name"])
        if obj["kind"] == "Deployment" and node:
            obj["spec"]["template"]["spec"]["nodeSelector"] = {HOSTNAME: node}
    return objects


def pinned_pod(name: str, namespace: str, node: str, sa: str, image: str = "curlimages/curl",
               labels: dict | None = None) -> dict:
    container = {"name": "main", "image": image}
    if "httpbin" in image:
        container["ports"] = [{"containerPort": 80}]
    else:
        container["command"] = ["/bin/sleep", "3650d"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
            "spec": {"serviceAccountName": sa, "nodeSelector": {HOSTNAME: node}, "containers": [container]}}


def service_account(name: str, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


def namespace(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def allow_policy(name: str, principals: list[str] | None = None, namespaces: list[str] | None = None,
                 app: str = "httpbin-ambient", ns: str = NS) -> dict:
    source = {}
    if principals:
        source["principals"] = principals
    if namespaces:
        source["namespaces"] = namespaces
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": app}}, "action": "ALLOW",
                     "rules": [{"from": [{"source": source}]}]}}


def istiod_deployment(env: dict[str, str] | None = None) -> dict:
    """The cluster's own istiod Deployment (the add-on), with extra container env."""
    [deploy] = [o for o in yaml.safe_load_all(ISTIOD_ADDON.read_text()) if o and o["kind"] == "Deployment"]
    deploy = copy.deepcopy(deploy)
    if env:
        [container] = deploy["spec"]["template"]["spec"]["containers"]
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return deploy


# ---------------------------------------------------------------- cluster
def start_cluster(cluster_factory, worker_id: str, suffix: str, objects: list[dict], timeout: float = 60):
    name = cluster_client.run_scoped_name("tm", "" if worker_id == "master" else worker_id, suffix)
    c = cluster_factory(name=name, nodes=2, timeout=timeout)
    if objects:
        c.apply(objects)
        c.wait_ready(timeout)
        wait_captured(c)
    return c


def running_pods(c, ns: str, selector: dict | None = None) -> list[dict]:
    return [p for p in c.list("Pod", ns, selector=selector)
            if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def pod_of(c, app: str, ns: str = NS) -> str:
    pods = running_pods(c, ns, {"app": app})
    assert pods, f"no running pod with app={app} in {ns}"
    return pods[0]["metadata"]["name"]


def captured(c, ns: str, pod: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", c.pod_netns(ns, pod), "nft", "list", "table", "inet", "ztunnel"],
                          capture_output=True, timeout=10).returncode == 0


def wait_captured(c, ns: str = NS, timeout: float = 20) -> None:
    for pod in running_pods(c, ns):
        until(lambda: captured(c, ns, pod["metadata"]["name"]), timeout, what=f"capture of {pod['metadata']['name']}")


def restart_state(c) -> dict[str, list]:
    """Every app pod's (uid, restartCount, pid) per container: a restart or re-creation changes it."""
    state = {}
    for pod in c.list("Pod"):
        meta = pod["metadata"]
        if meta["namespace"] == "istio-system" or meta.get("deletionTimestamp"):
            continue
        state[f"{meta['namespace']}/{meta['name']}"] = [
            (meta["uid"], s.get("restartCount"), s.get("pid")) for s in (pod.get("status") or {}).get("containerStatuses") or ()]
    return state


# ---------------------------------------------------------------- traffic
# Every request of the integration tests goes through conformance/curl.py, as the conformance
# suite's do: one curl process for N requests, its exit code read as an outcome. An L4 deny is a
# prompt refusal (curl.L4_REFUSALS); a timeout is a stall, never a deny.
def exec_in_netns(netns: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=timeout)


def call(c, ns: str, pod: str, url: str = URL, count: int = 1, timeout: float = REQUEST_SECONDS,
         headers: dict | None = None, body: bool = False) -> list[curl.Response]:
    """`count` requests from a pod of cluster `c`, made by ONE curl process."""
    argv = curl.curl_argv([url] * count, headers=headers, max_time=timeout, body=body)
    done = c.exec(ns, pod, argv, timeout=count * (timeout + 1) + 10)
    return curl.parse_output(done.stdout, count, body=body)


def call_in_netns(netns: str, url: str, count: int = 1, timeout: float = REQUEST_SECONDS,
                  headers: dict | None = None, body: bool = False) -> list[curl.Response]:
    """The same from any network namespace (a node's, or a scratch one with no cluster)."""
    argv = curl.curl_argv([url] * count, headers=headers, max_time=timeout, body=body)
    done = exec_in_netns(netns, argv, timeout=count * (timeout + 1) + 10)
    return curl.parse_output(done.stdout, count, body=body)


def response(c, ns: str, pod: str, url: str = URL, **kw) -> curl.Response:
    [r] = call(c, ns, pod, url, **kw)
    return r


def outcome(c, ns: str, pod: str, url: str = URL, timeout: float = REQUEST_SECONDS) -> str:
    """'allowed' (HTTP 200), 'denied' (a prompt refusal: reset, EOF or refused) or what happened."""
    r = response(c, ns, pod, url, timeout=timeout)
    if r.outcome == 200:
        return "allowed"
    if r.outcome in curl.L4_REFUSALS:
        return "denied"
    if r.outcome == curl.TIMEOUT:
        return curl.STALL_IS_NOT_A_DENY
    return f"{r.outcome} (curl exit {r.exit_code}: {r.message})"


def allowed(c, ns: str, pod: str, url: str = URL, timeout: float = REQUEST_SECONDS) -> bool:
    return outcome(c, ns, pod, url, timeout) == "allowed"


def denied(c, ns: str, pod: str, url: str = URL, timeout: float = REQUEST_SECONDS) -> bool:
    return outcome(c, ns, pod, url, timeout) == "denied"


class InFlight:
    """One request left running in the background (e.g. across a policy change or a restart)."""

    def __init__(self, c, ns: str, pod: str, url: str, timeout: float):
        self.timeout = timeout
        self.proc = subprocess.Popen(["ip", "netns", "exec", c.pod_netns(ns, pod),
                                      *curl.curl_argv([url], max_time=timeout)],
                                     stdout=subprocess.PIPE, text=True)

    def result(self) -> curl.Response:
        out, _ = self.proc.communicate(timeout=self.timeout + 5)
        [r] = curl.parse_output(out, 1)
        return r

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def converge(checks: dict[str, tuple], expected: dict[str, str], within: float, consecutive: int = 3) -> float:
    """Poll every check until each gives its expected outcome `consecutive` rounds in a row.

    `checks` maps a label to (cluster, ns, pod, url); returns the seconds until the first round of
    the final streak, or fails within `within` seconds naming the checks still off."""
    started = time.monotonic()
    streak, streak_started, last = 0, None, {}
    while True:
        round_started = time.monotonic()
        last = {label: outcome(*args) for label, args in checks.items()}
        if all(last[label] == expected[label] for label in checks):
            streak += 1
            streak_started = streak_started or round_started
            if streak >= consecutive:
                return streak_started - started
        else:
            streak, streak_started = 0, None
        if time.monotonic() - started > within:
            off = {k: f"{v} (want {expected[k]})" for k, v in last.items() if v != expected[k]}
            raise AssertionError(f"not {consecutive} consecutive expected outcomes within {within}s; "
                                 f"last round: {off or last}")


def hold(checks: dict[str, tuple], expected: dict[str, str], rounds: int, within: float) -> None:
    """Every one of `rounds` consecutive rounds gives the expected outcomes: no failure allowed,
    unlike `converge`; `within` only bounds a slow machine."""
    started = time.monotonic()
    for n in range(rounds):
        last = {label: outcome(*args) for label, args in checks.items()}
        off = {k: f"{v} (want {expected[k]})" for k, v in last.items() if v != expected[k]}
        assert not off, f"round {n + 1} of {rounds}: {off}"
        assert time.monotonic() - started <= within, f"{rounds} rounds took over {within}s"


class HeldStream:
    """A streaming curl (httpbin /drip) kept open across an event; records when each byte came."""

    def __init__(self, c, ns: str, pod: str, seconds: int, host: str = "httpbin-ambient.ambient-apps:8000"):
        self.seconds = seconds
        url = f"http://{host}/drip?duration={seconds}&numbytes={seconds * 4}&delay=0&code=200"
        self.proc = subprocess.Popen(["ip", "netns", "exec", c.pod_netns(ns, pod), "curl", "-sN",
                                      "--max-time", str(seconds + 15), "-w", "\n%{http_code}", url],
                                     stdout=subprocess.PIPE)
        self.arrivals: list[float] = []
        self.tail = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                return
            if chunk == b"*":
                self.arrivals.append(time.monotonic())
            else:
                self.tail += chunk

    def flowing(self) -> bool:
        return len(self.arrivals) >= 1

    def bytes_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.arrivals)

    def finish(self) -> tuple[int, int, str]:
        """(curl exit code, bytes received, HTTP status)."""
        try:
            rc = self.proc.wait(timeout=self.seconds + 20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        return rc, len(self.arrivals), self.tail.decode(errors="replace").strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the node proxies and istiod
def node_get(c, node: str, port: int, path: str, host: str = "127.0.0.1") -> str:
    """The body a node-local endpoint answers ("" when it does not)."""
    [r] = call_in_netns(c.node_netns(node), f"http://{host}:{port}{path}", timeout=5, body=True)
    return r.body


def ztunnel_dump(c, node: str) -> dict:
    """The node's ztunnel /config_dump (admin port, node namespace), {} while it does not answer."""
    text = node_get(c, node, 15000, "/config_dump")
    try:
        return json.loads(text)
    except ValueError:
        return {}


def istiod_pods(c) -> list[dict]:
    return [p for p in c.list("Pod", "istio-system", selector={"app": "istiod"})
            if not p["metadata"].get("deletionTimestamp")]


def istiod_proxies(c) -> list[dict] | None:
    """istiod's view of its connected proxies, None while no istiod answers."""
    try:
        return debug_query(os.path.join(naming.run_dir(c.name), "istiod.sock"), "proxies", timeout=2)
    except (XdsUnavailable, LookupError, OSError):
        return None


def ztunnels_in_sync(c, nodes=("node-0", "node-1")) -> bool:
    """Every node's ztunnel is connected to istiod and has acknowledged the latest version sent.
    Something must have been sent: a restarted istiod that has not derived yet has sent nothing
    and been acknowledged nothing (0 = 0), and the proxies hold what the one before sent."""
    proxies = istiod_proxies(c)
    if not proxies:
        return False
    if isinstance(proxies, dict):
        proxies = proxies.get("proxies", [])
    synced = {p["node"] for p in proxies if p["proxy"] == "ztunnel" and p["sentVersion"]
              and p["sentVersion"] == p["ackedVersion"]}
    return set(nodes) <= synced
