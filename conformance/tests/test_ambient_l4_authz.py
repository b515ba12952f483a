"""AMBIENT-L4: AuthorizationPolicy enforced by the destination node proxy (ztunnel)."""
from __future__ import annotations

import pytest


def _both_allowed(l4, url=None):
    l4.sc.expect_allowed(l4.a, url or l4.url, "before any policy")
    l4.sc.expect_allowed(l4.b, url or l4.url, "before any policy")


@pytest.mark.features("L4AuthorizationPrincipals")
def test_principals_and_not_principals(l4):
    """An ALLOW policy with `source.principals` MUST admit only those identities, and one with
    `notPrincipals` MUST admit every identity except those."""
    _both_allowed(l4)
    l4.policy("by-principal", {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [l4.principal_a]}}]}]})
    l4.sc.expect_denied(l4.b, l4.url, "principals: other identity")
    l4.sc.expect_allowed(l4.a, l4.url, "principals: listed identity")
    l4.policy("by-principal", {"action": "ALLOW", "rules": [{"from": [{"source": {"notPrincipals": [l4.principal_a]}}]}]})
    l4.sc.expect_denied(l4.a, l4.url, "notPrincipals: listed identity")
    l4.sc.expect_allowed(l4.b, l4.url, "notPrincipals: other identity")


