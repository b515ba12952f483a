"""The Target: the vocabulary of the scenario that every conformance test speaks.

A test never talks to an implementation directly: it applies manifests, waits for readiness,
makes requests from a client pod and reads back outcomes. A third party certifies its mesh by
running the suite against a cluster (`kubernetes` target) or by adding a Target subclass.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable

from conformance import curl
from conformance import workloads
from conformance.curl import Outcome, Response
from conformance.manifests import Manifests


class NotSupported(Exception):
    """The target cannot do this (e.g. packet capture); tests needing it are NOT_SUPPORTED."""


class TargetError(RuntimeError):
    """Something the target could not do; the message is one sentence saying what and why."""


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str


@dataclass(frozen=True)
class Pod(PodRef):
    node: str = ""
    ip: str = ""
    uid: str = ""
    labels: dict = field(default_factory=dict, hash=False, compare=False)
    containers: tuple[str, ...] = ()
    restarts: int = 0
    ready: bool = False
    phase: str = ""


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class CertificateAnswer:
    """What the mesh CA answered a certificate request: the signed chain (PEM, leaf first) and
    the leaf's URI SANs, or `refusal`, the CA's own words."""
    signed: bool
    chain: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    refusal: str = ""


@dataclass(frozen=True)
class Usage:
    """A pod's CPU time so far (user + system, every container) and its resident memory now."""
    cpu_seconds: float
    rss_bytes: int


@dataclass(frozen=True)
class Info:
    implementation: str
    version: str


class Capture(ABC):
    """A running packet capture; `stop()` ends it and returns the pcap bytes."""

    @abstractmethod
    def stop(self) -> bytes: ...


