"""AMBIENT-L7: RequestAuthentication (JWT) at the waypoint (ISTIO-SEMANTICS section 8).

One RequestAuthentication and one AuthorizationPolicy (conformance/tests/l7/jwt-policy.yaml) are
attached to the shared L7 world's waypoint for the whole module; the suite signs its own tokens
with its own keys (inline `jwks`, and a key server in the cluster for `jwksUri`). Every table row
MUST get its exact status: 401 for a token that is present but not valid (with Envoy's
`www-authenticate`), 403 when authentication passes and the policy denies, 200 when both admit.
Before the policies, the same requests all reach the app.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conformance import workloads as w
from conformance.tests.l7world import ECHO, Row

OK, DENY, INVALID = 200, 403, 401
A, HDR, AUD, URI, BROKEN = ("ac-suite-a@example.com", "ac-suite-headers@example.com",
                            "ac-suite-aud@example.com", "ac-suite-uri@example.com",
                            "ac-suite-broken-uri@example.com")
UNKNOWN = "ac-suite-unknown@example.com"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC256_KEY = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # trusted by no rule
URI_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)        # only at the jwksUri
KEYS = {"rsa": RSA_KEY, "ec256": EC256_KEY, "ec384": EC384_KEY, "ed": ED_KEY, "uri": URI_KEY}
ALGORITHMS = {"RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa",
              "ES256": "ec256", "ES384": "ec384", "EdDSA": "ed"}


def public_jwk(kid: str) -> dict:
    key = KEYS[kid].public_key()
    algorithm = (jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPublicKey) else
                 jwt.algorithms.ECAlgorithm if isinstance(key, ec.EllipticCurvePublicKey) else
                 jwt.algorithms.OKPAlgorithm)
    return {**json.loads(algorithm.to_jwk(key)), "kid": kid, "use": "sig"}


INLINE_JWKS = json.dumps({"keys": [public_jwk(k) for k in ("rsa", "ec256", "ec384", "ed")]})
URI_JWKS = json.dumps({"keys": [public_jwk("uri")]})


def token(iss: str = A, sub: str = "alice", alg: str = "RS256", kid: str | None = None, key=None,
          **claims) -> str:
    """A token of the suite's, valid for an hour unless `claims` say otherwise (None drops one)."""
    kid = kid or ALGORITHMS[alg]
    body = {"iss": iss, "sub": sub, "iat": int(time.time()), "exp": int(time.time()) + 3600,
            "org": {"team": "blue"}, "groups": ["dev", "admins"], **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key or KEYS[kid], algorithm=alg,
                      headers={"kid": kid})


def b64(value) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def handmade(header, claims=None, signature: bytes = b"not-a-signature") -> str:
    claims = {"iss": A, "sub": "alice", "exp": int(time.time()) + 3600} if claims is None else claims
    return f"{b64(header)}.{b64(claims)}.{b64(signature)}"


def hs256_keyed_with_the_rsa_public_key() -> str:
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64({'alg': 'HS256', 'kid': 'rsa'})}.{b64({'iss': A, 'sub': 'alice'})}"
    return f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"


def with_segment(tok: str, index: int, value: str) -> str:
    parts = tok.split(".")
    parts[index] = value
    return ".".join(parts)


def bearer(tok: str) -> tuple[tuple[str, str], ...]:
    return (("Authorization", f"Bearer {tok}"),)


def challenge_of(path: str):
    """A row check: the 401 carries Envoy's `www-authenticate: Bearer realm=..., error="invalid_token"`."""
    def check(answer) -> str | None:
        value = answer.header("www-authenticate") or ""
        if not (value.startswith('Bearer realm="http://') and path.split("?")[0] in value
                and 'error="invalid_token"' in value):
            return f"www-authenticate is {value!r}, not Bearer realm=\"http://<host>{path}\", error=\"invalid_token\""
        return None
    return check


