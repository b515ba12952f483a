"""The MESH-HTTP tests' world, after the Gateway API suite's mesh base (conformance/mesh/manifests.yaml):
one ambient namespace with a waypoint (Gateway class `istio-waypoint`), echo backends `echo-v1` and
`echo-v2` (conformance/probes/mesh_echo.py: each answer names the backend and echoes the request as
it arrived), a curl client, and Services bound to the waypoint:
- `echo` (both versions), `echo-v1`, `echo-v2`: ports 80 -> 8080 and 8080 -> 8080, as the suite's;
- one parent Service per test (`echo-match`, `echo-redirect`, ...), selecting both versions, so the
  routes of every test (mesh/*.yaml, beside the tests) coexist in one world: a test's route binds
  only its own parent, and `echo` (no route) is the control showing what the route changed.

A case is judged the Gateway API way: its request made ROUNDS times in a row must all give the
expected response, eventually (within the convergence bound).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from conformance import convergence, curl
from conformance import workloads as w
from conformance.convergence import eventually
from conformance.manifests import load
from conformance.scenario import Scenario
from conformance.targets.base import Pod

MANIFESTS = Path(__file__).resolve().parent / "mesh"
ECHO_SOURCE = Path(__file__).resolve().parents[1] / "probes" / "mesh_echo.py"
WAYPOINT = "waypoint"
ECHO_PORT = 8080
#: parents of the tests' routes; each selects both echo versions (like `echo`)
PARENTS = ("echo-simple", "echo-match", "echo-headers", "echo-backend-headers", "echo-redirect",
           "echo-rewrite", "echo-weight", "echo-split", "echo-ports-a", "echo-ports-b", "echo-front",
           "echo-missing", "echo-timeout", "echo-retry", "echo-fault", "echo-precedence", "echo-regex",
           "echo-age", "echo-consumer")
#: the route manifests applied when the world is built (echo-simple's, echo-age's and
#: echo-consumer's are applied by their tests)
ROUTES = ("matching.yaml", "headers.yaml", "backend-headers.yaml", "redirect.yaml", "rewrite.yaml",
          "weight.yaml", "split.yaml", "ports.yaml", "frontend.yaml", "missing-backend.yaml",
          "timeout.yaml", "retry.yaml", "fault.yaml", "precedence.yaml", "regex.yaml")
ROUNDS = convergence.CONSECUTIVE


@dataclass(frozen=True)
class Answer:
    """One exchange as the client saw it, with the echo's JSON when the echo answered."""

    status: object
    headers: dict[str, str]
    echo: dict | None
    seconds: float

    @property
    def backend(self) -> str | None:
        return self.echo.get("backend") if self.echo else None

    def request_header(self, name: str) -> str | None:
        return (self.echo or {}).get("headers", {}).get(name.lower())

    def __repr__(self) -> str:
        what = f"backend={self.backend} path={self.echo.get('path')}" if self.echo else "no echo"
        return f"<{self.status} {what} {self.seconds:.2f}s>"


def answer(exchange: curl.Exchange) -> Answer:
    try:
        echo = json.loads(exchange.body) if exchange.body.startswith("{") else None
    except ValueError:
        echo = None
    return Answer(exchange.outcome, exchange.headers, echo, exchange.response.seconds)


@dataclass
class Case:
    """A request and what its answer must satisfy (`check` returns a complaint, or None)."""

    what: str
    path: str
    check: Callable[[Answer], str | None]
    host: str = "echo"
    port: int = 80
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class MeshWorld:
    sc: Scenario
    ns: str
    client: Pod
    echo_pods: dict[str, Pod]

    def host(self, service: str) -> str:
        return f"{service}.{self.ns}.svc.cluster.local"

    def url(self, host: str, path: str = "/", port: int = 80) -> str:
        """A Service's URL by its name (the short names are this world's Services), or `ip:port`'s."""
        if "." in host or ":" in host:
            return f"http://{host}{path}"
        return f"http://{self.host(host)}:{port}{path}"

    def manifest(self, name: str) -> list[dict]:
        """A route manifest of mesh/, placed in this world's namespace."""
        objects = load(MANIFESTS / name)
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = self.ns
        return objects

    def apply(self, name: str) -> None:
        self.sc.apply(self.manifest(name))

    def delete(self, name: str) -> None:
        self.sc.delete(self.manifest(name))

    def ask(self, case: Case, count: int = ROUNDS, timeout: float = convergence.REQUEST_MAX_SECONDS) -> list[Answer]:
        return [answer(x) for x in self.sc.exchanges(self.client, self.url(case.host, case.path, case.port), count,
                                                     method=case.method, headers=case.headers or None,
                                                     timeout=timeout)]

    def complaints(self, case: Case, timeout: float = convergence.REQUEST_MAX_SECONDS) -> list[str]:
        out = []
        for a in self.ask(case, timeout=timeout):
            problem = case.check(a)
            if problem:
                out.append(f"{case.what}: {case.method} {case.host}:{case.port}{case.path} -> {a!r}: {problem}")
        return out

    def expect(self, cases: list[Case], what: str, timeout: float = convergence.POLICY_CONVERGENCE_SECONDS,
               request_timeout: float = convergence.REQUEST_MAX_SECONDS) -> None:
        """Every case answered as expected ROUNDS times in a row, within the convergence bound."""
        def probe() -> list[str]:
            found = [p for c in cases for p in self.complaints(c, request_timeout)]
            return [f"{len(found)} unexpected answer(s), first: {found[0]}" if found else ""]
        eventually(probe, lambda summary: not summary, what=what, n_consecutive=1, timeout=timeout)


