"""Destination selection and inbound policy lookup from a snapshot (ISTIO-SEMANTICS 4, 5, 6)."""
import random

import pytest

from reference_impl.policy.authz_l4 import translate_for_ztunnel
from reference_impl.xds import (Authorization, Endpoint, GatewayAddress, KubeObject, MeshConfig,
                                NamespacedHostname, Service, Workload, ZtunnelSnapshot)
from reference_impl.ztunnel.state import ConfigError, State


def wl(uid, ip, node="node-0", ns="apps", sa=None, captured=True, **extra):
    sa = sa or uid
    return Workload(uid=uid, name=uid, namespace=ns, workload_ips=[ip], node=node, service_account=sa,
                    identity=f"spiffe://cluster.local/ns/{ns}/sa/{sa}",
                    protocol="HBONE" if captured else "TCP",
                    dataplane_mode="ambient" if captured else "none", **extra)


def svc(name, ns, vip, ports, endpoint_uids, **extra):
    return Service(name=name, namespace=ns, hostname=f"{name}.{ns}.svc.cluster.local", vips=[vip],
                   ports=ports, endpoints={uid: Endpoint(workload_uid=uid) for uid in endpoint_uids},
                   **extra)


def config(workloads=(), services=(), policies=(), peer_authentications=()) -> dict:
    return ZtunnelSnapshot(mesh_config=MeshConfig(), workloads=list(workloads), services=list(services),
                           policies=list(policies),
                           peer_authentications=list(peer_authentications)).to_dict()


def snapshot(**extra):
    waypoint = GatewayAddress(destination=NamespacedHostname(namespace="apps",
                                                             hostname="waypoint.apps.svc.cluster.local"),
                              address="10.96.0.30")
    cfg = dict(
        workloads=[
            wl("sleep", "10.244.0.5"),
            wl("httpbin-1", "10.244.1.6", node="node-1", sa="httpbin"),
            wl("httpbin-2", "10.244.0.7", sa="httpbin"),
            wl("legacy", "10.244.1.9", node="node-1", ns="legacy", captured=False),
            wl("waypoint", "10.244.1.20", node="node-1", sa="waypoint"),
        ],
        services=[
            svc("httpbin", "apps", "10.96.0.10", {"8000": 80}, ["httpbin-1", "httpbin-2"]),
            svc("legacy", "legacy", "10.96.0.11", {"80": 8080}, ["legacy"]),
            svc("empty", "apps", "10.96.0.12", {"80": 80}, []),
            svc("waypoint", "apps", "10.96.0.30", {"15008": 15008}, ["waypoint"]),
            svc("reviews", "apps", "10.96.0.40", {"9080": 9080}, ["httpbin-2"], waypoint=waypoint),
        ],
    )
    cfg.update(extra)
    return State(config(**cfg), node="node-0")


def test_service_vip_is_load_balanced_over_ready_endpoints_with_target_port():
    state = snapshot()
    src = state.by_uid["sleep"]
    seen = {state.route_outbound(src, "10.96.0.10", 8000, random.Random(i)).authority for i in range(40)}
    assert seen == {"10.244.1.6:80", "10.244.0.7:80"}
    route = state.route_outbound(src, "10.96.0.10", 8000, random.Random(1))
    assert route.kind == "hbone" and route.target[1] == 15008
    assert route.expected_identities == ("spiffe://cluster.local/ns/apps/sa/httpbin",)


def test_a_named_target_port_goes_to_each_endpoints_own_port_and_skips_endpoints_without_it():
    # The control plane sends a named targetPort as 0 and each endpoint's resolved number; an
    # endpoint whose pod has no port of that name carries none and is no endpoint for that port.
    named = Service(name="named", namespace="apps", hostname="named.apps.svc.cluster.local", vips=["10.96.0.50"],
                    ports={"80": 0}, endpoints={"httpbin-1": Endpoint(workload_uid="httpbin-1", port={"80": 8081}),
                                                "httpbin-2": Endpoint(workload_uid="httpbin-2", port={"80": 8082}),
                                                "sleep": Endpoint(workload_uid="sleep", port={})})
    state = snapshot(services=[named])
    src = state.by_uid["sleep"]
    seen = {state.route_outbound(src, "10.96.0.50", 80, random.Random(i)).authority for i in range(40)}
    assert seen == {"10.244.1.6:8081", "10.244.0.7:8082"}


def test_an_endpoint_that_refused_is_excluded_from_the_next_pick():
    state = snapshot()
    src = state.by_uid["sleep"]
    first = state.route_outbound(src, "10.96.0.10", 8000, random.Random(1))
    refused = frozenset({first.dst_workload.uid})
    others = {state.route_outbound(src, "10.96.0.10", 8000, random.Random(i), exclude=refused).authority
              for i in range(20)}
    assert others == {"10.244.1.6:80", "10.244.0.7:80"} - {first.authority}
    every = frozenset(w.uid for w in state.by_uid.values())
    assert state.route_outbound(src, "10.96.0.10", 8000, exclude=every).kind == "fail"


