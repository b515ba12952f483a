"""AMBIENT-L4, adversarial: who the client is comes from the connection, never from what it
says, and names match exactly."""
from __future__ import annotations

import pytest

from conformance import adversary as adv


def _allow_from(l4, source: dict) -> None:
    l4.policy("by-source", {"action": "ALLOW", "rules": [{"from": [{"source": source}]}]})


@pytest.mark.features("L4SourceNotFromHeaders", "L4AuthorizationIPBlocks")
def test_forwarded_headers_do_not_change_the_client_address(l4):
    """With a DENY for client A's address, A MUST stay denied when its requests carry
    `X-Forwarded-For` / `Forwarded` naming client B's address, and B MUST stay allowed when its
    requests name A's."""
    def claiming(pod):
        return {"X-Forwarded-For": pod.ip, "Forwarded": f"for={pod.ip}", "X-Real-IP": pod.ip}
    adv.expect_answers(l4.sc, l4.a, l4.url, "A, before any policy", headers=claiming(l4.b))
    l4.policy("deny-a", {"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": [f"{l4.a.ip}/32"]}}]}]})
    adv.expect_refused(l4.sc, l4.a, l4.url, "A claiming B's address under a DENY of A's", headers=claiming(l4.b))
    adv.expect_answers(l4.sc, l4.b, l4.url, "B claiming A's address under a DENY of A's", headers=claiming(l4.a))


@pytest.mark.features("L4AuthorizationExactMatch", "L4AuthorizationPrincipals")
def test_principal_prefix_or_suffix_does_not_match(l4):
    """An ALLOW naming only a prefix and a suffix of client A's principal (no `*`) MUST deny A, a
    DENY naming them MUST NOT deny A, and the exact principal MUST admit A."""
    exact = l4.principal_a
    near = [exact[:-2], exact[len("cluster.local/"):], exact + "x", "spiffe://" + exact[:-1]]
    adv.expect_answers(l4.sc, l4.a, l4.url, "before any policy")
    _allow_from(l4, {"principals": near})
    adv.expect_refused(l4.sc, l4.a, l4.url, f"ALLOW of {near} only")
    _allow_from(l4, {"principals": [exact]})
    adv.expect_answers(l4.sc, l4.a, l4.url, "ALLOW of the exact principal")
    l4.policy("deny-near", {"action": "DENY", "rules": [{"from": [{"source": {"principals": near}}]}]})
    l4.policy("deny-b", {"action": "DENY", "rules": [{"from": [{"source": {"principals": [l4.principal_b]}}]}]})
    adv.expect_refused(l4.sc, l4.b, l4.url, "barrier: DENY of B applied with the DENY of near names")
    adv.assert_answers_now(l4.sc, l4.a, l4.url, f"DENY of {near} must not match A")


@pytest.mark.features("L4AuthorizationExactMatch", "L4AuthorizationNamespaces")
def test_namespace_prefix_does_not_match(l4):
    """An ALLOW naming a namespace whose name is a prefix of client A's namespace MUST deny A, and
    A's own namespace MUST admit it."""
    adv.expect_answers(l4.sc, l4.a, l4.url, "before any policy")
    prefixes = [l4.a_ns[:-1], l4.a_ns[:-3]]
    _allow_from(l4, {"namespaces": prefixes})
    adv.expect_refused(l4.sc, l4.a, l4.url, f"ALLOW of namespaces {prefixes}")
    _allow_from(l4, {"namespaces": [l4.a_ns]})
    adv.expect_answers(l4.sc, l4.a, l4.url, "ALLOW of A's own namespace")
