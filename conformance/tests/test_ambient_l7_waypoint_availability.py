"""AMBIENT-L7: a waypoint's availability (ISTIO-SEMANTICS sections 4.7 and 12). A service bound to
a waypoint with no ready endpoints fails, with no fallback to L4, while L4-only traffic keeps
flowing; with two replicas, the loss of one is survived by new requests.

One world for the module: alpha bound to the waypoint `wp`, beta bound to none."""
from __future__ import annotations

import pytest

from conformance import convergence, curl
from conformance.convergence import eventually
from conformance.scenario import Scenario
from conformance.tests.waypointworld import L4, L7, WaypointWorld, build_world

WP = "wp"


@pytest.fixture(scope="module")
def world(target):
    sc = Scenario(target, "waypoint-availability")
    try:
        world = build_world(sc, "wavail", waypoints=[(WP, "service")])
        world.use_waypoint("alpha", WP)
        world.expect(world.url("alpha"), L7, "alpha, bound to wp")
        yield world
    finally:
        sc.cleanup()


def _failed(observed) -> bool:
    """A request that did not get through: an error status from a proxy or a refused connection;
    a 200 (L4 or L7) is a fallback, a timeout a stall."""
    return observed in curl.L4_REFUSALS or (isinstance(observed, int) and observed >= 500)


@pytest.mark.features("WaypointUnavailableNoFallback")
def test_waypoint_without_ready_endpoints_fails_its_traffic_and_only_its_traffic(world: WaypointWorld):
    """With the waypoint scaled to zero, requests to alpha MUST fail promptly (no fallback to L4:
    never a 200) while beta, bound to no waypoint, keeps answering 200 on L4; scaled back to one,
    alpha MUST pass the waypoint again."""
    sc = world.sc
    sc.scale_waypoint(world.srv, WP, 0)
    try:
        eventually(lambda: world.hops(world.url("alpha")), _failed,
                   what=f"alpha with waypoint {WP} scaled to 0: expected a prompt failure (5xx or a refused "
                        f"connection), never a 200 through L4",
                   why_not=lambda o: "a 200 without x-request-id: traffic fell back to L4" if o == L4 else
                   (curl.STALL_IS_NOT_A_DENY if o == curl.TIMEOUT else None))
        world.assert_now(world.url("beta"), L4, "beta, bound to no waypoint, while wp has no endpoints")
    finally:
        sc.scale_waypoint(world.srv, WP, 1)
    sc.await_waypoint(world.srv, WP)
    world.expect(world.url("alpha"), L7, "alpha after wp was scaled back to 1")


@pytest.mark.features("WaypointReplicaLoss")
def test_two_replicas_survive_the_loss_of_one(world: WaypointWorld):
    """With two waypoint replicas, killing one (grace period 0) MUST leave new requests to alpha
    succeeding through the waypoint while its replacement is not yet Ready, and the surviving
    replica MUST be untouched."""
    sc = world.sc
    sc.scale_waypoint(world.srv, WP, 2)
    try:
        first, second = sc.await_waypoint(world.srv, WP, replicas=2)
        world.expect(world.url("alpha"), L7, "alpha with two waypoint replicas")
        sc.kill_waypoint_pod(first)
        originals = {first.uid, second.uid}

        def replacement_ready() -> bool:
            return any(p.ready and p.uid not in originals for p in sc.waypoint_pods(world.srv, WP))

        def probe():
            # Each observation: (hop, whether a replacement was already Ready when it was made).
            ready = replacement_ready()
            return [(h, ready) for h in world.hops(world.url("alpha"))]

        run = eventually(probe, lambda o: o[0] == L7, timeout=convergence.LIVE_CONNECTION_CLOSE_SECONDS,
                         what=f"alpha after killing waypoint replica {first.name}: expected L7 200s")
        assert not run[0][1], (
            f"the first successful requests after killing {first.name} came only once a replacement was "
            f"Ready: nothing shows the surviving replica {second.name} carried them")
        survivor = next((p for p in sc.waypoint_pods(world.srv, WP) if p.uid == second.uid), None)
        assert survivor is not None and survivor.restarts == second.restarts, \
            f"the surviving replica {second.name} was replaced or restarted: {survivor}"
    finally:
        sc.scale_waypoint(world.srv, WP, 1)
    sc.await_waypoint(world.srv, WP)