def rejected(what: str, tok_headers, path: str = "/anything/jwt", client: str = "a") -> Row:
    return Row(client, path, INVALID, what, headers=tok_headers, check=challenge_of(path))


def wrong_audience(what: str, tok_headers) -> Row:
    path = "/anything/aud"
    return Row("a", path, DENY, what, headers=tok_headers, check=challenge_of(path),
               denied_body="Audiences in Jwt are not allowed")


@pytest.fixture(scope="module")
def jwt_world(l7):
    """The key server and the module's policies, in place for every test of this module."""
    sc = l7.sc
    jwks_ns = sc.namespace("l7jwks", ambient=False)
    server = f"http://jwks.{jwks_ns}.svc.cluster.local:8080"
    extra = {"jwks": INLINE_JWKS, "uri_jwks": URI_JWKS, "jwks_ns": jwks_ns,
             "jwks_uri": f"{server}/jwks.json", "jwks_uri_failing": f"{server}/no-such-jwks.json"}
    sc.apply(l7.manifest("jwks-server", **extra))
    sc.ready(jwks_ns)
    before = [Row("a", "/anything/jwt", OK, "a valid token", headers=bearer(token())),
              Row("a", "/anything/jwt", OK, "a forged token", headers=bearer(token(key=OTHER_RSA_KEY, kid="rsa"))),
              Row("a", "/anything/jwt", OK, "no token")]
    l7.converge_unrestricted(before, "before RequestAuthentication: tokens are not looked at")
    with l7.applied("jwt-policy", **extra):
        # the barrier: both policies are in force once a valid token passes and a missing one is denied
        l7.converge([Row("a", "/anything/jwt", OK, "valid token", headers=bearer(token())),
                     Row("a", "/anything/jwt", DENY, "no token")], "the JWT policies are in force")
        yield l7


@pytest.mark.features("L7RequestAuthentication")
def test_istio_l7_jwt_outcomes(jwt_world):
    """With a RequestAuthentication and a policy requiring `iss/sub` at the waypoint: no token MUST
    get 403 (the policy), a valid token 200, another `sub` 403, an expired token 401, a token of an
    issuer no RequestAuthentication names 401, and a path the policy opens to all 200 without a
    token; every 401 MUST carry `www-authenticate: Bearer realm="http://<host><path>",
    error="invalid_token"`."""
    jwt_world.converge([
        Row("a", "/anything/jwt", DENY, "no token"),
        Row("a", "/anything/jwt", OK, "valid token", headers=bearer(token())),
        Row("b", "/anything/jwt", OK, "valid token from another client", headers=bearer(token())),
        Row("a", "/anything/jwt", DENY, "wrong sub", headers=bearer(token(sub="bob"))),
        rejected("expired", bearer(token(exp=int(time.time()) - 3600))),
        rejected("an issuer no RequestAuthentication names", bearer(token(iss=UNKNOWN))),
        Row("a", "/anything/open", OK, "an open path without a token"),
        rejected("a bad token on an open path", bearer(token(key=OTHER_RSA_KEY, kid="rsa")), path="/anything/open"),
    ], "Istio's TestL7JWT at the waypoint")


