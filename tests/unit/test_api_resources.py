"""Typed objects: defaults, normalization and the small public helpers of reference_impl.api."""

import json

import pytest

from reference_impl.api import (
    AuthorizationPolicy, Deployment, ManifestError, PeerAuthentication, Pod, Service, kind_info,
    legacy_warnings, load_text, object_key, parse, validate,
)


def one(text: str):
    [obj] = load_text(text)
    return parse(obj)


def test_validate_returns_a_normalized_copy_and_leaves_the_input_alone():
    given = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}
    result = validate(given)
    assert result["metadata"]["namespace"] == "default"
    assert "namespace" not in given["metadata"]


def test_cluster_scoped_kinds_have_no_namespace():
    obj = validate({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "a", "namespace": "ignored"}})
    assert "namespace" not in obj["metadata"]
    assert object_key(obj) == ("Namespace", "", "a")
    assert parse(obj).namespace == ""


def test_kind_info_and_object_key():
    assert kind_info("Gateway").api_versions == ("gateway.networking.k8s.io/v1",
                                                 "gateway.networking.k8s.io/v1beta1")
    assert kind_info("Node").namespaced is False and kind_info("Node").writable is False
    assert kind_info("Deployment").writable is True
    assert kind_info("PeerAuthentication").namespaced is True
    with pytest.raises(ManifestError, match="unknown kind 'Ingress'; use one of"):
        kind_info("Ingress")
    assert object_key({"kind": "Pod", "metadata": {"name": "p"}}) == ("Pod", "default", "p")


def test_deployment_and_pod_spec_defaults():
    deployment = one("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: apps}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: docker.io/kennethreitz/httpbin
        ports: [{containerPort: 80, name: http}]
        env: [{name: A, value: "1"}]
""")
    assert isinstance(deployment, Deployment)
    assert deployment.replicas == 1
    spec = deployment.template.spec
    assert spec.service_account_name == "default"
    assert spec.termination_grace_period_seconds == 30
    assert spec.host_network is False
    assert spec.containers[0].env[0].value == "1"
    assert spec.resolve_port("http") == 80 and spec.resolve_port("grpc") is None
    assert deployment.template.labels == {"app": "web"}


def test_zero_replicas_and_zero_grace_are_kept():
    pod = one("""
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  terminationGracePeriodSeconds: 0
  hostNetwork: true
  containers: [{name: c, image: curlimages/curl, command: ["/bin/sleep", "3650d"]}]
status: {podIP: 10.244.0.5}
""")
    assert isinstance(pod, Pod)
    assert pod.spec.termination_grace_period_seconds == 0 and pod.spec.host_network
    assert pod.spec.containers[0].command == ("/bin/sleep", "3650d")
    assert pod.pod_ip == "10.244.0.5"


def test_service_defaults_and_headless():
    service = one("""
apiVersion: v1
kind: Service
metadata: {name: sleep, namespace: apps}
spec:
  ports: [{port: 80, name: http}, {port: 90, name: admin, targetPort: admin, protocol: UDP}]
  selector: {app: sleep}
""")
    assert isinstance(service, Service)
    assert [(p.port, p.target_port, p.protocol) for p in service.ports] == [
        (80, 80, "TCP"), (90, "admin", "UDP")]
    assert not service.headless and service.cluster_ip is None
    assert service.selects({"app": "sleep", "x": "y"}) and not service.selects({"app": "web"})
    headless = one("""
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}}
""")
    assert headless.headless and headless.ports == ()


def test_authorization_policy_defaults_and_target_refs():
    policy = one("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: apps}
spec:
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
  rules:
  - to: [{operation: {notPaths: ["/admin*"], ports: ["8000"]}}]
    when: [{key: "request.headers[x-user]", notValues: ["guest"]}]
""")
    assert isinstance(policy, AuthorizationPolicy)
    assert policy.action == "ALLOW" and policy.selector is None
    assert [(r.kind, r.name) for r in policy.target_refs] == [("Gateway", "waypoint")]
    rule = policy.rules[0]
    assert rule.sources == ()
    assert rule.operations[0].not_paths == ("/admin*",) and rule.operations[0].ports == ("8000",)
    assert rule.conditions[0].not_values == ("guest",)
    assert policy.selects({"anything": "x"})  # no selector: the whole namespace


def test_allow_nothing_policy_is_valid():
    policy = one("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                 "metadata: {name: deny-all, namespace: apps}\nspec: {}\n")
    assert policy.rules == () and policy.action == "ALLOW"


def test_peer_authentication_port_level():
    peer = one("""
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: p, namespace: apps}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls: {8080: {mode: PERMISSIVE}, "9090": {mode: DISABLE}}
""")
    assert isinstance(peer, PeerAuthentication)
    assert peer.mtls_mode == "STRICT"
    assert peer.port_level_mtls == {8080: "PERMISSIVE", 9090: "DISABLE"}
    assert peer.selects({"app": "web"}) and not peer.selects({"app": "db"})
    assert any("security.istio.io/v1beta1" in w for w in peer.warnings)


def test_current_forms_have_no_warnings():
    obj = validate({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": "w", "namespace": "apps",
                                 "labels": {"istio.io/waypoint-for": "all"}},
                    "spec": {"gatewayClassName": "istio-waypoint",
                             "listeners": [{"name": "mesh", "port": 15008,
                                            "protocol": "HBONE"}]}})
    assert legacy_warnings(obj) == []
    gateway = parse(obj)
    assert gateway.is_waypoint and gateway.waypoint_for == "all" and gateway.warnings == ()


def test_empty_documents_are_skipped_and_lists_expanded():
    objects = load_text("""
---
# only a comment
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: a}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: b}}
---
""")
    assert [o["metadata"]["name"] for o in objects] == ["a", "b"]


def test_timestamps_stay_strings_so_objects_stay_json():
    [obj] = load_text("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n"
                      "  creationTimestamp: 2024-05-01T10:00:00Z\n")
    assert obj["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"
    assert json.loads(json.dumps(obj)) == obj
