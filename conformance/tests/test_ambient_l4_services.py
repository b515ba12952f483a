"""AMBIENT-L4: how captured traffic reaches a service's pods."""
from __future__ import annotations

import pytest

from conformance import workloads as w
from conformance.convergence import eventually
from conformance.scenario import allowed, denied, why_not_denied
from conformance.tests.l4world import spread_nodes

SPREAD_REQUESTS = 16


@pytest.mark.features("HeadlessService")
def test_headless_service_reached_by_pod_ip_with_identity(scenario):
    """A headless service's name MUST reach its pod directly, and ztunnel MUST apply the pod's
    identity-based policy to that traffic: one client allowed, another denied."""
    server_node, client_node = spread_nodes(scenario)
    srv, cli = scenario.namespace("hsrv"), scenario.namespace("hcli")
    scenario.deploy(w.httpbin(srv, node=server_node, headless=True)
                    + w.client(cli, "client-a", node=client_node) + w.client(cli, "client-b", node=client_node),
                    srv, cli)
    a, b = scenario.pod(cli, "client-a"), scenario.pod(cli, "client-b")
    url = w.service_url("httpbin", srv, port=w.HTTP_TARGET_PORT)
    scenario.expect_allowed(a, url, "headless, no policy")
    scenario.expect_allowed(b, url, "headless, no policy")
    scenario.apply([w.authorization_policy(srv, "only-a", {"action": "ALLOW", "rules": [
        {"from": [{"source": {"principals": [w.principal(cli, "client-a")]}}]}]}, selector_app="httpbin")])
    scenario.expect_denied(b, url, "headless, other identity")
    scenario.expect_allowed(a, url, "headless, listed identity")


@pytest.mark.features("ServiceLoadBalancing")
def test_service_connections_spread_over_replicas(scenario):
    """New connections to a service's address MUST be spread over its ready replicas: with one
    replica made to refuse its traffic (a DENY on its pod IP), a batch of requests MUST show both
    answers from the other replica and denials from that one."""
    server_node, client_node = spread_nodes(scenario)
    srv, cli = scenario.namespace("lsrv"), scenario.namespace("lcli")
    scenario.deploy(w.httpbin(srv, replicas=2, node=server_node) + w.client(cli, "client", node=client_node),
                    srv, cli)
    client = scenario.pod(cli, "client")
    replicas = scenario.pods(srv, {"app": "httpbin"})
    assert len(replicas) == 2, f"expected 2 httpbin replicas, found {[p.name for p in replicas]}"
    url = w.service_url("httpbin", srv)
    fresh = {"Connection": "close"}   # one connection per request, so each one is balanced
    scenario.expect_allowed(client, url, "both replicas, no policy", headers=fresh)

    marked = replicas[1]
    scenario.apply([w.authorization_policy(srv, "deny-one-replica", {"action": "DENY", "rules": [
        {"when": [{"key": "destination.ip", "values": [marked.ip]}]}]}, selector_app="httpbin")])
    # The policy is in effect once that replica's denials show up at all.
    eventually(lambda: scenario.outcomes(client, url, count=SPREAD_REQUESTS, headers=fresh), denied,
               what=f"a denial from replica {marked.name}", n_consecutive=1, why_not=why_not_denied)
    outcomes = scenario.outcomes(client, url, headers=fresh, count=SPREAD_REQUESTS)
    served = sum(1 for o in outcomes if allowed(o))
    refused = sum(1 for o in outcomes if denied(o))
    assert served + refused == SPREAD_REQUESTS, f"unexpected outcomes: {outcomes}"
    assert served and refused, f"all {SPREAD_REQUESTS} connections went to one replica: {outcomes}"