@pytest.mark.features("L7JWTForgedTokens")
def test_forged_malformed_and_smuggled_tokens_are_401(jwt_world):
    """Every forged or malformed token MUST get 401, never 200, a 403 or a dropped connection:
    alg none, an unknown kid, another key's signature, HS256 keyed with the RSA public key, a
    tampered header or payload, a truncated or empty signature, garbage, `alg` a list or an object,
    `aud` a number or an object, `exp`/`nbf` a string; a request with several tokens MUST pass
    only if every one verifies (a forged header token next to a valid `?access_token=`, and the
    reverse, and two Authorization headers with one bad get 401; two valid ones get 200)."""
    good = token()
    other_payload = b64({"iss": A, "sub": "alice", "exp": int(time.time()) + 3600, "admin": True})
    now = int(time.time())
    rows = [
        Row("a", "/anything/jwt", OK, "the control: a genuine token", headers=bearer(good)),
        rejected("alg none", bearer(handmade({"alg": "none"}, signature=b""))),
        rejected("unknown kid", bearer(token(kid="rsa-unknown", key=RSA_KEY))),
        rejected("another key's signature", bearer(token(key=OTHER_RSA_KEY, kid="rsa"))),
        rejected("HS256 keyed with the RSA public key", bearer(hs256_keyed_with_the_rsa_public_key())),
        rejected("tampered header", bearer(with_segment(good, 0, b64({"alg": "RS384", "kid": "rsa"})))),
        rejected("tampered payload", bearer(with_segment(good, 1, other_payload))),
        rejected("truncated signature", bearer(with_segment(good, 2, good.split(".")[2][:40]))),
        rejected("empty signature", bearer(with_segment(good, 2, ""))),
        rejected("garbage", bearer("eyJhbGciOi.garbage!!.%%%")),
        rejected("alg is a list", bearer(handmade({"alg": ["RS256"], "kid": "rsa"}))),
        rejected("alg is an object", bearer(handmade({"alg": {"RS256": True}, "kid": "rsa"}))),
        rejected("aud is a number", bearer(handmade({"alg": "RS256", "kid": "rsa"},
                                                    {"iss": A, "sub": "alice", "aud": 7}))),
        rejected("aud is an object", bearer(handmade({"alg": "RS256", "kid": "rsa"},
                                                     {"iss": A, "sub": "alice", "aud": {"a": 1}}))),
        rejected("exp is a string", bearer(handmade({"alg": "RS256", "kid": "rsa"},
                                                    {"iss": A, "sub": "alice", "exp": str(now + 3600)}))),
        rejected("nbf is a string", bearer(handmade({"alg": "RS256", "kid": "rsa"},
                                                    {"iss": A, "sub": "alice", "nbf": str(now)}))),
        # several tokens: each one must verify
        rejected("a forged header token with a valid ?access_token=",
                 bearer(token(key=OTHER_RSA_KEY, kid="rsa")), path=f"/anything/jwt?access_token={good}"),
        rejected("a valid header token with a forged ?access_token=", bearer(good),
                 path=f"/anything/jwt?access_token={token(key=OTHER_RSA_KEY, kid='rsa')}"),
        rejected("two Authorization headers, the second forged",
                 bearer(good) + bearer(token(key=OTHER_RSA_KEY, kid="rsa"))),
        rejected("two Authorization headers, the first forged",
                 bearer(token(key=OTHER_RSA_KEY, kid="rsa")) + bearer(good)),
        Row("a", f"/anything/jwt?access_token={token()}", OK, "a valid header and a valid query token",
            headers=bearer(good)),
    ]
    jwt_world.converge(rows, "forged tokens at the waypoint")


@pytest.mark.features("L7JWTAlgorithms")
def test_signature_algorithms_and_clock_skew(jwt_world):
    """Tokens signed with RS256, RS384, RS512, PS256, ES256, ES384 and EdDSA MUST verify (200),
    and the same signed by a key the rule does not trust MUST not (401); `exp` 30 s past and `nbf`
    30 s ahead MUST pass (Envoy's 60 s clock skew), 120 s past or ahead MUST get 401."""
    now = int(time.time())
    rows = [Row("a", "/anything/jwt", OK, f"{alg}", headers=bearer(token(alg=alg))) for alg in ALGORITHMS]
    rows += [rejected(f"{alg} by an untrusted key", bearer(token(alg=alg, key=untrusted)))
             for alg, untrusted in (("PS256", OTHER_RSA_KEY), ("ES256", ec.generate_private_key(ec.SECP256R1())),
                                    ("EdDSA", ed25519.Ed25519PrivateKey.generate()))]
    rows += [Row("a", "/anything/jwt", OK, "exp 30 s ago, within the skew", headers=bearer(token(exp=now - 30))),
             rejected("exp 120 s ago", bearer(token(exp=now - 120))),
             Row("a", "/anything/jwt", OK, "nbf 30 s ahead, within the skew", headers=bearer(token(nbf=now + 30))),
             rejected("nbf 120 s ahead", bearer(token(nbf=now + 120)))]
    jwt_world.converge(rows, "signature algorithms and clock skew")


