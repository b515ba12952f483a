"""HTTP routing at the waypoint, without sockets: the manifests the conformance tests apply
(conformance/tests/mesh/*.yaml) validated, compiled by the control plane (precedence, references)
and decided by the L7 engine, as tables of request -> decision; plus the validation errors and the
retry backoff."""

import random
from pathlib import Path

import pytest
import yaml

from reference_impl.api import ManifestError, validate
from reference_impl.controlplane.index import MeshIndex
from reference_impl.controlplane.routes import service_routes
from reference_impl.l7 import config as l7
from reference_impl.l7.httproute import bind, path_matches, redirect_location, route
from reference_impl.l7.retry import MAX_BACKOFF_FACTOR, backoff
from reference_impl.xds import Service
from reference_impl.xds.resources import RouteMatch, RouteRedirect, ServiceRoutes

MANIFESTS = Path(__file__).resolve().parents[2] / "conformance" / "tests" / "mesh"
NS = "m"
SERVICES = ["echo", "echo-v1", "echo-v2", "echo-simple", "echo-match", "echo-headers", "echo-backend-headers",
            "echo-redirect", "echo-rewrite", "echo-weight", "echo-split", "echo-ports-a", "echo-ports-b",
            "echo-front", "echo-missing", "echo-timeout", "echo-retry", "echo-fault"]


def key(name: str) -> str:
    return f"{NS}/{name}.{NS}.svc.cluster.local"


def compiled_tables(objects):
    services = {key(n): Service(name=n, namespace=NS, hostname=f"{n}.{NS}.svc.cluster.local",
                                vips=[f"10.96.0.{i + 2}"], ports={"80": 8080, "8080": 8080})
                for i, n in enumerate(SERVICES)}
    compiled = service_routes(MeshIndex.build(objects), services, list(services.values()))
    wire = [ServiceRoutes.from_dict(r.to_dict(), "test") for r in compiled]   # as the waypoint reads it
    engine_services = {k: l7.Service(key=k, name=s.name, namespace=NS, hostname=s.hostname, vips=tuple(s.vips),
                                     ports={80: 8080, 8080: 8080}, endpoints=()) for k, s in services.items()}
    return bind(wire, engine_services)


@pytest.fixture(scope="module")
def tables():
    objects = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            doc["metadata"]["namespace"] = NS
            objects.append(validate(doc, str(path)))
    return compiled_tables(objects)


def decide(tables, service, target, method="GET", headers=(), port=80, seed=1):
    return route(tables, key(service), port, method, target, [("host", service), *headers], random.Random(seed))


MATCHING = [
    ("/", (), "echo-v1"), ("/example", (), "echo-v1"), ("/v2", (), "echo-v2"), ("/v2/", (), "echo-v2"),
    ("/v2/example", (), "echo-v2"), ("/v2example", (), "echo-v1"), ("/foo/v2/example", (), "echo-v1"),
    ("/", (("version", "two"),), "echo-v2"), ("/", (("version", "Two"),), "echo-v1"),
    ("/exact", (), "echo-v2"), ("/exact/", (), "echo-v1"),
    ("/?animal=dolphin", (), "echo-v2"), ("/?Animal=dolphin", (), "echo-v1"),
    ("/?animal=dolphin&animal=whale", (), "echo-v2"),
    # a header match outranks a query match on the same path (more header matches)
    ("/?animal=dolphin", (("version", "one"),), "echo-v1"),
]


@pytest.mark.parametrize("target,headers,backend", MATCHING)
def test_matching_and_precedence(tables, target, headers, backend):
    assert decide(tables, "echo-match", target, headers=headers).backend.name == backend


def test_method_match(tables):
    assert decide(tables, "echo-match", "/method", method="POST").backend.name == "echo-v2"
    assert decide(tables, "echo-match", "/method").backend.name == "echo-v1"


@pytest.mark.parametrize("kind,prefix,path,hit", [
    ("PathPrefix", "/abc", "/abc", True), ("PathPrefix", "/abc", "/abc/", True), ("PathPrefix", "/abc", "/abc/d", True),
    ("PathPrefix", "/abc", "/abcd", False), ("PathPrefix", "/abc/", "/abc", True), ("PathPrefix", "/", "/x", True),
    ("StringPrefix", "/abc", "/abcd", True), ("Exact", "/abc", "/abc/", False), ("RegularExpression", "/a.c", "/abc", True),
    ("RegularExpression", "/a.c", "/abcd", False),
])
def test_path_match_kinds(kind, prefix, path, hit):
    assert path_matches(RouteMatch(path_type=kind, path=prefix), path) is hit


REDIRECTS = [
    ("/port", 302, "http://echo-redirect:8083/port"),
    ("/port-and-host-and-status", 301, "http://example.org:8083/port-and-host-and-status"),
    ("/scheme", 302, "https://echo-redirect/scheme"),
    ("/scheme-and-port", 302, "https://echo-redirect:8443/scheme-and-port"),
    ("/original-prefix/lemon?x=1", 302, "http://echo-redirect/replacement-prefix/lemon?x=1"),
    ("/full/a/b", 302, "http://echo-redirect/full-path-replacement"),
    ("/status-307", 307, "http://echo-redirect/status-307"),
]


@pytest.mark.parametrize("target,status,location", REDIRECTS)
def test_redirects(tables, target, status, location):
    decision = decide(tables, "echo-redirect", target)
    assert (decision.status, decision.reply_headers) == (status, [("location", location)])


