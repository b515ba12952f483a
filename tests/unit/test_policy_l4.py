"""AuthorizationPolicy at ztunnel (ISTIO-SEMANTICS section 5): translation and L4 decisions."""

import json

import pytest

from reference_impl.policy import (
    CompiledPolicy, Connection, evaluate_l4, translate_for_ztunnel, ztunnel_translation)

SLEEP = "spiffe://cluster.local/ns/apps/sa/sleep"
ROGUE = "spiffe://cluster.local/ns/apps/sa/rogue"
OTHER = "spiffe://cluster.local/ns/other/sa/client"
PLAINTEXT = None


def ap(spec, name="p", namespace="apps", annotations=None):
    meta = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": meta, "spec": spec}


def allow(*rules, **extra):
    return {"action": "ALLOW", "rules": list(rules), **extra}


def deny(*rules, **extra):
    return {"action": "DENY", "rules": list(rules), **extra}


def src(**fields):
    return {"from": [{"source": fields}]}


def to(**fields):
    return {"to": [{"operation": fields}]}


def when(key, values=None, not_values=None):
    cond = {"key": key}
    if values:
        cond["values"] = values
    if not_values:
        cond["notValues"] = not_values
    return {"when": [cond]}


def conn(principal=SLEEP, source_ip="10.244.0.5", dest_ip="10.244.1.7", port=8000):
    return Connection.of({"source_principal": principal, "source_ip": source_ip,
                          "dest_ip": dest_ip, "dest_port": port})


def decide(specs, c):
    """Decide with the dict policies, and again with their compiled forms sent over the wire."""
    policies = [ap(s, name=f"p{i}") for i, s in enumerate(specs)]
    direct = evaluate_l4(policies, c)
    wired = [CompiledPolicy.from_dict(json.loads(json.dumps(t.to_dict())))
             for t in (translate_for_ztunnel(p) for p in policies) if t is not None]
    assert evaluate_l4(wired, c) == direct, "the wire form must decide like the original"
    return direct


