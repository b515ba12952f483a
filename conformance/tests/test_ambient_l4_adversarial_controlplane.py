"""AMBIENT-L4, adversarial: the data plane without its control plane."""
from __future__ import annotations

import pytest

from conformance import adversary as adv


def _only(l4, principal: str) -> None:
    l4.policy("only-one", {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [principal]}}]}]})


@pytest.mark.features("ControlPlaneOutage")
def test_last_policy_holds_while_istiod_is_down_and_a_new_one_lands_after(l4):
    """With the control plane scaled to zero, running pods MUST keep talking and the last policy
    MUST keep being enforced (one client allowed, the other promptly refused); a policy changed during
    the outage MUST take effect once the control plane is back."""
    sc = l4.sc
    _only(l4, l4.principal_a)
    adv.expect_refused(sc, l4.b, l4.url, "B, before the outage")
    adv.expect_answers(sc, l4.a, l4.url, "A, before the outage")
    sc.target.stop_control_plane()
    try:
        adv.assert_answers_now(sc, l4.a, l4.url, "A while the control plane is down")
        adv.expect_refused(sc, l4.b, l4.url, "B while the control plane is down")
        _only(l4, l4.principal_b)
    finally:
        sc.target.start_control_plane()
    adv.expect_answers(sc, l4.b, l4.url, "B, after the control plane is back (policy changed during the outage)")
    adv.expect_refused(sc, l4.a, l4.url, "A, after the control plane is back")
