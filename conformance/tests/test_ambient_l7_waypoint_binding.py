"""AMBIENT-L7: waypoint provisioning from a Gateway and binding with istio.io/use-waypoint
(ISTIO-SEMANTICS section 7; Istio's TestWaypointStatus, TestRemoveAddWaypoint, TestBogusUseWaypoint).

One world for the module: services alpha and beta (httpbin) and a client, and the waypoint `wp`
(for services); each test puts back the labels it set."""
from __future__ import annotations

import pytest

from conformance import workloads as w
from conformance.scenario import Scenario
from conformance.tests.waypointworld import (ECHO, L4, L7, USE_WAYPOINT, WaypointWorld, build_world, manifest,
                                             waypoint)

WP, WORKLOAD_WP, ALL_WP, SHARED_WP, PRIVATE_WP = "wp", "wl", "every", "shared", "private"


@pytest.fixture(scope="module")
def world(target):
    sc = Scenario(target, "waypoint-binding")
    try:
        world = build_world(sc, "wbind", waypoints=[(WP, "service"), (WORKLOAD_WP, "workload"), (ALL_WP, "all")])
        # a waypoint other namespaces may use, in a namespace of its own
        world.other_ns = sc.namespace("wbindw")
        sc.apply(manifest("waypoint-shared.yaml", namespace=world.other_ns, name=SHARED_WP))
        # and one beside it whose mesh listener says nothing of allowedRoutes (Gateway API: Same)
        sc.apply(waypoint(world.other_ns, PRIVATE_WP))
        sc.await_waypoint(world.other_ns, SHARED_WP)
        sc.await_waypoint(world.other_ns, PRIVATE_WP)
        yield world
    finally:
        sc.cleanup()


def _condition_is_gateway_api_shaped(condition: dict, generation: int, what: str) -> None:
    missing = [k for k in ("type", "status", "reason", "message", "observedGeneration", "lastTransitionTime")
               if condition.get(k) in (None, "")]
    assert not missing, f"{what}: condition {condition} lacks {missing}"
    assert condition["observedGeneration"] == generation, \
        f"{what}: observedGeneration {condition['observedGeneration']} is not the Gateway's generation {generation}"


@pytest.mark.features("WaypointProvisioning", "WaypointBogusUseWaypoint")
def test_gateway_is_provisioned_ready_with_status_and_takes_traffic_without_restarts(world: WaypointWorld):
    """A Gateway of class istio-waypoint with the mesh/15008/HBONE listener MUST get a Deployment
    and a Service named after it and Ready proxy pods, without restarting any app pod; its status
    MUST carry Accepted and Programmed True (type, status, reason, message, observedGeneration,
    lastTransitionTime), and its mesh listener's status Accepted. A Service labelled for it before it existed MUST stay on L4 meanwhile,
    with WaypointBound False (WaypointIsNotReady), and move to the waypoint once it is served
    (WaypointBound True). A Gateway of another class MUST get nothing. Deleting the Gateway MUST
    return the traffic to L4."""
    sc, name = world.sc, "fresh"
    apps_before = {(p.uid, p.restarts) for p in sc.pods(world.srv, None) if "app" in p.labels}
    url = world.url("beta")
    world.expect(url, L4, "beta before any waypoint")
    world.use_waypoint("beta", name)
    try:
        world.expect_bound_condition("beta", "False", "WaypointIsNotReady", "Gateway not created yet",
                                     message_has=f"{world.srv}/{name}")
        world.assert_now(url, L4, "labelled for a Gateway that does not exist: traffic stays on L4")

        sc.apply(waypoint(world.srv, name) + manifest("not-a-waypoint.yaml", namespace=world.srv, name="other"))
        pods = sc.await_waypoint(world.srv, name)
        assert sc.get("Deployment", world.srv, name) is not None, f"no Deployment {world.srv}/{name}"
        assert sc.get("Service", world.srv, name) is not None, f"no Service {world.srv}/{name}"
        world.expect(url, L7, "beta after its waypoint was provisioned")
        world.expect_bound_condition("beta", "True", "WaypointAccepted", "waypoint served",
                                     message_has=f"{world.srv}/{name}")

        gateway = sc.get("Gateway", world.srv, name)
        generation = int(gateway["metadata"].get("generation") or 1)
        conditions = sc.conditions("Gateway", world.srv, name)
        for ctype in ("Accepted", "Programmed"):
            assert ctype in conditions, f"Gateway {world.srv}/{name} status has no {ctype} condition: {conditions}"
            _condition_is_gateway_api_shaped(conditions[ctype], generation, f"Gateway {name} {ctype}")
            assert (conditions[ctype]["status"], conditions[ctype]["reason"]) == ("True", ctype), \
                f"Gateway {name}: {ctype} is {conditions[ctype]}"
        listeners = {l.get("name"): l for l in (gateway.get("status") or {}).get("listeners") or ()}
        accepted = {c.get("type"): c.get("status") for c in (listeners.get("mesh") or {}).get("conditions") or ()}
        assert accepted.get("Accepted") == "True", \
            f"Gateway {name}: status.listeners has no Accepted mesh listener: {listeners}"
        assert all(p.ready for p in pods)
        # The barrier above (traffic moved, status written) shows the other Gateway was seen too.
        assert sc.get("Deployment", world.srv, "other") is None, \
            "a Deployment was provisioned for a Gateway of class conformance-not-a-waypoint"
        apps_after = {(p.uid, p.restarts) for p in sc.pods(world.srv, None) if "app" in p.labels}
        assert apps_after == apps_before, f"app pods were replaced or restarted: {apps_before} -> {apps_after}"

        sc.delete(waypoint(world.srv, name))
        world.expect(url, L4, "beta after its waypoint Gateway was deleted")
    finally:
        world.use_waypoint("beta", None)
        sc.delete(manifest("not-a-waypoint.yaml", namespace=world.srv, name="other"))


