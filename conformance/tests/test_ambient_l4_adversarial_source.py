"""AMBIENT-L4, adversarial: who the client is comes from the connection, never from what it
says, and names match exactly."""
from __future__ import annotations

import pytest


def _allow_from(l4, source: dict) -> None:
    l4.policy("by-source", {"action": "ALLOW", "rules": [{"from": [{"source": source}]}]})


@pytest.mark.features("L4SourceNotFromHeaders", "L4AuthorizationIPBlocks")
def test_forwarded_headers_do_not_change_the_client_address(l4):
    """With a DENY for client A's address, A MUST stay denied when its requests carry
    `X-Forwarded-For` / `Forwarded` naming client B's address, and B MUST stay allowed when its
    requests name A's."""
    def claiming(pod):
        return {"X-Forwarded-For": pod.ip, "Forwarded": f"for={pod.ip}", "X-Real-IP": pod.ip}
    l4.sc.expect_allowed(l4.a, l4.url, "A, before any policy", headers=claiming(l4.b))
    l4.policy("deny-a", {"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": [f"{l4.a.ip}/32"]}}]}]})
    l4.sc.expect_denied(l4.a, l4.url, "A claiming B's address under a DENY of A's", headers=claiming(l4.b))
    l4.sc.expect_allowed(l4.b, l4.url, "B claiming A's address under a DENY of A's", headers=claiming(l4.a))


@pytest.mark.features("L4AuthorizationExactMatch", "L4AuthorizationPrincipals")
def test_principal_prefix_or_suffix_does_not_match(l4):
    """An ALLOW naming only a prefix and a suffix of client A's principal (no `*`) MUST deny A, a
    DENY naming them MUST NOT deny A, and the exact principal MUST admit A."""
    exact = l4.principal_a
    near = [exact[:-2], exact[len("cluster.local/"):], exact + "x", "spiffe://" + exact[:-1]]
    l4.sc.expect_allowed(l4.a, l4.url, "before any policy")
    _allow_from(l4, {"principals": near})
    l4.sc.expect_denied(l4.a, l4.url, f"ALLOW of {near} only")
    _allow_from(l4, {"principals": [exact]})
    l4.sc.expect_allowed(l4.a, l4.url, "ALLOW of the exact principal")
    l4.policy("deny-near", {"action": "DENY", "rules": [{"from": [{"source": {"principals": near}}]}]})
    l4.policy("deny-b", {"action": "DENY", "rules": [{"from": [{"source": {"principals": [l4.principal_b]}}]}]})
    l4.sc.expect_denied(l4.b, l4.url, "barrier: DENY of B applied with the DENY of near names")
    l4.sc.assert_allowed_now(l4.a, l4.url, f"DENY of {near} must not match A")


@pytest.mark.features("L4AuthorizationExactMatch", "L4AuthorizationNamespaces")
def test_namespace_prefix_does_not_match(l4):
    """An ALLOW naming a namespace whose name is a prefix of client A's namespace MUST deny A, and
    A's own namespace MUST admit it."""
    l4.sc.expect_allowed(l4.a, l4.url, "before any policy")
    prefixes = [l4.a_ns[:-1], l4.a_ns[:-3]]
    _allow_from(l4, {"namespaces": prefixes})
    l4.sc.expect_denied(l4.a, l4.url, f"ALLOW of namespaces {prefixes}")
    _allow_from(l4, {"namespaces": [l4.a_ns]})
    l4.sc.expect_allowed(l4.a, l4.url, "ALLOW of A's own namespace")
