"""AMBIENT-L4: AuthorizationPolicy enforced by the destination node proxy (ztunnel).

Each case is data first, as the Gateway API suite's mesh tests are: its feature, its MUST
sentence, and a table of steps (the policies applied, then each client's expected outcome),
run by one helper. Before the first step every client reaches every port it will call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from conformance import workloads as w
from conformance.tests.l4world import L4World

ALLOWED, DENIED = "allowed", "denied"
PORT, ALT = "port", "alt port"           # the server's service port and its second port
Policies = Callable[[L4World], list[dict]]


@dataclass(frozen=True)
class Step:
    """Apply (or, with `delete`, remove) `policies`, then each (client, port, outcome) MUST hold."""
    label: str
    policies: Policies
    expect: tuple[tuple[str, str, str], ...]
    delete: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    feature: str
    must: str
    steps: tuple[Step, ...]
    two_ports: bool = False


def on_server(name: str, spec: Callable[[L4World], dict]) -> Policies:
    """One policy selecting the server's pods (`app: httpbin`)."""
    return lambda l4: [w.authorization_policy(l4.server_ns, name, spec(l4), selector_app="httpbin")]


def allow_from(**source) -> Callable[[L4World], dict]:
    """ALLOW from a source; values naming `a`/`b` are resolved against the world."""
    return lambda l4: {"action": "ALLOW", "rules": [{"from": [{"source": _resolve(l4, source)}]}]}


def deny_from(**source) -> Callable[[L4World], dict]:
    return lambda l4: {"action": "DENY", "rules": [{"from": [{"source": _resolve(l4, source)}]}]}


def allow_to(**operation) -> Callable[[L4World], dict]:
    return lambda l4: {"action": "ALLOW", "rules": [{"to": [{"operation": operation}]}]}


_KIND = {"principals": "principal", "notPrincipals": "principal", "namespaces": "namespace",
         "notNamespaces": "namespace", "ipBlocks": "address", "notIpBlocks": "address"}


def _resolve(l4: L4World, source: dict) -> dict:
    """`principals=["a"]` -> client-a's principal, `namespaces=["a"]` -> its namespace,
    `ipBlocks=["a"]` -> its address as a /32 (and the same for the `not*` fields)."""
    of = {"principal": {"a": l4.principal_a, "b": l4.principal_b},
          "namespace": {"a": l4.a_ns, "b": l4.b_ns},
          "address": {"a": f"{l4.a.ip}/32", "b": f"{l4.b.ip}/32"}}
    return {field: [of[_KIND[field]][client] for client in clients] for field, clients in source.items()}


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
         "blocks, and one with `notIpBlocks` MUST admit every client outside them.", (
             Step("ipBlocks: [a/32]", on_server("by-ip", allow_from(ipBlocks=["a"])),
                  (("b", PORT, DENIED), ("a", PORT, ALLOWED))),
             Step("notIpBlocks: [a/32]", on_server("by-ip", allow_from(notIpBlocks=["a"])),
                  (("a", PORT, DENIED), ("b", PORT, ALLOWED))))),
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
    Case("allow-nothing", "L4AuthorizationAllowNothing",
         "An AuthorizationPolicy with an empty spec MUST deny every connection to the workloads it "
         "covers, and removing it MUST let connections through again.", (
             Step("spec: {}", lambda l4: [w.authorization_policy(l4.server_ns, "allow-nothing", {})],
                  (("a", PORT, DENIED), ("b", PORT, DENIED))),
             Step("spec: {} removed", lambda l4: [w.authorization_policy(l4.server_ns, "allow-nothing", {})],
                  (("a", PORT, ALLOWED),), delete=True))),
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
    clients = {"a": l4.a, "b": l4.b}
    urls = {PORT: l4.url, ALT: l4.alt_url() if case.two_ports else None}
    for client in clients.values():
        l4.sc.expect_allowed(client, l4.url, "before any policy")
    if case.two_ports:
        l4.sc.expect_allowed(l4.a, l4.alt_url(), "second port, before any policy")
    for step in case.steps:
        (l4.sc.delete if step.delete else l4.sc.apply)(step.policies(l4))
        for client, port, outcome in step.expect:
            what = f"{case.id}, {step.label}: client-{client} to the {port}"
            expect = l4.sc.expect_allowed if outcome == ALLOWED else l4.sc.expect_denied
            expect(clients[client], urls[port], what)
