"""Start, drive and stop a local cluster (docs/INTERNALS.md, "The cluster client").

`up()` starts the daemon detached, waits for its API, applies manifests and waits until
everything is ready; on any failure it tears the half-started cluster down and raises
ClusterError carrying the daemon's last log line. `ClusterClient(name)` attaches to a running one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Iterable

import httpx

from reference_impl import api

from . import naming, teardown, volumes
from .errors import ClusterError

__all__ = ["up", "ClusterClient", "ClusterError", "check_prerequisites", "down_all",
           "run_scoped_name", "sweep_abandoned", "keep"]

run_scoped_name = naming.run_scoped_name

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check_prerequisites() -> None:
    """ClusterError in one sentence when this machine cannot host a reference cluster."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not running as root")
    if not os.path.exists("/proc/self/ns/net"):
        missing.append("no network namespaces in this kernel")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK) \
                and not os.access(f"/sbin/{tool}", os.X_OK):
            missing.append(f"`{tool}` not installed ({'iproute2' if tool == 'ip' else 'nftables'})")
    if missing:
        raise ClusterError("the reference cluster needs root and Linux network namespaces ("
                           + "; ".join(missing) + "); run as root, or use --target kubernetes "
                           "against a real cluster")


def _objects(paths_or_objects) -> list[dict]:
    """Manifests (files/dirs, validated with file:document:field errors) or ready objects."""
    if isinstance(paths_or_objects, (str, os.PathLike, dict)):
        paths_or_objects = [paths_or_objects]
    items = list(paths_or_objects)
    paths = [os.fspath(p) for p in items if isinstance(p, (str, os.PathLike))]
    objects = [o for o in items if isinstance(o, dict)]
    if len(paths) + len(objects) != len(items):
        raise ClusterError("apply/delete takes manifest paths or Kubernetes-shaped dicts")
    loaded = api.load_files(paths) if paths else []
    return loaded + [api.validate(o, "<object>", i + 1) for i, o in enumerate(objects)]