def test_redirect_without_port_or_scheme_keeps_the_request_port():
    redirect = RouteRedirect(hostname="example.org")
    assert redirect_location(redirect, RouteMatch(), "echo:8080", "/a", "", 8080) == "http://example.org:8080/a"
    assert redirect_location(redirect, RouteMatch(), "echo", "/a", "", 80) == "http://example.org/a"
    assert redirect_location(RouteRedirect(scheme="https"), RouteMatch(), "echo:8080", "/a", "", 8080) == \
        "https://echo/a"


@pytest.mark.parametrize("target,rewritten", [
    ("/prefix/one/two", "/one/two"), ("/strip-prefix/three", "/three"), ("/strip-prefix", "/"),
    ("/full/one/two?q=1", "/one?q=1"),
])
def test_rewrite(tables, target, rewritten):
    assert decide(tables, "echo-rewrite", target).action.target == rewritten


def test_header_modifiers(tables):
    added = decide(tables, "echo-headers", "/add", headers=(("x-header-add", "some"),)).headers
    assert [v for n, v in added if n == "x-header-add"] == ["some", "add-appends-values"]
    removed = decide(tables, "echo-headers", "/case-insensitivity", headers=(("X-HEADER-REMOVE", "v"),)).headers
    assert not [n for n, _ in removed if n.lower() == "x-header-remove"]
    assert ("x-header-set", "header-set") in removed


def test_weights_and_missing_backends(tables):
    picks = [decide(tables, "echo-weight", "/", seed=s).backend.name for s in range(2000)]
    assert 0.65 < picks.count("echo-v1") / len(picks) < 0.75
    missing = decide(tables, "echo-missing", "/missing")
    assert missing.status == 500 and "does not exist" in missing.reason
    assert decide(tables, "echo-missing", "/elsewhere").backend.name == "echo-v1"


def test_ports_and_unrouted_services(tables):
    assert decide(tables, "echo-ports-a", "/", port=8080) is None         # not a port the route binds
    assert decide(tables, "echo-ports-b", "/", port=8080).backend.name == "echo-v2"
    assert decide(tables, "echo", "/") is None                            # no route at all
    assert decide(tables, "echo-split", "/v3").status == 404              # a routed service, no match


def test_timeouts_retries_and_faults(tables):
    assert decide(tables, "echo-timeout", "/bounded").action.timeout == 0.5
    assert decide(tables, "echo-timeout", "/disabled").action.timeout is None
    retry = decide(tables, "echo-retry", "/retried").action.retry
    assert (retry.attempts, retry.codes, retry.backoff_seconds) == (2, [500], 0.01)
    assert decide(tables, "echo-retry", "/none").action.retry is None
    abort = decide(tables, "echo-fault", "/abort")
    assert (abort.status, abort.body) == (418, b"fault filter abort")
    delayed = decide(tables, "echo-fault", "/delay")
    assert delayed.status is None and delayed.action.delay == 1.0
    assert decide(tables, "echo-fault", "/other").action.delay is None


def test_oldest_route_wins_a_tie():
    def httproute(name, created, backend):
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": NS, "creationTimestamp": created},
                "spec": {"parentRefs": [{"kind": "Service", "name": "echo"}],
                         "rules": [{"backendRefs": [{"name": backend, "port": 8080}]}]}}
    tables = compiled_tables([httproute("b-new", "2026-01-02T00:00:00Z", "echo-v2"),
                              httproute("a-old", "2026-01-01T00:00:00Z", "echo-v1")])
    assert decide(tables, "echo", "/").backend.name == "echo-v1"


def test_backoff_is_bounded():
    rng = random.Random(0)
    assert all(0 <= backoff(0.01, n, rng) <= MAX_BACKOFF_FACTOR * 0.01 for n in range(1, 10) for _ in range(50))


ROUTE = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r", "namespace": NS},
         "spec": {"parentRefs": [{"kind": "Service", "name": "echo"}], "rules": [{}]}}
VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "v", "namespace": NS},
      "spec": {"hosts": ["echo"], "http": [{}]}}


@pytest.mark.parametrize("base,rule,field", [
    (ROUTE, {"timeouts": {"request": "soon"}}, "spec.rules[0].timeouts.request: 'soon' is not a duration"),
    (ROUTE, {"retry": {"codes": [200]}}, "spec.rules[0].retry.codes[0]: the integer 200 is not an HTTP status"),
    (ROUTE, {"filters": [{"type": "RequestMirror", "requestMirror": {}}]},
     "spec.rules[0].filters[0].type: filter RequestMirror is not supported"),
    (ROUTE, {"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 304}}]},
     "requestRedirect.statusCode: 304 is not a redirect status"),
    (ROUTE, {"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath"}}}]},
     "urlRewrite.path.replaceFullPath: required field is missing"),
    (ROUTE, {"matches": [{"headers": [{"name": "x", "value": "(", "type": "RegularExpression"}]}]},
     "spec.rules[0].matches[0].headers[0].value: '(' is not a regular expression"),
    (VS, {"fault": {"abort": {"httpStatus": 42}}}, "spec.http[0].fault.abort.httpStatus: 42 is not an HTTP status"),
    (VS, {"fault": {"delay": {"percentage": {"value": 50}}}}, "spec.http[0].fault.delay.fixedDelay: required"),
    (VS, {"match": [{"uri": {"exact": "/a", "prefix": "/b"}}]}, "spec.http[0].match[0].uri: needs exactly one of"),
    (VS, {"route": [{"destination": {"host": "echo", "subset": "v1"}}]}, "destination.subset: subsets"),
])
def test_validation_names_the_field(base, rule, field):
    obj = yaml.safe_load(yaml.safe_dump(base))
    (obj["spec"]["rules"] if obj["kind"] == "HTTPRoute" else obj["spec"]["http"])[0].update(rule)
    with pytest.raises(ManifestError) as err:
        validate(obj, "route.yaml")
    assert field in str(err.value)
