"""Every validation rule of reference_impl.api, as a table of broken manifests.

Each case starts from a valid object, breaks one field, writes it as the second document of a
file (after a valid Namespace), and expects a ManifestError whose one line names the file, the
document, the object, the field path, the problem, and what to do.
"""

import copy
import re

import pytest
import yaml

from reference_impl.api import ManifestError, load_files, load_text, validate

DELETE = object()

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ambient-apps"}}

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "httpbin", "namespace": "ambient-apps"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "httpbin"}},
        "template": {
            "metadata": {"labels": {"app": "httpbin", "version": "v1"}},
            "spec": {"serviceAccountName": "httpbin",
                     "containers": [{"name": "httpbin", "image": "docker.io/kennethreitz/httpbin",
                                     "ports": [{"containerPort": 80, "name": "http"}]}]},
        },
    },
}

SERVICE = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "httpbin", "namespace": "ambient-apps"},
    "spec": {"ports": [{"name": "http", "port": 8000, "targetPort": 80}],
             "selector": {"app": "httpbin"}},
}

AUTHZ = {
    "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
    "metadata": {"name": "allow-sleep", "namespace": "ambient-apps"},
    "spec": {
        "selector": {"matchLabels": {"app": "httpbin"}},
        "action": "ALLOW",
        "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/ambient-apps/sa/sleep"],
                                 "ipBlocks": ["10.244.0.0/16"]}}],
            "to": [{"operation": {"paths": ["/ip"], "ports": ["8000"]}}],
            "when": [{"key": "request.auth.claims[iss]", "values": ["testing@secure.istio.io"]}],
        }],
    },
}

PEER = {
    "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
    "metadata": {"name": "strict", "namespace": "ambient-apps"},
    "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "mtls": {"mode": "STRICT"},
             "portLevelMtls": {8080: {"mode": "PERMISSIVE"}}},
}

REQUEST_AUTHN = {
    "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
    "metadata": {"name": "jwt", "namespace": "ambient-apps"},
    "spec": {"selector": {"matchLabels": {"app": "httpbin"}},
             "jwtRules": [{"issuer": "testing@secure.istio.io",
                           "jwksUri": "https://example.invalid/jwks.json",
                           "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}]}]},
}

GATEWAY = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
    "metadata": {"name": "waypoint", "namespace": "ambient-apps"},
    "spec": {"gatewayClassName": "istio-waypoint",
             "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
}

HTTPROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "httpbin", "namespace": "ambient-apps"},
    "spec": {"parentRefs": [{"name": "httpbin", "kind": "Service", "group": ""}],
             "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/ip"}}],
                        "backendRefs": [{"name": "httpbin", "port": 8000}]}]},
}


def _set(obj, path, value):
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    *parents, last = [int(p[1:-1]) if p.startswith("[") else p for p in parts]
    target = obj
    for part in parents:
        target = target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value