CASES = [
    # (id, policy specs, connection, allowed)
    ("no-policy-allows", [], conn(), True),
    ("no-policy-allows-plaintext", [], conn(PLAINTEXT), True),
    # principals: the four string forms, spiffe:// handling, plaintext
    ("principal-exact-match", [allow(src(principals=["cluster.local/ns/apps/sa/sleep"]))], conn(), True),
    ("principal-exact-other-denied", [allow(src(principals=["cluster.local/ns/apps/sa/sleep"]))], conn(ROGUE), False),
    ("principal-conn-without-spiffe-scheme", [allow(src(principals=["cluster.local/ns/apps/sa/sleep"]))],
     conn("cluster.local/ns/apps/sa/sleep"), True),
    ("principal-policy-with-spiffe-scheme-never-matches",
     [allow(src(principals=["spiffe://cluster.local/ns/apps/sa/sleep"]))], conn(), False),
    ("principal-prefix", [allow(src(principals=["cluster.local/ns/apps/*"]))], conn(), True),
    ("principal-prefix-other-ns", [allow(src(principals=["cluster.local/ns/apps/*"]))], conn(OTHER), False),
    ("principal-suffix", [allow(src(principals=["*/sa/sleep"]))], conn(), True),
    ("principal-suffix-miss", [allow(src(principals=["*/sa/sleep"]))], conn(ROGUE), False),
    ("principal-presence-mtls", [allow(src(principals=["*"]))], conn(), True),
    ("principal-presence-plaintext-fails", [allow(src(principals=["*"]))], conn(PLAINTEXT), False),
    ("principal-exact-plaintext-fails", [allow(src(principals=["cluster.local/ns/apps/sa/sleep"]))], conn(PLAINTEXT), False),
    ("not-principals-other-passes", [allow(src(notPrincipals=["cluster.local/ns/apps/sa/rogue"]))], conn(), True),
    ("not-principals-listed-fails", [allow(src(notPrincipals=["cluster.local/ns/apps/sa/rogue"]))], conn(ROGUE), False),
    ("not-principals-plaintext-passes", [allow(src(notPrincipals=["*"]))], conn(PLAINTEXT), True),
    ("not-principals-presence-mtls-fails", [allow(src(notPrincipals=["*"]))], conn(), False),
    # namespaces
    ("namespace-exact", [allow(src(namespaces=["apps"]))], conn(), True),
    ("namespace-other-denied", [allow(src(namespaces=["apps"]))], conn(OTHER), False),
    ("namespace-prefix", [allow(src(namespaces=["ap*"]))], conn(), True),
    ("namespace-suffix", [allow(src(namespaces=["*her"]))], conn(OTHER), True),
    ("namespace-presence-plaintext-fails", [allow(src(namespaces=["*"]))], conn(PLAINTEXT), False),
    ("namespace-plaintext-fails", [allow(src(namespaces=["apps"]))], conn(PLAINTEXT), False),
    ("not-namespaces-plaintext-passes", [allow(src(notNamespaces=["other"]))], conn(PLAINTEXT), True),
    ("not-namespaces-listed-fails", [allow(src(notNamespaces=["other"]))], conn(OTHER), False),
    # serviceAccounts (bare name = the policy's namespace)
    ("service-account-bare-name", [allow(src(serviceAccounts=["sleep"]))], conn(), True),
    ("service-account-bare-name-other-ns", [allow(src(serviceAccounts=["client"]))], conn(OTHER), False),
    ("service-account-ns-slash-name", [allow(src(serviceAccounts=["other/client"]))], conn(OTHER), True),
    ("service-account-plaintext-fails", [allow(src(serviceAccounts=["sleep"]))], conn(PLAINTEXT), False),
    ("not-service-accounts", [allow(src(notServiceAccounts=["rogue"]))], conn(ROGUE), False),
    # ipBlocks
    ("ip-block-cidr-inside", [allow(src(ipBlocks=["10.244.0.0/24"]))], conn(), True),
    ("ip-block-cidr-outside", [allow(src(ipBlocks=["10.244.0.0/24"]))], conn(source_ip="10.244.1.5"), False),
    ("ip-block-single-address", [allow(src(ipBlocks=["10.244.0.5"]))], conn(PLAINTEXT), True),
    ("not-ip-blocks", [allow(src(notIpBlocks=["10.244.0.0/24"]))], conn(), False),
    # ports
    ("port-listed", [allow(to(ports=["8000"]))], conn(port=8000), True),
    ("port-not-listed", [allow(to(ports=["8000"]))], conn(port=9000), False),
    ("not-ports", [allow(to(notPorts=["8000"]))], conn(port=9000), True),
    ("not-ports-listed", [allow(to(notPorts=["8000"]))], conn(port=8000), False),
    # when, L4 keys
    ("when-source-ip", [allow(when("source.ip", ["10.244.0.0/16"]))], conn(), True),
    ("when-source-ip-miss", [allow(when("source.ip", ["10.1.0.0/16"]))], conn(), False),
    ("when-source-namespace", [allow(when("source.namespace", ["apps"]))], conn(), True),
    ("when-source-namespace-plaintext", [allow(when("source.namespace", ["apps"]))], conn(PLAINTEXT), False),
    ("when-source-principal", [allow(when("source.principal", ["*/sa/sleep"]))], conn(), True),
    ("when-destination-ip", [allow(when("destination.ip", ["10.244.1.7"]))], conn(), True),
    ("when-destination-port", [allow(when("destination.port", ["8000"]))], conn(port=8000), True),
    ("when-destination-port-miss", [allow(when("destination.port", ["8000"]))], conn(port=9000), False),
    ("when-not-values", [allow(when("source.namespace", not_values=["apps"]))], conn(), False),
    # AND / OR
    ("and-fields-both-match", [allow({**src(principals=["*/sa/sleep"]), **to(ports=["8000"])})], conn(), True),
    ("and-fields-one-misses", [allow({**src(principals=["*/sa/sleep"]), **to(ports=["8000"])})], conn(port=9000), False),
    ("and-within-source", [allow(src(principals=["*/sa/sleep"], ipBlocks=["10.9.0.0/16"]))], conn(), False),
    ("or-values-in-field", [allow(src(principals=["*/sa/rogue", "*/sa/sleep"]))], conn(), True),
    ("or-from-entries", [allow({"from": [{"source": {"namespaces": ["other"]}},
                                         {"source": {"principals": ["*/sa/sleep"]}}]})], conn(), True),
    ("or-rules", [allow(src(namespaces=["other"]), src(principals=["*/sa/sleep"]))], conn(), True),
    ("or-policies", [allow(src(namespaces=["other"])), allow(src(principals=["*/sa/sleep"]))], conn(), True),
    # empty rule / no rules / spec {}
    ("empty-rule-matches-all", [allow({})], conn(PLAINTEXT), True),
    ("allow-without-rules-denies", [{"action": "ALLOW"}], conn(), False),
    ("spec-empty-denies-all", [{}], conn(), False),
    ("spec-empty-denies-plaintext", [{}], conn(PLAINTEXT), False),
    ("deny-without-rules-does-nothing", [{"action": "DENY"}], conn(), True),
    ("deny-empty-rule-denies-all", [deny({})], conn(), False),
    # ALLOW rules with L7 attributes are dropped whole
    ("allow-paths-dropped-denies", [allow({**src(principals=["*/sa/sleep"]), **to(paths=["/ip"])})], conn(), False),
    ("allow-methods-dropped-denies", [allow(to(methods=["GET"]))], conn(), False),
    ("allow-hosts-dropped-denies", [allow(to(hosts=["httpbin"]))], conn(), False),
    ("allow-not-paths-dropped-denies", [allow(to(notPaths=["/admin"]))], conn(), False),
    ("allow-request-principals-dropped", [allow(src(requestPrincipals=["*"]))], conn(), False),
    ("allow-remote-ip-blocks-dropped", [allow(src(remoteIpBlocks=["10.0.0.0/8"]))], conn(), False),
    ("allow-when-header-dropped", [allow(when("request.headers[x-user]", ["a"]))], conn(), False),
    ("allow-when-claims-dropped", [allow(when("request.auth.claims[iss]", ["x"]))], conn(), False),
    ("allow-when-sni-dropped", [allow(when("connection.sni", ["x"]))], conn(), False),
    ("allow-principal-with-request-principal-dropped",
     [allow(src(principals=["*/sa/sleep"], requestPrincipals=["*"]))], conn(), False),
    ("allow-port-with-path-dropped", [allow(to(ports=["8000"], paths=["/ip"]))], conn(port=8000), False),
    ("allow-l7-rule-dropped-l4-rule-survives",
     [allow(to(paths=["/ip"]), src(principals=["*/sa/sleep"]))], conn(), True),
    ("allow-l7-rule-dropped-l4-rule-survives-rogue",
     [allow(to(paths=["/ip"]), src(principals=["*/sa/sleep"]))], conn(ROGUE), False),
    # DENY rules have L7 attributes stripped
    ("deny-only-paths-no-effect", [deny(to(paths=["/admin"]))], conn(), True),
    ("deny-only-methods-no-effect", [deny(to(methods=["POST"]))], conn(), True),
    ("deny-only-header-when-no-effect", [deny(when("request.headers[x-user]", ["a"]))], conn(), True),
    ("deny-port-and-path-denies-port", [deny(to(ports=["8000"], paths=["/admin"]))], conn(port=8000), False),
    ("deny-port-and-path-other-port-ok", [deny(to(ports=["8000"], paths=["/admin"]))], conn(port=9000), True),
    ("deny-principal-and-path-no-effect", [deny({**src(principals=["*"]), **to(paths=["/admin"])})], conn(), True),
    ("deny-port-and-header-when-no-effect",
     [deny({**to(ports=["8000"]), **when("request.headers[x-user]", ["a"])})], conn(), True),
    ("deny-two-operations-l4-one-fires",
     [deny({"to": [{"operation": {"paths": ["/x"]}}, {"operation": {"ports": ["9000"]}}]})], conn(port=9000), False),
    ("deny-request-principal-and-ip-denies-ip",
     [deny(src(requestPrincipals=["*"], ipBlocks=["10.244.0.0/24"]))], conn(), False),
    # DENY over ALLOW
    ("deny-wins-over-allow", [allow(src(principals=["*/sa/sleep"])), deny(to(ports=["8000"]))], conn(), False),
    ("deny-not-matching-allow-decides", [allow(src(principals=["*/sa/sleep"])), deny(to(ports=["9000"]))], conn(), True),
    ("deny-plaintext-strict-style", [deny(src(notPrincipals=["*"]))], conn(PLAINTEXT), False),
    ("deny-plaintext-strict-style-mtls-ok", [deny(src(notPrincipals=["*"]))], conn(), True),
    # what ztunnel ignores
    ("target-refs-ignored", [{"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                              "name": "waypoint"}]}], conn(), True),
    ("custom-ignored", [{"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}], conn(), True),
    ("audit-ignored", [{"action": "AUDIT", "rules": [{}]}], conn(), True),
]


@pytest.mark.parametrize("specs, c, allowed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_l4_decision(specs, c, allowed):
    decision = decide(specs, c)
    assert decision.allowed is allowed, decision.reason


def test_dry_run_policy_is_ignored():
    policy = ap({}, annotations={"istio.io/dry-run": "true"})
    assert translate_for_ztunnel(policy) is None
    assert evaluate_l4([policy], conn()).allowed


def test_decision_names_the_policy():
    d = evaluate_l4([ap(deny({}), name="block")], conn())
    assert (d.allowed, d.policy) == (False, "apps/block")
    assert "apps/block" in d.reason
    d = evaluate_l4([ap(allow(src(namespaces=["x"])), name="only-x")], conn())
    assert (d.allowed, d.policy) == (False, None) and "only-x" in d.reason


@pytest.mark.parametrize("namespace, spec, scope", [
    ("apps", {"selector": {"matchLabels": {"app": "httpbin"}}}, "WORKLOAD_SELECTOR"),
    ("apps", {}, "NAMESPACE"),
    ("istio-system", {}, "GLOBAL"),
    ("istio-system", {"selector": {"matchLabels": {"app": "x"}}}, "WORKLOAD_SELECTOR"),
], ids=["selector", "namespace", "root-namespace-global", "root-namespace-selector"])
def test_scope(namespace, spec, scope):
    assert translate_for_ztunnel(ap(spec, namespace=namespace)).scope == scope


@pytest.mark.parametrize("spec, reason", [
    ({"targetRef": {"kind": "Service", "name": "httpbin"}}, "waypoints"),
    ({"targetRefs": [{"kind": "Gateway", "name": "wp"}]}, "waypoints"),
    ({"action": "CUSTOM", "provider": {"name": "ext"}}, "CUSTOM"),
    ({"action": "AUDIT"}, "AUDIT"),
], ids=["targetRef", "targetRefs", "custom", "audit"])
def test_ignored_by_ztunnel_with_reason(spec, reason):
    t = ztunnel_translation(ap(spec))
    assert t.policy is None and reason in t.ignored


def test_wire_shape_field_names():
    policy = ap({"selector": {"matchLabels": {"app": "httpbin"}}, "action": "ALLOW", "rules": [{
        "from": [{"source": {"principals": ["cluster.local/ns/apps/sa/sleep", "*"],
                             "notNamespaces": ["x*"], "ipBlocks": ["10.0.0.0/8"]}},
                 {"source": {"serviceAccounts": ["other/client"]}}],
        "to": [{"operation": {"ports": ["8000"], "notPorts": ["9000"]}}],
        "when": [{"key": "destination.ip", "notValues": ["10.1.2.3"]}],
    }]})
    wire = translate_for_ztunnel(policy).to_dict()
    assert wire == {
        "name": "p", "namespace": "apps", "scope": "WORKLOAD_SELECTOR", "action": "ALLOW",
        "selector": {"app": "httpbin"}, "dry_run": False,
        "rules": [{"clauses": [
            {"matches": [{"destination_ports": [8000], "not_destination_ports": [9000]}]},
            {"matches": [{"not_namespaces": [{"prefix": "x"}],
                          "principals": [{"exact": "cluster.local/ns/apps/sa/sleep"}, {"presence": {}}],
                          "source_ips": ["10.0.0.0/8"]},
                         {"service_accounts": [{"namespace": "other", "service_account": "client"}]}]},
            {"matches": [{"not_destination_ips": ["10.1.2.3/32"]}]},
        ]}],
    }
    assert CompiledPolicy.from_dict(json.loads(json.dumps(wire))).to_dict() == wire


def test_allow_with_every_rule_dropped_is_allow_nothing_on_the_wire():
    t = ztunnel_translation(ap(allow(to(paths=["/ip"]))))
    assert t.policy.to_dict()["rules"] == [] and t.policy.action == "ALLOW"
    assert "paths" in t.warnings[0] and "ALLOW" in t.warnings[0]


@pytest.mark.parametrize("spec, phrase", [
    (deny(to(paths=["/admin"])), "will have no effect"),
    (deny(to(ports=["80"], paths=["/admin"])), "enforced without the HTTP rules"),
], ids=["deny-no-effect", "deny-mixed"])
def test_deny_warnings(spec, phrase):
    assert phrase in ztunnel_translation(ap(spec)).warnings[0]


def test_no_warning_for_pure_l4_policy():
    assert ztunnel_translation(ap(allow(src(principals=["*"])))).warnings == ()


@pytest.mark.parametrize("bad", [
    {"name": "x", "namespace": "a", "scope": "EVERYWHERE", "action": "ALLOW", "rules": []},
    {"name": "x", "namespace": "a", "scope": "GLOBAL", "action": "ALLOW",
     "rules": [{"clauses": [{"matches": [{"principal": []}]}]}]},
    {"name": "x", "namespace": "a", "scope": "GLOBAL", "action": "ALLOW",
     "rules": [{"clauses": [{"matches": [{"principals": [{"regex": "a"}]}]}]}]},
], ids=["bad-scope", "unknown-match-field", "unknown-string-match-kind"])
def test_wire_form_rejects_malformed(bad):
    from reference_impl.policy import PolicyError
    with pytest.raises(PolicyError):
        CompiledPolicy.from_dict(bad)
