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
        """Remove a namespace and everything in it (returns once deletion has been requested)."""

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
                      timeout: float = curl.DEFAULT_MAX_TIME) -> list[Response]:
        if count < 1:
            raise ValueError("call needs count >= 1")
        argv = curl.curl_argv([url] * count, method, headers, max_time=timeout)
        result = self.exec(from_pod, argv, timeout=count * (timeout + 1) + 10)
        responses = curl.parse_output(result.stdout, count)
        if all(r.outcome == curl.ERROR and r.exit_code == -1 for r in responses):
            raise TargetError(f"curl in pod {from_pod.namespace}/{from_pod.name} reported nothing "
                              f"(exit {result.returncode}): {result.stderr.strip()[:300]}")
        return responses

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

    def capture(self, node: str, bpf_filter: str) -> Capture:
        """Start a packet capture on `node`'s network; NotSupported when the target cannot."""
        raise NotSupported(f"the {self.name} target cannot capture packets")


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
