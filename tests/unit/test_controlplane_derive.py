"""The control plane's pure derivation: store objects in, proxy config out."""

from __future__ import annotations

import json

import pytest

from reference_impl.controlplane.derive import derive_mesh, waypoint_config, ztunnel_config
from reference_impl.controlplane.index import MeshIndex
from reference_impl.controlplane.provision import plan_waypoint_objects
from reference_impl.policy.authz_l4 import evaluate_l4

_stamp = iter(range(1, 10_000))


def namespace(name, **labels):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(ns, name, ip, node="node-0", sa="default", labels=None, ready=True, host_network=False,
        ports=(), annotations=None):
    spec = {"nodeName": node, "serviceAccountName": sa,
            "containers": [{"name": "app", "image": "img", "ports": [dict(p) for p in ports]}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {}),
                         "annotations": dict(annotations or {}), "uid": f"uid-{name}",
                         "creationTimestamp": f"2024-01-01T00:00:{next(_stamp) % 60:02d}Z"},
            "spec": spec,
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def service(ns, name, selector, ports, cluster_ip="10.96.0.10", labels=None):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
            "spec": {"selector": selector, "ports": ports, "clusterIP": cluster_ip}}


def authz(ns, name, spec):
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def gateway(ns, name, cls="istio-waypoint", labels=None, annotations=None, served=True):
    """A waypoint Gateway; `served`: istiod has written its address (it had a ready pod), so
    objects may bind to it."""
    obj = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {}),
                        "annotations": dict(annotations or {}), "uid": f"gw-{name}"},
           "spec": {"gatewayClassName": cls,
                    "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
    if served:
        obj["status"] = {"addresses": [{"type": "Hostname", "value": f"{name}.{ns}.svc.cluster.local"}]}
    return obj


def base():
    return [
        namespace("ambient-apps", **{"istio.io/dataplane-mode": "ambient"}),
        namespace("plain"),
        namespace("istio-system"),
        pod("ambient-apps", "httpbin-1", "10.244.0.5", sa="httpbin-ambient",
            labels={"app": "httpbin-ambient", "version": "v1"}),
        pod("ambient-apps", "sleep-1", "10.244.1.5", node="node-1", sa="sleep-ambient",
            labels={"app": "sleep-ambient"}),
        service("ambient-apps", "httpbin-ambient", {"app": "httpbin-ambient"},
                [{"name": "http", "port": 8000, "targetPort": 80}], "10.96.0.20"),
    ]


def workload(config, name):
    [found] = [w for w in config["workloads"] if w["name"] == name]
    return found


def svc(config, name):
    [found] = [s for s in config["services"] if s["name"] == name]
    return found


def test_captured_workload_has_ztunnel_shaped_fields():
    config = ztunnel_config(derive_mesh(base(), ["ROOT-PEM"]))
    w = workload(config, "httpbin-1")
    assert w["uid"] == "Kubernetes//Pod/ambient-apps/httpbin-1"
    assert w["workloadIps"] == ["10.244.0.5"] and w["node"] == "node-0"
    assert w["identity"] == "spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient"
    assert (w["serviceAccount"], w["trustDomain"]) == ("httpbin-ambient", "cluster.local")
    assert (w["protocol"], w["dataplaneMode"], w["status"]) == ("HBONE", "ambient", "Healthy")
    assert w["services"] == ["ambient-apps/httpbin-ambient.ambient-apps.svc.cluster.local"]
    assert w["waypoint"] is None
    assert config["meshConfig"]["trustBundle"] == ["ROOT-PEM"]
    json.dumps(config)  # the snapshot must be JSON as is


@pytest.mark.parametrize("ns_labels,pod_labels,extra,mode,protocol", [
    ({"istio.io/dataplane-mode": "ambient"}, {}, {}, "ambient", "HBONE"),
    ({"istio.io/dataplane-mode": "ambient"}, {"istio.io/dataplane-mode": "none"}, {}, "none", "TCP"),
    ({}, {}, {}, "none", "TCP"),
    ({}, {"istio.io/dataplane-mode": "ambient"}, {}, "ambient", "HBONE"),
    ({"istio.io/dataplane-mode": "ambient"}, {}, {"host_network": True}, "none", "TCP"),
    ({"istio-injection": "enabled"}, {}, {"annotations": {"sidecar.istio.io/status": "{}"}},
     "sidecar", "HBONE"),
])
def test_capture_mode_follows_namespace_and_pod_labels(ns_labels, pod_labels, extra, mode, protocol):
    objects = [namespace("n", **ns_labels), pod("n", "p", "10.244.0.9", labels=pod_labels, **extra)]
    w = workload(ztunnel_config(derive_mesh(objects)), "p")
    assert (w["dataplaneMode"], w["protocol"]) == (mode, protocol)


def test_unready_pod_is_unhealthy_and_unaddressed_pod_is_absent():
    objects = base() + [pod("ambient-apps", "starting", None),
                        pod("ambient-apps", "httpbin-2", "10.244.0.6", labels={"app": "httpbin-ambient"},
                            ready=False)]
    config = ztunnel_config(derive_mesh(objects))
    assert "starting" not in {w["name"] for w in config["workloads"]}
    assert workload(config, "httpbin-2")["status"] == "Unhealthy"
    endpoints = svc(config, "httpbin-ambient")["endpoints"]
    assert endpoints["Kubernetes//Pod/ambient-apps/httpbin-2"]["status"] == "Unhealthy"
    assert endpoints["Kubernetes//Pod/ambient-apps/httpbin-1"]["status"] == "Healthy"


def test_service_ports_resolve_named_target_ports_per_endpoint_and_headless_has_no_vip():
    objects = [
        namespace("n"),
        pod("n", "a", "10.244.0.2", labels={"app": "x"}, ports=[{"name": "web", "containerPort": 8080}]),
        pod("n", "b", "10.244.0.3", labels={"app": "x"}, ports=[{"name": "web", "containerPort": 9090}]),
        pod("n", "c", "10.244.0.4", labels={"app": "x"}),  # exposes no port named web
        service("n", "x", {"app": "x"}, [{"name": "http", "port": 80, "targetPort": "web"},
                                         {"name": "raw", "port": 7000}]),
        service("n", "x-headless", {"app": "x"}, [{"port": 80, "targetPort": 8080}], cluster_ip="None"),
    ]
    config = ztunnel_config(derive_mesh(objects))
    x = svc(config, "x")
    assert x["vips"] == ["10.96.0.10"] and x["ports"] == {"80": 0, "7000": 7000}
    eps = x["endpoints"]
    assert eps["Kubernetes//Pod/n/a"]["port"] == {"80": 8080, "7000": 7000}
    assert eps["Kubernetes//Pod/n/b"]["port"] == {"80": 9090, "7000": 7000}
    assert eps["Kubernetes//Pod/n/c"]["port"] == {"7000": 7000}
    headless = svc(config, "x-headless")
    assert headless["headless"] is True and headless["vips"] == []
    assert headless["hostname"] == "x-headless.n.svc.cluster.local"
    assert len(headless["endpoints"]) == 3


def test_l4_policy_is_translated_and_listed_on_the_workloads_it_selects():
    allow_sleep = authz("ambient-apps", "require-sleep-identity", {
        "selector": {"matchLabels": {"app": "httpbin-ambient"}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/ambient-apps/sa/sleep-ambient"]}}]}]})
    config = ztunnel_config(derive_mesh(base() + [allow_sleep]))
    [policy] = config["policies"]
    assert (policy["name"], policy["scope"], policy["action"]) == ("require-sleep-identity", "WORKLOAD_SELECTOR", "ALLOW")
    assert workload(config, "httpbin-1")["authorizationPolicies"] == ["ambient-apps/require-sleep-identity"]
    assert workload(config, "sleep-1")["authorizationPolicies"] == []
    rogue = {"source_principal": "spiffe://cluster.local/ns/ambient-apps/sa/rogue-sa",
             "dest_port": 80, "source_ip": "10.244.1.9", "dest_ip": "10.244.0.5"}
    sleep = {**rogue, "source_principal": "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"}
    assert not evaluate_l4(config["policies"], rogue).allowed
    assert evaluate_l4(config["policies"], sleep).allowed


def test_policy_that_cannot_compile_becomes_fail_closed_deny_with_the_reason(caplog):
    broken = authz("ambient-apps", "broken", {
        "selector": {"matchLabels": {"app": "httpbin-ambient"}}, "action": "ALLOW",
        "rules": [{"when": [{"key": "source.bogus", "values": ["x"]}]}]})
    config = ztunnel_config(derive_mesh(base() + [broken]))
    [policy] = config["policies"]
    assert policy["action"] == "DENY" and "source.bogus" in policy["error"]
    assert policy["selector"] == {"app": "httpbin-ambient"}
    conn = {"source_principal": "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient",
            "dest_port": 80, "source_ip": "10.244.1.5", "dest_ip": "10.244.0.5"}
    assert not evaluate_l4(config["policies"], conn).allowed
    # ...whereas the same policy, fixed, would allow it: the deny comes from failing closed.
    fixed = authz("ambient-apps", "broken", {"selector": {"matchLabels": {"app": "httpbin-ambient"}},
                                             "action": "ALLOW", "rules": [{}]})
    assert evaluate_l4(ztunnel_config(derive_mesh(base() + [fixed]))["policies"], conn).allowed
    assert any("broken" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_target_ref_policies_go_to_the_waypoint_not_to_ztunnel():
    objects = base() + [
        gateway("ambient-apps", "wp"),
        service("ambient-apps", "wp", {"gateway.networking.k8s.io/gateway-name": "wp"},
                [{"name": "mesh", "port": 15008}], "10.96.0.99",
                labels={"gateway.networking.k8s.io/gateway-name": "wp"}),
        authz("ambient-apps", "l7", {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                                     "name": "wp"}],
                                     "rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}]}),
    ]
    objects[2]["metadata"]["labels"] = {}
    objects[0]["metadata"]["labels"]["istio.io/use-waypoint"] = "wp"
    mesh = derive_mesh(objects)
    assert ztunnel_config(mesh)["policies"] == []
    wp = waypoint_config(mesh, "ambient-apps", "wp")
    assert [p["metadata"]["name"] for p in wp["authorizationPolicies"]] == ["l7"]
    assert wp["services"] == ["ambient-apps/httpbin-ambient.ambient-apps.svc.cluster.local"]


def test_use_waypoint_binding_follows_waypoint_for_and_precedence():
    objects = base() + [
        gateway("ambient-apps", "svc-wp"),
        gateway("ambient-apps", "all-wp", labels={"istio.io/waypoint-for": "all"}),
        service("ambient-apps", "svc-wp", {}, [{"port": 15008}], "10.96.0.50"),
        pod("ambient-apps", "opted-out", "10.244.0.7", labels={"istio.io/use-waypoint": "none"}),
        pod("ambient-apps", "own-label", "10.244.0.8", labels={"istio.io/use-waypoint": "all-wp"}),
        pod("ambient-apps", "ghost", "10.244.0.9", labels={"istio.io/use-waypoint": "missing"}),
    ]
    objects[0]["metadata"]["labels"]["istio.io/use-waypoint"] = "svc-wp"
    config = ztunnel_config(derive_mesh(objects))
    service_wp = svc(config, "httpbin-ambient")["waypoint"]
    assert service_wp == {"destination": {"namespace": "ambient-apps",
                                          "hostname": "svc-wp.ambient-apps.svc.cluster.local"},
                          "address": "10.96.0.50", "hboneMtlsPort": 15008}
    # svc-wp is waypoint-for service (the default): the namespace label binds no workload.
    assert workload(config, "httpbin-1")["waypoint"] is None
    assert workload(config, "opted-out")["waypoint"] is None
    assert workload(config, "own-label")["waypoint"]["destination"]["hostname"] == \
        "all-wp.ambient-apps.svc.cluster.local"
    assert workload(config, "ghost")["waypoint"] is None  # naming a missing Gateway is ignored


def test_seed_article_legacy_waypoint_serves_namespace_and_takes_selector_policies(caplog):
    l4 = authz("ambient-apps", "require-sleep-identity", {
        "selector": {"matchLabels": {"app": "httpbin-ambient"}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/ambient-apps/sa/sleep-ambient"]}}]}]})
    jwt = {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
           "metadata": {"name": "require-jwt", "namespace": "ambient-apps"},
           "spec": {"selector": {"matchLabels": {"app": "httpbin-ambient"}},
                    "jwtRules": [{"issuer": "testing@secure.istio.io"}]}}
    objects = base() + [gateway("ambient-apps", "httpbin-ambient-waypoint", cls="istio"), l4, jwt]
    mesh = derive_mesh(objects)
    config = ztunnel_config(mesh)
    hostname = "httpbin-ambient-waypoint.ambient-apps.svc.cluster.local"
    assert workload(config, "httpbin-1")["waypoint"]["destination"]["hostname"] == hostname
    assert svc(config, "httpbin-ambient")["waypoint"]["destination"]["hostname"] == hostname
    assert config["policies"] == [] and workload(config, "httpbin-1")["authorizationPolicies"] == []
    wp = waypoint_config(mesh, "ambient-apps", "httpbin-ambient-waypoint")
    assert wp["waypoint"]["legacy"] is True
    [moved] = wp["authorizationPolicies"]
    assert moved["metadata"]["name"] == "require-sleep-identity"
    assert moved["appliesToWorkloads"] == ["Kubernetes//Pod/ambient-apps/httpbin-1"]
    assert [r["metadata"]["name"] for r in wp["requestAuthentications"]] == ["require-jwt"]
    assert any("legacy" in r.getMessage() or "1.18" in r.getMessage() for r in caplog.records)


def test_for_service_account_annotation_limits_a_legacy_waypoint():
    objects = base() + [gateway("ambient-apps", "wp",
                                annotations={"istio.io/for-service-account": "httpbin-ambient"})]
    config = ztunnel_config(derive_mesh(objects))
    assert workload(config, "httpbin-1")["waypoint"] is not None
    assert workload(config, "sleep-1")["waypoint"] is None


def test_waypoint_objects_are_provisioned_once_and_removed_with_their_gateway():
    objects = base() + [gateway("ambient-apps", "wp")]
    to_apply, to_delete = plan_waypoint_objects(MeshIndex.build(objects))
    assert sorted(o["kind"] for o in to_apply) == ["Deployment", "Service", "ServiceAccount"]
    assert to_delete == []
    deployment = next(o for o in to_apply if o["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    assert template["spec"]["serviceAccountName"] == "wp"
    assert template["spec"]["containers"][0]["image"] == "ambient-conformance/waypoint"
    service_ports = next(o for o in to_apply if o["kind"] == "Service")["spec"]["ports"]
    assert [p["port"] for p in service_ports] == [15008]

    stored = objects + to_apply  # as the store holds them after the apply
    assert plan_waypoint_objects(MeshIndex.build(stored)) == ([], [])

    without_gateway = [o for o in stored if o["kind"] != "Gateway"]
    to_apply, to_delete = plan_waypoint_objects(MeshIndex.build(without_gateway))
    assert to_apply == []
    assert sorted((o["kind"], o["metadata"]["name"]) for o in to_delete) == [
        ("Deployment", "wp"), ("Service", "wp"), ("ServiceAccount", "wp")]


def test_non_waypoint_gateway_is_not_provisioned():
    ingress = gateway("ambient-apps", "ingress", cls="istio")
    ingress["spec"]["listeners"] = [{"name": "http", "port": 80, "protocol": "HTTP"}]
    assert plan_waypoint_objects(MeshIndex.build(base() + [ingress])) == ([], [])


def test_peer_authentications_are_shipped_for_ztunnel_to_decide_plaintext():
    strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "strict", "namespace": "ambient-apps"},
              "spec": {"mtls": {"mode": "STRICT"}}, "status": {"noise": True}}
    config = ztunnel_config(derive_mesh(base() + [strict]))
    [pa] = config["peerAuthentications"]
    assert pa["spec"] == {"mtls": {"mode": "STRICT"}} and "status" not in pa


def test_policy_binding_sent_to_ztunnel_covers_what_selecting_by_labels_covers():
    """ztunnel uses the control plane's binding; it must cover exactly the workloads that the
    selector/scope rules cover: root-namespace (mesh-wide) policies with and without a selector,
    namespace-wide ones, and selector ones of the workload's own namespace only."""
    from reference_impl.policy.authz_l4 import select_policies
    from reference_impl.ztunnel.state import State

    def deny(ns, name, selector=None):
        spec = {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["x"]}}]}]}
        if selector is not None:
            spec["selector"] = {"matchLabels": selector}
        return authz(ns, name, spec)

    objects = base() + [
        pod("plain", "web", "10.244.0.30", labels={"app": "httpbin-ambient"}),
        pod("istio-system", "root-pod", "10.244.0.31", labels={"app": "httpbin-ambient"}),
        deny("istio-system", "mesh-wide"),
        deny("istio-system", "mesh-selector", {"app": "httpbin-ambient"}),
        deny("istio-system", "mesh-selector-all", {}),
        deny("ambient-apps", "namespace-wide"),
        deny("ambient-apps", "ns-selector", {"app": "httpbin-ambient"}),
        deny("plain", "other-ns-selector", {"app": "sleep-ambient"}),
    ]
    config = ztunnel_config(derive_mesh(objects))
    state = State(config, node="node-0")
    for w in state.workloads:
        expected = [p.key for p in select_policies(config["policies"], w.namespace, w.labels)]
        assert [p.key for p in state.policies_for(w)] == expected, w.uid
    httpbin = state.by_uid["Kubernetes//Pod/ambient-apps/httpbin-1"]
    assert {p.key for p in state.policies_for(httpbin)} == {
        "istio-system/mesh-wide", "istio-system/mesh-selector", "istio-system/mesh-selector-all",
        "ambient-apps/namespace-wide", "ambient-apps/ns-selector"}
    web = state.by_uid["Kubernetes//Pod/plain/web"]
    assert {p.key for p in state.policies_for(web)} == {
        "istio-system/mesh-wide", "istio-system/mesh-selector", "istio-system/mesh-selector-all"}
