"""AMBIENT-L4, adversarial: a connection reaches the endpoint it should, told by the server
naming itself (a stock Python image serving its pod name)."""
from __future__ import annotations

import pytest

from conformance import convergence
from conformance import workloads as w
from conformance.targets.base import wait_until
from conformance.tests.l4world import spread_nodes

REPLICAS = 3
CALLS = 24
UNREADY_PROBE_PORT = 9   # nothing listens there: the readinessProbe fails for as long as the pod runs


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


@pytest.mark.features("ServiceNamedTargetPort")
def test_a_named_target_port_is_resolved_per_pod(scenario):
    """A Service port whose `targetPort` is a name MUST reach each selected pod on the container port
    that pod gives that name (two pods, two numbers, both answering), and MUST NOT send a connection
    to a selected pod that has no port of that name, although that pod answers on the service port's
    own number when called by its IP."""
    server_node, client_node = spread_nodes(scenario)
    srv, cli = scenario.namespace("nsrv"), scenario.namespace("ncli")
    group = {"whoami-group": "named"}
    scenario.deploy(w.whoami_deployment(srv, "web-a", node=server_node, port=8081, port_name="web", pod_labels=group)
                    + w.whoami_deployment(srv, "web-b", node=server_node, port=8082, port_name="web", pod_labels=group)
                    + w.whoami_deployment(srv, "unnamed", node=server_node, port=w.WHOAMI_PORT, port_name="other",
                                          pod_labels=group)
                    + [w.service(srv, "named", [{"name": "http", "port": w.WHOAMI_PORT, "targetPort": "web"}],
                                 selector=group)]
                    + w.client(cli, "client-a", node=client_node), srv, cli)
    client, pods = scenario.pod(cli, "client-a"), {app: scenario.pod(srv, app) for app in ("web-a", "web-b", "unnamed")}
    unnamed = pods["unnamed"]
    own_ip = f"http://{unnamed.ip}:{w.WHOAMI_PORT}/name"
    scenario.expect_allowed(client, own_ip, "the pod without the port name, by its own IP")
    assert scenario.bodies(client, own_ip, 2) == [unnamed.name] * 2, f"{unnamed.ip} did not answer as {unnamed.name}"

    url = f"http://named.{srv}:{w.WHOAMI_PORT}/name"
    scenario.expect_allowed(client, url, "service port 80 -> targetPort `web`")
    names = scenario.bodies(client, url, CALLS)
    named = {pods["web-a"].name, pods["web-b"].name}
    assert unnamed.name not in names, \
        f"{unnamed.name}, which has no port named `web`, answered calls to the service: {names}"
    assert set(names) <= named, f"some calls were not answered by a pod naming the port: {names}"
    assert set(names) == named, (f"over {CALLS} calls only {sorted(set(names))} answered, not both pods that "
                                 f"name the port `web` (8081 on one, 8082 on the other)")


@pytest.mark.features("ServiceExcludesUnreadyEndpoints")
def test_a_pod_that_is_not_ready_gets_no_service_connections(scenario):
    """A pod a Service selects that runs but is not Ready (its readinessProbe fails) MUST NOT get
    connections made to the service's VIP, which its two ready pods MUST all answer, although the
    pod answers calls made to its own IP."""
    server_node, client_node = spread_nodes(scenario)
    srv, cli = scenario.namespace("rsrv"), scenario.namespace("rcli")
    group = {"whoami-group": "ready"}
    scenario.deploy(w.whoami_deployment(srv, "ready", replicas=2, node=server_node, pod_labels=group)
                    + [w.service(srv, "whoami", [{"name": "http", "port": w.WHOAMI_PORT, "targetPort": w.WHOAMI_PORT}],
                                 selector=group)]
                    + w.client(cli, "client-a", node=client_node), srv, cli)
    # Its readinessProbe asks a port nothing listens on: running, serving on 80, never Ready.
    scenario.apply(w.whoami_deployment(srv, "unready", node=server_node, pod_labels=group, ready_port=UNREADY_PROBE_PORT))
    [unready] = wait_until(lambda: [p for p in scenario.pods(srv, {"app": "unready"}) if p.ip and p.phase == "Running"],
                           convergence.READY_SECONDS, 0.5, f"the unready pod of {srv} to run with an IP")
    client = scenario.pod(cli, "client-a")
    own_ip = f"http://{unready.ip}:{w.WHOAMI_PORT}/name"
    scenario.expect_allowed(client, own_ip, "the unready pod, by its own IP")
    assert scenario.bodies(client, own_ip, 2) == [unready.name] * 2, f"{unready.ip} did not answer as {unready.name}"
    assert not any(p.ready for p in scenario.pods(srv, {"app": "unready"})), "the unready pod became Ready"

    names = scenario.bodies(client, f"http://whoami.{srv}:{w.WHOAMI_PORT}/name", CALLS)
    ready = {p.name for p in scenario.pods(srv, {"app": "ready"}) if p.ready}
    assert len(ready) == 2, f"expected 2 ready pods, found {sorted(ready)}"
    assert unready.name not in names, f"{unready.name}, which is not Ready, answered calls to the service: {names}"
    assert set(names) == ready, f"over {CALLS} calls the answers were {names}, not every one of {sorted(ready)}"
