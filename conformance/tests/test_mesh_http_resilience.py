"""MESH-HTTP: what a route does when a backend is slow or fails: HTTPRoute `timeouts` (GEP-1742)
and `retry` (GEP-1731), and Istio VirtualService fault injection at the waypoint.

The echo backend (meshworld.py) waits `delay` seconds, and fails the first `fail` requests of a
`key` with `code`, reporting in every answer how many requests of that key it has seen, so a retry
is counted where it lands, not guessed from timing. Each behaviour is shown against the route's
own rule without it and against the unrouted `echo` Service.
"""
from __future__ import annotations

import uuid

import pytest

from conformance.convergence import CONSECUTIVE, eventually
from conformance.tests.meshworld import Case, all_of, backend_is, status_is

TIMEOUT = 0.5       # timeout.yaml: timeouts.request 500ms, timeouts.backendRequest 500ms
SLOW = 1.5          # a backend this slow outlives it, with room for a loaded machine
FAULT_DELAY = 1.0   # fault.yaml: fixedDelay 1s


def took(at_least: float | None = None, under: float | None = None):
    def check(a) -> str | None:
        if at_least is not None and a.seconds < at_least:
            return f"expected at least {at_least:g}s"
        if under is not None and a.seconds >= under:
            return f"expected under {under:g}s"
        return None
    return check


@pytest.mark.features("MeshHTTPRouteRequestTimeout")
def test_request_timeout(mesh):
    """`timeouts.request: 500ms` MUST answer 504 when the backend takes longer, well before the
    backend answers, and pass a fast answer; `timeouts.request: 0s` and no route MUST wait for it."""
    mesh.expect([
        Case("bounded, slow backend", f"/bounded?delay={SLOW}", all_of(status_is(504), took(TIMEOUT * 0.9, SLOW)),
             host="echo-timeout"),
        Case("bounded, fast backend", "/bounded", backend_is("echo-v1"), host="echo-timeout"),
    ], "MeshHTTPRouteRequestTimeout: 504 after the bound")
    for host, path in (("echo-timeout", f"/disabled?delay={SLOW}"), ("echo", f"/bounded?delay={SLOW}")):
        [a] = mesh.ask(Case("", path, status_is(200), host=host), count=1)
        assert a.status == 200 and a.seconds >= SLOW, \
            f"{host}{path}: expected the slow backend's 200 after {SLOW:g}s (no bound), got {a!r}"


def retry_round(mesh) -> list[str]:
    """One request of each retry case, each with a key of its own; the complaints."""
    cases = [
        ("500 retried until it succeeds", "/retried", 2, 500, 200, 3),
        ("500 retried, attempts exhausted", "/retried", 5, 500, 500, 3),
        ("503 not listed: not retried", "/retried", 1, 503, 503, 1),
        ("the rule without retry", "/none", 1, 500, 500, 1),
    ]
    complaints = []
    for what, path, fail, code, want_status, want_attempts in cases:
        full = f"{path}?key={uuid.uuid4().hex}&fail={fail}&code={code}"
        [a] = mesh.ask(Case(what, full, status_is(want_status), host="echo-retry"), count=1)
        attempts = (a.echo or {}).get("attempt")
        if a.status != want_status or attempts != want_attempts:
            complaints.append(f"{what}: {full} -> {a!r} after {attempts} attempt(s); expected {want_status} "
                              f"after {want_attempts}")
    # the unrouted Service retries nothing it was not told to
    [a] = mesh.ask(Case("", f"/retried?key={uuid.uuid4().hex}&fail=1&code=500", status_is(500), host="echo"), count=1)
    if a.status != 500:
        complaints.append(f"no route: expected the backend's 500, got {a!r}")
    return complaints


@pytest.mark.features("MeshHTTPRouteBackendRequestTimeout")
def test_backend_request_timeout(mesh):
    """`timeouts.backendRequest: 500ms` in a rule without retry MUST answer 504 when the backend
    takes longer, well before the backend answers, and pass a fast answer."""
    mesh.expect([
        Case("bounded, slow backend", f"/backend-bounded?delay={SLOW}", all_of(status_is(504), took(TIMEOUT * 0.9, SLOW)),
             host="echo-timeout"),
        Case("bounded, fast backend", "/backend-bounded", backend_is("echo-v1"), host="echo-timeout"),
    ], "MeshHTTPRouteBackendRequestTimeout: 504 after the bound")


@pytest.mark.features("MeshHTTPRouteRetry")
def test_retry(mesh):
    """`retry: {attempts: 2, codes: [500], backoff: 10ms}` MUST retry a 500 up to twice (a third
    try's answer is relayed) and MUST NOT retry a 503 it does not list; a rule without `retry`
    retries nothing."""
    eventually(lambda: [retry_round(mesh)], lambda complaints: not complaints, what="MeshHTTPRouteRetry",
               n_consecutive=1)
    for _ in range(CONSECUTIVE - 1):
        assert not (found := retry_round(mesh)), found


@pytest.mark.features("MeshFaultInjection")
def test_fault_injection(mesh):
    """A VirtualService `fault.abort` (418, 100 %) MUST answer its matched requests at the
    waypoint, `fault.delay` (1s, 100 %) MUST hold them at least that long; requests the rules do
    not match, and the unrouted Service, MUST be untouched."""
    mesh.expect([
        Case("abort", "/abort", all_of(status_is(418), lambda a: None if a.echo is None else "reached the backend"),
             host="echo-fault"),
        Case("not faulted", "/other", all_of(backend_is("echo-v1"), took(under=FAULT_DELAY)), host="echo-fault"),
        Case("no route", "/abort", status_is(200), host="echo"),
    ], "MeshFaultInjection: abort")
    [a] = mesh.ask(Case("delay", "/delay", status_is(200), host="echo-fault"), count=1)
    assert a.status == 200 and a.backend == "echo-v1" and a.seconds >= FAULT_DELAY, \
        f"/delay: expected echo-v1's 200 after at least {FAULT_DELAY:g}s, got {a!r}"