# (id, base object, field to break, new value, field path expected in the message, words expected)
CASES = [
    ("missing-kind", DEPLOYMENT, "kind", DELETE, "kind", "required field is missing"),
    ("missing-apiversion", DEPLOYMENT, "apiVersion", DELETE, "apiVersion", "add apiVersion: apps/v1"),
    ("missing-metadata", DEPLOYMENT, "metadata", DELETE, "metadata", "required field is missing"),
    ("missing-name", DEPLOYMENT, "metadata.name", DELETE, "metadata.name", "required field"),
    ("unknown-kind", DEPLOYMENT, "kind", "StatefulSet", "kind", "use one of AuthorizationPolicy"),
    ("wrong-apiversion", DEPLOYMENT, "apiVersion", "v1", "apiVersion", "use apps/v1"),
    ("wrong-apiversion-istio", AUTHZ, "apiVersion", "security.istio.io/v1alpha1", "apiVersion",
     "security.istio.io/v1 or security.istio.io/v1beta1"),
    ("name-uppercase", DEPLOYMENT, "metadata.name", "HttpBin", "metadata.name", "DNS-1123"),
    ("namespace-invalid", DEPLOYMENT, "metadata.namespace", "ambient_apps", "metadata.namespace",
     "DNS-1123 label"),
    ("service-name-digit-first", SERVICE, "metadata.name", "1httpbin", "metadata.name", "DNS-1035"),
    ("label-not-string", DEPLOYMENT, "metadata.labels", {"enabled": True}, "metadata.labels.enabled",
     "quote the value"),
    ("label-key-invalid", DEPLOYMENT, "metadata.labels", {"bad key": "x"}, "metadata.labels.bad key",
     "not a valid label"),
    ("replicas-string", DEPLOYMENT, "spec.replicas", "two", "spec.replicas",
     'expected an integer, got the string "two"'),
    ("replicas-negative", DEPLOYMENT, "spec.replicas", -1, "spec.replicas", "negative"),
    ("image-missing", DEPLOYMENT, "spec.template.spec.containers[0].image", DELETE,
     "spec.template.spec.containers[0].image", "add the container image"),
    ("containers-empty", DEPLOYMENT, "spec.template.spec.containers", [],
     "spec.template.spec.containers", "must not be empty"),
    ("container-port-range", DEPLOYMENT, "spec.template.spec.containers[0].ports[0].containerPort",
     70000, "spec.template.spec.containers[0].ports[0].containerPort", "out of range"),
    ("container-port-name", DEPLOYMENT, "spec.template.spec.containers[0].ports[0].name",
     "this-name-is-far-too-long", "spec.template.spec.containers[0].ports[0].name",
     "not a valid port name"),
    ("command-not-list", DEPLOYMENT, "spec.template.spec.containers[0].command", "/bin/sleep 1d",
     "spec.template.spec.containers[0].command", "expected a list"),
    ("env-value-int", DEPLOYMENT, "spec.template.spec.containers[0].env",
     [{"name": "PORT", "value": 80}], "spec.template.spec.containers[0].env[0].value",
     'quote the value'),
    ("pull-policy-enum", DEPLOYMENT, "spec.template.spec.containers[0].imagePullPolicy", "Sometimes",
     "spec.template.spec.containers[0].imagePullPolicy", "use one of Always, IfNotPresent, Never"),
    ("hostnetwork-string", DEPLOYMENT, "spec.template.spec.hostNetwork", "yes",
     "spec.template.spec.hostNetwork", "true or false"),
    ("selector-mismatch", DEPLOYMENT, "spec.selector.matchLabels", {"app": "other"},
     "spec.selector", "does not match the pod template's labels"),
    ("selector-plain-map", DEPLOYMENT, "spec.selector", {"app": "httpbin"}, "spec.selector",
     "matchLabels"),
    ("selector-bad-operator", DEPLOYMENT, "spec.selector.matchExpressions",
     [{"key": "app", "operator": "Equals", "values": ["httpbin"]}],
     "spec.selector.matchExpressions[0].operator", "use one of In, NotIn, Exists, DoesNotExist"),
    ("service-ports-int", SERVICE, "spec.ports", 8000, "spec.ports",
     "expected a list, got the integer 8000"),
    ("service-port-range", SERVICE, "spec.ports[0].port", 0, "spec.ports[0].port", "out of range"),
    ("service-port-missing", SERVICE, "spec.ports[0].port", DELETE, "spec.ports[0].port",
     "required field is missing"),
    ("service-target-port-bad-name", SERVICE, "spec.ports[0].targetPort", "80",
     "spec.ports[0].targetPort", "not a valid port name"),
    ("service-target-port-range", SERVICE, "spec.ports[0].targetPort", 65536,
     "spec.ports[0].targetPort", "out of range"),
    ("service-protocol", SERVICE, "spec.ports[0].protocol", "HTTP", "spec.ports[0].protocol",
     "use one of TCP, UDP, SCTP"),
    ("service-selector-matchlabels", SERVICE, "spec.selector", {"matchLabels": {"app": "x"}},
     "spec.selector", "plain label map"),
    ("service-cluster-ip", SERVICE, "spec.clusterIP", "none", "spec.clusterIP",
     "not a valid IP address"),
    ("service-second-port-unnamed", SERVICE, "spec.ports",
     [{"name": "http", "port": 80}, {"port": 81}], "spec.ports[1].name", "more than one port"),
    ("authz-action", AUTHZ, "spec.action", "REJECT", "spec.action",
     "use one of ALLOW, DENY, AUDIT, CUSTOM"),
    ("authz-when-key", AUTHZ, "spec.rules[0].when[0].key", "request.auth.claim.iss",
     "spec.rules[0].when[0].key", "unknown attribute"),
    ("authz-when-destination-labels", AUTHZ, "spec.rules[0].when[0].key",
     "destination.labels[app]", "spec.rules[0].when[0].key", "workload selector"),
    ("authz-when-bad-map-key", AUTHZ, "spec.rules[0].when[0].key", "request.headers[]",
     "spec.rules[0].when[0].key", "request.headers[name]"),
    ("authz-when-no-values", AUTHZ, "spec.rules[0].when[0].values", DELETE, "spec.rules[0].when[0]",
     "neither values nor notValues"),
    ("authz-when-port", AUTHZ, "spec.rules[0].when", [{"key": "destination.port",
                                                       "values": ["http"]}],
     "spec.rules[0].when[0].values[0]", "not a port number"),
    ("authz-when-source-ip", AUTHZ, "spec.rules[0].when", [{"key": "source.ip",
                                                            "values": ["10.0.0.300"]}],
     "spec.rules[0].when[0].values[0]", "not a valid IP address"),
    ("authz-port-int", AUTHZ, "spec.rules[0].to[0].operation.ports", [8000],
     "spec.rules[0].to[0].operation.ports[0]", 'ports: ["8000"]'),
    ("authz-port-range", AUTHZ, "spec.rules[0].to[0].operation.ports", ["65536"],
     "spec.rules[0].to[0].operation.ports[0]", "not a port number"),
    ("authz-port-text", AUTHZ, "spec.rules[0].to[0].operation.notPorts", ["http"],
     "spec.rules[0].to[0].operation.notPorts[0]", "not a port number"),
    ("authz-ipblock", AUTHZ, "spec.rules[0].from[0].source.ipBlocks", ["10.244.0.0/33"],
     "spec.rules[0].from[0].source.ipBlocks[0]", "not a valid IP address or CIDR"),
    ("authz-not-remote-ipblock", AUTHZ, "spec.rules[0].from[0].source.notRemoteIpBlocks",
     ["not-an-ip"], "spec.rules[0].from[0].source.notRemoteIpBlocks[0]", "not a valid IP"),
    ("authz-selector-and-targetref", AUTHZ, "spec.targetRefs",
     [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}],
     "spec.selector", "selector and targetRef(s) cannot both be set"),
    ("authz-targetref-kind", AUTHZ, "spec.selector", DELETE, None, None),  # replaced below
    ("authz-unknown-source-field", AUTHZ, "spec.rules[0].from[0].source.principal", ["x"],
     "spec.rules[0].from[0].source.principal", "unknown field"),
    ("authz-trust-domains", AUTHZ, "spec.rules[0].from[0].source",
     {"trustDomains": ["cluster.local"]}, "spec.rules[0].from[0].source.trustDomains",
     "Istio 1.30"),
    ("authz-not-trust-domains", AUTHZ, "spec.rules[0].from[0].source",
     {"notTrustDomains": ["other.local"]}, "spec.rules[0].from[0].source.notTrustDomains",
     "notPrincipals"),
    ("authz-when-trust-domain", AUTHZ, "spec.rules[0].when[0].key", "source.trustDomain",
     "spec.rules[0].when[0].key", "source.principal"),
    ("authz-empty-from", AUTHZ, "spec.rules[0].from", [], "spec.rules[0].from", "must not be empty"),
    ("authz-provider-without-custom", AUTHZ, "spec.provider", {"name": "x"}, "spec.provider",
     "only allowed with action CUSTOM"),
    ("authz-service-accounts-with-principals", AUTHZ, "spec.rules[0].from[0].source",
     {"serviceAccounts": ["sleep"], "principals": ["x"]},
     "spec.rules[0].from[0].source.principals", "cannot be combined with serviceAccounts"),
    ("authz-when-service-account-wildcard", AUTHZ, "spec.rules[0].when",
     [{"key": "source.serviceAccount", "values": ["apps/*"]}], "spec.rules[0].when[0].values[0]",
     "wildcards are not allowed"),
    ("authz-empty-source", AUTHZ, "spec.rules[0].from[0].source", {},
     "spec.rules[0].from[0].source", "source is empty"),
    ("authz-principals-string", AUTHZ, "spec.rules[0].from[0].source.principals",
     "cluster.local/ns/a/sa/b", "spec.rules[0].from[0].source.principals", "expected a list"),
    ("authz-selector-expressions", AUTHZ, "spec.selector",
     {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
     "spec.selector.matchExpressions", "only support matchLabels"),
    ("authz-custom-without-provider", AUTHZ, "spec.action", "CUSTOM", "spec.provider",
     "needs a provider"),
    ("authz-service-account-format", AUTHZ, "spec.rules[0].from[0].source",
     {"serviceAccounts": ["a/b/c"]}, "spec.rules[0].from[0].source.serviceAccounts[0]",
     "namespace/serviceAccount"),
    ("peer-mode", PEER, "spec.mtls.mode", "STRICTEST", "spec.mtls.mode",
     "use one of UNSET, DISABLE, PERMISSIVE, STRICT"),
    ("peer-port-level-mode", PEER, "spec.portLevelMtls", {8080: {"mode": "ON"}},
     "spec.portLevelMtls.8080.mode", "use one of"),
    ("peer-port-level-port", PEER, "spec.portLevelMtls", {70000: {"mode": "STRICT"}},
     "spec.portLevelMtls.70000", "not a port number"),
    ("peer-port-level-without-selector", PEER, "spec.selector", DELETE, "spec.portLevelMtls",
     "needs a workload selector"),
    ("jwt-issuer-missing", REQUEST_AUTHN, "spec.jwtRules[0].issuer", DELETE,
     "spec.jwtRules[0].issuer", "add the issuer"),
    ("jwt-jwks-uri-scheme", REQUEST_AUTHN, "spec.jwtRules[0].jwksUri", "file:///etc/jwks.json",
     "spec.jwtRules[0].jwksUri", "http"),
    ("jwt-forward-string", REQUEST_AUTHN, "spec.jwtRules[0].forwardOriginalToken", "yes",
     "spec.jwtRules[0].forwardOriginalToken", "true or false"),
    ("jwt-from-header-name", REQUEST_AUTHN, "spec.jwtRules[0].fromHeaders[0].name", DELETE,
     "spec.jwtRules[0].fromHeaders[0].name", "name the header"),
    ("jwt-inline-jwks-not-json", REQUEST_AUTHN, "spec.jwtRules[0].jwks", "{keys: [}",
     "spec.jwtRules[0].jwks", "is not JSON"),
    ("jwt-inline-jwks-no-keys", REQUEST_AUTHN, "spec.jwtRules[0].jwks", '{"kty": "RSA"}',
     "spec.jwtRules[0].jwks", "is not a JWKS document"),
    ("gateway-class-missing", GATEWAY, "spec.gatewayClassName", DELETE, "spec.gatewayClassName",
     "istio-waypoint"),
    ("gateway-listener-protocol", GATEWAY, "spec.listeners[0].protocol", "QUIC",
     "spec.listeners[0].protocol", "unknown protocol"),
    ("gateway-listener-port", GATEWAY, "spec.listeners[0].port", "15008",
     "spec.listeners[0].port", "expected an integer"),
    ("gateway-no-listeners", GATEWAY, "spec.listeners", [], "spec.listeners", "must not be empty"),
    ("httproute-parent-name", HTTPROUTE, "spec.parentRefs[0].name", DELETE,
     "spec.parentRefs[0].name", "required field is missing"),
    ("httproute-backend-port", HTTPROUTE, "spec.rules[0].backendRefs[0].port", DELETE,
     "spec.rules[0].backendRefs[0].port", "required field is missing"),
    ("httproute-path-relative", HTTPROUTE, "spec.rules[0].matches[0].path.value", "ip",
     "spec.rules[0].matches[0].path.value", "does not start with '/'"),
    ("unknown-top-level-field", DEPLOYMENT, "specs", {}, "specs", "did you mean spec?"),
    ("unknown-metadata-field", DEPLOYMENT, "metadata.label", {"a": "b"}, "metadata.label",
     "did you mean labels?"),
    ("unknown-spec-field", DEPLOYMENT, "spec.replica", 2, "spec.replica", "did you mean replicas?"),
    ("unknown-container-field", DEPLOYMENT, "spec.template.spec.containers[0].imagePullPolcy",
     "Always", "spec.template.spec.containers[0].imagePullPolcy",
     "did you mean imagePullPolicy?"),
    ("unknown-service-port-field", SERVICE, "spec.ports[0].target", 80, "spec.ports[0].target",
     "did you mean targetPort?"),
    ("unknown-jwt-rule-field", REQUEST_AUTHN, "spec.jwtRules[0].jwks_uri", "https://x/j",
     "spec.jwtRules[0].jwks_uri", "did you mean jwksUri?"),
    ("unknown-authz-rule-field", AUTHZ, "spec.rules[0].froms", [], "spec.rules[0].froms",
     "did you mean from?"),
    ("unknown-listener-field", GATEWAY, "spec.listeners[0].protocols", ["HBONE"],
     "spec.listeners[0].protocols", "did you mean protocol?"),
    ("httproute-method", HTTPROUTE, "spec.rules[0].matches[0].method", "FETCH",
     "spec.rules[0].matches[0].method", "use one of GET"),
]
# A targetRef of a kind Istio does not target.
CASES[[c[0] for c in CASES].index("authz-targetref-kind")] = (
    "authz-targetref-kind", {**AUTHZ, "spec": {"targetRefs": [{"kind": "Deployment",
                                                               "name": "httpbin"}]}},
    "spec", None, "spec.targetRefs[0].kind", "use one of Gateway, GatewayClass, Service")


