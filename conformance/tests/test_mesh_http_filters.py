"""MESH-HTTP: what an HTTPRoute's filters do to a request and its answer (Gateway API conformance
tests/mesh/: httproute-request-header-modifier, -request-header-modifier-backend,
httproute-redirect-*, httproute-30x-redirect, httproute-rewrite-path; and the core suite's
response header modifier and httproute-rewrite-host). Each filter is shown against the unrouted
`echo` Service (meshworld.py)."""
from __future__ import annotations

import pytest

from conformance.convergence import eventually
from conformance.tests.meshworld import (Case, all_of, backend_is, echoed_host, echoed_path, redirect_to,
                                         request_headers, response_headers, status_is)


def v1_with(expected=None, absent=()):
    return all_of(backend_is("echo-v1"), request_headers(expected, absent))


@pytest.mark.features("MeshHTTPRouteRequestHeaderModifier")
def test_request_header_modifier(mesh):
    """RequestHeaderModifier MUST set (overwriting), add (appending), and remove request headers,
    with names matched case-insensitively; without the route the request arrives as sent."""
    h = "echo-headers"
    mesh.expect([
        Case("set", "/set", v1_with({"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
             host=h, headers={"Some-Other-Header": "val"}),
        Case("set overwrites", "/set", v1_with({"X-Header-Set": "set-overwrites-values"}), host=h,
             headers={"X-Header-Set": "some-other-value"}),
        Case("add", "/add", v1_with({"X-Header-Add": "add-appends-values"}), host=h),
        Case("add appends", "/add", v1_with({"X-Header-Add": "some-other-value,add-appends-values"}), host=h,
             headers={"X-Header-Add": "some-other-value"}),
        Case("remove", "/remove", v1_with(absent=["X-Header-Remove"]), host=h, headers={"X-Header-Remove": "val"}),
        Case("multiple", "/multiple", v1_with(
            {"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1",
             "X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3",
             "Another-Header": "another-header-val"}, absent=["X-Header-Remove-1", "X-Header-Remove-2"]),
             host=h, headers={"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2",
                              "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"}),
        Case("case-insensitive names", "/case-insensitivity", v1_with(
            {"X-Header-Set": "header-set", "X-Header-Add": "original,header-add"}, absent=["X-Header-Remove"]),
             host=h, headers={"x-header-set": "original", "x-header-add": "original", "X-HEADER-REMOVE": "val"}),
        Case("no route: as sent", "/set", request_headers({"X-Header-Set": "some-other-value"}, absent=["X-Header-Add"]),
             host="echo", headers={"X-Header-Set": "some-other-value"}),
        Case("no route: nothing removed", "/remove", request_headers({"X-Header-Remove": "val"}), host="echo",
             headers={"X-Header-Remove": "val"}),
    ], "MeshHTTPRouteRequestHeaderModifier")


@pytest.mark.features("MeshHTTPRouteResponseHeaderModifier")
def test_response_header_modifier(mesh):
    """ResponseHeaderModifier MUST set, add and remove headers of the backend's answer, and only on
    the rule it belongs to."""
    mesh.expect([
        Case("modified", "/response", all_of(backend_is("echo-v1"), response_headers(
            {"X-Header-Set": "set-overwrites-values", "X-Header-Add": "add-appends-values"},
            absent=["Content-Type"])), host="echo-headers"),
        Case("another rule", "/set", all_of(status_is(200), response_headers(
            {"Content-Type": "application/json"}, absent=["X-Header-Set", "X-Header-Add"])), host="echo-headers"),
        Case("no route", "/response", all_of(status_is(200), response_headers(
            {"Content-Type": "application/json"}, absent=["X-Header-Set"])), host="echo"),
    ], "MeshHTTPRouteResponseHeaderModifier")


@pytest.mark.features("MeshHTTPRouteBackendResponseHeaderModifier")
def test_backend_response_header_modifier(mesh):
    """A ResponseHeaderModifier on a backendRef MUST apply to the answers of that backend, and not
    to those of the rule's other backend."""
    def seen() -> set:
        answers = mesh.ask(Case("split", "/response-split", status_is(200), host="echo-backend-headers"), count=24)
        return {(a.backend, a.headers.get("x-backend"), a.headers.get("content-type")) for a in answers}
    eventually(lambda: [seen()], lambda s: s == {("echo-v1", "v1", None), ("echo-v2", None, "application/json")},
               "MeshHTTPRouteBackendResponseHeaderModifier: echo-v1's answers with X-Backend: v1 and no "
               "Content-Type, echo-v2's as it sent them", n_consecutive=1)


@pytest.mark.features("MeshHTTPRouteBackendRequestHeaderModifier")
def test_backend_request_header_modifier(mesh):
    """A RequestHeaderModifier on a backendRef MUST apply to requests sent to that backend, and not
    to those the same rule sends to its other backend."""
    h = "echo-backend-headers"
    mesh.expect([
        Case("set", "/set", v1_with({"X-Header-Set": "set-overwrites-values"}), host=h,
             headers={"X-Header-Set": "some-other-value"}),
        Case("add", "/add", v1_with({"X-Header-Add": "some-other-value,add-appends-values"}), host=h,
             headers={"X-Header-Add": "some-other-value"}),
        Case("remove", "/remove", v1_with(absent=["X-Header-Remove"]), host=h, headers={"X-Header-Remove": "val"}),
    ], "MeshHTTPRouteBackendRequestHeaderModifier")
    answers = mesh.ask(Case("split", "/split", status_is(200), host=h), count=24)
    by_backend = {(a.backend, a.request_header("X-Backend")) for a in answers}
    assert by_backend == {("echo-v1", "v1"), ("echo-v2", None)}, \
        f"expected echo-v1 with X-Backend: v1 and echo-v2 without it, got {sorted(map(str, by_backend))}"


def redirect(mesh, path: str, status: int, location: str) -> Case:
    """A redirect case; `{host}` in `location` is the name the client called (the Service's FQDN)."""
    location = location.format(host=mesh.host("echo-redirect"))
    return Case(f"{path} -> {status} {location}", path, redirect_to(status, location), host="echo-redirect")


@pytest.mark.features("MeshHTTPRouteRedirectHostAndStatus")
def test_redirect_host_and_status(mesh):
    """RequestRedirect MUST answer at the waypoint (302 by default, else the status given) with a
    Location naming the new host; the unrouted Service answers 200 to the same path."""
    mesh.expect([
        redirect(mesh, "/hostname-redirect", 302, "http://example.org/hostname-redirect"),
        redirect(mesh, "/host-and-status", 301, "http://example.org/host-and-status"),
        redirect(mesh, "/status-303", 303, "http://{host}/status-303"),
        redirect(mesh, "/status-307", 307, "http://{host}/status-307"),
        redirect(mesh, "/status-308", 308, "http://{host}/status-308"),
        Case("no route", "/hostname-redirect", all_of(status_is(200), response_headers(absent=["Location"])),
             host="echo"),
    ], "MeshHTTPRouteRedirectHostAndStatus")


@pytest.mark.features("MeshHTTPRouteRedirectPath")
def test_redirect_path(mesh):
    """RequestRedirect ReplacePrefixMatch MUST replace the matched path prefix (keeping the rest
    and the query) and ReplaceFullPath the whole path."""
    mesh.expect([
        redirect(mesh, "/original-prefix/lemon", 302, "http://{host}/replacement-prefix/lemon"),
        redirect(mesh, "/original-prefix", 302, "http://{host}/replacement-prefix"),
        redirect(mesh, "/original-prefix/lemon?fruit=yes", 302, "http://{host}/replacement-prefix/lemon?fruit=yes"),
        redirect(mesh, "/full/path/original", 302, "http://{host}/full-path-replacement"),
        redirect(mesh, "/path-and-host", 302, "http://example.org/replacement-prefix"),
    ], "MeshHTTPRouteRedirectPath")


@pytest.mark.features("MeshHTTPRouteRedirectPort")
def test_redirect_port(mesh):
    """RequestRedirect `port` MUST set the Location's port."""
    mesh.expect([
        redirect(mesh, "/port", 302, "http://{host}:8083/port"),
        redirect(mesh, "/port-and-host-and-status", 301, "http://example.org:8083/port-and-host-and-status"),
    ], "MeshHTTPRouteRedirectPort")


@pytest.mark.features("MeshHTTPRouteSchemeRedirect")
def test_redirect_scheme(mesh):
    """RequestRedirect `scheme` MUST set the Location's scheme, leaving out its well-known port
    unless a port is given."""
    mesh.expect([
        redirect(mesh, "/scheme", 302, "https://{host}/scheme"),
        redirect(mesh, "/scheme-and-port", 302, "https://{host}:8443/scheme-and-port"),
        redirect(mesh, "/scheme-and-host", 302, "https://example.org/scheme-and-host"),
    ], "MeshHTTPRouteSchemeRedirect")


@pytest.mark.features("MeshHTTPRouteHostRewrite")
def test_rewrite_host(mesh):
    """URLRewrite `hostname` MUST replace the Host the backend receives (one Host, the new name);
    the route's other rules, and the unrouted Service, pass the Host the client sent."""
    r = "echo-rewrite"
    mesh.expect([
        Case("rewritten", "/rewrite-host", all_of(backend_is("echo-v1"), echoed_host("rewritten.example"),
                                                  request_headers({"Host": "rewritten.example"})), host=r),
        Case("another rule", "/prefix/one", echoed_host(mesh.host(r)), host=r),
        Case("no route", "/rewrite-host", echoed_host(mesh.host("echo")), host="echo"),
    ], "MeshHTTPRouteHostRewrite")


@pytest.mark.features("MeshHTTPRouteRewritePath")
def test_rewrite_path(mesh):
    """URLRewrite MUST change the path the backend receives (ReplacePrefixMatch by path segment,
    ReplaceFullPath whole), and may be combined with a header modifier. A PathPrefix written with
    a trailing '/' (`/trailing-slash/`) matches and is replaced as if written without it."""
    r = "echo-rewrite"
    mesh.expect([
        Case("prefix", "/prefix/one/two", all_of(backend_is("echo-v1"), echoed_path("/one/two")), host=r),
        Case("prefix, query kept", "/prefix/one?x=1", all_of(backend_is("echo-v1"), echoed_path("/one?x=1")), host=r),
        Case("strip prefix", "/strip-prefix/three", echoed_path("/three"), host=r),
        Case("strip the whole path", "/strip-prefix", echoed_path("/"), host=r),
        Case("full", "/full/one/two", echoed_path("/one"), host=r),
        Case("full + headers", "/full/rewrite-path-and-modify-headers/test", all_of(echoed_path("/test"), request_headers(
            {"X-Header-Set": "set-overwrites-values", "X-Header-Add": "header-val-1"}, absent=["X-Header-Remove"])),
             host=r, headers={"X-Header-Remove": "remove-val"}),
        Case("prefix with a trailing slash", "/trailing-slash/two", all_of(backend_is("echo-v1"), echoed_path("/one/two")),
             host=r),
        Case("prefix with a trailing slash, the path without it", "/trailing-slash",
             all_of(backend_is("echo-v1"), echoed_path("/one")), host=r),
        Case("prefix with a trailing slash, the path with it", "/trailing-slash/",
             all_of(backend_is("echo-v1"), echoed_path("/one/")), host=r),
        Case("not a path-segment prefix: no rule", "/trailing-slashes", status_is(404), host=r),
        Case("no route", "/prefix/one/two", echoed_path("/prefix/one/two"), host="echo"),
    ], "MeshHTTPRouteRewritePath")
