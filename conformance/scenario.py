"""One test's world: fresh namespaces with a unique suffix, workloads in them, and the
observations and assertions the AMBIENT tests share. Namespaces are removed afterwards, so
tests are independent and safe to run in parallel.

Conformance tests speak only this vocabulary: they never call the Target themselves."""
from __future__ import annotations

import secrets
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from conformance import convergence, curl
from conformance import workloads as w
from conformance.convergence import eventually
from conformance.manifests import Manifests
from conformance.targets.base import Capture, CertificateAnswer, ExecResult, Pod, PodRef, Target, TargetError
from conformance.targets.base import wait_until

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


class HeldRequest:
    """One request running in the background (a long or streamed one), to be judged once it ends."""

    def __init__(self, run):
        self.started = time.monotonic()
        self.ended: float | None = None
        self._response: curl.Response | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(run,), daemon=True)
        self._thread.start()

    def _run(self, run) -> None:
        try:
            self._response = run()
        except BaseException as e:  # handed to the test in result()
            self._error = e
        finally:
            self.ended = time.monotonic()

    def result(self, timeout: float) -> curl.Response:
        """The request's Response, waiting up to `timeout` seconds for it to end."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the held request was still running {timeout:g}s later")
        if self._error is not None:
            raise self._error
        return self._response


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

    # -- the mesh itself ---------------------------------------------------------------------
    @property
    def mesh_namespace(self) -> str:
        """The mesh's root namespace (where a policy without a selector applies mesh-wide)."""
        return self.target.MESH_NAMESPACE

    def stop_control_plane(self) -> None:
        """Scale the control plane to zero and wait until none of its pods runs."""
        self.target.stop_control_plane()

    def start_control_plane(self) -> None:
        """Bring the control plane back and wait until it is Ready."""
        self.target.start_control_plane()

    def mesh_trust_anchors(self) -> str:
        """PEM of the mesh's root certificate(s) (NotSupported where the target cannot read them)."""
        return self.target.mesh_trust_anchors()

    def sign_workload_certificate(self, spiffe_id: str, public_key_pem: str, not_before, not_after) -> str:
        """A chain (PEM, leaf first) for `spiffe_id` signed by the MESH's CA (NotSupported on most targets)."""
        return self.target.sign_workload_certificate(spiffe_id, public_key_pem, not_before, not_after)

    def request_certificate_as_node_proxy(self, node: str, spiffe_ids: list[str]) -> list[CertificateAnswer]:
        """The mesh CA's answer to each request, made with `node`'s node proxy's own credentials
        (NotSupported where the target cannot present them)."""
        return self.target.request_certificate_as_node_proxy(node, spiffe_ids)

    def set_workload_certificate_ttl(self, seconds: int | None) -> None:
        """Workload certificates requested from now on live `seconds`; None restores the mesh's default."""
        self.target.set_workload_certificate_ttl(seconds)

    def node_proxy(self, node: str) -> Pod:
        """The node proxy (ztunnel) pod that serves `node` now (not one being deleted)."""
        return self.target.ztunnel_pod(node)

    def restart_node_proxy(self, node: str, grace_period: int) -> Pod:
        """Delete `node`'s node proxy pod gracefully (SIGTERM, then `grace_period` seconds before a
        kill), as a rollout or an upgrade does; returns the pod deleted. Its DaemonSet replaces it."""
        old = self.node_proxy(node)
        self.target.delete_pod(old, grace_period=grace_period)
        return old

    def crash_node_proxy(self, node: str) -> Pod:
        """Kill `node`'s node proxy pod at once (grace period 0); returns the pod killed."""
        old = self.node_proxy(node)
        self.target.kill_ztunnel(node)
        return old

    def node_proxy_gone(self, old: Pod) -> bool:
        """True once the node proxy pod `old` no longer exists at all (its drain is over)."""
        return self.target.get("Pod", old.namespace, old.name) is None

    def replacement_node_proxy(self, node: str, old: Pod, timeout: float = convergence.READY_SECONDS) -> Pod:
        """Wait until a node proxy pod other than `old` serves `node` and is Ready; return it."""
        def ready_replacement():
            pods = [p for p in self.target.pods(self.target.MESH_NAMESPACE, self.target.ZTUNNEL_SELECTOR)
                    if p.node == node and p.uid != old.uid and p.ready]
            return pods[0] if pods else None
        return wait_until(ready_replacement, timeout, 0.2, f"a Ready node proxy to replace {old.name} on {node}")

    def connections_opened(self, node: str, source_principal: str) -> float:
        """`istio_tcp_connections_opened_total` as `node`'s node proxy reports it, as the
        destination, for connections from `source_principal` (Istio's standard metric)."""
        want = source_principal.removeprefix("spiffe://")
        return sum(sample.value for family in text_string_to_metric_families(self.metrics(node))
                   for sample in family.samples
                   if sample.name == "istio_tcp_connections_opened_total"
                   and sample.labels.get("reporter") == "destination"
                   and sample.labels.get("source_principal", "").removeprefix("spiffe://") == want)

    # -- sidecar interop (issue 11) ----------------------------------------------------------
    def sidecar_requests(self, pod: PodRef, source_principal: str | None, mtls: bool) -> float:
        """`istio_requests_total` as `pod`'s sidecar reports it, as the destination, for requests
        from `source_principal` (None: plaintext, `unknown`) over mutual TLS or not."""
        want = source_principal.removeprefix("spiffe://") if source_principal else "unknown"
        policy = "mutual_tls" if mtls else "none"
        return sum(sample.value for family in text_string_to_metric_families(self.target.sidecar_metrics(pod))
                   for sample in family.samples
                   if sample.name == "istio_requests_total"
                   and sample.labels.get("reporter") == "destination"
                   and sample.labels.get("connection_security_policy") == policy
                   and sample.labels.get("source_principal", "").removeprefix("spiffe://") == want)

    def hold(self, client: PodRef, url: str, timeout: float, source_principal: str, server_node: str) -> HeldRequest:
        """Start one request from `client` (whose identity is `source_principal`) in the background,
        e.g. a stream that lasts seconds, and return once `server_node`'s node proxy reports its
        connection opened: what a test does next lands on an established connection, not on one
        still being made."""
        def run():
            [response] = self.responses(client, url, timeout=timeout)
            return response
        opened_before = self.connections_opened(server_node, source_principal)
        held = HeldRequest(run)
        wait_until(lambda: self.connections_opened(server_node, source_principal) > opened_before,
                   timeout=10, interval=0.1, what=f"the connection of {client.name}'s held request to be opened "
                                                  f"at the destination node {server_node}")
        return held

    # -- pods of the suite's own (conformance/probes) ----------------------------------------
    def probe_manifests(self, namespace: str, name: str, node: str | None,
                        scripts: dict[str, str]) -> list[dict]:
        """Manifests of a pod that can run `scripts` (file name -> Python source) with `run_probe`."""
        return self.target.probe_manifests(namespace, name, node, scripts)

    def run_probe(self, pod: PodRef, script: str, args: list[str], timeout: float = 60) -> ExecResult:
        """Run one of the probe scripts in a pod made from `probe_manifests`; blocks until it ends."""
        return self.target.run_probe(pod, script, args, timeout=timeout)

    # -- observing ---------------------------------------------------------------------------
    def outcomes(self, client: PodRef, url: str, count: int = convergence.CONSECUTIVE,
                 headers: dict | None = None) -> list:
        return self.target.call(client, url, headers=headers, count=count,
                                timeout=convergence.REQUEST_MAX_SECONDS)

    def responses(self, client: PodRef, url: str, count: int = 1, headers: dict | None = None,
                  timeout: float = convergence.REQUEST_MAX_SECONDS, body: bool = False,
                  curl_options: tuple[str, ...] = ()) -> list[curl.Response]:
        """Each request's outcome with its bytes and duration (for long or streamed requests);
        with `body`, each response's body too; `curl_options` e.g. `("--http2-prior-knowledge",)`."""
        return self.target.call_detailed(client, url, headers=headers, count=count, timeout=timeout, body=body,
                                         options=curl_options)

    def send(self, client: PodRef, requests: list[curl.Request],
             timeout: float = convergence.REQUEST_MAX_SECONDS) -> list[curl.Answer]:
        """Many different requests (URL, method, headers each) from `client` in one exec; each
        Answer has the outcome, the body and the response headers."""
        return self.target.call_batch(client, requests, timeout=timeout)

    def bodies(self, client: PodRef, url: str, count: int, fresh_connections: bool = True) -> list[str]:
        """The body of each of `count` requests ('' for a failed one); with `fresh_connections`
        each request opens a connection of its own, so each is load-balanced anew."""
        headers = {"Connection": "close"} if fresh_connections else None
        return [r.body.strip() for r in self.responses(client, url, count, headers=headers, body=True)]

    def converge(self, client: PodRef, url: str, expect, what: str, headers: dict | None = None,
                 timeout: float = convergence.POLICY_CONVERGENCE_SECONDS, why_not=None) -> None:
        """N consecutive outcomes satisfying `expect` within the published bound."""
        eventually(lambda: self.outcomes(client, url, headers=headers), expect,
                   what=f"{what} ({client.namespace}/{client.name} -> {url})", timeout=timeout,
                   why_not=why_not)

    def expect_allowed(self, client: PodRef, url: str, what: str = "allowed", **kw) -> None:
        self.converge(client, url, allowed, what + ": expected HTTP 200", **kw)

    def assert_allowed_now(self, client: PodRef, url: str, what: str, count: int = 3) -> None:
        """Every one of `count` calls made now gets HTTP 200: for "this changes nothing" after a
        barrier (a later change whose effect was seen) showed the configuration is in effect."""
        outcomes = self.outcomes(client, url, count=count)
        assert all(map(allowed, outcomes)), f"{what}: expected HTTP 200 every time, got {outcomes}"

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

    # -- whole HTTP exchanges (the MESH-HTTP tests: status, response headers, echoed request) --
    def exchanges(self, client: PodRef, url: str, count: int = 1, method: str = "GET",
                  headers: dict | None = None,
                  timeout: float = convergence.REQUEST_MAX_SECONDS) -> list[curl.Exchange]:
        """Each of `count` requests (one curl process, one connection kept alive) with its status,
        response headers and body; redirects are not followed."""
        return [curl.split_head(r) for r in self.target.call_detailed(
            client, url, method=method, headers=headers, count=count, timeout=timeout, head=True)]

    # -- waypoints (issue 9: provisioning, binding, availability) ----------------------------
    def label(self, kind: str, namespace: str, name: str, labels: dict[str, str | None]) -> None:
        """Set labels on a Service or Pod; a value of None removes that label."""
        self.target.label(kind, namespace, name, labels)

    def conditions(self, kind: str, namespace: str, name: str) -> dict[str, dict]:
        """An object's `status.conditions` by type ({} when it has none or does not exist)."""
        obj = self.target.get(kind, namespace, name) or {}
        return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or ()}

    def waypoint_pods(self, namespace: str, gateway: str) -> list[Pod]:
        return self.target.waypoint_pods(namespace, gateway)

    def await_waypoint(self, namespace: str, gateway: str, replicas: int = 1,
                       timeout: float = convergence.READY_SECONDS) -> list[Pod]:
        """Wait until exactly `replicas` Ready proxy pods serve the waypoint Gateway; return them."""
        def ready():
            pods = self.waypoint_pods(namespace, gateway)
            return pods if len(pods) == replicas and all(p.ready for p in pods) else None
        return wait_until(ready, timeout, 0.2, f"{replicas} Ready pod(s) of waypoint {namespace}/{gateway}")

    def scale_waypoint(self, namespace: str, gateway: str, replicas: int) -> None:
        self.target.scale_waypoint(namespace, gateway, replicas)

    def kill_waypoint_pod(self, pod: PodRef) -> None:
        self.target.kill_waypoint_pod(pod)
