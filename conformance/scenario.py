"""One test's world: fresh namespaces with a unique suffix, workloads in them, and the
observations and assertions the AMBIENT tests share. Namespaces are removed afterwards, so
tests are independent and safe to run in parallel."""
from __future__ import annotations

import secrets

from conformance import convergence, curl
from conformance import workloads as w
from conformance.convergence import eventually
from conformance.targets.base import Pod, PodRef, Target, TargetError

#: what an L4 deny looks like from the client: reset/EOF or a timeout, never an HTTP answer.
#: A node proxy accepts the captured connection and resets it once authorization fails; on a
#: busy machine that reset can land before the client has seen its own connect complete, and
#: curl then reports a failed connect (exit 7), so `refused` is a deny too.
L4_DENIED = frozenset({curl.RESET, curl.TIMEOUT, curl.REFUSED})


def allowed(outcome) -> bool:
    return outcome == 200


def denied(outcome) -> bool:
    return outcome in L4_DENIED


class Scenario:
    def __init__(self, target: Target, test_name: str):
        self.target = target
        self.suffix = secrets.token_hex(3)
        self.namespaces: list[str] = []

    # -- setting up --------------------------------------------------------------------------
    def namespace(self, role: str, ambient: bool = True, labels: dict | None = None) -> str:
        name = f"cf-{role}-{self.suffix}"
        self.target.apply([w.namespace(name, ambient, labels)])
        self.namespaces.append(name)
        return name

    def adopt_namespace(self, name: str) -> None:
        """Clean up a namespace this test did not name itself (e.g. the seed's fixed ones)."""
        if name not in self.namespaces:
            self.namespaces.append(name)

    def apply(self, manifests) -> None:
        self.target.apply(manifests)

    def deploy(self, manifests, *namespaces: str) -> None:
        self.target.apply(manifests)
        self.ready(*namespaces)

    def ready(self, *namespaces: str) -> None:
        for ns in namespaces or self.namespaces:
            self.target.wait_ready(ns, timeout=convergence.READY_SECONDS)

    def pod(self, namespace: str, app: str) -> Pod:
        pods = self.target.pods(namespace, {"app": app})
        if not pods:
            raise TargetError(f"no pod with label app={app} in namespace {namespace}")
        return pods[0]

    def cleanup(self) -> None:
        for ns in reversed(self.namespaces):
            try:
                self.target.delete_namespace(ns)
            except TargetError:
                pass  # best effort: a later test uses other names, and the cluster goes at the end

    # -- observing ---------------------------------------------------------------------------
    def outcomes(self, client: PodRef, url: str, count: int = convergence.CONSECUTIVE,
                 headers: dict | None = None) -> list:
        return self.target.call(client, url, headers=headers, count=count,
                                timeout=convergence.REQUEST_MAX_SECONDS)

    def converge(self, client: PodRef, url: str, expect, what: str, headers: dict | None = None,
                 timeout: float = convergence.POLICY_CONVERGENCE_SECONDS) -> None:
        """N consecutive outcomes satisfying `expect` within the published bound."""
        eventually(lambda: self.outcomes(client, url, headers=headers), expect,
                   what=f"{what} ({client.namespace}/{client.name} -> {url})", timeout=timeout)

    def expect_allowed(self, client: PodRef, url: str, what: str = "allowed", **kw) -> None:
        self.converge(client, url, allowed, what + ": expected HTTP 200", **kw)

    def expect_denied(self, client: PodRef, url: str, what: str = "denied", **kw) -> None:
        self.converge(client, url, denied, what + ": expected an L4 deny (reset/EOF/timeout)", **kw)
