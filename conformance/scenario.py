"""One test's world: fresh namespaces with a unique suffix, workloads in them, and the
observations and assertions the AMBIENT tests share. Namespaces are removed afterwards, so
tests are independent and safe to run in parallel.

Conformance tests speak only this vocabulary: they never call the Target themselves."""
from __future__ import annotations

import secrets

from conformance import convergence, curl
from conformance import workloads as w
from conformance.convergence import eventually
from conformance.manifests import Manifests
from conformance.targets.base import Capture, Pod, PodRef, Target, TargetError

#: what an L4 deny looks like from the client: a prompt refusal (reset/EOF, or a failed connect
#: when the proxy's reset lands first), never an HTTP answer and never a timeout.
L4_DENIED = curl.L4_REFUSALS
#: where a feature's spec allows the proxy to drop a denied connection silently (a timeout too);
#: only ever judged together with a positive control in the same window (`expect_denied_or_dropped`).
L4_DENIED_OR_DROPPED = curl.L4_REFUSALS | {curl.TIMEOUT}


def allowed(outcome) -> bool:
    return outcome == 200


def denied(outcome) -> bool:
    return outcome in L4_DENIED


def why_not_denied(outcome) -> str | None:
    return curl.STALL_IS_NOT_A_DENY if outcome == curl.TIMEOUT else None


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

    # -- changing what was set up ------------------------------------------------------------
    def delete(self, manifests: Manifests) -> None:
        self.target.delete(manifests)

    def label_namespace(self, namespace: str, labels: dict[str, str | None]) -> None:
        """Set labels on a namespace; a value of None removes that label."""
        self.target.label_namespace(namespace, labels)

    # -- looking at the cluster --------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        return self.target.get(kind, namespace, name)

    def pods(self, namespace: str, selector: dict[str, str] | None = None) -> list[Pod]:
        return self.target.pods(namespace, selector)

    def nodes(self) -> list[str]:
        return self.target.nodes()

    def node_of(self, pod: PodRef) -> str:
        return self.target.pod_node(pod)

    def spread_nodes(self) -> tuple[str | None, str | None]:
        """(server node, client node): two different nodes, or (None, None) on a single node."""
        nodes = self.nodes()
        return (nodes[0], nodes[1]) if len(nodes) >= 2 else (None, None)

    def metrics(self, node: str) -> str:
        """The Prometheus text of the node proxy on `node`."""
        return self.target.metrics(node)

    def capture(self, node: str, bpf_filter: str) -> Capture:
        """A packet capture on `node` (NotSupported where the target cannot)."""
        return self.target.capture(node, bpf_filter)

    # -- observing ---------------------------------------------------------------------------
    def outcomes(self, client: PodRef, url: str, count: int = convergence.CONSECUTIVE,
                 headers: dict | None = None) -> list:
        return self.target.call(client, url, headers=headers, count=count,
                                timeout=convergence.REQUEST_MAX_SECONDS)

    def responses(self, client: PodRef, url: str, count: int = 1, headers: dict | None = None,
                  timeout: float = convergence.REQUEST_MAX_SECONDS) -> list[curl.Response]:
        """Each request's outcome with its bytes and duration (for long or streamed requests)."""
        return self.target.call_detailed(client, url, headers=headers, count=count, timeout=timeout)

    def converge(self, client: PodRef, url: str, expect, what: str, headers: dict | None = None,
                 timeout: float = convergence.POLICY_CONVERGENCE_SECONDS, why_not=None) -> None:
        """N consecutive outcomes satisfying `expect` within the published bound."""
        eventually(lambda: self.outcomes(client, url, headers=headers), expect,
                   what=f"{what} ({client.namespace}/{client.name} -> {url})", timeout=timeout,
                   why_not=why_not)

    def expect_allowed(self, client: PodRef, url: str, what: str = "allowed", **kw) -> None:
        self.converge(client, url, allowed, what + ": expected HTTP 200", **kw)

    def expect_denied(self, client: PodRef, url: str, what: str = "denied", **kw) -> None:
        """N consecutive prompt refusals; a timeout breaks the run and the failure says why."""
        self.converge(client, url, denied, what + ": expected an L4 deny (reset/EOF or refused connect)",
                      why_not=why_not_denied, **kw)

    def expect_denied_or_dropped(self, client: PodRef, url: str, control: PodRef, what: str,
                                 timeout: float = convergence.POLICY_CONVERGENCE_SECONDS) -> None:
        """For a feature whose spec lets the proxy drop a denied connection silently: `client`
        refused or timed out while `control` gets HTTP 200 from the same URL in the same window,
        so a stalled mesh cannot pass for one that denies."""
        def probe():
            return list(zip(self.outcomes(client, url), self.outcomes(control, url)))
        eventually(probe, lambda pair: pair[0] in L4_DENIED_OR_DROPPED and allowed(pair[1]),
                   what=f"{what} ({client.namespace}/{client.name} -> {url}, control "
                        f"{control.namespace}/{control.name}): expected (a deny or a drop, HTTP 200)",
                   timeout=timeout)
