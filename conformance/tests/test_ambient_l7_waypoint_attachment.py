"""AMBIENT-L7: which AuthorizationPolicies a waypoint applies (ISTIO-SEMANTICS sections 5 and 7):
only those attached with `targetRefs` (the Gateway, a Service behind it, GatewayClass
istio-waypoint from the root namespace); `selector` policies are ztunnel's, where L7 rules fail
closed. Istio's TestAuthorizationServiceAttached and TestAuthorizationWaypointDefaultDeny.

One world for the module: alpha and beta bound to the waypoint `wp` by their namespace's label,
`other` in a second namespace bound to its own waypoint `wp2`, and `plain`, bound to none."""
from __future__ import annotations

import copy

import secrets

import pytest

from conformance import curl
from conformance import workloads as w
from conformance.convergence import eventually
from conformance.scenario import Scenario
from conformance.tests.waypointworld import (L4, L7, RBAC_DENIED, USE_WAYPOINT, WaypointWorld, build_world,
                                             manifest, waypoint)

WP, WP2 = "wp", "wp2"


@pytest.fixture(scope="module")
def world(target):
    sc = Scenario(target, "waypoint-attachment")
    try:
        world = build_world(sc, "wattach", services=("alpha", "beta", "plain"), waypoints=[(WP, "service")],
                            namespace_labels={USE_WAYPOINT: WP})
        world.use_waypoint("plain", "none")
        # a second Service in front of alpha's own pods: Istio scopes a Service-attached policy by
        # the service addressed, not by the pods behind it
        [alpha_service] = [o for o in w.httpbin(world.srv, name="alpha") if o["kind"] == "Service"]
        twin = copy.deepcopy(alpha_service)
        twin["metadata"]["name"] = "alpha-twin"
        sc.apply([twin])
        # a second waypoint of the class, in a namespace of its own
        world.other_ns = sc.namespace("wattacho", labels={USE_WAYPOINT: WP2})
        sc.apply(w.httpbin(world.other_ns, name="other") + waypoint(world.other_ns, WP2))
        sc.ready(world.other_ns)
        sc.await_waypoint(world.other_ns, WP2)
        world.expect(world.url("alpha"), L7, "alpha, bound to wp by its namespace")
        world.expect(world.url("other", namespace=world.other_ns), L7, "other, bound to wp2 by its namespace")
        world.expect(world.url("plain"), L4, "plain, opted out with use-waypoint=none")
        yield world
    finally:
        sc.cleanup()


def _statuses_and_bodies(world: WaypointWorld, url: str, headers: dict | None = None, count: int = 3):
    responses = world.sc.responses(world.client, url, count=count, body=True,
                                   headers={"Connection": "close", **(headers or {})})
    return [(r.outcome, r.body.strip() if r.outcome == 403 else "") for r in responses]


def _rbac_denied(observed) -> bool:
    return observed == (403, RBAC_DENIED)


@pytest.mark.features("WaypointPolicyTargetRefsGateway")
def test_policy_attached_to_the_gateway_is_enforced_by_the_waypoint(world: WaypointWorld):
    """An ALLOW policy attached to the waypoint Gateway (GET /get only) MUST make the waypoint
    answer 403 `RBAC: access denied` to another path and 200 to GET /get, for every Service
    behind it; deleting it MUST restore 200."""
    sc = world.sc
    policy = manifest("policy-gateway-paths.yaml", namespace=world.srv, name="gateway-paths", gateway=WP)
    headers_url = world.url("alpha")
    sc.apply(policy)
    try:
        eventually(lambda: _statuses_and_bodies(world, headers_url), _rbac_denied,
                   what=f"alpha {headers_url}: GET /headers not allowed by the Gateway's policy: "
                        f"expected 403 {RBAC_DENIED!r}")
        eventually(lambda: _statuses_and_bodies(world, world.url("beta")), _rbac_denied,
                   what="beta behind the same waypoint: expected 403 too")
        sc.expect_allowed(world.client, world.url("alpha", path="/get"), "alpha GET /get, allowed by the policy")
    finally:
        sc.delete(policy)
    world.expect(headers_url, L7, "alpha /headers after the policy was deleted")