def _last_log_line(name: str) -> str:
    try:
        with open(naming.daemon_log(name), errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no daemon log"
    for line in reversed(lines):
        if " ERROR " in line or "Error" in line:
            return line.split(" ERROR ", 1)[-1]
    return lines[-1] if lines else "the daemon wrote nothing"


class ClusterClient:
    """A running cluster, reached through its store API on a Unix socket."""

    def __init__(self, name: str = naming.DEFAULT_NAME, *, _wait: float = 0.0):
        self.name = naming.check_name(name)
        self.sock = naming.api_sock(name)
        self._http = httpx.Client(transport=httpx.HTTPTransport(uds=self.sock),
                                  base_url="http://cluster", timeout=30)
        deadline = time.monotonic() + _wait
        while True:
            try:
                self._request("GET", "/healthz", timeout=2)
                return
            except ClusterError:
                if time.monotonic() >= deadline:
                    self._http.close()
                    raise ClusterError(f"no cluster named {self.name!r} is running; start one "
                                       f"with `ambient-conformance cluster up --name {self.name}`")
                time.sleep(0.05)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- HTTP -----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, json=None, params=None, timeout=30):
        try:
            response = self._http.request(method, path, json=json, params=params, timeout=timeout)
        except (httpx.TransportError, FileNotFoundError, ConnectionError) as exc:
            raise ClusterError(f"cluster {self.name!r} does not answer on {self.sock} ({exc}); "
                               f"check `ambient-conformance cluster up --name {self.name}`") from None
        if response.status_code == 422:
            raise api.ManifestError(response.json().get("error", response.text))
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ClusterError(message)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # -- the API --------------------------------------------------------------------------------
    def apply(self, paths_or_objects) -> list[dict]:
        return self._request("POST", "/apply", json={"objects": _objects(paths_or_objects)})["results"]

    def delete(self, paths_or_objects) -> list[dict]:
        return self._request("POST", "/delete", json={"objects": _objects(paths_or_objects)})["results"]

    def list(self, kind: str | None = None, namespace: str | None = None,
             selector: dict | str | None = None) -> list[dict]:
        params = {}
        if kind:
            params["kind"] = kind
        if namespace:
            params["namespace"] = namespace
        if selector:
            params["selector"] = selector if isinstance(selector, str) else \
                ",".join(f"{k}={v}" for k, v in selector.items())
        return self._request("GET", "/objects", params=params)["items"]

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        for obj in self.list(kind, namespace or None):
            if obj["metadata"]["name"] == name and \
                    (obj["metadata"].get("namespace") or "") == (namespace or ""):
                return obj
        return None

    def not_ready(self) -> list[str]:
        """What keeps the cluster from being ready, one phrase per item (empty when ready)."""
        problems = []
        for pod in self.list("Pod"):
            meta, status = pod["metadata"], pod.get("status") or {}
            ident = f"pod {meta['namespace']}/{meta['name']}"
            if "deletionTimestamp" in meta or status.get("phase") == "Succeeded":
                continue
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or [])
            if not ready:
                detail = status.get("phase", "Pending")
                for cs in status.get("containerStatuses") or []:
                    waiting = (cs.get("state") or {}).get("waiting")
                    if waiting and waiting.get("message"):
                        detail = waiting["message"]
                for cond in status.get("conditions") or []:
                    if cond.get("status") == "False" and cond.get("message"):
                        detail = cond["message"]
                problems.append(f"{ident} is not ready ({detail})")
        for deploy in self.list("Deployment"):
            meta = deploy["metadata"]
            want = (deploy.get("spec") or {}).get("replicas", 1)
            have = (deploy.get("status") or {}).get("readyReplicas", 0)
            if have < want:
                problems.append(f"deployment {meta['namespace']}/{meta['name']} has {have}/{want} "
                                "ready")
        for ds in self.list("DaemonSet"):
            meta, status = ds["metadata"], ds.get("status") or {}
            if status.get("numberReady", 0) < status.get("desiredNumberScheduled", 1):
                problems.append(f"daemonset {meta['namespace']}/{meta['name']} has "
                                f"{status.get('numberReady', 0)}/"
                                f"{status.get('desiredNumberScheduled', '?')} ready")
        return problems

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            problems = self.not_ready()
            if not problems:
                return
            if time.monotonic() >= deadline:
                raise ClusterError(f"cluster {self.name!r} not ready after {timeout:g}s: "
                                   + "; ".join(problems[:5]))
            time.sleep(0.05)

    def pod_netns(self, namespace: str, pod: str) -> str:
        obj = self.get("Pod", namespace, pod)
        if obj is None:
            raise ClusterError(f"pod {namespace}/{pod} not found; list pods with "
                               f"`ambient-conformance cluster get pods -n {namespace}`")
        netns = (obj["metadata"].get("annotations") or {}).get("ambient-conformance.io/netns")
        node = (obj.get("spec") or {}).get("nodeName")
        if not netns and naming.is_virtual_node(node):
            raise ClusterError(f"pod {namespace}/{pod} runs on virtual node {node}: it is simulated "
                               "and has no network namespace or process")
        if not netns:
            raise ClusterError(f"pod {namespace}/{pod} is not running yet (no network namespace)")
        return netns

    def node_netns(self, node: str) -> str:
        obj = self.get("Node", None, node)
        if obj is None:
            raise ClusterError(f"node {node!r} not found in cluster {self.name!r}")
        netns = (obj["metadata"].get("annotations") or {}).get("ambient-conformance.io/netns")
        if not netns:
            raise ClusterError(f"node {node!r} is a virtual node: it has no network namespace")
        return netns

    def exec(self, namespace: str, pod: str, argv: list[str], timeout: float = 30,
             capture: bool = True) -> subprocess.CompletedProcess:
        netns = self.pod_netns(namespace, pod)
        prefix = volumes.exec_prefix(self.get("Pod", namespace, pod) or {}, None, netns)
        try:
            return subprocess.run([*prefix, *argv], capture_output=capture,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"exec in pod {namespace}/{pod} took longer than {timeout:g}s: "
                               f"{' '.join(argv)}") from None

    def delete_pod(self, namespace: str, name: str, grace_period: int | None = None) -> None:
        self._request("POST", "/pods/delete", json={"namespace": namespace, "name": name,
                                                    "gracePeriodSeconds": grace_period})

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        self._request("POST", "/scale", json={"kind": "Deployment", "namespace": namespace,
                                              "name": deployment, "replicas": replicas})

    def logs(self, namespace: str, pod: str, container: str | None = None,
             tail: int | None = None) -> str:
        params = {"namespace": namespace, "pod": pod}
        if container:
            params["container"] = container
        if tail is not None:
            params["tail"] = str(tail)
        return self._request("GET", "/logs", params=params)

    def down(self, timeout: float = 20) -> None:
        _down(self.name, self, timeout)


def _daemon_alive(name: str) -> bool:
    state = teardown.read_state(name) or {}
    daemon = state.get("daemon")
    return bool(daemon) and teardown.alive(daemon[0], daemon[1])


def _down(name: str, client: ClusterClient | None, timeout: float) -> None:
    state = teardown.read_state(name) or {}
    if client is not None:
        try:
            client._request("POST", "/shutdown", timeout=5)
        except ClusterError:
            pass
        client.close()
        deadline = time.monotonic() + timeout
        daemon = state.get("daemon")
        while daemon and teardown.alive(*daemon) and time.monotonic() < deadline:
            time.sleep(0.05)
    teardown.remove_cluster(name, kill_daemon=True)


