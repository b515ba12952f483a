"""AMBIENT-L4: policy changes reach running pods and their live connections."""
from __future__ import annotations

import time

import pytest

from conformance import convergence, curl
from conformance import workloads as w

DRIP_SECONDS = 12


def _pods_state(sc, *namespaces):
    return {(p.namespace, p.name): (p.uid, p.restarts) for ns in namespaces for p in sc.pods(ns)}


@pytest.mark.features("PolicyUpdateWithoutRestart")
def test_policy_change_applies_to_running_pods(l4):
    """Applying, changing and deleting an AuthorizationPolicy MUST take effect on running pods
    within the published bound without restarting or replacing any pod."""
    sc = l4.sc
    l4.sc.expect_allowed(l4.a, l4.url, "before any policy")
    before = _pods_state(sc, l4.server_ns, l4.a_ns, l4.b_ns)
    deny_a = w.authorization_policy(l4.server_ns, "deny-a", {"action": "DENY", "rules": [
        {"from": [{"source": {"principals": [l4.principal_a]}}]}]}, selector_app="httpbin")
    l4.sc.apply([deny_a])
    l4.sc.expect_denied(l4.a, l4.url, "DENY applied")
    l4.sc.expect_allowed(l4.b, l4.url, "DENY applied, other identity")
    sc.delete([deny_a])
    l4.sc.expect_allowed(l4.a, l4.url, "DENY deleted")
    assert _pods_state(sc, l4.server_ns, l4.a_ns, l4.b_ns) == before, "a policy change restarted pods"


@pytest.mark.features("PolicySelectorFollowsPodLabels")
def test_a_selector_policy_follows_the_running_pods_labels(l4):
    """A DENY whose selector is `app: httpbin, tier: locked` MUST deny client-a while the running
    server pod carries `tier=locked`, MUST stop applying once the label is removed, and MUST apply
    again once it is put back, each within the published bound and without restarting the pod."""
    sc = l4.sc
    sc.expect_allowed(l4.a, l4.url, "before any policy")
    before = _pods_state(sc, l4.server_ns)
    sc.label("Pod", l4.server_ns, l4.server.name, {"tier": "locked"})
    sc.apply([w.authorization_policy(l4.server_ns, "deny-a-locked", {
        "selector": {"matchLabels": {"app": "httpbin", "tier": "locked"}}, "action": "DENY",
        "rules": [{"from": [{"source": {"principals": [l4.principal_a]}}]}]})])
    sc.expect_denied(l4.a, l4.url, "the DENY selects the server pod by its tier=locked label")
    sc.expect_allowed(l4.b, l4.url, "the DENY names client-a only")
    sc.label("Pod", l4.server_ns, l4.server.name, {"tier": None})
    sc.expect_allowed(l4.a, l4.url, "tier removed from the running pod: the selector no longer matches it")
    sc.label("Pod", l4.server_ns, l4.server.name, {"tier": "locked"})
    sc.expect_denied(l4.a, l4.url, "tier=locked put back on the running pod")
    assert _pods_state(sc, l4.server_ns) == before, "relabelling restarted the server pod"


@pytest.mark.features("LiveConnectionRevocation", "PolicyUpdateWithoutRestart")
def test_policy_change_closes_live_connections_it_denies(l4):
    """An established connection that a new policy denies MUST be closed within the published
    bound, while the same long request completes when no policy changes."""
    sc = l4.sc
    short = w.service_url("httpbin", l4.server_ns, path="/drip?duration=2&numbytes=4&delay=0")
    [control] = sc.responses(l4.a, short, timeout=10)
    assert control.outcome == 200 and control.bytes_received == 4, f"a streamed response failed: {control}"

    long_url = w.service_url("httpbin", l4.server_ns, path=f"/drip?duration={DRIP_SECONDS}&numbytes={DRIP_SECONDS}&delay=0")
    # The policy must land on an established connection: `hold` returns once the destination's
    # node proxy reports it opened (Istio's standard metric), not after a fixed time.
    held = sc.hold(l4.a, long_url, DRIP_SECONDS + 8, l4.principal_a, l4.server.node)
    l4.policy("deny-a", {"action": "DENY", "rules": [{"from": [{"source": {"principals": [l4.principal_a]}}]}]})
    applied = time.monotonic()
    l4.sc.expect_denied(l4.a, l4.url, "new connections after DENY")
    response = held.result(timeout=DRIP_SECONDS + 15)
    assert response.bytes_received > 0, f"the stream was not established before the policy changed: {response}"
    assert response.outcome == curl.RESET, \
        f"the live connection survived a policy that denies it: {response}"
    assert held.ended - applied <= convergence.LIVE_CONNECTION_CLOSE_SECONDS, \
        f"the live connection was closed {held.ended - applied:.1f}s after the policy, bound " \
        f"{convergence.LIVE_CONNECTION_CLOSE_SECONDS:g}s"