def test_pod_ip_goes_to_that_pod_over_hbone():
    state = snapshot()
    route = state.route_outbound(state.by_uid["sleep"], "10.244.1.6", 80)
    assert (route.kind, route.target, route.authority) == ("hbone", ("10.244.1.6", 15008), "10.244.1.6:80")


def test_uncaptured_destination_is_plain_tcp_to_the_chosen_endpoint():
    state = snapshot()
    route = state.route_outbound(state.by_uid["sleep"], "10.96.0.11", 80)
    assert (route.kind, route.target) == ("passthrough", ("10.244.1.9", 8080))
    unknown = state.route_outbound(state.by_uid["sleep"], "192.0.2.1", 443)
    assert (unknown.kind, unknown.target) == ("passthrough", ("192.0.2.1", 443))


def test_service_without_ready_endpoints_fails():
    state = snapshot()
    assert state.route_outbound(state.by_uid["sleep"], "10.96.0.12", 80).kind == "fail"


def test_service_with_waypoint_goes_to_waypoint_with_original_vip_authority():
    state = snapshot()
    route = state.route_outbound(state.by_uid["sleep"], "10.96.0.40", 9080)
    assert route.kind == "hbone" and route.via_waypoint
    assert route.target == ("10.244.1.20", 15008) and route.authority == "10.96.0.40:9080"
    assert route.expected_identities == ("spiffe://cluster.local/ns/apps/sa/waypoint",)


def test_a_waypoint_route_carries_the_other_ready_replicas_as_fallbacks():
    state = snapshot()
    assert state.route_outbound(state.by_uid["sleep"], "10.96.0.40", 9080).fallback_targets == ()
    cfg = dict(workloads=[wl("sleep", "10.244.0.5"), wl("httpbin-2", "10.244.0.7", sa="httpbin"),
                          wl("waypoint", "10.244.1.20", node="node-1", sa="waypoint"),
                          wl("waypoint-b", "10.244.0.21", sa="waypoint")],
               services=[svc("waypoint", "apps", "10.96.0.30", {"15008": 15008}, ["waypoint", "waypoint-b"]),
                         svc("reviews", "apps", "10.96.0.40", {"9080": 9080}, ["httpbin-2"],
                             waypoint=GatewayAddress(destination=NamespacedHostname(
                                 namespace="apps", hostname="waypoint.apps.svc.cluster.local"), address="10.96.0.30"))])
    two = State(config(**cfg), node="node-0")
    replicas = {("10.244.1.20", 15008), ("10.244.0.21", 15008)}
    for seed in range(6):
        route = two.route_outbound(two.by_uid["sleep"], "10.96.0.40", 9080, random.Random(seed))
        assert {route.target, *route.fallback_targets} == replicas and route.target not in route.fallback_targets


def test_waypoint_itself_skips_its_own_waypoint():
    state = snapshot()
    route = state.route_outbound(state.by_uid["waypoint"], "10.96.0.40", 9080)
    assert not route.via_waypoint and route.authority == "10.244.0.7:9080"


def test_captured_local_pods_are_those_on_my_node():
    state = snapshot()
    assert sorted(w.uid for w in state.captured_local()) == ["httpbin-2", "sleep"]


L4_POLICY = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "l4", "namespace": "apps"},
             "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "ALLOW",
                      "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/apps/sa/sleep"]}}]}]}}
SLEEP = "spiffe://cluster.local/ns/apps/sa/sleep"
ROGUE = "spiffe://cluster.local/ns/apps/sa/rogue"


def test_inbound_policy_denies_other_principals_and_plaintext():
    compiled = Authorization.model_validate(translate_for_ztunnel(L4_POLICY).to_dict())
    bound = wl("httpbin-2", "10.244.0.7", sa="httpbin", labels={"app": "httpbin"},
               authorization_policies=["apps/l4"])
    state = State(config([bound], policies=[compiled]), node="node-0")
    dest = state.by_uid["httpbin-2"]
    assert state.authorize(dest, "10.244.0.5", "10.244.0.7", 80, SLEEP).allowed
    assert not state.authorize(dest, "10.244.0.8", "10.244.0.7", 80, ROGUE).allowed
    assert not state.authorize(dest, "10.244.0.8", "10.244.0.7", 80, None).allowed