@pytest.mark.features("L4AuthorizationNamespaces")
def test_namespaces_and_not_namespaces(l4):
    """An ALLOW policy with `source.namespaces` MUST admit only clients from those namespaces,
    and one with `notNamespaces` MUST admit every client except those."""
    _both_allowed(l4)
    l4.policy("by-namespace", {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": [l4.a_ns]}}]}]})
    l4.sc.expect_denied(l4.b, l4.url, "namespaces: other namespace")
    l4.sc.expect_allowed(l4.a, l4.url, "namespaces: listed namespace")
    l4.policy("by-namespace", {"action": "ALLOW", "rules": [{"from": [{"source": {"notNamespaces": [l4.a_ns]}}]}]})
    l4.sc.expect_denied(l4.a, l4.url, "notNamespaces: listed namespace")
    l4.sc.expect_allowed(l4.b, l4.url, "notNamespaces: other namespace")


@pytest.mark.features("L4AuthorizationIPBlocks")
def test_ip_blocks_and_not_ip_blocks(l4):
    """An ALLOW policy with `source.ipBlocks` MUST admit only clients whose address is in those
    blocks, and one with `notIpBlocks` MUST admit every client outside them."""
    _both_allowed(l4)
    block = f"{l4.a.ip}/32"
    l4.policy("by-ip", {"action": "ALLOW", "rules": [{"from": [{"source": {"ipBlocks": [block]}}]}]})
    l4.sc.expect_denied(l4.b, l4.url, "ipBlocks: address outside")
    l4.sc.expect_allowed(l4.a, l4.url, "ipBlocks: address inside")
    l4.policy("by-ip", {"action": "ALLOW", "rules": [{"from": [{"source": {"notIpBlocks": [block]}}]}]})
    l4.sc.expect_denied(l4.a, l4.url, "notIpBlocks: address inside")
    l4.sc.expect_allowed(l4.b, l4.url, "notIpBlocks: address outside")


@pytest.mark.features("L4AuthorizationPorts")
def test_ports_and_not_ports(l4_two_ports):
    """An ALLOW policy with `to.operation.ports` MUST admit connections only to those destination
    ports, and one with `notPorts` MUST admit connections to every other port only."""
    l4 = l4_two_ports
    _both_allowed(l4)
    l4.sc.expect_allowed(l4.a, l4.alt_url(), "second port, before any policy")
    l4.policy("by-port", {"action": "ALLOW", "rules": [{"to": [{"operation": {"ports": ["80"]}}]}]})
    l4.sc.expect_denied(l4.a, l4.alt_url(), "ports: port not listed")
    l4.sc.expect_allowed(l4.a, l4.url, "ports: listed port")
    l4.policy("by-port", {"action": "ALLOW", "rules": [{"to": [{"operation": {"notPorts": ["80"]}}]}]})
    l4.sc.expect_denied(l4.a, l4.url, "notPorts: listed port")
    l4.sc.expect_allowed(l4.a, l4.alt_url(), "notPorts: other port")


@pytest.mark.features("L4AuthorizationDenyOverAllow")
def test_deny_wins_over_allow(l4):
    """When a DENY policy and an ALLOW policy both match a connection, the connection MUST be denied."""
    _both_allowed(l4)
    both = [l4.principal_a, l4.principal_b]
    l4.policy("allow-both", {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": both}}]}]})
    l4.sc.expect_allowed(l4.b, l4.url, "ALLOW matching both clients")
    l4.policy("deny-b", {"action": "DENY", "rules": [{"from": [{"source": {"principals": [l4.principal_b]}}]}]})
    l4.sc.expect_denied(l4.b, l4.url, "DENY and ALLOW both match")
    l4.sc.expect_allowed(l4.a, l4.url, "only ALLOW matches")


@pytest.mark.features("L4AuthorizationAllowNothing")
def test_empty_spec_allows_nothing(l4):
    """An AuthorizationPolicy with an empty spec MUST deny every connection to the workloads it
    covers, and removing it MUST let connections through again."""
    _both_allowed(l4)
    from conformance import workloads as w
    allow_nothing = w.authorization_policy(l4.server_ns, "allow-nothing", {})
    l4.sc.apply([allow_nothing])
    l4.sc.expect_denied(l4.a, l4.url, "spec: {}")
    l4.sc.expect_denied(l4.b, l4.url, "spec: {}")
    l4.sc.target.delete([allow_nothing])
    l4.sc.expect_allowed(l4.a, l4.url, "allow-nothing removed")


@pytest.mark.features("L4AuthorizationL7FieldsAtZtunnel")
def test_allow_rule_with_l7_fields_denies_at_ztunnel(l4):
    """At ztunnel, an ALLOW rule that holds an L7 field (here `paths`) MUST be dropped whole, so a
    policy made only of such rules MUST deny every connection, even one the rule would match."""
    _both_allowed(l4)
    l4.policy("allow-l7", {"action": "ALLOW", "rules": [
        {"from": [{"source": {"principals": [l4.principal_a]}}], "to": [{"operation": {"paths": ["/get"]}}]}]})
    l4.sc.expect_denied(l4.a, l4.url, "ALLOW with paths, matching principal and path")
    l4.sc.expect_denied(l4.b, l4.url, "ALLOW with paths, other principal")
    l4.policy("allow-l7", {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [l4.principal_a]}}]}]})
    l4.sc.expect_allowed(l4.a, l4.url, "same rule without the L7 field")


@pytest.mark.features("L4AuthorizationL7FieldsAtZtunnel")
def test_deny_rule_with_l7_fields_keeps_only_l4_part(l4_two_ports):
    """At ztunnel, a DENY rule's L7 fields MUST be stripped: a rule left with a port MUST deny that
    whole port (whatever the method), and a rule left with nothing MUST deny nothing."""
    l4 = l4_two_ports
    _both_allowed(l4)
    l4.sc.expect_allowed(l4.a, l4.alt_url(), "second port, before any policy")
    l4.policy("deny-l7-only", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/get"]}}]}]})
    l4.policy("deny-l7-port", {"action": "DENY", "rules": [
        {"to": [{"operation": {"methods": ["DELETE"], "ports": [str(8080)]}}]}]})
    l4.sc.expect_denied(l4.a, l4.alt_url(), "DENY methods+ports: a GET to the port")
    l4.sc.expect_allowed(l4.a, l4.url, "DENY with only paths (nothing left at L4) on another port")