def _broken(base, path, value):
    obj = copy.deepcopy(base)
    if value is not None or path != "spec":
        _set(obj, path, value)
    return obj


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_manifest_names_file_document_object_and_field(case, tmp_path):
    _, base, path, value, field, words = case
    obj = _broken(base, path, value)
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump_all([NAMESPACE, obj], sort_keys=False))

    with pytest.raises(ManifestError) as raised:
        load_files([manifest])

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{manifest}: document 2 (")
    kind = base["kind"] if path != "kind" else None
    if kind and path != "metadata":
        name = obj["metadata"].get("name")
        who = f"{kind} {obj['metadata']['namespace']}/{name}" if name else kind
        assert who in message
    assert f"): {field}: " in message
    assert words in message
    assert "; " in message  # a problem, then what to do
    assert raised.value.field == field
    assert raised.value.line is not None  # points into the file


def test_the_base_objects_are_valid(tmp_path):
    manifest = tmp_path / "good.yaml"
    manifest.write_text(yaml.safe_dump_all(
        [NAMESPACE, DEPLOYMENT, SERVICE, AUTHZ, PEER, REQUEST_AUTHN, GATEWAY, HTTPROUTE]))
    assert len(load_files([manifest])) == 8


def test_error_line_points_at_the_field(tmp_path):
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
        "spec:\n  replicas: two\n  selector: {matchLabels: {app: web}}\n")
    with pytest.raises(ManifestError) as raised:
        load_files(manifest)
    assert raised.value.line == 6
    assert str(raised.value).startswith(f"{manifest}: document 1 (Deployment default/web, line 6): "
                                        "spec.replicas: expected an integer")


