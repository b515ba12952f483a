"""AMBIENT-L7: AuthorizationPolicy at the waypoint (ISTIO-SEMANTICS sections 4.6, 7 and 8).

Each test applies its policies (YAML in conformance/tests/l7/) to the shared L7 world's waypoint
with `targetRefs`, and converges a table: every match kind next to its near misses, each row with
the exact status the spec gives (a deny is 403 `RBAC: access denied`). Before each policy, the
same rows reach the app; the positive rows under the policy show it is not a blanket deny.
"""
from __future__ import annotations

import pytest

from conformance.tests.l4table import common_cidr
from conformance.tests.l7world import UPSTREAM_REFUSED, Row

OK, DENY = 200, 403


@pytest.mark.features("L7AuthorizationAllowNothing")
def test_allow_nothing_policy_on_the_waypoint_denies_every_request(l7):
    """An ALLOW policy without rules attached to the waypoint MUST answer every request through it
    with 403 `RBAC: access denied`, from every client and on every port; removing it MUST restore 200."""
    rows = [Row(c, p, DENY, "allow-nothing", port=port)
            for c in "ab" for p in ("/get", "/ip") for port in (8000, 8080)]
    l7.converge_under(rows, "allow-nothing", "with allow-nothing on the waypoint")
    l7.converge([Row(r.client, r.path, OK, "allow-nothing removed", port=r.port) for r in rows],
                "after deleting allow-nothing", n_consecutive=1)


PATH_ROWS = [
    # exact: only the path itself, not a trailing slash, a longer name, another case or a child
    Row("a", "/ip", OK, "exact /ip"),
    Row("a", "/ip/", DENY, "exact /ip does not admit /ip/"),
    Row("a", "/ipx", DENY, "exact /ip does not admit /ipx"),
    Row("a", "/IP", DENY, "exact /ip does not admit /IP"),
    Row("a", "/ip/x", DENY, "exact /ip does not admit a child"),
    Row("a", "/ip?x=1", OK, "exact /ip ignores the query string"),
    # prefix x*: its children, not its parent nor a sibling sharing the letters
    Row("a", "/anything/prefix/a/b", OK, "prefix /anything/prefix/*"),
    Row("a", "/anything/prefix/", OK, "prefix /anything/prefix/* admits the bare directory"),
    Row("a", "/anything/prefix", DENY, "a prefix does not admit its parent"),
    Row("a", "/anything/prefixx", DENY, "a prefix does not admit a sibling name"),
    # suffix *x
    Row("a", "/anything/a/suffix.json", OK, "suffix */suffix.json"),
    Row("a", "/anything/a/suffix.jsonx", DENY, "suffix does not admit a longer ending"),
    Row("a", "/anything/a/suffixjson", DENY, "suffix does not admit a near ending"),
    # DENY before ALLOW: this path matches the prefix ALLOW and a DENY
    Row("a", "/anything/prefix/denied", DENY, "DENY wins over a matching ALLOW"),
    Row("a", "/anything/prefix/denied-not", OK, "the DENY path is exact: its neighbour is admitted"),
    # nothing else is admitted
    Row("a", "/get", DENY, "a path no rule names"),
]
TEMPLATE_ROWS = [
    Row("a", "/anything/one/abc", OK, "{*} matches one segment"),
    Row("a", "/anything/one/abc/def", DENY, "{*} does not span a /"),
    Row("a", "/anything/one/", DENY, "{*} does not match an empty segment"),
    Row("a", "/anything/one", DENY, "{*} needs its segment"),
    Row("a", "/anything/rest/abc/x/d/e/f", OK, "{*}/x/{**} with a deep rest"),
    Row("a", "/anything/rest/abc/x/", OK, "{**} matches an empty rest"),
    Row("a", "/anything/rest/a/b/x/c", DENY, "{*} before /x is one segment"),
    Row("a", "/anything/rest/abc/y/c", DENY, "the literal segment x must be there"),
]


@pytest.mark.features("L7AuthorizationPaths", "L7AuthorizationDenyOverAllow")
def test_paths_exact_prefix_suffix_and_deny_over_allow(l7):
    """At the waypoint, `paths` MUST match exactly (an exact `/ip` admits neither `/ip/`, `/ipx`,
    `/IP` nor a child; the query string is not part of the path), as a prefix `x*` (not its parent)
    and as a suffix `*x`; a request no rule admits MUST get 403, and a DENY policy MUST win over a
    matching ALLOW."""
    l7.converge_under(PATH_ROWS, "match-paths", "paths at the waypoint")


