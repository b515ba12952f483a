"""Waypoint binding, policy attachment and status as the control plane derives them (pure)."""

from __future__ import annotations

from reference_impl.controlplane.derive import derive_mesh, waypoint_config, ztunnel_config
from reference_impl.controlplane.index import MeshIndex
from reference_impl.controlplane.provision import plan_waypoint_objects
from reference_impl.controlplane.waypoint_status import status_updates
from tests.unit.test_controlplane_derive import authz, base, gateway, namespace, pod, service, svc, workload

NS = "ambient-apps"
HOST = "httpbin-ambient.ambient-apps.svc.cluster.local"


def waypoint_service(ns, name, ip="10.96.0.40"):
    return service(ns, name, {"gateway.networking.k8s.io/gateway-name": name}, [{"port": 15008}], ip,
                   labels={"gateway.networking.k8s.io/gateway-name": name})


def label(obj, **labels):
    obj["metadata"].setdefault("labels", {}).update(labels)
    return obj


def bound_to(config, name):
    waypoint = svc(config, name)["waypoint"]
    return waypoint and waypoint["destination"]["hostname"]


def test_a_gateway_that_has_not_served_yet_binds_nothing_and_the_service_says_why():
    objects = base() + [gateway(NS, "wp", served=False)]
    label(objects[5], **{"istio.io/use-waypoint": "wp"})
    mesh = derive_mesh(objects)
    assert bound_to(ztunnel_config(mesh), "httpbin-ambient") is None
    condition = mesh.service_bindings[f"{NS}/{HOST}"].condition
    assert condition == {"type": "istio.io/WaypointBound", "status": "False", "reason": "WaypointIsNotReady",
                         "message": 'waypoint "ambient-apps/wp" is not ready'}


def test_own_none_beats_the_namespace_label_and_a_missing_own_waypoint_does_not_fall_back():
    objects = base() + [gateway(NS, "wp"), service(NS, "second", {"app": "sleep-ambient"},
                                                   [{"port": 80}], "10.96.0.21")]
    label(objects[0], **{"istio.io/use-waypoint": "wp"})
    label(objects[5], **{"istio.io/use-waypoint": "none"})
    config = ztunnel_config(derive_mesh(objects))
    assert bound_to(config, "httpbin-ambient") is None
    assert bound_to(config, "second") == "wp.ambient-apps.svc.cluster.local"
    # A Service's own label naming a missing waypoint: not bound, and not to the namespace's either.
    label(objects[5], **{"istio.io/use-waypoint": "ghost"})
    mesh = derive_mesh(objects)
    assert bound_to(ztunnel_config(mesh), "httpbin-ambient") is None
    assert mesh.service_bindings[f"{NS}/{HOST}"].reason == "WaypointIsNotReady"


def test_waypoint_for_mismatch_is_reported_as_unsupported_traffic_type():
    objects = base() + [gateway(NS, "wl", labels={"istio.io/waypoint-for": "workload"})]
    label(objects[5], **{"istio.io/use-waypoint": "wl"})
    label(objects[3], **{"istio.io/use-waypoint": "wl"})
    mesh = derive_mesh(objects)
    config = ztunnel_config(mesh)
    assert bound_to(config, "httpbin-ambient") is None
    binding = mesh.service_bindings[f"{NS}/{HOST}"]
    assert (binding.reason, binding.message) == (
        "UnsupportedTrafficType",
        'attempting to bind to traffic type "service" which the waypoint "ambient-apps/wl" does not support')
    assert workload(config, "httpbin-1")["waypoint"]["destination"]["hostname"] == "wl.ambient-apps.svc.cluster.local"


