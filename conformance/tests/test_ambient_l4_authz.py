"""AMBIENT-L4: AuthorizationPolicy enforced by the destination node proxy (ztunnel).

Each case is data first, as the Gateway API suite's mesh tests are: its feature, its MUST
sentence, and a table of steps (the policies applied, then each client's expected outcome),
run by one helper (l4table.run_steps). Before the first step every client reaches every port
it will call.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from conformance import workloads as w
from conformance.tests.l4table import (ALLOWED, ALT, DENIED, PORT, Step, allow_from, allow_to, deny_from,
                                       on_server, run_steps)
from conformance.tests.l4world import L4World


def when(action: str, key: str, values, negate: bool = False):
    """A policy of one rule with one `when` condition (`values`, or with `negate` `notValues`)."""
    return lambda l4: {"action": action, "rules": [{"when": [
        {"key": key, ("notValues" if negate else "values"): values(l4)}]}]}


@dataclass(frozen=True)
class Case:
    id: str
    feature: str
    must: str
    steps: tuple[Step, ...]
    two_ports: bool = False


CASES = [
    Case("principals", "L4AuthorizationPrincipals",
         "An ALLOW policy with `source.principals` MUST admit only those identities, and one with "
         "`notPrincipals` MUST admit every identity except those.", (
             Step("principals: [a]", on_server("by-principal", allow_from(principals=["a"])),
                  (("b", PORT, DENIED), ("a", PORT, ALLOWED))),
             Step("notPrincipals: [a]", on_server("by-principal", allow_from(notPrincipals=["a"])),
                  (("a", PORT, DENIED), ("b", PORT, ALLOWED))))),
    Case("namespaces", "L4AuthorizationNamespaces",
         "An ALLOW policy with `source.namespaces` MUST admit only clients from those namespaces, and "
         "one with `notNamespaces` MUST admit every client except those.", (
             Step("namespaces: [a's]", on_server("by-namespace", allow_from(namespaces=["a"])),
                  (("b", PORT, DENIED), ("a", PORT, ALLOWED))),
             Step("notNamespaces: [a's]", on_server("by-namespace", allow_from(notNamespaces=["a"])),
                  (("a", PORT, DENIED), ("b", PORT, ALLOWED))))),
    Case("ip-blocks", "L4AuthorizationIPBlocks",
         "An ALLOW policy with `source.ipBlocks` MUST admit only clients whose address is in those "
         "blocks, and one with `notIpBlocks` MUST admit every client outside them; a block is a CIDR, "
         "not an address (`notIpBlocks` of the block holding both clients admits neither).", (
             Step("ipBlocks: [a/32]", on_server("by-ip", allow_from(ipBlocks=["a"])),
                  (("b", PORT, DENIED), ("a", PORT, ALLOWED))),
             Step("notIpBlocks: [a/32]", on_server("by-ip", allow_from(notIpBlocks=["a"])),
                  (("a", PORT, DENIED), ("b", PORT, ALLOWED))),
             Step("notIpBlocks: [the CIDR of a and b]", on_server("by-ip", allow_from(notIpBlocks=["ab"])),
                  (("a", PORT, DENIED), ("b", PORT, DENIED))))),
    Case("ports", "L4AuthorizationPorts",
         "An ALLOW policy with `to.operation.ports` MUST admit connections only to those destination "
         "ports, and one with `notPorts` MUST admit connections to every other port only.", (
             Step("ports: [80]", on_server("by-port", allow_to(ports=["80"])),
                  (("a", ALT, DENIED), ("a", PORT, ALLOWED))),
             Step("notPorts: [80]", on_server("by-port", allow_to(notPorts=["80"])),
                  (("a", PORT, DENIED), ("a", ALT, ALLOWED)))), two_ports=True),
    Case("deny-over-allow", "L4AuthorizationDenyOverAllow",
         "When a DENY policy and an ALLOW policy both match a connection, the connection MUST be denied.", (
             Step("ALLOW a and b", on_server("allow-both", allow_from(principals=["a", "b"])),
                  (("b", PORT, ALLOWED),)),
             Step("plus DENY b", on_server("deny-b", deny_from(principals=["b"])),
                  (("b", PORT, DENIED), ("a", PORT, ALLOWED))))),
    Case("rule-parts", "L4AuthorizationRuleParts",
         "Within a rule, `from` and `to` MUST both match (client-a to port 80 only), the entries of one `from` "
         "MUST be alternatives (either client), and so MUST the rules of one policy.", (
             Step("ALLOW from [a] to ports [80]", on_server("by-parts", lambda l4: {"action": "ALLOW", "rules": [
                 {"from": [{"source": {"principals": [l4.principal_a]}}], "to": [{"operation": {"ports": ["80"]}}]}]}),
                  (("b", PORT, DENIED), ("a", ALT, DENIED), ("a", PORT, ALLOWED))),
             Step("ALLOW from [{a}, {b}] to ports [80]", on_server("by-parts", lambda l4: {"action": "ALLOW", "rules": [
                 {"from": [{"source": {"principals": [l4.principal_a]}}, {"source": {"principals": [l4.principal_b]}}],
                  "to": [{"operation": {"ports": ["80"]}}]}]}),
                  (("b", PORT, ALLOWED), ("a", PORT, ALLOWED), ("b", ALT, DENIED))),
             Step("rules [from a] and [to port 8080]", on_server("by-parts", lambda l4: {"action": "ALLOW", "rules": [
                 {"from": [{"source": {"principals": [l4.principal_a]}}]},
                 {"to": [{"operation": {"ports": [str(w.ALT_PORT)]}}]}]}),
                  (("b", PORT, DENIED), ("b", ALT, ALLOWED), ("a", PORT, ALLOWED)))), two_ports=True),
    Case("allow-policies-combine", "L4AuthorizationAnyAllowPolicy",
         "When several ALLOW policies cover a workload, a connection that any one of them matches MUST be "
         "admitted (they are not all required), and one that none matches MUST be denied.", (
             Step("ALLOW a", on_server("allow-a", allow_from(principals=["a"])),
                  (("b", PORT, DENIED), ("a", PORT, ALLOWED))),
             Step("plus a second policy ALLOW b", on_server("allow-b", allow_from(principals=["b"])),
                  (("b", PORT, ALLOWED), ("a", PORT, ALLOWED))),
             Step("ALLOW a removed", on_server("allow-a", allow_from(principals=["a"])),
                  (("a", PORT, DENIED), ("b", PORT, ALLOWED)), delete=True))),
    Case("allow-nothing", "L4AuthorizationAllowNothing",
         "An AuthorizationPolicy with an empty spec MUST deny every connection to the workloads it "
         "covers, and removing it MUST let connections through again.", (
             Step("spec: {}", lambda l4: [w.authorization_policy(l4.server_ns, "allow-nothing", {})],
                  (("a", PORT, DENIED), ("b", PORT, DENIED))),
             Step("spec: {} removed", lambda l4: [w.authorization_policy(l4.server_ns, "allow-nothing", {})],
                  (("a", PORT, ALLOWED),), delete=True))),
    Case("conditions", "L4AuthorizationConditions",
         "A rule's `when` conditions on `source.principal`, `source.namespace`, `source.ip` and "
         "`destination.port` MUST each hold for the rule to match, with `values` and `notValues` alike.", (
             Step("DENY when source.principal [a]", on_server("by-when", when("DENY", "source.principal",
                                                                             lambda l4: [l4.principal_a])),
                  (("a", PORT, DENIED), ("b", PORT, ALLOWED))),
             Step("DENY when source.namespace notValues [a's]",
                  on_server("by-when", when("DENY", "source.namespace", lambda l4: [l4.a_ns], negate=True)),
                  (("b", PORT, DENIED), ("a", PORT, ALLOWED))),
             Step("DENY when source.ip [a]", on_server("by-when", when("DENY", "source.ip", lambda l4: [l4.a.ip])),
                  (("a", PORT, DENIED), ("b", PORT, ALLOWED))),
             Step("ALLOW when destination.port [80]",
                  on_server("by-when", when("ALLOW", "destination.port", lambda l4: ["80"])),
                  (("a", ALT, DENIED), ("a", PORT, ALLOWED))),
             Step("ALLOW when destination.port notValues [80]",
                  on_server("by-when", when("ALLOW", "destination.port", lambda l4: ["80"], negate=True)),
                  (("a", PORT, DENIED), ("a", ALT, ALLOWED)))), two_ports=True),
    Case("allow-with-l7-fields", "L4AuthorizationL7FieldsAtZtunnel",
         "At ztunnel, an ALLOW rule that holds an L7 field (here `paths`) MUST be dropped whole, so a "
         "policy made only of such rules MUST deny every connection, even one the rule would match.", (
             Step("ALLOW principals [a] and paths [/get]", on_server("allow-l7", lambda l4: {
                 "action": "ALLOW", "rules": [{"from": [{"source": {"principals": [l4.principal_a]}}],
                                              "to": [{"operation": {"paths": ["/get"]}}]}]}),
                  (("a", PORT, DENIED), ("b", PORT, DENIED))),
             Step("the same rule without paths", on_server("allow-l7", allow_from(principals=["a"])),
                  (("a", PORT, ALLOWED),)))),
    Case("deny-with-l7-fields", "L4AuthorizationL7FieldsAtZtunnel",
         "At ztunnel, a DENY rule's L7 fields MUST be stripped: a rule left with a port MUST deny that "
         "whole port (whatever the method), and a rule left with nothing MUST deny nothing.", (
             Step("DENY paths [/get]; DENY methods [DELETE] on ports [8080]", lambda l4: [
                 w.authorization_policy(l4.server_ns, "deny-l7-only", {"action": "DENY", "rules": [
                     {"to": [{"operation": {"paths": ["/get"]}}]}]}, selector_app="httpbin"),
                 w.authorization_policy(l4.server_ns, "deny-l7-port", {"action": "DENY", "rules": [
                     {"to": [{"operation": {"methods": ["DELETE"], "ports": [str(w.ALT_PORT)]}}]}]},
                     selector_app="httpbin")],
                  (("a", ALT, DENIED), ("a", PORT, ALLOWED))),), two_ports=True),
]


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.features(c.feature), pytest.mark.description(c.must)])
    for c in CASES])
def test_l4_authorization(case: Case, request):
    """Runs one case of the table above (each case carries its own MUST sentence)."""
    l4: L4World = request.getfixturevalue("l4_two_ports" if case.two_ports else "l4")
    for client in (l4.a, l4.b):
        l4.sc.expect_allowed(client, l4.url, "before any policy")
    if case.two_ports:
        l4.sc.expect_allowed(l4.a, l4.alt_url(), "second port, before any policy")
    run_steps(l4, case.id, case.steps)
