"""The security model (api.security), normalization and the small public helpers of reference_impl.api."""

import json

import pytest

from reference_impl.api import (
    ManifestError, kind_info, legacy_warnings, load_text, object_key, security, validate)


def one(text: str):
    """The api.security model of the one object in `text`, loaded as `apply` loads it."""
    [obj] = load_text(text)
    return security.parse(obj["kind"], obj)


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


def test_kind_info_and_object_key():
    assert kind_info("Gateway").api_versions == ("gateway.networking.k8s.io/v1",
                                                 "gateway.networking.k8s.io/v1beta1")
    assert kind_info("Node").namespaced is False and kind_info("Node").writable is False
    assert kind_info("Deployment").writable is True
    assert kind_info("PeerAuthentication").namespaced is True
    with pytest.raises(ManifestError, match="unknown kind 'Ingress'; use one of"):
        kind_info("Ingress")
    assert object_key({"kind": "Pod", "metadata": {"name": "p"}}) == ("Pod", "default", "p")


def test_authorization_policy_defaults_and_target_refs():
    policy = one("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: apps}
spec:
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
  rules:
  - from: [{source: {serviceAccounts: [sleep, other/client], ipBlocks: [10.0.0.1]}}]
    to: [{operation: {notPaths: ["/admin*"], ports: ["8000"]}}]
    when: [{key: "request.headers[x-user]", notValues: ["guest"]},
           {key: source.serviceAccount, values: [sleep]}]
""")
    assert isinstance(policy, security.AuthorizationPolicy)
    assert policy.action == "ALLOW" and policy.selector is None and policy.provider is None
    assert [(r["kind"], r["name"]) for r in policy.target_refs] == [("Gateway", "waypoint")]
    rule = policy.rules[0]
    assert rule.sources[0].get("serviceAccounts") == (
        security.ServiceAccount("apps", "sleep"), security.ServiceAccount("other", "client"))
    assert str(rule.sources[0].get("ipBlocks")[0]) == "10.0.0.1/32"
    assert rule.operations[0].get("notPaths") == ("/admin*",)
    assert rule.operations[0].get("ports") == (8000,)
    assert rule.conditions[0].not_values == ("guest",)
    # a bare service account in `when` means the policy's namespace, written out in full
    assert rule.conditions[1].values == ("apps/sleep",)
    assert rule.l7_attributes() == ["notPaths", "request.headers[x-user]", "source.serviceAccount"]


def test_allow_nothing_policy_is_valid():
    policy = one("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                 "metadata: {name: deny-all, namespace: apps}\nspec: {}\n")
    assert policy.rules == () and policy.action == "ALLOW"


def test_peer_authentication_port_level():
    text = """
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: p, namespace: apps}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls: {8080: {mode: PERMISSIVE}, "9090": {mode: DISABLE}}
"""
    peer = one(text)
    assert isinstance(peer, security.PeerAuthentication)
    assert peer.mode == "STRICT" and peer.selector == {"app": "web"}
    assert peer.port_modes == {8080: "PERMISSIVE", 9090: "DISABLE"}
    assert any("security.istio.io/v1beta1" in w for w in legacy_warnings(load_text(text)[0]))


def test_request_authentication_token_places():
    authn = one("""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: apps}
spec:
  jwtRules:
  - {issuer: a, jwksUri: "https://a/jwks"}
  - {issuer: b, fromHeaders: [{name: X-Jwt, prefix: "Bearer "}], fromCookies: [session],
     outputClaimToHeaders: [{header: X-Sub, claim: sub}]}
""")
    default, custom = authn.jwt_rules
    assert default.locations == (security.TokenLocation("header", "authorization", "Bearer "),
                                 security.TokenLocation("param", "access_token"))
    assert custom.locations == (security.TokenLocation("header", "x-jwt", "Bearer "),
                                security.TokenLocation("cookie", "session"))
    assert custom.output_claim_to_headers == (("x-sub", "sub"),) and custom.source == "apps/jwt"


def test_a_stored_object_is_named_without_a_file():
    with pytest.raises(ManifestError) as err:
        security.parse("AuthorizationPolicy", {"metadata": {"name": "p", "namespace": "apps"},
                                               "spec": {"action": "PERMIT"}})
    assert str(err.value).startswith("AuthorizationPolicy apps/p: spec.action: unknown value")


def test_current_forms_have_no_warnings():
    obj = validate({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": "w", "namespace": "apps",
                                 "labels": {"istio.io/waypoint-for": "all"}},
                    "spec": {"gatewayClassName": "istio-waypoint",
                             "listeners": [{"name": "mesh", "port": 15008,
                                            "protocol": "HBONE"}]}})
    assert legacy_warnings(obj) == []


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