def test_cross_namespace_binding_needs_the_namespace_label_and_allowed_routes():
    shared = gateway("shared", "wp")
    objects = base() + [namespace("shared"), shared]
    label(objects[5], **{"istio.io/use-waypoint": "wp", "istio.io/use-waypoint-namespace": "shared"})
    mesh = derive_mesh(objects)
    assert bound_to(ztunnel_config(mesh), "httpbin-ambient") is None
    assert mesh.service_bindings[f"{NS}/{HOST}"].reason == "AttachmentDenied"
    shared["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "All"}}
    assert bound_to(ztunnel_config(derive_mesh(objects)), "httpbin-ambient") == "wp.shared.svc.cluster.local"
    shared["spec"]["listeners"][0]["allowedRoutes"] = {
        "namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}}
    assert bound_to(ztunnel_config(derive_mesh(objects)), "httpbin-ambient") is None
    label(objects[0], team="a")
    assert bound_to(ztunnel_config(derive_mesh(objects)), "httpbin-ambient") == "wp.shared.svc.cluster.local"


def _two_services_behind_one_waypoint():
    objects = base() + [
        gateway(NS, "wp"),
        pod(NS, "other-1", "10.244.0.6", labels={"app": "other"}),
        service(NS, "other", {"app": "other"}, [{"port": 8000, "targetPort": 80}], "10.96.0.21"),
    ]
    label(objects[0], **{"istio.io/use-waypoint": "wp"})
    return objects


def test_service_attached_policy_is_limited_to_the_service_addressed():
    objects = _two_services_behind_one_waypoint() + [
        authz(NS, "svc", {"targetRefs": [{"kind": "Service", "group": "", "name": "httpbin-ambient"}]}),
        authz(NS, "gw", {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp"}]}),
        authz(NS, "elsewhere", {"targetRefs": [{"kind": "Gateway", "name": "wp", "namespace": "plain"}]}),
        authz("istio-system", "class", {"targetRefs": [{"kind": "GatewayClass", "name": "istio-waypoint"}]}),
        authz(NS, "class-not-root", {"targetRefs": [{"kind": "GatewayClass", "name": "istio-waypoint"}]}),
    ]
    bound = {p["metadata"]["name"]: (p["appliesToServices"], p["appliesToWorkloads"])
             for p in waypoint_config(derive_mesh(objects), NS, "wp")["authorizationPolicies"]}
    assert bound == {"svc": ([f"{NS}/httpbin-ambient.{NS}.svc.cluster.local"], None),
                     "gw": (None, None), "class": (None, None)}


def test_selector_policies_stay_at_ztunnel_for_a_current_waypoint():
    objects = _two_services_behind_one_waypoint() + [
        authz(NS, "sel", {"selector": {"matchLabels": {"app": "httpbin-ambient"}},
                          "rules": [{"to": [{"operation": {"paths": ["/get"]}}]}]})]
    mesh = derive_mesh(objects)
    assert waypoint_config(mesh, NS, "wp")["authorizationPolicies"] == []
    assert "ambient-apps/sel" in workload(ztunnel_config(mesh), "httpbin-1")["authorizationPolicies"]


def test_status_reports_programmed_and_the_address_only_once_the_waypoint_served():
    wp = gateway(NS, "wp", served=False)
    wp["metadata"]["generation"] = 3
    objects = base() + [wp]
    [(kind, _, _, status)] = status_updates(derive_mesh(objects), "T0")
    assert kind == "Gateway" and "addresses" not in status
    assert {c["type"]: (c["status"], c["reason"], c["observedGeneration"]) for c in status["conditions"]} == {
        "Accepted": ("True", "Accepted", 3), "Programmed": ("False", "AddressNotUsable", 3),
        "ResolvedRefs": ("True", "ResolvedRefs", 3)}
    [mesh_listener] = status["listeners"]
    assert (mesh_listener["name"], mesh_listener["attachedRoutes"]) == ("mesh", 0)
    assert {c["type"]: c["status"] for c in mesh_listener["conditions"]} == {
        "Accepted": "True", "Conflicted": "False", "Programmed": "True", "ResolvedRefs": "True"}
    # Its Service got an address: Programmed; its pod became ready: the address is reported.
    objects += [waypoint_service(NS, "wp"),
                pod(NS, "wp-1", "10.244.0.9", labels={"gateway.networking.k8s.io/gateway-name": "wp"})]
    wp["status"] = status
    [(_, _, _, status)] = status_updates(derive_mesh(objects), "T1")
    programmed = next(c for c in status["conditions"] if c["type"] == "Programmed")
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert (programmed["status"], programmed["lastTransitionTime"]) == ("True", "T1")
    assert programmed["message"] == "Resource programmed, assigned to service(s) wp.ambient-apps.svc.cluster.local:15008"
    assert accepted["lastTransitionTime"] == "T0"  # unchanged status: the transition time stays
    assert status["addresses"] == [{"type": "Hostname", "value": "wp.ambient-apps.svc.cluster.local"}]
    wp["status"] = status
    assert status_updates(derive_mesh(objects), "T2") == []  # nothing left to write
    # The pod goes away: the address stays (Istio never removes it once reported).
    objects.pop()
    assert status_updates(derive_mesh(objects), "T3") == []


def test_service_status_gets_and_loses_the_waypoint_bound_condition():
    objects = base() + [gateway(NS, "wp")]
    objects[5]["status"] = {"conditions": [{"type": "Other", "status": "True"}]}
    label(objects[5], **{"istio.io/use-waypoint": "wp"})
    [(kind, ns, name, status)] = [u for u in status_updates(derive_mesh(objects), "T0") if u[0] == "Service"]
    assert (kind, ns, name) == ("Service", NS, "httpbin-ambient")
    assert [c["type"] for c in status["conditions"]] == ["Other", "istio.io/WaypointBound"]
    assert status["conditions"][1]["message"] == "Successfully attached to waypoint ambient-apps/wp"
    objects[5]["status"] = status
    del objects[5]["metadata"]["labels"]["istio.io/use-waypoint"]
    [(_, _, _, status)] = [u for u in status_updates(derive_mesh(objects), "T1") if u[0] == "Service"]
    assert status == {"conditions": [{"type": "Other", "status": "True"}]}


def test_provisioning_keeps_a_scaled_replica_count():
    objects = base() + [gateway(NS, "wp")]
    to_apply, _ = plan_waypoint_objects(MeshIndex.build(objects))
    deployment = next(o for o in to_apply if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = 2
    deployment["metadata"]["annotations"]["ambient-conformance.io/desired-hash"] = "stale"
    to_apply, _ = plan_waypoint_objects(MeshIndex.build(objects + [deployment]))
    assert next(o for o in to_apply if o["kind"] == "Deployment")["spec"]["replicas"] == 2
