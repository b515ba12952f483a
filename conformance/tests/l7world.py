"""The shared L7 world: a current-Istio waypoint (Gateway class `istio-waypoint`, the
mesh/15008/HBONE listener, the namespace labelled `istio.io/use-waypoint`) fronting an httpbin
service with a second port, and two clients with distinct identities, in namespaces of their own,
on the other node. Built once per pytest worker (`l7` fixture in conftest.py) and reused by every
L7 test: each test applies its own manifests and removes them (`with world.applied(...)`).

Manifests live as YAML beside the tests (conformance/tests/l7/), with `$name` placeholders for the
world's namespaces and identities (`manifest`). Requests are table rows (`Row`), many per curl
exec, and a table is converged as a whole (`converge`), so a policy step costs one or two polls.
"""
from __future__ import annotations

import contextlib
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pytest

from conformance import convergence, curl
from conformance import workloads as w
from conformance.convergence import eventually
from conformance.scenario import Scenario
from conformance.tests.l4world import L4World

MANIFESTS = Path(__file__).resolve().parent / "l7"
WAYPOINT = "waypoint"
#: Envoy's body for an RBAC deny (ISTIO-SEMANTICS section 7: an L7 deny is HTTP 403)
RBAC_DENIED = "RBAC: access denied"
#: httpbin echoes the request it received; `show_env=1` keeps the proxy headers it hides otherwise
ECHO = "/headers?show_env=1"
#: request headers only an HTTP proxy in the path adds (Envoy always sends X-Forwarded-Proto
#: and generates X-Request-Id); ztunnel's L4 path delivers the client's bytes unchanged
PROXY_ADDED = ("x-request-id", "x-forwarded-proto")
#: how a connection the destination's ztunnel refuses reaches a client of the waypoint: Envoy's
#: 503 (upstream connect error), or the connection cut (Istio's CheckDeny accepts both)
UPSTREAM_REFUSED = frozenset({503, curl.RESET})


@dataclass(frozen=True)
class Row:
    """One request of a table and what it MUST get: an exact status, or a set of outcomes."""
    client: str                       # "a" or "b"
    path: str
    expect: int | frozenset
    what: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    port: int = w.HTTP_PORT
    check: Callable[[curl.Answer], str | None] | None = None   # extra check; returns what is wrong
    denied_body: str = RBAC_DENIED    # the body a 403 must carry (jwt_authn's own 403 has another)


@dataclass
class L7World(L4World):
    """The L4 world's server and clients (same names and identities), behind a waypoint."""

    _vars: dict = field(default_factory=dict)

    @property
    def waypoint_principal(self) -> str:
        """Istio runs a waypoint as a ServiceAccount named after its Gateway."""
        return w.principal(self.server_ns, WAYPOINT)

    @property
    def host(self) -> str:
        return f"httpbin.{self.server_ns}"

    def url_for(self, path: str, port: int = w.HTTP_PORT) -> str:
        return f"http://{self.host}:{port}{path}"

    # -- manifests -----------------------------------------------------------------------------
    def variables(self) -> dict[str, str]:
        return {"server_ns": self.server_ns, "a_ns": self.a_ns, "b_ns": self.b_ns,
                "principal_a": self.principal_a, "principal_b": self.principal_b,
                "waypoint_principal": self.waypoint_principal, **self._vars}

    def manifest(self, name: str, **extra: str) -> str:
        """The YAML text of conformance/tests/l7/<name>.yaml with the world's `$placeholders` filled."""
        return render(name, {**self.variables(), **extra})

    @contextlib.contextmanager
    def applied(self, *names: str, **extra: str):
        """Apply these manifests for the duration of a `with` block, then delete them."""
        texts = [self.manifest(n, **extra) for n in names]
        self.sc.apply(texts)
        try:
            yield
        finally:
            self.sc.delete(texts)

    # -- traffic ---------------------------------------------------------------------------------
    def send(self, rows: Iterable[Row]) -> list[tuple[Row, curl.Answer]]:
        """Every row's answer, one curl exec per client."""
        rows = list(rows)
        clients = {"a": self.a, "b": self.b}
        out: dict[int, curl.Answer] = {}
        for key in sorted({r.client for r in rows}):
            mine = [(i, r) for i, r in enumerate(rows) if r.client == key]
            answers = self.sc.send(clients[key], [curl.Request(self.url_for(r.path, r.port), r.method, r.headers)
                                                  for _, r in mine])
            out.update({i: a for (i, _), a in zip(mine, answers)})
        return [(r, out[i]) for i, r in enumerate(rows)]

    def converge(self, rows: Iterable[Row], what: str, n_consecutive: int = 2,
                 timeout: float = convergence.POLICY_CONVERGENCE_SECONDS) -> None:
        """Every row gets what it MUST, `n_consecutive` polls in a row, within the bound."""
        rows = list(rows)
        eventually(lambda: [mismatches(self.send(rows))], lambda wrong: not wrong,
                   what=f"{what}: expected every row of the table", n_consecutive=n_consecutive,
                   timeout=timeout)

    def converge_under(self, rows: Iterable[Row], manifest: str, what: str, **extra: str) -> None:
        """A policy table: the rows reach the app before `manifest`, then each gets what it MUST
        while the manifest is applied (it is deleted afterwards)."""
        rows = list(rows)
        self.converge_unrestricted(rows, f"before {what}")
        with self.applied(manifest, **extra):
            self.converge(rows, what)

    def converge_unrestricted(self, rows: Iterable[Row], what: str) -> None:
        """Before a policy (or once it is gone): every row reaches the app, none is refused by
        the mesh (no 401, 403 or 503), so the denies seen afterwards are the policy's."""
        free = [Row(r.client, r.path, frozenset({200, 404, 405}), f"{r.what} (no policy)", r.method,
                    r.headers, r.port) for r in rows]
        self.converge(free, what, n_consecutive=1)


