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


# --- every token must verify; forged tokens and wrong JSON types are 401, never an exception -----

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

EC384_KEY = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
ALG_KEYS = {  # alg -> (private key, jwk of its public key)
    "RS256": RSA_KEY, "RS384": RSA_KEY, "RS512": RSA_KEY, "PS256": RSA_KEY,
    "ES256": EC_KEY, "ES384": EC384_KEY, "EdDSA": ED_KEY,
}


def public_jwk(private_key, kid):
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private_key.public_key())), "kid": kid}
    return jwk(private_key, kid)


ALL_ALGS_JWKS = {"keys": [public_jwk(k, f"{alg}-key") for alg, k in ALG_KEYS.items()]}


def b64(data) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged_segments(header=None, claims=None, signature=b"sig"):
    """A token built by hand: a header and claims of any JSON shape, an arbitrary signature."""
    now = int(time.time())
    header = {"alg": "RS256", "kid": "rsa-1"} if header is None else header
    claims = {"iss": ISSUER, "sub": "alice", "exp": now + 3600} if claims is None else claims
    return ".".join([b64(header), b64(claims), b64(signature)])


@pytest.mark.parametrize("alg", sorted(ALG_KEYS))
def test_every_supported_algorithm_verifies(alg):
    tok = token(ALG_KEYS[alg], f"{alg}-key", alg)
    rules = [{"issuer": ISSUER, "jwks": json.dumps(ALL_ALGS_JWKS)}]
    assert authenticate([ra(*rules)], bearer(tok), {}, {}).status == "ok"
    # the same token re-signed by another key of the same kind is refused
    other = {"RS": OTHER_RSA_KEY, "PS": OTHER_RSA_KEY, "ES": ec.generate_private_key(
        ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()), "Ed": ed25519.Ed25519PrivateKey.generate()}
    forged = token(other[alg[:2]], f"{alg}-key", alg)
    assert authenticate([ra(*rules)], bearer(forged), {}, {}).status == "invalid"


RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _hs256_with_public_key() -> str:
    """The classic key-confusion forgery: HS256 keyed with the issuer's RSA public key."""
    import hashlib
    import hmac
    head = b64({"alg": "HS256", "kid": "rsa-1"})
    body = b64({"iss": ISSUER, "sub": "alice", "exp": int(time.time()) + 3600})
    mac = hmac.new(RSA_PUBLIC_PEM, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def _truncated(tok):
    head, body, sig = tok.split(".")
    return f"{head}.{body}.{sig[: len(sig) // 2]}"


FORGED = [  # (id, token builder)
    ("alg-none", lambda: forged_segments({"alg": "none"}, signature=b"")),
    ("unknown-kid", lambda: token(kid="no-such-key")),
    ("other-key", lambda: token(OTHER_RSA_KEY)),
    ("hs256-with-rsa-public-key", _hs256_with_public_key),
    ("tampered-header", lambda: ".".join([b64({"alg": "RS384", "kid": "rsa-1"}), *token().split(".")[1:]])),
    ("truncated-signature", lambda: _truncated(token())),
    ("empty-signature", lambda: token().rsplit(".", 1)[0] + "."),
    ("garbage", lambda: "eyJ!!!.%%%.???"),
    ("two-segments", lambda: token().rsplit(".", 1)[0]),
    ("alg-is-a-list", lambda: forged_segments({"alg": ["RS256"], "kid": "rsa-1"})),
    ("alg-is-an-object", lambda: forged_segments({"alg": {"RS256": 1}, "kid": "rsa-1"})),
    ("alg-missing", lambda: forged_segments({"kid": "rsa-1"})),
    ("kid-is-a-number", lambda: forged_segments({"alg": "RS256", "kid": 7})),
    ("header-is-a-list", lambda: forged_segments(["RS256"])),
    ("payload-is-a-string", lambda: forged_segments(claims="alice")),
    ("aud-is-a-number", lambda: forged_segments(claims={"iss": ISSUER, "sub": "a", "aud": 7})),
    ("aud-is-an-object", lambda: forged_segments(claims={"iss": ISSUER, "sub": "a", "aud": {"x": 1}})),
    ("exp-is-a-string", lambda: forged_segments(claims={"iss": ISSUER, "sub": "a", "exp": "9999999999"})),
    ("nbf-is-a-string", lambda: forged_segments(claims={"iss": ISSUER, "sub": "a", "nbf": "0"})),
    ("exp-is-a-bool", lambda: forged_segments(claims={"iss": ISSUER, "sub": "a", "exp": True})),
    ("iss-is-a-list", lambda: forged_segments(claims={"iss": [ISSUER], "sub": "a"})),
]


@pytest.mark.parametrize("build", [f[1] for f in FORGED], ids=[f[0] for f in FORGED])
def test_forged_and_mistyped_tokens_are_invalid_and_never_raise(build):
    result = authenticate([ra(rule(audiences=[]))], bearer(build()), {}, JWKS_BY_URI)
    assert result.status == "invalid", result
    assert result.principal is None


def test_the_forged_table_rule_admits_a_genuine_token():
    # the positive control for the table above
    assert authenticate([ra(rule(audiences=[]))], bearer(token()), {}, JWKS_BY_URI).status == "ok"


MULTI_TOKEN = [  # (id, headers, params, status)
    ("forged-header-valid-param", bearer(token(OTHER_RSA_KEY)), {"access_token": token()}, "invalid"),
    ("valid-header-forged-param", bearer(token()), {"access_token": token(OTHER_RSA_KEY)}, "invalid"),
    ("valid-header-expired-param", bearer(token()), {"access_token": token(exp=int(time.time()) - 3600)},
     "invalid"),
    ("valid-header-valid-param", bearer(token()), {"access_token": token(sub="bob")}, "ok"),
    ("two-params-one-forged", {}, {"access_token": [token(), token(OTHER_RSA_KEY)]}, "invalid"),
    ("two-authorization-headers-second-bad",
     [("authorization", f"Bearer {token()}"), ("authorization", f"Bearer {token(OTHER_RSA_KEY)}")], {}, "invalid"),
    ("two-authorization-headers-first-bad",
     [("authorization", f"Bearer {token(OTHER_RSA_KEY)}"), ("authorization", f"Bearer {token()}")], {}, "invalid"),
    ("two-authorization-headers-both-good",
     [("authorization", f"Bearer {token()}"), ("Authorization", f"Bearer {token(sub='bob')}")], {}, "ok"),
]


@pytest.mark.parametrize("headers, params, status", [c[1:] for c in MULTI_TOKEN], ids=[c[0] for c in MULTI_TOKEN])
def test_every_token_in_the_request_must_verify(headers, params, status):
    result = authenticate([ra(rule())], headers, params, JWKS_BY_URI)
    assert result.status == status, result.reason


def test_several_tokens_principal_is_the_header_one():
    result = authenticate([ra(rule())], bearer(token(sub="from-header")), {"access_token": token(sub="from-param")},
                          JWKS_BY_URI)
    assert result.principal == f"{ISSUER}/from-header"
    assert result.headers_to_remove == ["authorization"]


def test_a_jwks_without_usable_keys_fails_closed():
    assert authenticate([ra(rule())], bearer(token()), {}, {JWKS_URI: {"keys": []}}).status == "invalid"