def test_selector_policies_bind_as_the_control_plane_says_and_scoped_ones_by_namespace():
    """ztunnel does not match selectors: a WORKLOAD_SELECTOR policy covers exactly the workloads
    whose `authorizationPolicies` name it; GLOBAL covers all, NAMESPACE its namespace."""
    selector = Authorization.model_validate(translate_for_ztunnel(L4_POLICY).to_dict())
    deny_all = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "spec": {"action": "DENY", "rules": [{}]}}
    namespace_wide = Authorization.model_validate(translate_for_ztunnel(
        {**deny_all, "metadata": {"name": "deny", "namespace": "legacy"}}).to_dict())
    mesh_wide = Authorization.model_validate(translate_for_ztunnel(
        {**deny_all, "metadata": {"name": "deny", "namespace": "istio-system"}}).to_dict())
    labelled = dict(sa="httpbin", labels={"app": "httpbin"})
    workloads = [wl("bound", "10.244.0.7", authorization_policies=["apps/l4"], **labelled),
                 wl("unbound", "10.244.0.8", **labelled),   # labels match, but not bound: not covered
                 wl("other-ns", "10.244.0.9", ns="legacy")]
    state = State(config(workloads, policies=[selector, namespace_wide]), node="node-0")
    keys = {uid: [p.key for p in state.policies_for(state.by_uid[uid])] for uid in ("bound", "unbound", "other-ns")}
    assert keys == {"bound": ["apps/l4"], "unbound": [], "other-ns": ["legacy/deny"]}
    assert not state.authorize(state.by_uid["bound"], "10.244.0.5", "10.244.0.7", 80, ROGUE).allowed
    assert state.authorize(state.by_uid["unbound"], "10.244.0.5", "10.244.0.8", 80, ROGUE).allowed
    everywhere = State(config(workloads, policies=[mesh_wide]), node="node-0")
    assert all([p.key for p in everywhere.policies_for(w)] == ["istio-system/deny"] for w in everywhere.workloads)


def test_strict_peer_authentication_refuses_plaintext():
    pa = KubeObject(apiVersion="security.istio.io/v1", kind="PeerAuthentication",
                    metadata={"name": "default", "namespace": "apps"}, spec={"mtls": {"mode": "STRICT"}})
    state = snapshot(peer_authentications=[pa])
    assert not state.plaintext_allowed(state.by_uid["sleep"], 80)
    assert snapshot().plaintext_allowed(snapshot().by_uid["sleep"], 80)


@pytest.mark.parametrize("mutate, words", [
    (lambda c: c["workloads"][0].pop("namespace"), "workloads[0]: missing field `namespace`"),
    (lambda c: c["workloads"][1].update(addresses=["10.0.0.1"]), "workloads[1]: unknown field `addresses`"),
    (lambda c: c["services"][0].update(ports=[{"port": 80}]), "services[0].ports"),
    (lambda c: c["services"][0]["endpoints"]["httpbin-1"].pop("status"),
     "services[0].endpoints.httpbin-1: missing field `status`"),
    (lambda c: c.update(policies=[{"name": "x"}]), "policies[0]: missing field `namespace`"),
])
def test_malformed_snapshot_is_one_clear_error_naming_the_field(mutate, words):
    cfg = snapshot().raw
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        State(cfg)
    assert str(err.value).startswith("ztunnel snapshot: ") and words in str(err.value), str(err.value)


def test_empty_config_is_the_state_before_the_first_snapshot():
    state = State({}, node="node-0")
    assert state.workloads == [] and state.route_outbound(None, "10.96.0.10", 80).kind == "passthrough"


def test_inbound_service_prefers_the_forwarded_host_when_it_selects_the_workload():
    state = snapshot()
    dest = state.by_uid["httpbin-2"]   # endpoint of httpbin (8000->80) and reviews (9080)
    assert state.inbound_service(dest, 9080, "httpbin.apps.svc.cluster.local").name == "httpbin"
    assert state.inbound_service(dest, 80, "reviews.apps.svc.cluster.local").name == "reviews"


def test_inbound_service_ignores_a_host_that_does_not_select_the_workload():
    state = snapshot()
    dest = state.by_uid["httpbin-2"]
    svc = state.inbound_service(dest, 80, "legacy.legacy.svc.cluster.local")
    assert svc.info() == {"name": "httpbin", "namespace": "apps", "hostname": "httpbin.apps.svc.cluster.local"}


def test_inbound_service_falls_back_to_the_target_port_and_else_none():
    state = snapshot()
    dest = state.by_uid["httpbin-2"]
    assert state.inbound_service(dest, 9080).name == "reviews"
    assert state.inbound_service(dest, 80).name == "httpbin"
    assert state.inbound_service(dest, 5555) is None
    assert state.inbound_service(state.by_uid["sleep"], 80) is None   # in no service
