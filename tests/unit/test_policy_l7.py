"""AuthorizationPolicy at the waypoint (ISTIO-SEMANTICS section 8): HTTP request matching."""

import pytest

from reference_impl.policy import L7Request, evaluate_l7

SLEEP = "spiffe://cluster.local/ns/apps/sa/sleep"
ROGUE = "spiffe://cluster.local/ns/apps/sa/rogue"
CLAIMS = {"iss": "issuer@example.com", "sub": "alice", "aud": ["api", "web"], "azp": "cli",
          "groups": ["dev", "ops"], "scope": "read write", "permission": "admin",
          "org": {"team": "billing", "tags": ["a", "b"]}, "admin": True}


def ap(spec, name="p"):
    return {"kind": "AuthorizationPolicy", "metadata": {"name": name, "namespace": "apps"},
            "spec": spec}


def allow(*rules):
    return {"action": "ALLOW", "rules": list(rules)}


def deny(*rules):
    return {"action": "DENY", "rules": list(rules)}


def op(**fields):
    return {"to": [{"operation": fields}]}


def src(**fields):
    return {"from": [{"source": fields}]}


def when(key, values=None, not_values=None):
    cond = {"key": key, **({"values": values} if values else {}),
            **({"notValues": not_values} if not_values else {})}
    return {"when": [cond]}


def req(**kw):
    base = dict(method="GET", path="/ip", host="httpbin.apps:8000", port=8000,
                source_principal=SLEEP, source_ip="10.244.0.5", dest_ip="10.244.1.7",
                headers={"X-User": "alice"})
    base.update(kw)
    return L7Request(**base)


def jwt_req(**kw):
    return req(request_principal="issuer@example.com/alice", claims=CLAIMS, **kw)