class Target(ABC):
    """What the conformance suite can ask of a mesh implementation and its cluster."""

    name = "abstract"
    #: the features this target supports, by name (see conformance/features.py); declared in one
    #: place per target so the controller can gate tests without starting anything.
    SUPPORTED_FEATURES: frozenset[str] = frozenset()
    MESH_NAMESPACE = "istio-system"
    ZTUNNEL_SELECTOR = {"app": "ztunnel"}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Bring up or connect to the cluster; called once per session (per xdist worker)."""

    def stop(self) -> None:
        """Release what start() created, unless the user asked to keep it."""

    @classmethod
    def supported_features(cls) -> frozenset[str]:
        return cls.SUPPORTED_FEATURES

    @abstractmethod
    def info(self) -> Info: ...

    # -- objects -----------------------------------------------------------------------------
    @abstractmethod
    def apply(self, manifests: Manifests) -> None: ...

    @abstractmethod
    def delete(self, manifests: Manifests) -> None: ...

    @abstractmethod
    def delete_namespace(self, namespace: str) -> None:
        """Remove a namespace and everything in it; returns once it is gone, so the next run can
        create it again (a real API server keeps it Terminating while it finalizes)."""

    @abstractmethod
    def get(self, kind: str, namespace: str | None, name: str) -> dict | None: ...

    @abstractmethod
    def wait_ready(self, namespace: str | None = None, timeout: float = 90) -> None:
        """Return once every Deployment in `namespace` is available and its pods Ready."""

    @abstractmethod
    def label_namespace(self, namespace: str, labels: dict[str, str | None]) -> None:
        """Set labels on a namespace; a value of None removes that label."""

    # -- pods and nodes ----------------------------------------------------------------------
    @abstractmethod
    def pods(self, namespace: str, selector: dict[str, str] | None = None) -> list[Pod]:
        """Pods that exist and are not being deleted, sorted by name."""

    @abstractmethod
    def nodes(self) -> list[str]:
        """Names of nodes that run workloads, sorted."""

    @abstractmethod
    def exec(self, pod: PodRef, argv: list[str], timeout: float = 30) -> ExecResult: ...

    @abstractmethod
    def delete_pod(self, pod: PodRef, grace_period: int | None = None) -> None: ...

    @abstractmethod
    def scale(self, namespace: str, deployment: str, replicas: int) -> None: ...

    def pod_node(self, pod: PodRef) -> str:
        for p in self.pods(pod.namespace):
            if p.name == pod.name:
                return p.node
        raise TargetError(f"pod {pod.namespace}/{pod.name} does not exist")

    def restart_counts(self, namespace: str) -> dict[str, int]:
        return {p.name: p.restarts for p in self.pods(namespace)}

    # -- traffic -----------------------------------------------------------------------------
    def call(self, from_pod: PodRef, url: str, method: str = "GET", headers: dict[str, str] | None = None,
             count: int = 1, timeout: float = curl.DEFAULT_MAX_TIME) -> list[Outcome]:
        """Outcome of each of `count` requests, made by ONE curl process in `from_pod`."""
        return [r.outcome for r in self.call_detailed(from_pod, url, method, headers, count, timeout)]

    def call_detailed(self, from_pod: PodRef, url: str, method: str = "GET",
                      headers: dict[str, str] | None = None, count: int = 1,
                      timeout: float = curl.DEFAULT_MAX_TIME, body: bool = False,
                      head: bool = False, options: tuple[str, ...] = ()) -> list[Response]:
        """Each request's Response; with `body`, each carries the response body too; with `head`,
        the status line and response headers ahead of it (curl.split_head parts them); `options`:
        more curl options (conformance.curl.curl_argv)."""
        if count < 1:
            raise ValueError("call needs count >= 1")
        argv = curl.curl_argv([url] * count, method, headers, max_time=timeout, body=body or head, head=head,
                              options=options)
        result = self.exec(from_pod, argv, timeout=count * (timeout + 1) + 10)
        responses = curl.parse_output(result.stdout, count, body=body or head)
        if all(r.outcome == curl.ERROR and r.exit_code == -1 for r in responses):
            raise TargetError(f"curl in pod {from_pod.namespace}/{from_pod.name} reported nothing "
                              f"(exit {result.returncode}): {result.stderr.strip()[:300]}")
        return responses

    # -- traffic: many different requests in one exec (the L7 tables, issue 9) ------------------
    def call_batch(self, from_pod: PodRef, requests: list[curl.Request],
                   timeout: float = curl.DEFAULT_MAX_TIME) -> list[curl.Answer]:
        """Each request's Answer (outcome, body, response headers), made by ONE curl process."""
        argv = curl.batch_argv(requests, max_time=timeout)
        result = self.exec(from_pod, argv, timeout=len(requests) * (timeout + 1) + 10)
        answers = curl.parse_batch_output(result.stdout, len(requests))
        if all(a.outcome == curl.ERROR and a.response.exit_code == -1 for a in answers):
            raise TargetError(f"curl in pod {from_pod.namespace}/{from_pod.name} reported nothing "
                              f"(exit {result.returncode}): {result.stderr.strip()[:300]}")
        return answers

    # -- the mesh ----------------------------------------------------------------------------
    def ztunnel_pod(self, node: str) -> Pod:
        for p in self.pods(self.MESH_NAMESPACE, self.ZTUNNEL_SELECTOR):
            if p.node == node:
                return p
        raise TargetError(f"no ztunnel pod (labels {self.ZTUNNEL_SELECTOR}) runs on node {node} "
                          f"in namespace {self.MESH_NAMESPACE}")

    def kill_ztunnel(self, node: str) -> None:
        self.delete_pod(self.ztunnel_pod(node), grace_period=0)

    @abstractmethod
    def metrics(self, node: str) -> str:
        """The Prometheus text of the ztunnel on `node`."""

    # -- sidecar interop (issue 11) ----------------------------------------------------------
    def sidecar_metrics(self, pod: PodRef) -> str:
        """The Prometheus text of `pod`'s injected sidecar (Envoy's 15090 /stats/prometheus)."""
        raise NotSupported(f"the {self.name} target cannot read sidecar metrics")

    def capture(self, node: str, bpf_filter: str) -> Capture:
        """Start a packet capture on `node`'s network; NotSupported when the target cannot."""
        raise NotSupported(f"the {self.name} target cannot capture packets")

    # -- adversarial probes (issue 10) -------------------------------------------------------
    #: a stock image with Python 3; the probe scripts are mounted from a ConfigMap
    PROBE_IMAGE = workloads.PYTHON_IMAGE
    PROBE_DIR = "/ac-probes"

    def probe_manifests(self, namespace: str, name: str, node: str | None,
                        scripts: dict[str, str]) -> list[dict]:
        """A pod of the suite's own (uncaptured when its namespace is) that can run `scripts`
        (file name -> Python source) with `run_probe`: plain Kubernetes, a ConfigMap mounted
        into a stock Python image."""
        labels = {"app": name}
        config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": f"{name}-probes", "namespace": namespace}, "data": dict(scripts)}
        pod_spec = {"serviceAccountName": name, "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "probe", "image": self.PROBE_IMAGE,
                                    "command": ["sleep", "infinity"],
                                    "volumeMounts": [{"name": "probes", "mountPath": self.PROBE_DIR}]}],
                    "volumes": [{"name": "probes", "configMap": {"name": f"{name}-probes"}}]}
        if node:
            pod_spec["nodeSelector"] = {"kubernetes.io/hostname": node}
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
                      "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                               "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}
        account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
        return [account, config_map, deployment]

    def run_probe(self, pod: PodRef, script: str, args: list[str], timeout: float = 60) -> ExecResult:
        """Run one of the suite's probe scripts in a pod made from `probe_manifests`."""
        return self.exec(pod, ["python3", f"{self.PROBE_DIR}/{script}", *args], timeout=timeout)

    def mesh_trust_anchors(self) -> str:
        """PEM of the mesh's root certificate(s), to verify what a workload's 15008 presents."""
        raise NotSupported(f"the {self.name} target cannot read the mesh's root certificate")

    def sign_workload_certificate(self, spiffe_id: str, public_key_pem: str, not_before, not_after) -> str:
        """A certificate chain (PEM, leaf first) for `spiffe_id` signed by the MESH's CA, valid
        from `not_before` to `not_after` (either may be in the past): what an attacker holding
        the mesh CA's signature for an identity it chose would present."""
        raise NotSupported(f"the {self.name} target cannot have the mesh CA sign a certificate of the "
                           "suite's choosing (a mesh CA signs only the caller's own identity)")

    def request_certificate_as_node_proxy(self, node: str, spiffe_ids: list[str]) -> list[CertificateAnswer]:
        """Ask the mesh CA, presenting the credentials of `node`'s node proxy (ztunnel) on its own
        authenticated connection, to sign a certificate for each of `spiffe_ids`, in order."""
        raise NotSupported(f"the {self.name} target cannot ask the mesh CA for a certificate with a node "
                           "proxy's own credentials")

    def set_workload_certificate_ttl(self, seconds: int | None) -> None:
        """Make the mesh issue workload certificates that live `seconds` (None: the mesh's default
        again), and return once the control plane issuing them is Ready; certificates requested
        afterwards (e.g. for pods created afterwards) have the new lifetime."""
        raise NotSupported(f"the {self.name} target cannot change the mesh's workload certificate TTL")

    def stop_control_plane(self) -> None:
        """Scale the control plane (istiod) to zero and wait until none of its pods runs."""
        self.scale(self.MESH_NAMESPACE, "istiod", 0)
        wait_until(lambda: not self.pods(self.MESH_NAMESPACE, {"app": "istiod"}), 60, 0.3,
                   "the istiod pods to stop")

    def start_control_plane(self) -> None:
        """Scale the control plane back to one replica and wait until it is Ready."""
        self.scale(self.MESH_NAMESPACE, "istiod", 1)
        wait_until(lambda: any(p.ready for p in self.pods(self.MESH_NAMESPACE, {"app": "istiod"})), 90, 0.3,
                   "istiod to be Ready again")

    # -- chaos experiments (issue 12) ---------------------------------------------------------
    def run_python(self, pod: PodRef, source: str, args: list[str], timeout: float = 60) -> ExecResult:
        """Run a self-contained Python program, given as its source, in `pod` (whose image has
        python3, e.g. PROBE_IMAGE): the chaos suite's traffic generator runs this way."""
        return self.exec(pod, ["python3", "-c", source, *args], timeout=timeout)

    def partition_nodes(self, a: str, b: str) -> None:
        """Drop every packet between nodes `a` and `b` (both directions) until heal_nodes."""
        raise NotSupported(f"the {self.name} target cannot cut the link between two nodes")

    def heal_nodes(self, a: str, b: str) -> None:
        """Undo partition_nodes(a, b); a no-op when they are not partitioned."""
        raise NotSupported(f"the {self.name} target cannot cut the link between two nodes")


    # -- load tests (issue 13, load/) --------------------------------------------------------
    #: Locust's own image; the pod installs hdrhistogram at start (load/locustfile.py needs it)
    LOCUST_IMAGE = "docker.io/locustio/locust:2.37.0"
    LOAD_DIR = "/ac-load"

    def load_client_manifests(self, namespace: str, name: str, node: str | None,
                              files: dict[str, str], extra_containers: list[dict] = ()) -> list[dict]:
        """A Deployment whose pod can run Locust on `files` (name -> text, the locustfile among
        them) with `locust_argv`: plain Kubernetes, the files in a ConfigMap mounted into Locust's
        image. `extra_containers` join the pod (e.g. the Envoy peer's client)."""
        objects = self.probe_manifests(namespace, name, node, files)
        for o in objects:
            if o["kind"] == "ConfigMap":
                o["metadata"]["name"] = f"{name}-load"
            if o["kind"] == "Deployment":
                spec = o["spec"]["template"]["spec"]
                spec["volumes"] = [{"name": "load", "configMap": {"name": f"{name}-load"}}]
                spec["containers"] = [{
                    "name": "locust", "image": self.LOCUST_IMAGE,
                    "command": ["sh", "-c", "pip install --quiet --user hdrhistogram && exec sleep infinity"],
                    "volumeMounts": [{"name": "load", "mountPath": self.LOAD_DIR}]}, *extra_containers]
                o["spec"]["template"]["metadata"]["annotations"] = {
                    "kubectl.kubernetes.io/default-container": "locust"}
        return objects

    def locust_argv(self, locustfile: str) -> list[str]:
        """The command that runs Locust on `locustfile` (a name given to load_client_manifests)."""
        return ["locust", "-f", f"{self.LOAD_DIR}/{locustfile}"]

    def pod_usage(self, pods: list[PodRef], container: str | None = None) -> dict[PodRef, "Usage"]:
        """CPU seconds used so far and resident memory now of each pod's containers (only the
        container named `container`, if given)."""
        raise NotSupported(f"the {self.name} target cannot read a pod's CPU time and memory")

    # -- waypoints (issue 9: provisioning, binding, availability) ----------------------------
    #: the label Gateway API implementations put on a Gateway's proxy pods (Istio's waypoints too)
    WAYPOINT_POD_LABEL = "gateway.networking.k8s.io/gateway-name"

    def waypoint_pods(self, namespace: str, gateway: str) -> list[Pod]:
        """The proxy pods serving waypoint Gateway `namespace/gateway` (not those being deleted)."""
        return self.pods(namespace, {self.WAYPOINT_POD_LABEL: gateway})

    def waypoint_choices(self) -> dict[str, dict[str, str]]:
        """The waypoint implementations a Gateway may ask for on this target: name -> the Gateway
        annotations that choose it. A real mesh has one waypoint (Istio's is Envoy): none."""
        return {}

    def scale_waypoint(self, namespace: str, gateway: str, replicas: int) -> None:
        """Set the replica count of a waypoint's Deployment (named after its Gateway, as Istio's is)."""
        self.scale(namespace, gateway, replicas)

    def kill_waypoint_pod(self, pod: PodRef) -> None:
        """Kill one waypoint proxy pod at once (grace period 0); its Deployment replaces it."""
        self.delete_pod(pod, grace_period=0)

    def label(self, kind: str, namespace: str, name: str, labels: dict[str, str | None]) -> None:
        """Set labels on a namespaced object (a Service, a Pod); a value of None removes that label."""
        raise NotSupported(f"the {self.name} target cannot label a {kind}")


def wait_until(predicate, timeout: float, interval: float, what: str) -> Any:
    """Poll `predicate` until it returns something truthy; TargetError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TargetError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def selector_matches(labels: dict, selector: dict | None) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def as_list(x: Iterable | None) -> list:
    return list(x or [])