@pytest.mark.features("WaypointBindingLabels")
def test_service_label_moves_traffic_to_and_off_the_waypoint(world: WaypointWorld):
    """Labelling a Service istio.io/use-waypoint MUST move its traffic to the waypoint (L4 before,
    L7 after, WaypointBound True with reason WaypointAccepted), leave another Service of the
    namespace on L4, and removing the label MUST move it back, without restarting a pod
    (Istio's TestRemoveAddWaypoint)."""
    sc = world.sc
    # app pods only: a waypoint pod of an earlier test may still be terminating
    apps_before = {(p.uid, p.restarts) for p in sc.pods(world.srv, None) if "app" in p.labels}
    world.expect(world.url("alpha"), L4, "alpha before the label")
    world.use_waypoint("alpha", WP)
    try:
        world.expect(world.url("alpha"), L7, "alpha labelled use-waypoint=wp")
        world.expect_bound_condition("alpha", "True", "WaypointAccepted", "alpha labelled",
                                     message_has=f"{world.srv}/{WP}")
        world.assert_now(world.url("beta"), L4, "beta, not labelled")
    finally:
        world.use_waypoint("alpha", None)
    world.expect(world.url("alpha"), L4, "alpha after the label was removed")
    apps_after = {(p.uid, p.restarts) for p in sc.pods(world.srv, None) if "app" in p.labels}
    assert apps_after == apps_before, f"app pods were replaced or restarted: {apps_before} -> {apps_after}"


@pytest.mark.features("WaypointBindingLabels")
def test_namespace_label_binds_every_service_and_the_services_own_label_wins(world: WaypointWorld):
    """istio.io/use-waypoint on the Namespace MUST bind its Services; a Service's own label MUST
    win over it: `none` opts that Service out (L4), another Service stays bound."""
    sc = world.sc
    sc.label_namespace(world.srv, {USE_WAYPOINT: WP})
    try:
        world.expect(world.url("alpha"), L7, "alpha, namespace labelled use-waypoint=wp")
        world.expect(world.url("beta"), L7, "beta, namespace labelled use-waypoint=wp")
        world.use_waypoint("beta", "none")
        world.expect(world.url("beta"), L4, "beta labelled use-waypoint=none in a namespace bound to wp")
        world.assert_now(world.url("alpha"), L7, "alpha, still bound by its namespace")
    finally:
        world.use_waypoint("beta", None)
        sc.label_namespace(world.srv, {USE_WAYPOINT: None})
    world.expect(world.url("alpha"), L4, "alpha after the namespace label was removed")


@pytest.mark.features("WaypointBogusUseWaypoint")
def test_use_waypoint_naming_no_gateway_stays_l4_and_says_why(world: WaypointWorld):
    """A use-waypoint naming a Gateway that does not exist MUST leave the traffic on L4 (HTTP 200,
    no waypoint), never blackhole it, and the Service's WaypointBound condition MUST be False with
    reason WaypointIsNotReady naming the missing waypoint (Istio's TestBogusUseWaypoint); the
    namespace's own waypoint MUST NOT be used instead. Relabelling to a real waypoint binds it."""
    sc = world.sc
    sc.label_namespace(world.srv, {USE_WAYPOINT: WP})
    world.use_waypoint("alpha", "bogus-waypoint")
    try:
        world.expect_bound_condition("alpha", "False", "WaypointIsNotReady", "alpha -> bogus-waypoint",
                                     message_has=f"{world.srv}/bogus-waypoint")
        world.expect(world.url("alpha"), L4, "alpha labelled use-waypoint=bogus-waypoint")
        world.expect(world.url("beta"), L7, "beta, bound by its namespace (positive control)")
        world.use_waypoint("alpha", WP)
        world.expect(world.url("alpha"), L7, "alpha relabelled use-waypoint=wp")
    finally:
        world.use_waypoint("alpha", None)
        sc.label_namespace(world.srv, {USE_WAYPOINT: None})