def echoed(answer) -> dict[str, str]:
    """The request headers httpbin received (lower-case names)."""
    try:
        return w.echoed_headers(json.loads(answer.body))  # kind (issue 17): go-httpbin's list values
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def upstream_has(present: dict[str, object], absent: tuple[str, ...] = ()):
    """A row check on the echoed request: headers present (value, or a predicate of it) and absent."""
    def check(answer) -> str | None:
        got = echoed(answer)
        for name, want in present.items():
            value = got.get(name)
            ok = value is not None and (want(value) if callable(want) else value == want)
            if not ok:
                return f"the app received {name}: {value!r}"
        leaked = [name for name in absent if name in got]
        return f"the app received {leaked}" if leaked else None
    return check


def payload_of_alice(value: str) -> bool:
    try:
        return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))["sub"] == "alice"
    except (ValueError, KeyError, TypeError):
        return False


@pytest.mark.features("L7JWTTokenLocations", "L7JWTForwarding")
def test_token_locations_audiences_and_forwarding(jwt_world):
    """`fromHeaders` (name and prefix) and `fromParams` MUST be where that issuer's token is read:
    there it MUST pass, without the prefix it is no token (403), and in the default Authorization
    header it MUST get 401; `audiences` MUST admit a token for one of them and give another
    audience or none 403 with the same challenge (Envoy's jwt_authn, Istio's waypoint, answers
    `Audiences in Jwt are not allowed` with 403). By default the Authorization header MUST NOT reach the app, while
    `forwardOriginalToken` MUST keep the token header; `outputPayloadToHeader` MUST add the token's
    payload and `outputClaimToHeaders` the named claim."""
    own = token(iss=HDR)
    rows = [
        Row("a", ECHO, OK, "fromHeaders with its prefix; forwardOriginalToken keeps it",
            headers=(("x-jwt", f"Token {own}"),), check=upstream_has({"x-jwt": f"Token {own}"})),
        Row("a", f"{ECHO}&tok={own}", OK, "fromParams"),
        Row("a", ECHO, DENY, "fromHeaders without the prefix is no token", headers=(("x-jwt", own),)),
        rejected("a fromHeaders issuer's token in the default header", bearer(own), path=ECHO),
        Row("a", ECHO, OK, "default place: the header is removed, payload and claim added",
            headers=bearer(token()),
            check=upstream_has({"x-jwt-payload": payload_of_alice, "x-jwt-team": "blue"}, absent=("authorization",))),
        Row("a", "/anything/aud", OK, "an audience the rule names", headers=bearer(token(iss=AUD, aud="ac-suite-api"))),
        Row("a", "/anything/aud", OK, "one of several audiences",
            headers=bearer(token(iss=AUD, aud=["other", "ac-suite-api"]))),
        wrong_audience("another audience", bearer(token(iss=AUD, aud="other"))),
        wrong_audience("no audience", bearer(token(iss=AUD))),
    ]
    jwt_world.converge(rows, "token locations, audiences and forwarding")


