"""MESH-HTTP: where an HTTPRoute bound to a Service sends its traffic (Gateway API conformance
tests/mesh/: mesh-basic, httproute-simple-same-namespace, httproute-matching,
httproute-query-param-matching, httproute-weight, mesh-split, mesh-ports, mesh-frontend).

Each route binds its own parent Service (meshworld.py); `echo`, bound to the same waypoint with no
route, answers from both versions and is the control: the same request to it shows what the route
changed.
"""
from __future__ import annotations

import pytest

from conformance.convergence import eventually
from conformance.tests.meshworld import Case, all_of, backend_is, response_headers, status_is

WEIGHT_REQUESTS = 500
WEIGHT_TOLERANCE = 0.05
WEIGHT_SAMPLES = 3


def backends_seen(mesh, host: str, path: str = "/", count: int = 20) -> dict[str, int]:
    """How many of `count` calls each backend answered (a failed call counts under its outcome)."""
    seen: dict[str, int] = {}
    for a in mesh.ask(Case("spread", path, status_is(200), host=host), count=count):
        who = str(a.backend if a.status == 200 else a.status)
        seen[who] = seen.get(who, 0) + 1
    return seen


@pytest.mark.features("MeshBasic")
def test_mesh_basic(mesh):
    """A call to a Service bound to a waypoint MUST be answered by its endpoints, every one of them
    reachable, through the waypoint (the request arrives re-originated, with an x-request-id)."""
    mesh.expect([Case("echo-v1 through the waypoint", "/", all_of(
        backend_is("echo-v1"), lambda a: None if a.request_header("x-request-id") else "expected x-request-id"),
        host="echo-v1")], "MeshBasic: echo-v1")
    seen = backends_seen(mesh, "echo")
    assert set(seen) == {"echo-v1", "echo-v2"}, f"echo (both versions, no route) answered from {seen}"


@pytest.mark.features("MeshHTTPRouteSimpleSameNamespace")
def test_simple_same_namespace(mesh):
    """With an HTTPRoute whose parentRef is the Service echo-simple and whose backend is echo-v1,
    every call to echo-simple MUST reach echo-v1; before the route and after its deletion the
    Service's own endpoints (both versions) answer."""
    assert set(backends_seen(mesh, "echo-simple")) == {"echo-v1", "echo-v2"}, "without a route both versions answer"
    mesh.apply("simple-same-namespace.yaml")
    try:
        mesh.expect([Case("routed to echo-v1", "/", backend_is("echo-v1"), host="echo-simple")] * 4,
                    "the route sends echo-simple to echo-v1")
    finally:
        mesh.delete("simple-same-namespace.yaml")
    mesh.expect([Case("both versions again", "/", status_is(200), host="echo-simple")],
                "echo-simple after the route's deletion")
    # The deletion takes effect within the convergence bound, not at once (an Envoy waypoint
    # replaces its listener and drains the old one): wait for both versions, then hold.
    eventually(lambda: [set(backends_seen(mesh, "echo-simple"))], lambda seen: seen == {"echo-v1", "echo-v2"},
               "the deleted route no longer routes: both versions answer echo-simple", n_consecutive=1)


MATCH_CASES = [
    ("/", {}, "echo-v1"), ("/example", {}, "echo-v1"), ("/", {"Version": "one"}, "echo-v1"),
    ("/v2", {}, "echo-v2"), ("/v2/example", {}, "echo-v2"), ("/", {"Version": "two"}, "echo-v2"),
    ("/v2/", {}, "echo-v2"),
    # not a path-segment prefix of /v2, and /v2 not at the start: the catch-all rule
    ("/v2example", {}, "echo-v1"), ("/foo/v2/example", {}, "echo-v1"),
    # header names are case-insensitive, values are not
    ("/", {"VERSION": "two"}, "echo-v2"), ("/", {"version": "Two"}, "echo-v1"),
    # Exact admits only its own path
    ("/exact", {}, "echo-v2"), ("/exact/", {}, "echo-v1"), ("/exactly", {}, "echo-v1"),
]


@pytest.mark.features("MeshHTTPRouteMatching")
def test_path_and_header_matching(mesh):
    """Path (PathPrefix by path segment, Exact) and header matches MUST pick the rule Gateway API's
    precedence names, and near misses MUST fall to the catch-all rule."""
    mesh.expect([Case(f"{path} {headers}", path, backend_is(want), host="echo-match", headers=headers)
                 for path, headers, want in MATCH_CASES], "MeshHTTPRouteMatching")


@pytest.mark.features("MeshHTTPRouteMethodMatching")
def test_method_matching(mesh):
    """A rule matching method POST MUST take POSTs to its path, and only those."""
    mesh.expect([Case("POST /method", "/method", backend_is("echo-v2"), host="echo-match", method="POST"),
                 Case("GET /method", "/method", backend_is("echo-v1"), host="echo-match"),
                 Case("POST elsewhere", "/other", backend_is("echo-v1"), host="echo-match", method="POST")],
                "MeshHTTPRouteMethodMatching")