@pytest.mark.features("WaypointForWorkload")
def test_workload_waypoint_serves_labelled_pods_and_refuses_services(world: WaypointWorld):
    """A waypoint labelled istio.io/waypoint-for: workload MUST carry the traffic addressed to a pod
    labelled for it (L7 by pod IP) and MUST refuse a Service labelled for it: WaypointBound False
    with reason UnsupportedTrafficType, the Service's traffic staying on L4."""
    sc = world.sc
    beta = sc.pod(world.srv, "beta")
    pod_url = f"http://{beta.ip}:{w.HTTP_TARGET_PORT}{ECHO}"
    world.expect(pod_url, L4, "beta's pod by IP, before the label")
    sc.label("Pod", world.srv, beta.name, {USE_WAYPOINT: WORKLOAD_WP})
    world.use_waypoint("alpha", WORKLOAD_WP)
    try:
        world.expect(pod_url, L7, f"beta's pod by IP, labelled use-waypoint={WORKLOAD_WP}")
        world.expect_bound_condition("alpha", "False", "UnsupportedTrafficType",
                                     f"Service alpha labelled for the workload waypoint {WORKLOAD_WP}",
                                     message_has=f"{world.srv}/{WORKLOAD_WP}")
        world.assert_now(world.url("alpha"), L4, "Service alpha, refused by the workload waypoint")
    finally:
        world.use_waypoint("alpha", None)
        sc.label("Pod", world.srv, beta.name, {USE_WAYPOINT: None})
    world.expect(pod_url, L4, "beta's pod by IP after the label was removed")
    assert sc.pod(world.srv, "beta").uid == beta.uid, "labelling the pod replaced it"


@pytest.mark.features("WaypointForWorkload")
def test_waypoint_for_all_serves_both_labelled_pods_and_services(world: WaypointWorld):
    """A waypoint labelled istio.io/waypoint-for: all MUST carry the traffic addressed to a pod
    labelled for it (L7 by pod IP) and that of a Service labelled for it (L7, WaypointBound True);
    once the labels are removed both MUST be back on L4."""
    sc = world.sc
    beta = sc.pod(world.srv, "beta")
    pod_url, service_url = f"http://{beta.ip}:{w.HTTP_TARGET_PORT}{ECHO}", world.url("alpha")
    world.expect(pod_url, L4, "beta's pod by IP, before the label")
    sc.label("Pod", world.srv, beta.name, {USE_WAYPOINT: ALL_WP})
    world.use_waypoint("alpha", ALL_WP)
    try:
        world.expect(pod_url, L7, f"beta's pod by IP, labelled use-waypoint={ALL_WP} (waypoint-for: all)")
        world.expect(service_url, L7, f"Service alpha, labelled use-waypoint={ALL_WP} (waypoint-for: all)")
        world.expect_bound_condition("alpha", "True", "WaypointAccepted", f"Service alpha on the waypoint {ALL_WP}",
                                     message_has=f"{world.srv}/{ALL_WP}")
    finally:
        world.use_waypoint("alpha", None)
        sc.label("Pod", world.srv, beta.name, {USE_WAYPOINT: None})
    world.expect(pod_url, L4, "beta's pod by IP after the label was removed")
    world.expect(service_url, L4, "Service alpha after the label was removed")


@pytest.mark.features("WaypointCrossNamespace")
def test_use_waypoint_namespace_binds_a_waypoint_of_another_namespace(world: WaypointWorld):
    """use-waypoint naming a waypoint of another namespace MUST bind only with
    istio.io/use-waypoint-namespace naming that namespace (its mesh listener allows all
    namespaces): without it the name is looked up in the Service's own namespace (WaypointBound
    False, WaypointIsNotReady, traffic on L4); with it the traffic passes that waypoint. A waypoint
    of that namespace whose mesh listener has no allowedRoutes admits only its own namespace: a
    Service of another one labelled for it MUST get WaypointBound False (AttachmentDenied) and stay
    on L4."""
    url = world.url("alpha")
    world.use_waypoint("alpha", PRIVATE_WP, waypoint_namespace=world.other_ns)
    try:
        world.expect_bound_condition("alpha", "False", "AttachmentDenied",
                                     "a waypoint of another namespace without allowedRoutes",
                                     message_has=f"{world.other_ns}/{PRIVATE_WP}")
        world.assert_now(url, L4, f"alpha labelled for {world.other_ns}/{PRIVATE_WP}, which does not admit it")
    finally:
        world.use_waypoint("alpha", None)
    world.use_waypoint("alpha", SHARED_WP)
    try:
        world.expect_bound_condition("alpha", "False", "WaypointIsNotReady", "use-waypoint without its namespace",
                                     message_has=f"{world.srv}/{SHARED_WP}")
        world.assert_now(url, L4, f"alpha labelled use-waypoint={SHARED_WP} without use-waypoint-namespace")
        world.use_waypoint("alpha", SHARED_WP, waypoint_namespace=world.other_ns)
        world.expect(url, L7, f"alpha labelled use-waypoint={SHARED_WP}, use-waypoint-namespace={world.other_ns}")
        world.expect_bound_condition("alpha", "True", "WaypointAccepted", "cross-namespace waypoint",
                                     message_has=f"{world.other_ns}/{SHARED_WP}")
    finally:
        world.use_waypoint("alpha", None)
    world.expect(url, L4, "alpha after the labels were removed")