@pytest.mark.features("L7AuthorizationPathTemplates")
def test_path_templates(l7):
    """At the waypoint, a `paths` value with Istio's `{*}` MUST match exactly one non-empty path
    segment and `{**}` any rest (also empty), each against its near misses."""
    l7.converge_under(TEMPLATE_ROWS, "match-paths", "path templates at the waypoint")


def request_rows(l7) -> list[Row]:
    no_port = (("Host", l7.host),)
    return [
        Row("a", "/anything/method", OK, "methods POST", method="POST"),
        Row("a", "/anything/method", DENY, "methods POST does not admit GET"),
        Row("a", "/anything/host", OK, "hosts match case-insensitively, with the port"),
        Row("a", "/anything/host", DENY, "a host with a port does not admit the host without it", headers=no_port),
        Row("a", "/anything/host-no-port", OK, "a host without a port", headers=no_port),
        Row("a", "/anything/host-no-port", DENY, "a host without a port does not admit it with one"),
        Row("a", "/anything/port", OK, "ports 8080", port=8080),
        Row("a", "/anything/port", DENY, "ports 8080 does not admit 8000"),
        Row("a", "/anything/header", OK, "request.headers[x-team] blue", headers=(("x-team", "blue"),)),
        Row("a", "/anything/header", DENY, "request.headers exact: not bluex", headers=(("x-team", "bluex"),)),
        Row("a", "/anything/header", DENY, "request.headers: absent header"),
        Row("a", "/anything/not/x", OK, "not* forms: the control"),
        Row("a", "/anything/not/secret", DENY, "notPaths"),
        Row("a", "/anything/not/x", DENY, "notMethods DELETE", method="DELETE"),
        Row("a", "/anything/not/x", DENY, "notPorts 8080", port=8080),
        Row("a", "/anything/not/x", DENY, "notHosts (the host without its port)", headers=no_port),
        Row("a", "/anything/not-header", OK, "when notValues: absent header"),
        Row("a", "/anything/not-header", OK, "when notValues: another value", headers=(("x-team", "blue"),)),
        Row("a", "/anything/not-header", DENY, "when notValues red", headers=(("x-team", "red"),)),
    ]


@pytest.mark.features("L7AuthorizationRequestFields", "L7AuthorizationNotForms")
def test_methods_hosts_ports_headers_and_not_forms(l7):
    """At the waypoint, `methods`, `hosts` (case-insensitive; the Host header's port is part of the
    value), `ports` (the port the client called), `when: request.headers[...]`, and each of
    `notPaths`, `notMethods`, `notPorts`, `notHosts` and `notValues` MUST admit and deny exactly as
    written, each against its near miss."""
    rows = request_rows(l7)
    l7.converge_under(rows, "match-request", "request fields at the waypoint")


SOURCE_ROWS = [
    Row("a", "/anything/principal", OK, "principals: client-a"),
    Row("b", "/anything/principal", DENY, "principals: not client-b"),
    Row("a", "/anything/namespace", OK, "namespaces: client-a's"),
    Row("b", "/anything/namespace", DENY, "namespaces: not client-b's"),
    Row("a", "/anything/not-principal", OK, "notPrincipals client-b admits client-a"),
    Row("b", "/anything/not-principal", DENY, "notPrincipals client-b"),
    Row("a", "/anything/not-namespace", OK, "notNamespaces client-b's admits client-a"),
    Row("b", "/anything/not-namespace", DENY, "notNamespaces client-b's"),
    Row("a", "/anything/proxy-identity", DENY, "the waypoint's or ztunnel's identity is not the source"),
    Row("b", "/anything/proxy-identity", DENY, "the waypoint's or ztunnel's identity is not the source"),
]


