"""MESH-HTTP: where an HTTPRoute bound to a Service sends its traffic (Gateway API conformance
tests/mesh/: mesh-basic, httproute-simple-same-namespace, httproute-matching,
httproute-query-param-matching, httproute-weight, mesh-split, mesh-ports, mesh-frontend,
mesh-frontend-hostname, the producer side of mesh-consumer-route; and of the core suite: httproute-header-matching,
httproute-all-backends-weight-zero).

Each route binds its own parent Service (meshworld.py); `echo`, bound to the same waypoint with no
route, answers from both versions and is the control: the same request to it shows what the route
changed.
"""
from __future__ import annotations

from datetime import datetime

import pytest

from conformance.convergence import eventually
from conformance.tests.meshworld import (Case, all_of, backend_is, redirect_to, response_headers, rule_is,
                                         status_is)

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
    # the headers of one match are AND'ed: version two AND color orange (two header matches,
    # which outrank version two alone); with either one missing that rule does not match
    ("/", {"Version": "two", "Color": "orange"}, "echo-v1"), ("/", {"Version": "two", "Color": "blue"}, "echo-v2"),
    ("/", {"Version": "one", "Color": "orange"}, "echo-v1"),
]


@pytest.mark.features("MeshHTTPRouteMatching")
def test_path_and_header_matching(mesh):
    """Path (PathPrefix by path segment, Exact) and header matches MUST pick the rule Gateway API's
    precedence names, and near misses MUST fall to the catch-all rule; the conditions of one match
    MUST all hold (AND), while a rule's several matches are alternatives (OR)."""
    mesh.expect([Case(f"{path} {headers}", path, backend_is(want), host="echo-match", headers=headers)
                 for path, headers, want in MATCH_CASES], "MeshHTTPRouteMatching")


@pytest.mark.features("MeshHTTPRouteMethodMatching")
def test_method_matching(mesh):
    """A rule matching method POST MUST take POSTs to its path, and only those; and among rules of
    the same path a method match MUST outrank a header match (Gateway API's precedence), whatever
    order the rules are listed in."""
    p, orange = "echo-precedence", {"Color": "orange"}
    mesh.expect([Case("POST /method", "/method", backend_is("echo-v2"), host="echo-match", method="POST"),
                 Case("GET /method", "/method", backend_is("echo-v1"), host="echo-match"),
                 Case("POST elsewhere", "/other", backend_is("echo-v1"), host="echo-match", method="POST"),
                 Case("method and header rules both match: the method's", "/precedence", rule_is("method"),
                      host=p, headers=orange),
                 Case("the method differs: the header's", "/precedence", rule_is("header"), host=p, method="POST",
                      headers=orange),
                 Case("no header: the method's", "/precedence", rule_is("method"), host=p),
                 Case("neither: no rule", "/precedence", status_is(404), host=p, method="POST")],
                "MeshHTTPRouteMethodMatching")


@pytest.mark.features("MeshHTTPRouteQueryParamMatching")
def test_query_param_matching(mesh):
    """queryParams matches MUST compare names and values exactly; the first of repeated values
    counts; and a header match MUST outrank a query match (Gateway API's precedence)."""
    p = "echo-precedence"
    mesh.expect([Case("dolphin", "/?animal=dolphin", backend_is("echo-v2"), host="echo-match"),
                 Case("whale", "/?animal=whale", backend_is("echo-v1"), host="echo-match"),
                 Case("first value counts", "/?animal=dolphin&animal=whale", backend_is("echo-v2"), host="echo-match"),
                 Case("name is case-sensitive", "/?Animal=dolphin", backend_is("echo-v1"), host="echo-match"),
                 Case("value is exact", "/?animal=dolphins", backend_is("echo-v1"), host="echo-match"),
                 Case("header and query rules both match: the header's", "/precedence?animal=whale",
                      rule_is("header"), host=p, method="POST", headers={"Color": "orange"}),
                 Case("no header: the query's", "/precedence?animal=whale", rule_is("query"), host=p, method="POST"),
                 Case("method and query rules both match: the method's", "/precedence?animal=whale",
                      rule_is("method"), host=p)],
                "MeshHTTPRouteQueryParamMatching")