def test_malformed_yaml_names_file_and_line(tmp_path):
    manifest = tmp_path / "lost-break.yaml"
    # The seed article's damage: a file's last line runs into the next file's first line.
    manifest.write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n"
                        "  namespace: b# next.yaml\napiVersion: v1\n  kind: Service\n")
    with pytest.raises(ManifestError) as raised:
        load_files([manifest])
    message = str(raised.value)
    assert message.startswith(f"{manifest}: document 1 (line 7")
    assert "malformed YAML" in message and "\n" not in message


def test_non_mapping_document_is_refused():
    with pytest.raises(ManifestError, match=r"^x.yaml: document 2 \(line 5\): expected a mapping "
                                            r"\(a Kubernetes object\), got a list"):
        load_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n- 1\n- 2\n",
                  source="x.yaml")


def test_duplicate_key_is_refused():
    with pytest.raises(ManifestError, match=r"key 'replicas' appears twice .*line 3"):
        load_text("kind: Deployment\nspec:\n  replicas: 1\n  replicas: 2\n")


def test_same_object_twice_is_refused(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump(SERVICE))
    second.write_text(yaml.safe_dump(SERVICE))
    with pytest.raises(ManifestError, match=r"Service ambient-apps/httpbin is defined twice"):
        load_files([first, second])