def source_ip_rows(l7) -> list[Row]:
    def xff(ip):
        return (("X-Forwarded-For", ip),)
    a, b = l7.a.ip, l7.b.ip
    return [
        Row("a", "/anything/ip-block", DENY, "ipBlocks client-a/32"),
        Row("b", "/anything/ip-block", OK, "ipBlocks client-a/32 does not match client-b"),
        Row("a", "/anything/ip-block", DENY, "a client's X-Forwarded-For does not change its address",
            headers=xff(b)),
        Row("a", "/anything/remote-ip-block", DENY, "remoteIpBlocks client-a/32"),
        Row("a", "/anything/remote-ip-block", DENY, "remoteIpBlocks: a client's X-Forwarded-For is not trusted",
            headers=xff(b)),
        Row("b", "/anything/remote-ip-block", OK, "remoteIpBlocks: client-b naming client-a is still client-b",
            headers=xff(a)),
        Row("a", "/anything/not-ip-block", OK, "notIpBlocks client-a/32 admits client-a"),
        Row("b", "/anything/not-ip-block", DENY, "notIpBlocks client-a/32 denies client-b"),
        Row("a", "/anything/cidr", DENY, "a CIDR holding both clients: client-a"),
        Row("b", "/anything/cidr", DENY, "a CIDR holding both clients: client-b"),
        Row("a", "/anything/when-source-ip", DENY, "when source.ip client-a"),
        Row("b", "/anything/when-source-ip", OK, "when source.ip client-a does not match client-b"),
        Row("a", "/anything/when-remote-ip", DENY, "when remote.ip: a client's X-Forwarded-For is not trusted",
            headers=xff(b)),
        Row("a", "/anything/other", OK, "a path no rule names"),
    ]


@pytest.mark.features("L7AuthorizationSourceAddress")
def test_source_addresses_are_the_original_clients_and_not_a_header(l7):
    """At the waypoint, `ipBlocks`, `notIpBlocks` and `remoteIpBlocks` MUST match the ORIGINAL
    client's pod address: a /32 of client-a denies client-a and not client-b, a CIDR holding both
    denies both, and so do `when` conditions on `source.ip` and `remote.ip`; an `X-Forwarded-For`
    the client writes MUST change nothing (client-a naming client-b is still denied; client-b naming
    client-a still admitted)."""
    assert l7.a.ip != l7.b.ip, f"the two clients share an address: {l7.a.ip}"
    l7.converge_under(source_ip_rows(l7), "match-source-ip", "source addresses at the waypoint",
                      a_ip=l7.a.ip, both_cidr=common_cidr(l7.a.ip, l7.b.ip))


CONDITION_ROWS = [
    Row("a", "/anything/when-principal", OK, "when source.principal client-a"),
    Row("b", "/anything/when-principal", DENY, "when source.principal: not client-b"),
    Row("a", "/anything/when-namespace", OK, "when source.namespace client-a's"),
    Row("b", "/anything/when-namespace", DENY, "when source.namespace: not client-b's"),
    Row("a", "/anything/when-not-principal", DENY, "when source.principal notValues client-a"),
    Row("b", "/anything/when-not-principal", OK, "when source.principal notValues client-a admits client-b"),
    Row("a", "/anything/when-port", OK, "when destination.port 8080", port=8080),
    Row("a", "/anything/when-port", DENY, "when destination.port 8080 does not admit 8000"),
    Row("a", "/anything/none", DENY, "a path no rule names"),
]


@pytest.mark.features("L7AuthorizationConditions")
def test_conditions_on_the_source_and_the_destination_port(l7):
    """At the waypoint, `when` conditions on `source.principal` and `source.namespace` MUST match
    the ORIGINAL client (values and notValues), and `destination.port` the port the client called."""
    l7.converge_under(CONDITION_ROWS, "match-conditions", "conditions at the waypoint")


RULE_PART_ROWS = [
    Row("a", "/anything/either-client", OK, "two from entries: client-a's"),
    Row("b", "/anything/either-client", OK, "two from entries: client-b's"),
    Row("a", "/anything/op-one", OK, "two to entries: the first"),
    Row("a", "/anything/op-two", OK, "two to entries: the second"),
    Row("a", "/anything/both-conditions", OK, "both when conditions hold",
        headers=(("x-one", "1"), ("x-two", "2"))),
    Row("a", "/anything/both-conditions", DENY, "only the first when condition holds", headers=(("x-one", "1"),)),
    Row("a", "/anything/both-conditions", DENY, "only the second when condition holds", headers=(("x-two", "2"),)),
    Row("a", "/anything/from-and-to", OK, "from and to both hold"),
    Row("b", "/anything/from-and-to", DENY, "to holds, from does not"),
    Row("a", "/anything/none", DENY, "a path no rule names"),
]


@pytest.mark.features("L7AuthorizationRuleParts")
def test_rule_parts_combine_entries_as_alternatives_and_parts_as_all_required(l7):
    """At the waypoint, the entries of a rule's `from` (or `to`) MUST be alternatives, while its
    `from`, `to` and every `when` condition MUST all hold: one of two conditions is not enough."""
    l7.converge_under(RULE_PART_ROWS, "rule-parts", "rule parts at the waypoint")