@pytest.mark.features("MeshHTTPRouteWeight")
def test_weighted_backends(mesh):
    """backendRefs weighted 70/30 MUST split 500 requests within 5 points of 70/30 (both backends
    seen), and Exact path rules MUST split a Service's traffic by path (MeshTrafficSplit). A
    backendRef of weight 0 MUST get no request (its rule's other backend takes them all), and a
    rule whose every backendRef weighs 0 MUST answer 500."""
    mesh.expect([Case("/v1", "/v1", backend_is("echo-v1"), host="echo-split"),
                 Case("/v2", "/v2", backend_is("echo-v2"), host="echo-split")], "MeshTrafficSplit")
    mesh.expect([Case("weight 0 beside weight 1", "/weight-zero", backend_is("echo-v2"), host="echo-weight"),
                 Case("every weight 0", "/all-weights-zero", status_is(500), host="echo-weight")],
                "MeshHTTPRouteWeight: weight 0")
    seen = backends_seen(mesh, "echo-weight", "/weight-zero", count=24)
    assert seen == {"echo-v2": 24}, f"/weight-zero (echo-v1 weight 0, echo-v2 weight 1) answered from {seen}"
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


def created(mesh, name: str) -> datetime | None:
    """An HTTPRoute's creationTimestamp (None while it does not exist)."""
    stamp = ((mesh.sc.get("HTTPRoute", mesh.ns, name) or {}).get("metadata") or {}).get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


@pytest.mark.features("MeshHTTPRoutePrecedenceAcrossRoutes")
def test_the_older_of_two_tied_routes_wins(mesh):
    """Of two HTTPRoutes of one Service whose matches tie (/shared), the one created first MUST
    take the request, although the newer one's name sorts first; the newer route is in effect
    all the while (its own /newer), and takes /shared once the older one is deleted."""
    a = "echo-age"
    older, newer = mesh.manifest("age.yaml")
    names = [o["metadata"]["name"] for o in (older, newer)]
    mesh.sc.apply([older])
    try:
        mesh.expect([Case("the older route alone", "/shared", rule_is("older"), host=a)], "mesh-age-z-older in effect")

        def created_after_the_older() -> bool:
            # creationTimestamp counts whole seconds: a newer route of the same second is no newer
            mesh.sc.apply([newer])
            if created(mesh, names[1]) > created(mesh, names[0]):
                return True
            mesh.sc.delete([newer])
            return False
        eventually(lambda: [created_after_the_older()], bool, "mesh-age-a-newer created after mesh-age-z-older",
                   n_consecutive=1)
        mesh.expect([Case("the newer route is in effect", "/newer", rule_is("newer"), host=a),
                     Case("the tie goes to the older route", "/shared", rule_is("older"), host=a)],
                    "MeshHTTPRoutePrecedenceAcrossRoutes: the older route wins")
        mesh.sc.delete([older])
        mesh.expect([Case("the older route deleted: the newer one", "/shared", rule_is("newer"), host=a)],
                    "MeshHTTPRoutePrecedenceAcrossRoutes: the newer route alone")
    finally:
        mesh.sc.delete([older, newer])