# -- checks ------------------------------------------------------------------------------------

def backend_is(name: str, status: int = 200) -> Callable[[Answer], str | None]:
    def check(a: Answer) -> str | None:
        if a.status != status:
            return f"expected HTTP {status}"
        return None if a.backend == name else f"expected backend {name}"
    return check


def status_is(status: int) -> Callable[[Answer], str | None]:
    return lambda a: None if a.status == status else f"expected HTTP {status}"


def all_of(*checks) -> Callable[[Answer], str | None]:
    def check(a: Answer) -> str | None:
        for c in checks:
            problem = c(a)
            if problem:
                return problem
        return None
    return check


def request_headers(expected: dict[str, str] | None = None, absent=()) -> Callable[[Answer], str | None]:
    """The echoed request carries `expected` (names case-insensitive, values exact) and none of `absent`."""
    def check(a: Answer) -> str | None:
        if a.echo is None:
            return "expected the echo's answer"
        for name, value in (expected or {}).items():
            if a.request_header(name) != value:
                return f"expected request header {name}: {value!r}, the backend saw {a.request_header(name)!r}"
        for name in absent:
            if a.request_header(name) is not None:
                return f"expected no request header {name}, the backend saw {a.request_header(name)!r}"
        return None
    return check


def response_headers(expected: dict[str, str] | None = None, absent=()) -> Callable[[Answer], str | None]:
    def check(a: Answer) -> str | None:
        for name, value in (expected or {}).items():
            if a.headers.get(name.lower()) != value:
                return f"expected response header {name}: {value!r}, got {a.headers.get(name.lower())!r}"
        for name in absent:
            if name.lower() in a.headers:
                return f"expected no response header {name}, got {a.headers[name.lower()]!r}"
        return None
    return check


def rule_is(name: str) -> Callable[[Answer], str | None]:
    """Answered by echo-v1 through the rule that names itself `name` in X-Rule (precedence.yaml,
    regex.yaml)."""
    return all_of(backend_is("echo-v1"), request_headers({"X-Rule": name}))


def echoed_path(path: str) -> Callable[[Answer], str | None]:
    def check(a: Answer) -> str | None:
        got = (a.echo or {}).get("path")
        return None if got == path else f"expected the backend to see path {path!r}, it saw {got!r}"
    return check


def echoed_host(host: str) -> Callable[[Answer], str | None]:
    def check(a: Answer) -> str | None:
        got = (a.echo or {}).get("host")
        return None if got == host else f"expected the backend to see Host {host!r}, it saw {got!r}"
    return check


def redirect_to(status: int, location: str) -> Callable[[Answer], str | None]:
    def check(a: Answer) -> str | None:
        if a.status != status:
            return f"expected a {status} redirect"
        got = a.headers.get("location")
        return None if got == location else f"expected location {location!r}, got {got!r}"
    return check


# -- building it -------------------------------------------------------------------------------

def _service(ns: str, name: str, selector: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"istio.io/use-waypoint": WAYPOINT}},
            "spec": {"selector": selector,
                     "ports": [{"name": "http", "port": 80, "targetPort": ECHO_PORT, "appProtocol": "http"},
                               {"name": "http-alt", "port": ECHO_PORT, "targetPort": ECHO_PORT,
                                "appProtocol": "http"}]}}


def _echo(ns: str, version: str, node: str | None) -> list[dict]:
    name = f"echo-{version}"
    labels = {"app": "echo", "version": version}
    env = [{"name": "BACKEND", "value": name},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    container = {"name": "echo", "image": w.PYTHON_IMAGE, "env": env,
                 "command": ["python3", "-c", ECHO_SOURCE.read_text(), str(ECHO_PORT)],
                 "ports": [{"containerPort": ECHO_PORT}]}
    spec = {"serviceAccountName": name, "containers": [container]}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return [w.service_account(ns, name),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels}, "spec": spec}}}]


def _waypoint(ns: str) -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": WAYPOINT, "namespace": ns, "labels": {"istio.io/waypoint-for": "service"}},
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}


def build_mesh_world(sc: Scenario) -> MeshWorld:
    server_node, client_node = sc.spread_nodes()
    ns = sc.namespace("mesh")
    services = [_service(ns, "echo", {"app": "echo"}), _service(ns, "echo-v1", {"app": "echo", "version": "v1"}),
                _service(ns, "echo-v2", {"app": "echo", "version": "v2"})]
    services += [_service(ns, name, {"app": "echo"}) for name in PARENTS]
    sc.apply([_waypoint(ns), *services, *_echo(ns, "v1", server_node), *_echo(ns, "v2", server_node),
              *w.client(ns, "client", node=client_node)])
    sc.ready(ns)
    pods = sc.pods(ns, {"app": "echo"})
    world = MeshWorld(sc, ns, sc.pod(ns, "client"), {p.labels.get("version"): p for p in pods})
    for name in ROUTES:
        world.apply(name)
    # the waypoint serves `echo` once a proxy in the path re-originates the request (x-request-id)
    through_waypoint = lambda a: None if a.request_header("x-request-id") else "expected the waypoint's x-request-id"
    world.expect([Case("the waypoint serves echo", "/", through_waypoint, host="echo")],
                 "the echo service answers through the waypoint", timeout=convergence.READY_SECONDS)
    return world