@pytest.mark.features("L7AuthorizationAnyAllowPolicy")
def test_several_allow_policies_admit_whoever_any_one_names(l7):
    """With two ALLOW policies on the waypoint, one naming client-a and one client-b, a request
    either one matches MUST be served (they are not all required); with only client-a's, client-b
    MUST get 403."""
    path = "/anything/any-allow"
    only_a = [Row("a", path, OK, "ALLOW client-a"), Row("b", path, DENY, "ALLOW client-a only")]
    both = [Row("a", path, OK, "two ALLOW policies: client-a's"), Row("b", path, OK, "two ALLOW policies: client-b's")]
    l7.converge_unrestricted(only_a, "before the ALLOW policies")
    with l7.applied("allow-one-client", which="a", principal=l7.principal_a):
        l7.converge(only_a, "client-a's ALLOW policy alone")
        with l7.applied("allow-one-client", which="b", principal=l7.principal_b):
            l7.converge(both, "client-a's and client-b's ALLOW policies")
        l7.converge(only_a, "client-b's ALLOW policy removed")


SERVICE_ACCOUNT_ROWS = [
    Row("a", "/anything/sa", OK, "serviceAccounts: client-a's namespace/client-a"),
    Row("b", "/anything/sa", DENY, "serviceAccounts: not client-b"),
    Row("a", "/anything/not-sa", DENY, "notServiceAccounts client-a"),
    Row("b", "/anything/not-sa", OK, "notServiceAccounts client-a admits client-b"),
    Row("a", "/anything/bare-sa", DENY, "a bare name is the policy's namespace, not client-a's"),
    Row("a", "/anything/other", DENY, "a path no rule names"),
]


@pytest.mark.features("L7AuthorizationServiceAccounts")
def test_source_service_accounts_are_the_original_clients(l7):
    """At the waypoint, `serviceAccounts` and `notServiceAccounts` MUST match the ORIGINAL client's
    service account as `namespace/name`, and a bare name MUST mean the policy's namespace."""
    l7.converge_under(SERVICE_ACCOUNT_ROWS, "match-service-accounts", "service accounts at the waypoint")


@pytest.mark.features("L7AuthorizationSource")
def test_source_principals_and_namespaces_are_the_original_clients(l7):
    """At the waypoint, `source.principals`, `namespaces` and their `not*` forms MUST match the
    ORIGINAL client's identity (two clients told apart), never the waypoint's own nor a node
    proxy's."""
    l7.converge_under(SOURCE_ROWS, "match-source", "source identities at the waypoint")


@pytest.mark.features("L7WaypointIdentityAtDestination")
def test_the_destination_sees_the_waypoints_identity(l7):
    """Behind a waypoint, the destination's node proxy MUST see the WAYPOINT's identity: a
    selector policy there that allows only the client's principal MUST refuse traffic that came
    through the waypoint (503 or a reset), and one that allows the waypoint's principal MUST admit
    it (200) from every client."""
    admitted = [Row(c, "/get", OK, "destination allows the waypoint") for c in "ab"]
    l7.converge_unrestricted(admitted, "before the destination policy")
    with l7.applied("destination-allows-client"):
        l7.converge([Row(c, "/get", UPSTREAM_REFUSED, "destination allows only client-a's principal")
                     for c in "ab"], "a destination policy naming the client, behind the waypoint")
    with l7.applied("destination-allows-waypoint"):
        l7.converge(admitted, "a destination policy naming the waypoint")


@pytest.mark.features("L7AuthorizationUnsupportedActions")
def test_audit_and_custom_are_never_an_allow(l7):
    """An AUDIT policy MUST change no decision (neither deny its path nor, as an ALLOW would,
    every other path); a CUSTOM policy naming an extension provider the mesh does not define
    MUST deny (403) the requests it names, never admit them."""
    audit = [Row("a", "/anything/audit-barrier", DENY, "the DENY applied with the AUDIT policy is in effect"),
             Row("a", "/anything/audit", OK, "AUDIT does not deny"),
             Row("a", "/get", OK, "AUDIT is not an ALLOW")]
    custom = [Row("a", "/anything/custom", DENY, "CUSTOM without its provider fails closed")]
    l7.converge_unrestricted(audit + custom, "before AUDIT and CUSTOM")
    with l7.applied("audit-only"):
        l7.converge(audit, "an AUDIT policy", n_consecutive=3)
    with l7.applied("custom-undefined-provider"):
        l7.converge(custom, "a CUSTOM policy with an undefined provider")