@pytest.mark.features("L7JWTJwksUri")
def test_jwks_uri_is_fetched_and_a_failing_uri_rejects(jwt_world):
    """A rule's `jwksUri` MUST be fetched by the mesh: a token signed by the key it serves MUST pass
    (200) and one signed by another key MUST get 401; the tokens of an issuer whose `jwksUri`
    fails (404) MUST get 401, never be accepted."""
    rows = [
        Row("a", "/anything/uri", OK, "signed by the jwksUri's key", headers=bearer(token(iss=URI, kid="uri"))),
        rejected("another key, same kid", bearer(token(iss=URI, kid="uri", key=OTHER_RSA_KEY)), path="/anything/uri"),
        rejected("issuer whose jwksUri fails", bearer(token(iss=BROKEN, kid="uri")), path="/anything/uri"),
        rejected("issuer whose jwksUri fails, signed by the inline key", bearer(token(iss=BROKEN)),
                 path="/anything/uri"),
    ]
    jwt_world.converge(rows, "jwksUri")


@pytest.mark.features("L7AuthorizationRequestPrincipals", "L7AuthorizationClaims", "L7AuthorizationNotForms")
def test_request_principals_and_claims(jwt_world):
    """`requestPrincipals` MUST match `iss/sub` of the verified token (`*` any token, `iss/*` any
    subject of one issuer, never no token), `notRequestPrincipals` MUST exclude only what it names
    (no token passes it); `request.auth.claims[org][team]` MUST match a nested claim and
    `request.auth.claims[groups]` any element of a list claim, each against a token without it; and
    `when` on `request.auth.principal`, `request.auth.audiences` (any of the token's `aud`) and
    `request.auth.presenter` (`azp`) MUST match the verified token, each against a near miss."""
    rows = [
        Row("a", "/anything/any-jwt", DENY, "requestPrincipals *: no token"),
        Row("a", "/anything/any-jwt", OK, "requestPrincipals *: a token", headers=bearer(token(sub="carol"))),
        Row("a", "/anything/any-jwt", OK, "requestPrincipals *: another issuer's token",
            headers=(("x-jwt", f"Token {token(iss=HDR)}"),)),
        Row("a", "/anything/issuer-a", OK, "iss/*", headers=bearer(token(sub="dave"))),
        Row("a", "/anything/issuer-a", DENY, "iss/* of another issuer", headers=(("x-jwt", f"Token {token(iss=HDR)}"),)),
        Row("a", "/anything/not-rp", OK, "notRequestPrincipals: another sub", headers=bearer(token())),
        Row("a", "/anything/not-rp", DENY, "notRequestPrincipals: the named one", headers=bearer(token(sub="bob"))),
        Row("a", "/anything/not-rp", OK, "notRequestPrincipals: no token"),
        Row("a", "/anything/claims/nested", OK, "claims[org][team] blue", headers=bearer(token())),
        Row("a", "/anything/claims/nested", DENY, "claims[org][team] red", headers=bearer(token(org={"team": "red"}))),
        Row("a", "/anything/claims/nested", DENY, "claims[org][team]: no token"),
        Row("a", "/anything/claims/list", OK, "claims[groups] has admins", headers=bearer(token())),
        Row("a", "/anything/claims/list", DENY, "claims[groups] without admins", headers=bearer(token(groups=["dev"]))),
        Row("a", "/anything/when-rp", OK, "when request.auth.principal iss/alice", headers=bearer(token())),
        Row("a", "/anything/when-rp", DENY, "when request.auth.principal: another sub", headers=bearer(token(sub="bob"))),
        Row("a", "/anything/when-rp", DENY, "when request.auth.principal: no token"),
        Row("a", "/anything/when-aud", OK, "when request.auth.audiences: one of the token's",
            headers=bearer(token(aud=["ac-suite-other", "ac-suite-reports"]))),
        Row("a", "/anything/when-aud", DENY, "when request.auth.audiences: not the token's",
            headers=bearer(token(aud="ac-suite-other"))),
        Row("a", "/anything/when-azp", OK, "when request.auth.presenter: azp", headers=bearer(token(azp="ac-suite-cli"))),
        Row("a", "/anything/when-azp", DENY, "when request.auth.presenter: another azp",
            headers=bearer(token(azp="ac-suite-web"))),
    ]
    jwt_world.converge(rows, "requestPrincipals and claims")
