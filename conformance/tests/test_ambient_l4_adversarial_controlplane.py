"""AMBIENT-L4, adversarial: the data plane without its control plane."""
from __future__ import annotations

import pytest


def _only(l4, principal: str) -> None:
    l4.policy("only-one", {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [principal]}}]}]})


@pytest.mark.features("ControlPlaneOutage")
def test_last_policy_holds_while_istiod_is_down_and_a_new_one_lands_after(l4):
    """With the control plane scaled to zero, running pods MUST keep talking and the last policy
    MUST keep being enforced (one client allowed, the other promptly refused); a policy changed during
    the outage MUST take effect once the control plane is back."""
    sc = l4.sc
    _only(l4, l4.principal_a)
    sc.expect_denied(l4.b, l4.url, "B, before the outage")
    sc.expect_allowed(l4.a, l4.url, "A, before the outage")
    sc.stop_control_plane()
    try:
        sc.assert_allowed_now(l4.a, l4.url, "A while the control plane is down")
        sc.expect_denied(l4.b, l4.url, "B while the control plane is down")
        _only(l4, l4.principal_b)
    finally:
        sc.start_control_plane()
    sc.expect_allowed(l4.b, l4.url, "B, after the control plane is back (policy changed during the outage)")
    sc.expect_denied(l4.a, l4.url, "A, after the control plane is back")
