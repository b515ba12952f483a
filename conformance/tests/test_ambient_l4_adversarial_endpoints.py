"""AMBIENT-L4, adversarial: a connection reaches the endpoint it should, told by the server
naming itself (a stock Python image serving its pod name)."""
from __future__ import annotations

import pytest

from conformance import workloads as w
from conformance.tests.l4world import spread_nodes

REPLICAS = 3
CALLS = 24


def _deploy(scenario, headless: bool):
    server_node, client_node = spread_nodes(scenario)
    srv, cli = scenario.namespace("wsrv"), scenario.namespace("wcli")
    scenario.deploy(w.whoami(srv, replicas=REPLICAS if not headless else 2, node=server_node, headless=headless)
                    + w.client(cli, "client-a", node=client_node) + w.client(cli, "client-b", node=client_node),
                    srv, cli)
    return srv, cli, scenario.pods(srv, {"app": "whoami"})


@pytest.mark.features("HeadlessServiceExactPod", "HeadlessService")
def test_headless_pod_ip_reaches_exactly_that_pod_with_its_policy(scenario):
    """A call to each pod IP of a headless service MUST be answered by that very pod every time,
    and an identity policy on the pods MUST deny another client there."""
    srv, cli, pods = _deploy(scenario, headless=True)
    a, b = scenario.pod(cli, "client-a"), scenario.pod(cli, "client-b")
    for pod in pods:
        url = f"http://{pod.ip}:{w.WHOAMI_PORT}/name"
        scenario.expect_allowed(a, url, f"pod {pod.name} by IP")
        names = scenario.bodies(a, url, 6)
        assert names == [pod.name] * 6, f"calls to {pod.ip} were answered by {names}, not only {pod.name}"
    scenario.apply([w.authorization_policy(srv, "only-a", {"action": "ALLOW", "rules": [
        {"from": [{"source": {"principals": [w.principal(cli, "client-a")]}}]}]}, selector_app="whoami")])
    for pod in pods:
        url = f"http://{pod.ip}:{w.WHOAMI_PORT}/name"
        scenario.expect_denied(b, url, f"client B to pod {pod.name} by IP, ALLOW of A only")
        assert scenario.bodies(a, url, 3) == [pod.name] * 3, f"client A no longer reaches {pod.name}"


@pytest.mark.features("ServiceReachesEveryEndpoint", "ServiceLoadBalancing")
def test_service_vip_reaches_every_ready_endpoint(scenario):
    """New connections to a service's VIP MUST all be answered by its ready pods, and over
    24 calls every ready pod MUST answer at least once."""
    srv, cli, pods = _deploy(scenario, headless=False)
    a = scenario.pod(cli, "client-a")
    url = f"http://whoami.{srv}:{w.WHOAMI_PORT}/name"
    scenario.expect_allowed(a, url, "service VIP")
    names = scenario.bodies(a, url, CALLS)
    ready = {p.name for p in pods if p.ready}
    assert len(ready) == REPLICAS, f"expected {REPLICAS} ready pods, found {sorted(ready)}"
    assert set(names) <= ready, f"some calls were not answered by a ready pod: {names}"
    assert set(names) == ready, f"over {CALLS} calls only {sorted(set(names))} answered, not every one of {sorted(ready)}"