@pytest.mark.features("MeshHTTPRouteConsumerRouteScope")
def test_a_route_in_another_namespace_leaves_this_namespaces_calls_alone(mesh):
    """An HTTPRoute in another namespace than its parent Service echo-consumer (a consumer route)
    MUST NOT change the calls of clients outside the route's namespace: a call from the
    Service's own namespace keeps the Service's own answer. The same route in the Service's
    namespace (a producer route) MUST change that call."""
    c = "echo-consumer"
    other = mesh.sc.namespace("mesh-consumer")
    producer = mesh.manifest("consumer-route.yaml")
    consumer = mesh.manifest("consumer-route.yaml")
    for route in producer + consumer:
        route["spec"]["parentRefs"][0]["namespace"] = mesh.ns
    for route in consumer:
        route["metadata"]["namespace"] = other
    modified = redirect_to(302, "http://consumer-route.example/")
    untouched = all_of(status_is(200), response_headers(absent=["Location"]))
    mesh.sc.apply(consumer)
    try:
        # the producer route, applied after the consumer route, shows that the mesh has taken both
        mesh.sc.apply(producer)
        mesh.expect([Case("a producer route", "/", modified, host=c)], "the producer route redirects the call")
        mesh.sc.delete(producer)
        mesh.expect([Case("a consumer route of another namespace only", "/", untouched, host=c)],
                    "MeshHTTPRouteConsumerRouteScope: the consumer route leaves the call alone")
        seen = set(backends_seen(mesh, c))
        assert seen == {"echo-v1", "echo-v2"}, f"{c} (no route for this client) answered from {seen}"
    finally:
        mesh.sc.delete(producer + consumer)


@pytest.mark.features("MeshHTTPRouteRegularExpressionMatching")
def test_regular_expression_matching(mesh):
    """A RegularExpression path, header or query match MUST match the whole path or value (as RE2
    full matches, what Istio's Envoy applies), not a part of it: `orange|red` admits `red`, not
    `dark-orange`; `[0-9]+` admits `42`, not `42a`."""
    r = "echo-regex"
    mesh.expect([
        Case("path", "/regex/123", rule_is("path"), host=r),
        Case("path: more after the match", "/regex/123/x", status_is(404), host=r),
        Case("path: the match not at the start", "/v1/regex/123", status_is(404), host=r),
        Case("header", "/header", rule_is("header"), host=r, headers={"Color": "orange"}),
        Case("header, the other alternative", "/header", rule_is("header"), host=r, headers={"Color": "red"}),
        Case("header: the match inside the value", "/header", status_is(404), host=r, headers={"Color": "dark-orange"}),
        Case("header: more after the match", "/header", status_is(404), host=r, headers={"Color": "reddish"}),
        Case("query", "/query?id=42", rule_is("query"), host=r),
        Case("query: more after the match", "/query?id=42a", status_is(404), host=r),
        Case("query: more before the match", "/query?id=a42", status_is(404), host=r),
    ], "MeshHTTPRouteRegularExpressionMatching")


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


@pytest.mark.features("MeshClusterIPMatching")
def test_route_follows_the_service_address_not_the_host_header(mesh):
    """A route bound to Service echo-front MUST apply to calls to echo-front's address whatever
    Host they carry, and MUST NOT apply to a call to another Service's address that names
    echo-front in Host (Gateway API MeshFrontendHostname)."""
    mesh.expect([
        Case("to echo-front, Host naming echo-v1", "/", all_of(backend_is("echo-v2"), response_headers(
            {"X-Header-Set": "set"})), host="echo-front", headers={"Host": mesh.host("echo-v1")}),
        Case("to echo-v1, Host naming echo-front", "/", all_of(backend_is("echo-v1"), response_headers(
            absent=["X-Header-Set"])), host="echo-v1", headers={"Host": mesh.host("echo-front")}),
    ], "MeshClusterIPMatching")


@pytest.mark.features("MeshHTTPRouteBackendNotFound")
def test_backend_that_does_not_exist(mesh):
    """A rule whose backendRef names a Service that does not exist MUST answer 500, while the
    route's other rule serves, and the same path on an unrouted Service is 200."""
    mesh.expect([Case("missing backend", "/missing", status_is(500), host="echo-missing"),
                 Case("the route's other rule", "/other", backend_is("echo-v1"), host="echo-missing"),
                 Case("no route", "/missing", status_is(200), host="echo")], "MeshHTTPRouteBackendNotFound")