def down(name: str = naming.DEFAULT_NAME, timeout: float = 20) -> None:
    """Stop cluster `name` (running or left behind by a crash); quiet when there is none."""
    naming.check_name(name)
    try:
        client = ClusterClient(name)
    except ClusterError:
        client = None
    _down(name, client, timeout)


def down_all(timeout: float = 20) -> list[str]:
    names = teardown.known_clusters()
    for name in names:
        down(name, timeout)
    return names


def sweep_abandoned(timeout: float = 20) -> list[str]:
    """Down the run-scoped clusters (naming.run_scoped_name) whose owning run has ended without
    stopping them (killed, crashed); a cluster marked with keep() stays. Returns the names."""
    swept = []
    for name in teardown.known_clusters():
        owner = naming.run_owner_of(name)
        if owner is None or owner == naming.run_owner() or teardown.alive(owner, None):
            continue
        if os.path.exists(naming.kept_mark(name)):
            continue
        down(name, timeout)
        swept.append(name)
    return swept


def keep(name: str) -> None:
    """Mark a run-scoped cluster as deliberately left running (--keep-cluster): not swept."""
    os.makedirs(naming.run_dir(name), exist_ok=True)
    open(naming.kept_mark(name), "w").close()


#: issue 16: the waypoint implementations `up(waypoint=...)` may choose as the cluster's default
#: (istiod reads this annotation of the root namespace: controlplane.provision.IMPLEMENTATION_ANNOTATION)
WAYPOINT_IMPLEMENTATIONS = ("python", "envoy")
WAYPOINT_ANNOTATION = "ambient-conformance.io/waypoint-implementation"


def waypoint_default(implementation: str) -> dict:
    """The root namespace annotated with the cluster's default waypoint implementation."""
    if implementation not in WAYPOINT_IMPLEMENTATIONS:
        raise ClusterError(f"--waypoint {implementation}: choose one of {', '.join(WAYPOINT_IMPLEMENTATIONS)}")
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "istio-system", "annotations": {WAYPOINT_ANNOTATION: implementation}}}


def up(name: str = naming.DEFAULT_NAME, nodes: int = 2, manifests: Iterable = (),
       timeout: float = 60, virtual_nodes: int = 0, waypoint: str | None = None) -> ClusterClient:
    """Start cluster `name` with `nodes` nodes (and `virtual_nodes` simulated ones, see
    virtual.py), apply `manifests`, wait until all is ready. `waypoint` ("python", "envoy")
    chooses the implementation of the waypoints istiod provisions (default: python)."""
    if waypoint is not None:
        manifests = [waypoint_default(waypoint), *manifests]
    naming.check_name(name)
    check_prerequisites()
    if not 1 <= nodes <= 200:
        raise ClusterError(f"--nodes {nodes}: choose between 1 and 200 nodes")
    naming.check_virtual_nodes(virtual_nodes)
    objects = _objects(list(manifests)) if manifests else []  # bad input: nothing starts
    try:
        ClusterClient(name).close()
        running = True
    except ClusterError:
        running = _daemon_alive(name)
    if running:
        raise ClusterError(f"a cluster named {name!r} is already running; stop it with "
                           f"`ambient-conformance cluster down --name {name}` first (or pick "
                           "another --name)")
    teardown.remove_cluster(name, kill_daemon=True)  # leftovers of a crashed daemon
    os.makedirs(naming.run_dir(name), exist_ok=True)
    deadline = time.monotonic() + timeout
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    with open(naming.daemon_log(name), "ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "reference_impl.cluster.daemon", "--name", name,
             "--nodes", str(nodes), "--virtual-nodes", str(virtual_nodes)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            cwd=REPO_ROOT, env=env, start_new_session=True)
    client = None
    try:
        while client is None:
            if daemon.poll() is not None:
                raise ClusterError(f"cluster {name!r} failed to start: {_last_log_line(name)}")
            if time.monotonic() >= deadline:
                raise ClusterError(f"cluster {name!r} did not answer within {timeout:g}s: "
                                   f"{_last_log_line(name)}")
            try:
                client = ClusterClient(name)
            except ClusterError:
                time.sleep(0.02)
        if objects:
            client.apply(objects)
        client.wait_ready(max(1.0, deadline - time.monotonic()))
        return client
    except BaseException as exc:
        message = str(exc)
        if client is not None:
            client.close()
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait()
        teardown.remove_cluster(name, kill_daemon=True)
        if isinstance(exc, (ClusterError, api.ManifestError)):
            raise type(exc)(message) from None
        raise