@pytest.mark.features("MeshHTTPRouteQueryParamMatching")
def test_query_param_matching(mesh):
    """queryParams matches MUST compare names and values exactly; the first of repeated values counts."""
    mesh.expect([Case("dolphin", "/?animal=dolphin", backend_is("echo-v2"), host="echo-match"),
                 Case("whale", "/?animal=whale", backend_is("echo-v1"), host="echo-match"),
                 Case("first value counts", "/?animal=dolphin&animal=whale", backend_is("echo-v2"), host="echo-match"),
                 Case("name is case-sensitive", "/?Animal=dolphin", backend_is("echo-v1"), host="echo-match"),
                 Case("value is exact", "/?animal=dolphins", backend_is("echo-v1"), host="echo-match")],
                "MeshHTTPRouteQueryParamMatching")


@pytest.mark.features("MeshHTTPRouteWeight")
def test_weighted_backends(mesh):
    """backendRefs weighted 70/30 MUST split 500 requests within 5 points of 70/30 (both backends
    seen), and Exact path rules MUST split a Service's traffic by path (MeshTrafficSplit)."""
    mesh.expect([Case("/v1", "/v1", backend_is("echo-v1"), host="echo-split"),
                 Case("/v2", "/v2", backend_is("echo-v2"), host="echo-split")], "MeshTrafficSplit")
    mesh.expect([Case("the weighted route is in effect", "/", status_is(200), host="echo-weight")],
                "MeshHTTPRouteWeight")
    # A fair 70/30 split falls outside 5 points in ~1.5% of 500-request samples (2.4 sigma), so,
    # as Gateway API's own weight test does, up to WEIGHT_SAMPLES samples; a mesh that ignores
    # the weights (50/50, 100/0) misses every one of them.
    samples = []
    for _ in range(WEIGHT_SAMPLES):
        seen = backends_seen(mesh, "echo-weight", count=WEIGHT_REQUESTS)
        samples.append(seen)
        if set(seen) == {"echo-v1", "echo-v2"} and abs(seen["echo-v1"] / WEIGHT_REQUESTS - 0.7) <= WEIGHT_TOLERANCE:
            break
    else:
        pytest.fail(f"no sample of {WEIGHT_REQUESTS} requests split 70/30 +- 5 points between echo-v1 and "
                    f"echo-v2 alone: {samples}")


@pytest.mark.features("MeshPorts")
def test_parent_ref_port(mesh):
    """A parentRef with port 80 MUST apply to calls to port 80 only; one without a port to every port."""
    mesh.expect([
        Case("port given, that port", "/", all_of(backend_is("echo-v1"), response_headers({"X-Header-Set": "v1"})),
             host="echo-ports-a"),
        Case("port given, another port", "/", all_of(status_is(200), response_headers(absent=["X-Header-Set"])),
             host="echo-ports-a", port=8080),
        Case("no port, port 80", "/", all_of(backend_is("echo-v2"), response_headers({"X-Header-Set": "v2"})),
             host="echo-ports-b"),
        Case("no port, port 8080", "/", all_of(backend_is("echo-v2"), response_headers({"X-Header-Set": "v2"})),
             host="echo-ports-b", port=8080)], "MeshPorts")
    assert set(backends_seen(mesh, "echo-ports-a", count=12, path="/").keys()) == {"echo-v1"}
    # the unrouted port is the Service's own: both versions answer it
    spread = {a.backend for a in mesh.ask(Case("8080", "/", status_is(200), host="echo-ports-a", port=8080), count=20)}
    assert spread == {"echo-v1", "echo-v2"}, f"port 8080 of echo-ports-a (not routed) answered from {spread}"


@pytest.mark.features("MeshFrontend")
def test_route_applies_to_service_not_pod_ip(mesh):
    """A route bound to Service echo-front MUST apply to calls to echo-front, and MUST NOT apply to
    a call to one of its pods by IP."""
    pod = mesh.echo_pods["v2"]
    mesh.expect([
        Case("to the Service", "/", all_of(backend_is("echo-v2"), response_headers({"X-Header-Set": "set"})),
             host="echo-front"),
        Case("to the pod IP", "/", all_of(backend_is("echo-v2"), response_headers(absent=["X-Header-Set"])),
             host=f"{pod.ip}:8080")], "MeshFrontend")


@pytest.mark.features("MeshHTTPRouteBackendNotFound")
def test_backend_that_does_not_exist(mesh):
    """A rule whose backendRef names a Service that does not exist MUST answer 500, while the
    route's other rule serves, and the same path on an unrouted Service is 200."""
    mesh.expect([Case("missing backend", "/missing", status_is(500), host="echo-missing"),
                 Case("the route's other rule", "/other", backend_is("echo-v1"), host="echo-missing"),
                 Case("no route", "/missing", status_is(200), host="echo")], "MeshHTTPRouteBackendNotFound")
