"""What the AMBIENT-L7 waypoint tests share: their manifests (YAML in waypoint/, beside this file),
a world of two httpbin services and a client, and how a test tells L7 from L4.

L7 is told from L4 as Istio's own tests do (tests/integration/ambient, IsL7): httpbin echoes the
request it received (`/headers?show_env=1`), and a waypoint, an L7 proxy, adds an `x-request-id` to every
request it forwards, while ztunnel's L4 path delivers the client's bytes unchanged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template

from conformance import convergence
from conformance import manifests as mf
from conformance import workloads as w
from conformance.convergence import eventually
from conformance.scenario import Scenario
from conformance.targets.base import Pod, PodRef

MANIFESTS = Path(__file__).resolve().parent / "waypoint"
L7, L4 = "L7", "L4"
USE_WAYPOINT = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"
WAYPOINT_BOUND = "istio.io/WaypointBound"
RBAC_DENIED = "RBAC: access denied"
#: httpbin hides the proxy headers (X-Request-Id, X-Forwarded-*) from /headers unless asked
ECHO = "/headers?show_env=1"


def manifest(file: str, **values) -> list[dict]:
    """The objects of waypoint/<file> with its $placeholders filled in."""
    text = Template((MANIFESTS / file).read_text()).substitute(values)
    return mf.load(text)


def waypoint(namespace: str, name: str, waypoint_for: str = "service") -> list[dict]:
    return manifest("waypoint.yaml", namespace=namespace, name=name, waypoint_for=waypoint_for)


def hop(response) -> object:
    """L7 (an HTTP 200 whose echoed request carries the waypoint's x-request-id), L4 (a 200
    without it), else the outcome itself (a status code, `reset`, ...)."""
    if response.outcome != 200:
        return response.outcome
    try:
        names = {name.lower() for name in json.loads(response.body)["headers"]}
    except (ValueError, KeyError, TypeError):
        return "200 with a body that is not httpbin's /headers JSON"
    return L7 if "x-request-id" in names else L4


def why_not_path(observed) -> str | None:
    if observed == L4:
        return "answered 200 without an x-request-id: the request did not pass a waypoint (L4 path)"
    if observed == L7:
        return "answered 200 with an x-request-id: the request passed a waypoint (L7 path)"
    return None


@dataclass
class WaypointWorld:
    sc: Scenario
    srv: str            # the servers' namespace (ambient)
    cli: str            # the client's namespace (ambient)
    client: Pod
    other_ns: str = ""  # a second servers' namespace, where a test's world has one

    def url(self, service: str, path: str = ECHO, namespace: str | None = None) -> str:
        return w.service_url(service, namespace or self.srv, path=path)

    def hops(self, url: str, count: int = convergence.CONSECUTIVE, headers: dict | None = None,
             client: PodRef | None = None) -> list[object]:
        """`hop` of each of `count` requests (one curl, a fresh connection each)."""
        responses = self.sc.responses(client or self.client, url, count=count, body=True,
                                      headers={"Connection": "close", **(headers or {})})
        return [hop(r) for r in responses]

    def expect(self, url: str, want, what: str, headers: dict | None = None,
               timeout: float = convergence.POLICY_CONVERGENCE_SECONDS) -> None:
        """N consecutive requests whose `hop` is `want` (a value, or a predicate on it)."""
        check = want if callable(want) else (lambda observed: observed == want)
        eventually(lambda: self.hops(url, headers=headers), check, timeout=timeout, why_not=why_not_path,
                   what=f"{what} ({self.client.namespace}/{self.client.name} -> {url}): expected {want}")

    def assert_now(self, url: str, want, what: str, headers: dict | None = None) -> None:
        """Every request made now has `hop` == `want`: for "this changes nothing", after a barrier
        (a later change whose effect was seen) showed the configuration is in effect."""
        observed = self.hops(url, headers=headers)
        assert all(o == want for o in observed), f"{what} ({url}): expected {want} every time, got {observed}"

    def bound_condition(self, service: str, namespace: str | None = None) -> dict | None:
        return self.sc.conditions("Service", namespace or self.srv, service).get(WAYPOINT_BOUND)

    def expect_bound_condition(self, service: str, status: str, reason: str, what: str,
                               message_has: str = "", namespace: str | None = None) -> dict:
        """The Service's istio.io/WaypointBound condition reaches (status, reason) and names
        `message_has` in its message, within the convergence bound."""
        def matches(condition) -> bool:
            return bool(condition) and condition.get("status") == status and condition.get("reason") == reason \
                and message_has in (condition.get("message") or "")
        [condition] = eventually(lambda: [self.bound_condition(service, namespace)], matches, n_consecutive=1,
                                 what=f"{what}: Service {namespace or self.srv}/{service} condition "
                                      f"{WAYPOINT_BOUND} {status}/{reason} naming {message_has!r}")
        return condition

    def use_waypoint(self, service: str, name: str | None, namespace: str | None = None,
                     waypoint_namespace: str | None = None) -> None:
        """Label a Service `istio.io/use-waypoint: name` (None removes the labels)."""
        self.sc.label("Service", namespace or self.srv, service,
                      {USE_WAYPOINT: name, USE_WAYPOINT_NAMESPACE: waypoint_namespace})


def build_world(sc: Scenario, role: str, services=("alpha", "beta"), waypoints=(),
                namespace_labels: dict | None = None) -> WaypointWorld:
    """Namespaces `<role>s` (servers, with `namespace_labels`) and `<role>c` (the client), an httpbin
    per name in `services`, and the waypoint Gateways `waypoints` ((name, waypoint_for) pairs) in
    the servers' namespace, all Ready."""
    server_node, client_node = sc.spread_nodes()
    srv, cli = sc.namespace(f"{role}s", labels=namespace_labels), sc.namespace(f"{role}c")
    objects = [o for name in services for o in w.httpbin(srv, name=name, node=server_node)]
    objects += w.client(cli, "client", node=client_node)
    for name, waypoint_for in waypoints:
        objects += waypoint(srv, name, waypoint_for)
    sc.apply(objects)
    sc.ready(srv, cli)
    for name, _ in waypoints:
        sc.await_waypoint(srv, name)
    return WaypointWorld(sc, srv, cli, sc.pod(cli, "client"))