def render(name: str, variables: dict[str, str]) -> str:
    path = MANIFESTS / f"{name}.yaml"
    if not path.is_file():
        pytest.fail(f"{path}: the L7 manifest is missing; it ships with the conformance tests")
    try:
        return string.Template(path.read_text()).substitute(variables)
    except KeyError as e:
        pytest.fail(f"{path}: placeholder ${e.args[0]} is not one the L7 world fills "
                    f"({', '.join(sorted(variables))}); fix the manifest")


def mismatches(answers: list[tuple[Row, curl.Answer]]) -> list[str]:
    """One line per row that did not get what it MUST (status, the RBAC body of a 403, its check)."""
    wrong = []
    for row, answer in answers:
        got = answer.outcome
        ok = got in row.expect if isinstance(row.expect, frozenset) else got == row.expect
        problem = None if ok else f"got {got}"
        if ok and got == 403 and answer.body.strip() != row.denied_body:
            problem = f"403 with body {answer.body.strip()[:80]!r}, not {row.denied_body!r}"
        if ok and problem is None and row.check is not None:
            problem = row.check(answer)
        if problem:
            wrong.append(f"{row.client} {row.method} {row.path} ({row.what}): want {_show(row.expect)}, {problem}")
    return wrong


def _show(expect) -> str:
    return "/".join(map(str, sorted(expect, key=str))) if isinstance(expect, frozenset) else str(expect)


def build_l7_world(sc: Scenario) -> L7World:
    server_node, client_node = sc.spread_nodes()
    srv = sc.namespace("l7srv", labels={"istio.io/use-waypoint": WAYPOINT})
    a_ns, b_ns = sc.namespace("l7a"), sc.namespace("l7b")
    sc.apply(w.httpbin(srv, node=server_node, alt_port=True)
             + w.client(a_ns, "client-a", node=client_node) + w.client(b_ns, "client-b", node=client_node))
    sc.apply(render("waypoint", {"server_ns": srv}))
    sc.ready(srv, a_ns, b_ns)
    world = L7World(sc, srv, a_ns, b_ns, sc.pod(srv, "httpbin"), sc.pod(a_ns, "client-a"), sc.pod(b_ns, "client-b"))
    await_waypoint(world)
    return world


def through_waypoint(answer: curl.Answer) -> str | None:
    """A check for `/headers` rows: the request httpbin echoes passed an L7 proxy."""
    body = answer.body.lower()
    missing = [h for h in PROXY_ADDED if f'"{h}"' not in body]
    return f"the echoed request lacks {missing}: it did not pass the waypoint" if missing else None


def await_waypoint(world: L7World) -> None:
    """Wait until both clients' requests to httpbin pass the waypoint (and the waypoint is Ready)."""
    world.sc.ready(world.server_ns)
    rows = [Row(c, ECHO, 200, "through the waypoint", check=through_waypoint) for c in "ab"]
    world.converge(rows, "the waypoint serves httpbin", n_consecutive=3, timeout=convergence.READY_SECONDS)
