"""AMBIENT-L4: policy changes reach running pods and their live connections."""
from __future__ import annotations

import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conformance import convergence, curl
from conformance import workloads as w
from conformance.targets.base import wait_until

DRIP_SECONDS = 12


def _connections_opened(sc, node: str, source_principal: str) -> float:
    """`istio_tcp_connections_opened_total` as the destination reports it for one source."""
    total = 0.0
    for family in text_string_to_metric_families(sc.metrics(node)):
        for sample in family.samples:
            if (sample.name == "istio_tcp_connections_opened_total"
                    and sample.labels.get("reporter") == "destination"
                    and sample.labels.get("source_principal", "").removeprefix("spiffe://")
                    == source_principal.removeprefix("spiffe://")):
                total += sample.value
    return total


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


@pytest.mark.features("LiveConnectionRevocation", "PolicyUpdateWithoutRestart")
def test_policy_change_closes_live_connections_it_denies(l4):
    """An established connection that a new policy denies MUST be closed within the published
    bound, while the same long request completes when no policy changes."""
    sc = l4.sc
    short = w.service_url("httpbin", l4.server_ns, path="/drip?duration=2&numbytes=4&delay=0")
    [control] = sc.responses(l4.a, short, timeout=10)
    assert control.outcome == 200 and control.bytes_received == 4, f"a streamed response failed: {control}"

    long_url = w.service_url("httpbin", l4.server_ns, path=f"/drip?duration={DRIP_SECONDS}&numbytes={DRIP_SECONDS}&delay=0")
    result: dict = {}

    def stream():
        [result["response"]] = sc.responses(l4.a, long_url, timeout=DRIP_SECONDS + 8)
        result["ended"] = time.monotonic()

    opened_before = _connections_opened(sc, l4.server.node, l4.principal_a)
    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    # The policy must land on an established connection: wait until the destination's node proxy
    # reports it opened (Istio's standard metric), not for a fixed time.
    wait_until(lambda: _connections_opened(sc, l4.server.node, l4.principal_a) > opened_before,
               timeout=10, interval=0.1, what="the streamed connection to be opened at the destination")
    l4.policy("deny-a", {"action": "DENY", "rules": [{"from": [{"source": {"principals": [l4.principal_a]}}]}]})
    applied = time.monotonic()
    l4.sc.expect_denied(l4.a, l4.url, "new connections after DENY")
    streamer.join(timeout=DRIP_SECONDS + 15)
    assert not streamer.is_alive(), "the streaming request never ended"
    response = result["response"]
    assert response.bytes_received > 0, f"the stream was not established before the policy changed: {response}"
    assert response.outcome == curl.RESET, \
        f"the live connection survived a policy that denies it: {response}"
    assert result["ended"] - applied <= convergence.LIVE_CONNECTION_CLOSE_SECONDS, \
        f"the live connection was closed {result['ended'] - applied:.1f}s after the policy, bound " \
        f"{convergence.LIVE_CONNECTION_CLOSE_SECONDS:g}s"
