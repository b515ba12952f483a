"""Destination selection and inbound policy lookup from a snapshot (ISTIO-SEMANTICS 4, 5, 6)."""
import random

import pytest

from reference_impl.policy.authz_l4 import translate_for_ztunnel
from reference_impl.ztunnel.state import ConfigError, State


def wl(uid, ip, node="node-0", ns="apps", sa=None, captured=True, **extra):
    return {"uid": uid, "name": uid, "namespace": ns, "workloadIps": [ip], "node": node,
            "serviceAccount": sa or uid, "protocol": "HBONE" if captured else "TCP", **extra}


def snapshot(**extra):
    cfg = {
        "workloads": [
            wl("sleep", "10.244.0.5"),
            wl("httpbin-1", "10.244.1.6", node="node-1", sa="httpbin"),
            wl("httpbin-2", "10.244.0.7", sa="httpbin"),
            wl("legacy", "10.244.1.9", node="node-1", ns="legacy", captured=False),
            wl("waypoint", "10.244.1.20", node="node-1", sa="waypoint"),
        ],
        "services": [
            {"name": "httpbin", "namespace": "apps", "vips": ["10.96.0.10"], "ports": {"8000": 80},
             "endpoints": [{"workloadUid": "httpbin-1"}, {"workloadUid": "httpbin-2"}]},
            {"name": "legacy", "namespace": "legacy", "vips": ["10.96.0.11"], "ports": {"80": 8080},
             "endpoints": [{"workloadUid": "legacy"}]},
            {"name": "empty", "namespace": "apps", "vips": ["10.96.0.12"], "ports": {"80": 80}, "endpoints": []},
            {"name": "waypoint", "namespace": "apps", "vips": ["10.96.0.30"], "ports": {"15008": 15008},
             "endpoints": [{"workloadUid": "waypoint"}]},
            {"name": "reviews", "namespace": "apps", "vips": ["10.96.0.40"], "ports": {"9080": 9080},
             "endpoints": [{"workloadUid": "httpbin-2"}], "waypoint": {"address": "10.96.0.30"}},
        ],
    }
    cfg.update(extra)
    return State(cfg, node="node-0")


def test_service_vip_is_load_balanced_over_ready_endpoints_with_target_port():
    state = snapshot()
    src = state.by_uid["sleep"]
    seen = {state.route_outbound(src, "10.96.0.10", 8000, random.Random(i)).authority for i in range(40)}
    assert seen == {"10.244.1.6:80", "10.244.0.7:80"}
    route = state.route_outbound(src, "10.96.0.10", 8000, random.Random(1))
    assert route.kind == "hbone" and route.target[1] == 15008
    assert route.expected_identities == ("spiffe://cluster.local/ns/apps/sa/httpbin",)


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


def test_waypoint_itself_skips_its_own_waypoint():
    state = snapshot()
    route = state.route_outbound(state.by_uid["waypoint"], "10.96.0.40", 9080)
    assert not route.via_waypoint and route.authority == "10.244.0.7:9080"


def test_captured_local_pods_are_those_on_my_node():
    state = snapshot()
    assert sorted(w.uid for w in state.captured_local()) == ["httpbin-2", "sleep"]


def test_inbound_policy_denies_other_principals_and_plaintext():
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "l4", "namespace": "apps"},
              "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "ALLOW",
                       "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/apps/sa/sleep"]}}]}]}}
    compiled = translate_for_ztunnel(policy).to_dict()
    cfg_wl = wl("httpbin-2", "10.244.0.7", sa="httpbin", labels={"app": "httpbin"})
    state = State({"workloads": [cfg_wl], "policies": [compiled]}, node="node-0")
    dest = state.by_uid["httpbin-2"]
    assert state.authorize(dest, "10.244.0.5", "10.244.0.7", 80, "spiffe://cluster.local/ns/apps/sa/sleep").allowed
    assert not state.authorize(dest, "10.244.0.8", "10.244.0.7", 80, "spiffe://cluster.local/ns/apps/sa/rogue").allowed
    assert not state.authorize(dest, "10.244.0.8", "10.244.0.7", 80, None).allowed


def test_strict_peer_authentication_refuses_plaintext():
    pa = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "default", "namespace": "apps"}, "spec": {"mtls": {"mode": "STRICT"}}}
    state = snapshot(peerAuthentications=[pa])
    assert not state.plaintext_allowed(state.by_uid["sleep"], 80)
    assert snapshot().plaintext_allowed(snapshot().by_uid["sleep"], 80)


def test_malformed_workload_is_one_clear_error():
    with pytest.raises(ConfigError, match="lacks name or namespace"):
        State({"workloads": [{"uid": "x"}]})


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