def test_nothing_is_returned_when_a_later_file_is_bad(tmp_path):
    good, bad = tmp_path / "a.yaml", tmp_path / "b.yaml"
    good.write_text(yaml.safe_dump_all([NAMESPACE, SERVICE]))
    bad.write_text(yaml.safe_dump(_broken(DEPLOYMENT, "spec.replicas", "two")))
    result = None
    with pytest.raises(ManifestError, match=r"b.yaml: document 1"):
        result = load_files(tmp_path)
    assert result is None
    assert len(load_files([good])) == 2


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(ManifestError, match=r"no such file or directory; check the path"):
        load_files([tmp_path / "nope.yaml"])
    with pytest.raises(ManifestError, match=r"has no .yaml or .yml files"):
        load_files([tmp_path])


def test_list_items_are_numbered_within_their_document():
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                           "items": [SERVICE, _broken(SERVICE, "spec.ports[0].port", 99999)]})
    with pytest.raises(ManifestError) as raised:
        load_text(text, source="list.yaml")
    assert str(raised.value).startswith("list.yaml: document 1, item 2 (Service ambient-apps/httpbin")
    assert raised.value.field == "spec.ports[0].port"


def test_unknown_kind_message_still_names_the_object():
    with pytest.raises(ManifestError, match=r"^x.yaml: document 1 \(Ingress web, line 2\): kind: "
                                            r"unknown kind 'Ingress'; use one of "):
        load_text("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n",
                  source="x.yaml")


def test_validate_on_a_dict_reports_api_source():
    with pytest.raises(ManifestError, match=r"^<api>: document 1 \(Deployment ambient-apps/httpbin\)"
                                            r": spec.replicas: "):
        validate(_broken(DEPLOYMENT, "spec.replicas", "two"))
    with pytest.raises(ManifestError, match=r"^store: document 3: expected a mapping"):
        validate(["not", "an", "object"], source="store", index=3)