CASES = [
    ("no-policy-allows", [], req(), True),
    # exact paths and their near misses
    *[(f"path-exact-{p}", [allow(op(paths=["/ip"]))], req(path=p), p == "/ip")
      for p in ["/ip", "/ip/", "/ipx", "/IP", "/i", "/ip/x"]],
    # a prefix does not admit its parent
    *[(f"path-prefix-{p}", [allow(op(paths=["/status/*"]))], req(path=p), p.startswith("/status/"))
      for p in ["/status/200", "/status/", "/status", "/statusx"]],
    *[(f"path-suffix-{p}", [allow(op(paths=["*/json"]))], req(path=p), p.endswith("/json"))
      for p in ["/json", "/a/json", "/jsonx", "/ajson"]],
    *[(f"path-presence-{p}", [allow(op(paths=["*"]))], req(path=p), True) for p in ["/", "/x"]],
    # Envoy URI templates: {*} one segment, {**} any rest
    *[(f"path-template-one-{p}", [allow(op(paths=["/status/{*}"]))], req(path=p), p == "/status/200")
      for p in ["/status/200", "/status/", "/status", "/status/200/x", "/statusx/200"]],
    *[(f"path-template-middle-{p}", [allow(op(paths=["/anything/{*}/x"]))], req(path=p), p == "/anything/a/x")
      for p in ["/anything/a/x", "/anything//x", "/anything/a/b/x", "/anything/a/xy"]],
    *[(f"path-template-rest-{p}", [allow(op(paths=["/anything/{**}"]))], req(path=p), p.startswith("/anything/"))
      for p in ["/anything/", "/anything/a", "/anything/a/b/c", "/anything", "/anythingx/a"]],
    ("path-template-literal-star-in-not-template", [allow(op(paths=["/a/{*}"]))], req(path="/a/{*}"), False),
    # hosts: case-insensitive, the port is part of the Host header
    *[(f"host-{pattern}-{host}", [allow(op(hosts=[pattern]))], req(host=host), ok)
      for pattern, host, ok in [("httpbin.apps:8000", "HTTPBIN.Apps:8000", True),
                                ("httpbin.apps:8000", "httpbin.apps", False),
                                ("httpbin.apps", "httpbin.apps", True),
                                ("httpbin.apps", "httpbin.apps:8000", False),
                                ("httpbin.apps:*", "httpbin.apps:8000", True),
                                ("httpbin.apps*", "httpbin.apps", True),
                                ("*.apps:8000", "HTTPBIN.APPS:8000", True),
                                ("httpbin.apps", "httpbin.appsx", False)]],
    # paths
    ("path-exact", [allow(op(paths=["/ip"]))], req(), True),
    ("path-exact-miss", [allow(op(paths=["/ip"]))], req(path="/headers"), False),
    ("path-query-string-ignored", [allow(op(paths=["/ip"]))], req(path="/ip?x=1"), True),
    ("path-prefix", [allow(op(paths=["/api/*"]))], req(path="/api/v1/users"), True),
    ("path-prefix-miss", [allow(op(paths=["/api/*"]))], req(path="/apix"), False),
    ("path-suffix", [allow(op(paths=["*.json"]))], req(path="/data/x.json"), True),
    ("path-presence", [allow(op(paths=["*"]))], req(path="/anything"), True),
    ("not-paths", [allow(op(notPaths=["/admin*"]))], req(path="/admin/x"), False),
    ("not-paths-other", [allow(op(notPaths=["/admin*"]))], req(path="/ip"), True),
    # methods, hosts, ports
    ("method", [allow(op(methods=["GET", "HEAD"]))], req(), True),
    ("method-miss", [allow(op(methods=["POST"]))], req(), False),
    ("not-methods", [allow(op(notMethods=["DELETE"]))], req(method="DELETE"), False),
    ("host-case-insensitive", [allow(op(hosts=["HTTPBIN.apps:8000"]))], req(), True),
    ("host-prefix", [allow(op(hosts=["httpbin*"]))], req(), True),
    ("host-exact-needs-port-as-sent", [allow(op(hosts=["httpbin.apps"]))], req(), False),
    ("not-hosts", [allow(op(notHosts=["*.apps:8000"]))], req(), False),
    ("port", [allow(op(ports=["8000"]))], req(), True),
    ("port-miss", [allow(op(ports=["9000"]))], req(), False),
    ("and-path-method", [allow(op(paths=["/ip"], methods=["POST"]))], req(), False),
    ("or-operations", [allow({"to": [{"operation": {"paths": ["/x"]}},
                                     {"operation": {"methods": ["GET"]}}]})], req(), True),
    # sources
    ("principal", [allow(src(principals=["cluster.local/ns/apps/sa/sleep"]))], req(), True),
    ("principal-miss", [allow(src(principals=["cluster.local/ns/apps/sa/sleep"]))], req(source_principal=ROGUE), False),
    ("namespace", [allow(src(namespaces=["apps"]))], req(), True),
    ("ip-block", [allow(src(ipBlocks=["10.244.0.0/24"]))], req(), True),
    ("remote-ip-block-uses-remote-ip", [allow(src(remoteIpBlocks=["192.168.0.0/16"]))],
     req(remote_ip="192.168.1.1"), True),
    ("remote-ip-block-defaults-to-source", [allow(src(remoteIpBlocks=["10.244.0.5"]))], req(), True),
    ("service-account", [allow(src(serviceAccounts=["sleep"]))], req(), True),
    ("when-service-account-bare-name", [allow(when("source.serviceAccount", ["sleep"]))], req(), True),
    ("when-service-account-other", [allow(when("source.serviceAccount", ["apps/rogue"]))], req(), False),
    ("when-not-service-account", [deny(when("source.serviceAccount", not_values=["apps/sleep"]))],
     req(source_principal=ROGUE), False),
    ("when-envoy-filter-metadata-never-present",
     [allow(when("experimental.envoy.filters.http.jwt_authn[iss]", ["a"]))], req(), False),
    ("request-principal-exact", [allow(src(requestPrincipals=["issuer@example.com/alice"]))], jwt_req(), True),
    ("request-principal-presence", [allow(src(requestPrincipals=["*"]))], jwt_req(), True),
    ("request-principal-missing-token", [allow(src(requestPrincipals=["*"]))], req(), False),
    ("not-request-principals-missing-token", [allow(src(notRequestPrincipals=["*"]))], req(), True),
    ("request-principal-issuer-prefix", [allow(src(requestPrincipals=["issuer@example.com/*"]))], jwt_req(), True),
    # when
    ("header", [allow(when("request.headers[x-user]", ["alice"]))], req(), True),
    ("header-name-case-insensitive", [allow(when("request.headers[X-USER]", ["alice"]))], req(), True),
    ("header-value-prefix", [allow(when("request.headers[x-user]", ["ali*"]))], req(), True),
    ("header-missing", [allow(when("request.headers[x-other]", ["*"]))], req(), False),
    ("header-missing-not-values", [allow(when("request.headers[x-other]", not_values=["bad"]))], req(), True),
    ("header-repeated-joined", [allow(when("request.headers[x-v]", ["a,b"]))],
     req(headers=[("x-v", "a"), ("X-V", "b")]), True),
    ("header-pseudo-authority", [allow(when("request.headers[:authority]", ["httpbin*"]))], req(), True),
    ("header-pseudo-method", [allow(when("request.headers[:method]", ["POST"]))], req(), False),
    ("claim-iss", [allow(when("request.auth.claims[iss]", ["issuer@example.com"]))], jwt_req(), True),
    ("claim-no-token", [allow(when("request.auth.claims[iss]", ["issuer@example.com"]))], req(), False),
    ("claim-nested", [allow(when("request.auth.claims[org][team]", ["billing"]))], jwt_req(), True),
    ("claim-nested-list", [allow(when("request.auth.claims[org][tags]", ["b"]))], jwt_req(), True),
    ("claim-list-any-element", [allow(when("request.auth.claims[groups]", ["ops"]))], jwt_req(), True),
    ("claim-list-miss", [allow(when("request.auth.claims[groups]", ["qa"]))], jwt_req(), False),
    ("claim-scope-space-split", [allow(when("request.auth.claims[scope]", ["write"]))], jwt_req(), True),
    ("claim-permission-space-split", [allow(when("request.auth.claims[permission]", ["admin"]))], jwt_req(), True),
    ("claim-non-string-never-matches", [allow(when("request.auth.claims[admin]", ["true"]))], jwt_req(), False),
    ("claim-other-string-not-split", [allow(when("request.auth.claims[sub]", ["ali*"]))], jwt_req(), True),
    ("auth-principal", [allow(when("request.auth.principal", ["issuer@example.com/alice"]))], jwt_req(), True),
    ("auth-audiences", [allow(when("request.auth.audiences", ["web"]))], jwt_req(), True),
    ("auth-presenter", [allow(when("request.auth.presenter", ["cli"]))], jwt_req(), True),
    ("when-source-principal", [allow(when("source.principal", ["*/sa/sleep"]))], req(), True),
    ("when-source-namespace", [allow(when("source.namespace", ["other"]))], req(), False),
    ("when-source-ip", [allow(when("source.ip", ["10.244.0.0/16"]))], req(), True),
    ("when-remote-ip", [allow(when("remote.ip", ["192.168.1.1"]))], req(remote_ip="192.168.1.1"), True),
    ("when-destination-port", [allow(when("destination.port", ["8000"]))], req(), True),
    ("when-destination-ip", [allow(when("destination.ip", ["10.244.1.0/24"]))], req(), True),
    ("when-sni", [allow(when("connection.sni", ["*.example.com"]))], req(sni="a.example.com"), True),
    ("when-sni-absent", [allow(when("connection.sni", ["*"]))], req(), False),
    # decision order, empty forms
    ("deny-before-allow", [allow({}), deny(op(paths=["/ip"]))], req(), False),
    ("deny-not-matching", [allow({}), deny(op(paths=["/admin"]))], req(), True),
    ("spec-empty-denies", [{}], req(), False),
    ("allow-without-rules-denies", [{"action": "ALLOW"}], req(), False),
    ("deny-without-rules-nothing", [{"action": "DENY"}], req(), True),
    # no ext-authz provider at this waypoint: CUSTOM fails closed for every request it covers
    ("custom-denies-matching", [{"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [op(paths=["/ip"])]}],
     req(), False),
    ("custom-denies-all-it-covers", [{"action": "CUSTOM", "provider": {"name": "ext"},
                                      "rules": [op(paths=["/ip"])]}], req(path="/get"), False),
    ("custom-is-not-an-allow", [{"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [op(paths=["/ip"])]},
                                allow(op(paths=["/ip"]))], req(), False),
    ("audit-changes-nothing", [{"action": "AUDIT", "rules": [{}]}], req(), True),
    ("audit-is-not-an-allow", [{"action": "AUDIT", "rules": [op(paths=["/ip"])]}, allow(op(paths=["/get"]))],
     req(), False),
]


@pytest.mark.parametrize("specs, request_, allowed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_l7_decision(specs, request_, allowed):
    decision = evaluate_l7([ap(s, name=f"p{i}") for i, s in enumerate(specs)], request_)
    assert decision.allowed is allowed, decision.reason


# The seed article's L7 policy: sleep's identity AND path /ip AND a token from the sample issuer.
ARTICLE_POLICY = ap({"selector": {"matchLabels": {"app": "httpbin-ambient"}}, "action": "ALLOW",
                     "rules": [{"from": [{"source": {"principals": [
                                   "cluster.local/ns/ambient-apps/sa/sleep-ambient"]}}],
                                "to": [{"operation": {"paths": ["/ip"]}}],
                                "when": [{"key": "request.auth.claims[iss]",
                                          "values": ["testing@secure.istio.io"]}]}]})
ARTICLE_SLEEP = "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"
ARTICLE_CLAIMS = {"iss": "testing@secure.istio.io", "sub": "testing@secure.istio.io"}


@pytest.mark.parametrize("path, claims, principal, allowed", [
    ("/headers", ARTICLE_CLAIMS, ARTICLE_SLEEP, False),
    ("/ip", None, ARTICLE_SLEEP, False),
    ("/ip", ARTICLE_CLAIMS, ARTICLE_SLEEP, True),
    ("/ip", ARTICLE_CLAIMS, "spiffe://cluster.local/ns/ambient-apps/sa/rogue-sa", False),
], ids=["forbidden-path-with-token", "right-path-no-token", "right-path-with-token", "rogue-identity"])
def test_seed_article_l7_policy(path, claims, principal, allowed):
    request_ = L7Request(method="GET", path=path, host="httpbin-ambient.ambient-apps:8000",
                         port=8000, source_principal=principal, claims=claims,
                         request_principal=claims and f"{claims['iss']}/{claims['sub']}")
    assert evaluate_l7([ARTICLE_POLICY], request_).allowed is allowed


@pytest.mark.parametrize("template", ["/{**}/x/{*}", "/a/{*}.txt", "/*/b/{*}", "/a{*}", "/a/{x}/{*}"])
def test_invalid_path_templates_are_refused_at_apply(template):
    from reference_impl.policy import PolicyError, parse_authorization_policy
    with pytest.raises(PolicyError) as err:
        parse_authorization_policy(ap(allow(op(paths=[template]))))
    assert "paths[0]" in str(err.value) and "path template" in str(err.value)


def test_unsupported_actions_are_named():
    from reference_impl.policy.authz_l7 import unsupported_action
    custom = ap({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]})
    assert "CUSTOM is not supported" in unsupported_action(custom)
    assert "AUDIT is not supported" in unsupported_action(ap({"action": "AUDIT", "rules": [{}]}))
    assert unsupported_action(ap(allow({}))) is None
