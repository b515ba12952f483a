"""The seed article's walkthrough, Steps 1-2 and its L4 policy step, with its own manifests
(fixtures/seed/) applied as written: fixed namespaces `ambient-apps` and `legacy-apps`."""
from __future__ import annotations

import pytest

from conformance.tests.seedfiles import seed

HTTPBIN_AMBIENT = "http://httpbin-ambient.ambient-apps:8000/headers"
HTTPBIN_LEGACY = "http://httpbin-legacy.legacy-apps:8000/headers"


@pytest.mark.features("SeedWalkthroughL4", "SeedWalkthroughSidecar")
def test_seed_steps_1_2_and_l4_policy(scenario):
    """Following the seed article with its own manifests, the sleep-ambient pod MUST reach
    httpbin-ambient with single-container pods (Steps 1-2) and httpbin-legacy, whose pod MUST carry
    the injected istio-proxy and count the calls as mutual TLS from sleep-ambient's identity; after `l4-policy.yaml` sleep-ambient
    MUST still get 200 while rogue-client MUST be denied at L4 (the article lets the proxy drop
    it, so a timeout counts here, but only while sleep-ambient gets 200 in the same window);
    deleting the policy MUST let the rogue client in again."""
    for ns in ("ambient-apps", "legacy-apps"):
        scenario.adopt_namespace(ns)

    # Step 1: namespaces and their data-plane labels.
    scenario.apply(seed("namespaces.yaml"))
    labels = (scenario.get("Namespace", None, "ambient-apps") or {}).get("metadata", {}).get("labels") or {}
    assert labels.get("istio.io/dataplane-mode") == "ambient", f"ambient-apps labels: {labels}"

    # Step 2: workloads in the ambient namespace; no sidecar is added.
    scenario.deploy([seed("httpbin-ambient.yaml"), seed("sleep-ambient.yaml")], "ambient-apps")
    for app in ("httpbin-ambient", "sleep-ambient"):
        pod = scenario.pod("ambient-apps", app)
        assert len(pod.containers) == 1, f"{app} pod has containers {pod.containers}; ambient adds none"
    sleep = scenario.pod("ambient-apps", "sleep-ambient")
    scenario.expect_allowed(sleep, HTTPBIN_AMBIENT, "Step 2: sleep-ambient -> httpbin-ambient")

    # Step 2, legacy-apps: httpbin-legacy gets the injected proxy, and sleep-ambient's call is
    # "encapsulated in HBONE from the source ztunnel to the destination pod's sidecar proxy".
    scenario.deploy(seed("httpbin-legacy.yaml"), "legacy-apps")
    legacy = scenario.pod("legacy-apps", "httpbin-legacy")
    assert sorted(legacy.containers) == ["httpbin", "istio-proxy"], \
        f"httpbin-legacy pod has containers {legacy.containers}; injection adds istio-proxy"
    scenario.expect_allowed(sleep, HTTPBIN_LEGACY, "Step 2: sleep-ambient -> httpbin-legacy")
    sleep_id = "cluster.local/ns/ambient-apps/sa/sleep-ambient"
    before = scenario.sidecar_requests(legacy, sleep_id, mtls=True)
    plain_before = scenario.sidecar_requests(legacy, None, mtls=False)
    scenario.assert_allowed_now(sleep, HTTPBIN_LEGACY, "Step 2: sleep-ambient -> httpbin-legacy, counted")
    assert scenario.sidecar_requests(legacy, sleep_id, mtls=True) >= before + 3, \
        "httpbin-legacy's sidecar did not count the calls as mutual TLS from sleep-ambient's identity"
    assert scenario.sidecar_requests(legacy, None, mtls=False) == plain_before, \
        "sleep-ambient's calls reached httpbin-legacy as plaintext"

    # L4 policy step: the rogue client works until the policy names sleep-ambient only.
    scenario.deploy(seed("rogue-client.yaml"), "ambient-apps")
    rogue = scenario.pod("ambient-apps", "rogue-client")
    scenario.expect_allowed(rogue, HTTPBIN_AMBIENT, "rogue-client before l4-policy.yaml")
    scenario.apply(seed("l4-policy.yaml"))
    # The article: "This call will hang and time out, as the TCP connection is dropped by the
    # ztunnel". A drop is allowed here, so a stalled mesh is told apart by the control.
    scenario.expect_denied_or_dropped(rogue, HTTPBIN_AMBIENT, control=sleep,
                                      what="rogue-client after l4-policy.yaml")
    scenario.expect_allowed(sleep, HTTPBIN_AMBIENT, "sleep-ambient after l4-policy.yaml")
    scenario.delete(seed("l4-policy.yaml"))
    scenario.expect_allowed(rogue, HTTPBIN_AMBIENT, "rogue-client after deleting l4-policy.yaml")
