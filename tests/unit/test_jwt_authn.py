"""RequestAuthentication (ISTIO-SEMANTICS section 8): token location, verification, forwarding."""

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from reference_impl.policy import L7Request, PolicyError, authenticate, evaluate_l7

ISSUER = "issuer-1@example.com"
ISSUER_2 = "issuer-2@example.com"
JWKS_URI = "https://idp.example.com/jwks.json"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(private_key, kid):
    algo = jwt.algorithms.RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    return {**algo.to_jwk(private_key.public_key(), as_dict=True), "kid": kid}


JWKS = {"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]}
JWKS_BY_URI = {JWKS_URI: JWKS}


def token(key=RSA_KEY, kid="rsa-1", alg="RS256", **claims):
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "alice", "iat": now, "exp": now + 3600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def ra(*rules, name="jwt"):
    return {"kind": "RequestAuthentication", "metadata": {"name": name, "namespace": "apps"},
            "spec": {"jwtRules": list(rules)}}


def rule(**extra):
    return {"issuer": ISSUER, "jwksUri": JWKS_URI, **extra}


def bearer(tok):
    return {"Authorization": f"Bearer {tok}"}


STATUS_CASES = [
    # (id, rules, headers, query params, status, reason fragment)
    ("missing-token-passes", [rule()], {}, {}, "none", ""),
    ("valid-bearer", [rule()], bearer(token()), {}, "ok", ""),
    ("bearer-scheme-case-insensitive", [rule()], {"authorization": f"bearer {token()}"}, {}, "ok", ""),
    ("other-authorization-scheme-is-no-token", [rule()], {"Authorization": "Basic dXNlcjpwdw=="}, {}, "none", ""),
    ("valid-access-token-param", [rule()], {}, {"access_token": token()}, "ok", ""),
    ("ec-key-es256", [rule()], bearer(token(EC_KEY, "ec-1", "ES256")), {}, "ok", ""),
    ("no-kid-tries-every-key", [rule()], bearer(token(kid=None)), {}, "ok", ""),
    ("expired", [rule()], bearer(token(exp=int(time.time()) - 3600)), {}, "invalid", "expired"),
    ("not-yet-valid", [rule()], bearer(token(nbf=int(time.time()) + 3600)), {}, "invalid", "not yet valid"),
    ("bad-signature", [rule()], bearer(token(OTHER_RSA_KEY)), {}, "invalid", "verification fails"),
    ("tampered-payload", [rule()],
     bearer(".".join([token().split(".")[0],
                      base64.urlsafe_b64encode(json.dumps({"iss": ISSUER, "sub": "root"}).encode())
                      .decode().rstrip("="), token().split(".")[2]])), {}, "invalid", "verification fails"),
    ("unknown-issuer", [rule()], bearer(token(iss="evil@example.com")), {}, "invalid", "issuer is not configured"),
    ("malformed", [rule()], bearer("not-a-jwt"), {}, "invalid", "Header.Payload.Signature"),
    ("alg-none-rejected", [rule()], bearer(jwt.encode({"iss": ISSUER, "sub": "a"}, None, algorithm="none")),
     {}, "invalid", "algorithm"),
    ("hmac-with-rsa-public-key-rejected", [rule()],
     bearer(jwt.encode({"iss": ISSUER, "sub": "a"}, b"x" * 32, algorithm="HS256")), {}, "invalid", "verification fails"),
    ("audience-matches-one", [rule(audiences=["api", "web"])], bearer(token(aud=["other", "web"])), {}, "ok", ""),
    ("audience-string-claim", [rule(audiences=["api"])], bearer(token(aud="api")), {}, "ok", ""),
    ("wrong-audience", [rule(audiences=["api"])], bearer(token(aud="web")), {}, "invalid", "Audiences"),
    # Istio accepts jwks next to jwksUri; the inline keys are the ones used
    ("inline-jwks-wins-over-uri", [rule(jwks=json.dumps(JWKS), jwksUri="https://unreachable.example/jwks")],
     bearer(token()), {}, "ok", ""),
    ("no-audience-claim-but-required", [rule(audiences=["api"])], bearer(token()), {}, "invalid", "Audiences"),
    ("no-audiences-configured-any-aud", [rule()], bearer(token(aud="whatever")), {}, "ok", ""),
    ("from-headers-with-prefix", [rule(fromHeaders=[{"name": "X-Jwt", "prefix": "Token "}])],
     {"x-jwt": f"Token {token()}"}, {}, "ok", ""),
    ("from-headers-prefix-absent-is-no-token", [rule(fromHeaders=[{"name": "x-jwt", "prefix": "Token "}])],
     {"x-jwt": token()}, {}, "none", ""),
    ("from-headers-without-prefix", [rule(fromHeaders=[{"name": "x-jwt"}])], {"X-JWT": token()}, {}, "ok", ""),
    ("from-headers-replaces-default", [rule(fromHeaders=[{"name": "x-jwt"}])], bearer(token()), {}, "none", ""),
    ("from-params", [rule(fromParams=["tok"])], {}, {"tok": [token()]}, "ok", ""),
    ("from-params-replaces-default", [rule(fromParams=["tok"])], {}, {"access_token": token()}, "none", ""),
    ("from-cookies", [rule(fromCookies=["session"])], {"cookie": f"a=b; session={token()}"}, {}, "ok", ""),
    ("inline-jwks", [{"issuer": ISSUER, "jwks": json.dumps(JWKS)}], bearer(token()), {}, "ok", ""),
    ("jwks-uri-not-fetched", [rule(jwksUri="https://missing.example.com/jwks")], bearer(token()), {},
     "invalid", "fetch"),
    ("second-issuer", [rule(), {"issuer": ISSUER_2, "jwks": json.dumps(JWKS)}],
     bearer(token(iss=ISSUER_2)), {}, "ok", ""),
    ("issuer-in-location-it-did-not-declare",
     [rule(), {"issuer": ISSUER_2, "jwks": json.dumps(JWKS), "fromHeaders": [{"name": "x-jwt"}]}],
     bearer(token(iss=ISSUER_2)), {}, "invalid", "issuer is not configured"),
]


@pytest.mark.parametrize("rules, headers, params, status, reason", [c[1:] for c in STATUS_CASES],
                         ids=[c[0] for c in STATUS_CASES])
def test_authentication_status(rules, headers, params, status, reason):
    result = authenticate([ra(*rules)], headers, params, JWKS_BY_URI)
    assert result.status == status, result.reason
    assert reason in result.reason
    if status == "ok":
        assert result.principal.endswith("/alice") and result.claims["sub"] == "alice"
    else:
        assert result.principal is None


def test_a_token_expired_within_the_clock_skew_is_accepted():
    # Built when the test runs, not at collection: a parametrize value would age with the run.
    recent = token(exp=int(time.time()) - 20)
    assert authenticate([ra(rule())], bearer(recent), {}, JWKS_BY_URI).status == "ok"
    stale = token(exp=int(time.time()) - 120)
    assert authenticate([ra(rule())], bearer(stale), {}, JWKS_BY_URI).status == "invalid"


def test_principal_is_iss_slash_sub():
    result = authenticate([ra(rule())], bearer(token(sub="bob")), {}, JWKS_BY_URI)
    assert result.principal == f"{ISSUER}/bob" and result.issuer == ISSUER


def test_token_header_removed_by_default():
    result = authenticate([ra(rule())], bearer(token()), {}, JWKS_BY_URI)
    assert result.headers_to_remove == ["authorization"]


def test_forward_original_token_keeps_header():
    result = authenticate([ra(rule(forwardOriginalToken=True))], bearer(token()), {}, JWKS_BY_URI)
    assert result.status == "ok" and result.headers_to_remove == []


def test_param_token_removes_no_header():
    result = authenticate([ra(rule())], {}, {"access_token": token()}, JWKS_BY_URI)
    assert result.status == "ok" and result.headers_to_remove == []


def test_output_payload_to_header_is_base64url_payload():
    tok = token(team="billing")
    result = authenticate([ra(rule(outputPayloadToHeader="X-Jwt-Payload"))], bearer(tok), {}, JWKS_BY_URI)
    encoded = result.headers_to_add["x-jwt-payload"]
    assert "=" not in encoded
    payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert payload["team"] == "billing" and payload["iss"] == ISSUER


def test_output_claim_to_headers():
    tok = token(org={"team": "billing"}, admin=True, groups=["a"])
    result = authenticate([ra(rule(outputClaimToHeaders=[
        {"header": "x-sub", "claim": "sub"}, {"header": "x-team", "claim": "org.team"},
        {"header": "x-admin", "claim": "admin"}, {"header": "x-groups", "claim": "groups"},
        {"header": "x-none", "claim": "missing"}]))], bearer(tok), {}, JWKS_BY_URI)
    assert result.headers_to_add == {"x-sub": "alice", "x-team": "billing", "x-admin": "true"}


def test_no_request_authentication_means_no_token_is_looked_at():
    assert authenticate([], bearer(token()), {}, JWKS_BY_URI).status == "none"


@pytest.mark.parametrize("rules, words", [
    ([{"jwksUri": JWKS_URI}], ["jwtRules[0].issuer"]),
    ([rule(fromHeader=[{"name": "x"}])], ["jwtRules[0].fromHeader", "fromHeaders"]),
    ([rule(fromHeaders=[{"prefix": "x"}])], ["fromHeaders[0].name"]),
    ([{"issuer": ISSUER, "jwks": "{}"}], ["jwtRules[0].jwks", "not a JWKS document"]),
    ([{"issuer": ISSUER, "jwks": JWKS}], ["jwtRules[0].jwks", "expected a string"]),
], ids=["missing-issuer", "unknown-field", "header-without-name", "jwks-no-keys", "jwks-not-a-string"])
def test_bad_request_authentication(rules, words):
    with pytest.raises(PolicyError) as err:
        authenticate([ra(*rules)], {}, {}, {})
    assert str(err.value).startswith("RequestAuthentication apps/jwt: ")
    for word in words:
        assert word in str(err.value)


# --- Istio's TestL7JWT at a waypoint: RequestAuthentication + AuthorizationPolicy → status code ---

WAYPOINT_RA = ra({"issuer": "test-issuer-1@istio.io", "jwksUri": JWKS_URI},
                 {"issuer": "test-issuer-2@istio.io", "jwksUri": JWKS_URI})
WAYPOINT_POLICIES = [
    {"kind": "AuthorizationPolicy", "metadata": {"name": "allow-sub-1", "namespace": "apps"},
     "spec": {"targetRefs": [{"kind": "Service", "name": "b"}],
              "rules": [{"from": [{"source": {"requestPrincipals": ["test-issuer-1@istio.io/sub-1"]}}]}]}},
    {"kind": "AuthorizationPolicy", "metadata": {"name": "allow-healthz", "namespace": "apps"},
     "spec": {"targetRefs": [{"kind": "Service", "name": "b"}],
              "rules": [{"to": [{"operation": {"paths": ["/healthz"]}}]}]}},
]


def waypoint_status(path, headers):
    """What a waypoint answers: 401 for a bad token, 403 for an authorization deny, else 200."""
    authn = authenticate([WAYPOINT_RA], headers, {}, JWKS_BY_URI)
    if authn.status == "invalid":
        return 401
    request_ = L7Request(method="GET", path=path, host="b.apps:80", port=80, headers=headers,
                         source_principal="spiffe://cluster.local/ns/apps/sa/a", auth=authn)
    return 200 if evaluate_l7(WAYPOINT_POLICIES, request_).allowed else 403


@pytest.mark.parametrize("path, tok, status", [
    ("/", None, 403),
    ("/", token(iss="test-issuer-1@istio.io", sub="sub-1"), 200),
    ("/", token(iss="test-issuer-3@istio.io", sub="sub-3"), 401),
    ("/", token(iss="test-issuer-2@istio.io", sub="sub-2"), 403),
    ("/", token(iss="test-issuer-1@istio.io", sub="sub-1", exp=int(time.time()) - 3600), 401),
    ("/healthz", None, 200),
], ids=["deny-without-token", "allow-with-sub-1-token", "deny-with-unconfigured-issuer-token",
        "deny-with-sub-2-token", "deny-with-expired-token", "allow-healthz"])
def test_istio_l7_jwt(path, tok, status):
    assert waypoint_status(path, bearer(tok) if tok else {}) == status