@pytest.mark.features("WaypointSelectorPolicyAtZtunnel")
def test_selector_policy_is_enforced_by_ztunnel_not_the_waypoint_and_its_l7_rule_fails_closed(world: WaypointWorld):
    """The same ALLOW rule (GET /get) with a `selector` on alpha MUST NOT be enforced by the
    waypoint: the destination's ztunnel enforces it, where the rule is dropped (it holds L7 fields),
    so alpha is denied everything, even GET /get, and never with the waypoint's 403; beta, behind
    the same waypoint, is unaffected."""
    sc = world.sc
    policy = manifest("policy-selector-paths.yaml", namespace=world.srv, name="selector-paths", app="alpha")
    get_url = world.url("alpha", path="/get")

    def refused(outcome) -> bool:
        # The waypoint's upstream connection is refused by ztunnel: the client sees the waypoint's
        # 503 or a reset (Istio's CheckDeny forms), never a 200 and never an RBAC 403.
        return outcome == 503 or outcome in curl.L4_REFUSALS

    sc.apply(policy)
    try:
        sc.converge(world.client, get_url, refused, "alpha GET /get under a selector policy with an L7 rule: "
                    "expected the ztunnel deny (503 from the waypoint, or a reset), not 200 or 403")
        sc.converge(world.client, world.url("alpha"), refused, "alpha GET /headers, same policy")
        world.assert_now(world.url("beta"), L7, "beta, behind the same waypoint, not selected")
    finally:
        sc.delete(policy)
    sc.expect_allowed(world.client, get_url, "alpha GET /get after the selector policy was deleted")


@pytest.mark.features("WaypointPolicyGatewayClass")
def test_policy_attached_to_the_gateway_class_applies_at_every_waypoint(world: WaypointWorld):
    """A DENY policy in the root namespace attached to GatewayClass istio-waypoint MUST be enforced
    at every waypoint of the class (alpha behind wp and other behind wp2 get 403 for the header it
    names), MUST NOT deny requests without that header, and MUST NOT apply to traffic that passes
    no waypoint (plain)."""
    sc = world.sc
    value = secrets.token_hex(4)
    deny = {"x-conformance-deny": value}
    policy = manifest("policy-gatewayclass-header.yaml", namespace=sc.mesh_namespace,
                      name=f"gatewayclass-deny-{value}", value=value)
    other = world.url("other", namespace=world.other_ns)
    world.assert_now(world.url("alpha"), L7, "alpha with the header, before the policy", headers=deny)
    sc.apply(policy)
    try:
        eventually(lambda: _statuses_and_bodies(world, world.url("alpha"), deny), _rbac_denied,
                   what="alpha (waypoint wp) with the header the GatewayClass policy denies: expected 403")
        eventually(lambda: _statuses_and_bodies(world, other, deny), _rbac_denied,
                   what="other (waypoint wp2) with the header: expected 403")
        world.assert_now(world.url("alpha"), L7, "alpha without the header")
        world.assert_now(world.url("plain"), L4, "plain (no waypoint) with the header", headers=deny)
    finally:
        sc.delete(policy)
    world.expect(other, L7, "other with the header after the policy was deleted", headers=deny)


@pytest.mark.features("WaypointPolicyServiceAttached")
def test_policy_attached_to_a_service_applies_to_that_service_only(world: WaypointWorld):
    """A policy attached with targetRefs to Service alpha that allows only a principal nobody has
    MUST deny alpha (403) and MUST NOT affect beta behind the same waypoint (Istio's
    TestAuthorizationServiceAttached), nor alpha-twin, another Service in front of alpha's very
    pods (the policy follows the service addressed); deleting it MUST restore alpha."""
    sc = world.sc
    policy = manifest("policy-service-principal.yaml", namespace=world.srv, name="service-alpha", service="alpha")
    sc.apply(policy)
    try:
        eventually(lambda: _statuses_and_bodies(world, world.url("alpha")), _rbac_denied,
                   what="alpha, its Service-attached policy allows only another principal: expected 403")
        world.assert_now(world.url("beta"), L7, "beta, behind the same waypoint, no policy attached to it")
        world.assert_now(world.url("alpha-twin"), L7,
                         "alpha-twin, a Service in front of alpha's pods, no policy attached to it")
    finally:
        sc.delete(policy)
    world.expect(world.url("alpha"), L7, "alpha after its policy was deleted")
