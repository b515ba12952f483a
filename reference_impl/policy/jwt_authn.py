"""RequestAuthentication: find, verify and forward JWTs the way Istio configures Envoy's jwt_authn.

ISTIO-SEMANTICS section 8. A request with no token passes with no principal (authorization
decides); a token that is present but malformed, signed by an unknown key, from an issuer no
rule names, expired, not yet valid or for another audience makes the request invalid (the
caller answers 401). Fetching JWKS is the control plane's job: rules with `jwksUri` are looked
up in the `jwks_by_uri` dict the caller passes (a rule with neither `jwks` nor `jwksUri` is
looked up under its issuer, standing in for OpenID discovery).

Every token the request carries is verified, as Envoy's jwt_authn does: a valid token in one place
never carries a forged one in another (a query parameter, a second Authorization header) along.
A token is attacker input: a header or claim of the wrong JSON type is one more invalid token
(401), never an exception.
"""

from __future__ import annotations

import binascii
import functools
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import jwt

from ..api.security import DEFAULT_TOKEN_HEADER, JwtRule, TokenLocation
from .errors import parsed

# Envoy's default clock_skew_seconds for exp/nbf.
CLOCK_SKEW_SECONDS = 60
ALLOWED_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
    "EdDSA", "HS256", "HS384", "HS512"})
Location = TokenLocation


def extract(location: TokenLocation, headers: Mapping[str, list[str]],
            params: Mapping[str, list[str]], cookies: Mapping[str, str]) -> list[str]:
    """Every token at `location` in one request (a repeated header or parameter gives several)."""
    if location.kind == "param":
        return [v for v in params.get(location.name) or [] if v]
    if location.kind == "cookie":
        value = cookies.get(location.name)
        return [value] if value else []
    tokens = []
    for value in headers.get(location.name) or []:
        if location.prefix:
            is_default = (location.name, location.prefix) == DEFAULT_TOKEN_HEADER
            head = value[:len(location.prefix)]
            if head != location.prefix and not (
                    is_default and head.lower() == location.prefix.lower()):
                continue
            value = value[len(location.prefix):]
        if value.strip():
            tokens.append(value.strip())
    return tokens


@dataclass
class AuthnResult:
    status: str                                  # none | ok | invalid
    reason: str = ""
    principal: str | None = None                 # `iss/sub`
    claims: dict[str, Any] = field(default_factory=dict)
    issuer: str | None = None
    headers_to_remove: list[str] = field(default_factory=list)
    headers_to_add: dict[str, str] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        """The local reply to an invalid token: Envoy's jwt_authn (Istio's waypoint) answers 403,
        not 401, to a token for another audience (issue 16: found against the Envoy waypoint)."""
        return 403 if self.reason == AUDIENCE_NOT_ALLOWED else 401

    @property
    def audiences(self) -> list[str]:
        aud = self.claims.get("aud")
        return [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]

    @property
    def presenter(self) -> str | None:
        return self.claims.get("azp")


# --- parsing ----------------------------------------------------------------------------------

def parse_jwt_rules(obj: Mapping[str, Any]) -> list[JwtRule]:
    """The jwtRules of one RequestAuthentication dict, validated by api.security."""
    return list(parsed("RequestAuthentication", obj).jwt_rules)


# --- verification -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _jwk_dicts(jwks_json: str) -> tuple[dict[str, Any], ...]:
    """The usable keys of a JWKS document (PyJWKSet validates them; unusable ones are skipped)."""
    data = json.loads(jwks_json)
    jwt.PyJWKSet.from_dict(data)   # raises PyJWKSetError when no key is usable
    return tuple(k for k in data.get("keys", []) if isinstance(k, dict))


@functools.lru_cache(maxsize=1024)
def _pyjwk(jwk_json: str, alg: str) -> jwt.PyJWK | None:
    try:
        return jwt.PyJWK(json.loads(jwk_json), algorithm=alg)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError, TypeError):
        return None


AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"


class _Invalid(Exception):
    """A token failed; the message is the one Envoy answers with (it becomes the 401 body)."""


def _jwks_for(rule: JwtRule, jwks_by_uri: Mapping[str, Any]) -> str:
    if rule.jwks:
        return rule.jwks
    doc = jwks_by_uri.get(rule.jwks_uri or rule.issuer)
    if doc is None:
        raise _Invalid(f"Jwks remote fetch is failed ({rule.jwks_uri or rule.issuer} not available)")
    return doc if isinstance(doc, str) else json.dumps(doc)


_NOT_JWT = "Jwt is not in the form of Header.Payload.Signature"


def _segment(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(jwt.utils.base64url_decode(part.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise _Invalid(f"Jwt {what} is an invalid JSON") from None
    if not isinstance(value, dict):
        raise _Invalid(f"Jwt {what} is an invalid JSON")
    return value


def _is_time(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
        isinstance(value, float) and value.is_integer() and value >= 0)


def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a token, unverified, with every field Envoy reads of the right type
    (jwt_verify_lib's parse errors): anything else is a 401, never an exception further on."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _Invalid(_NOT_JWT)
    header, claims = _segment(parts[0], "header"), _segment(parts[1], "payload")
    if not isinstance(header.get("alg"), str):
        raise _Invalid("Jwt header [alg] field is required and must be a string")
    if "kid" in header and not isinstance(header["kid"], str):
        raise _Invalid("Jwt header [kid] field is not a string")
    for name in ("iss", "sub", "azp", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise _Invalid(f"Jwt payload [{name}] field is not a string")
    aud = claims.get("aud")
    if "aud" in claims and not (isinstance(aud, str) or (
            isinstance(aud, list) and all(isinstance(a, str) for a in aud))):
        raise _Invalid("Jwt payload [aud] field is not a string or string list")
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _is_time(claims[name]):
            raise _Invalid(f"Jwt payload [{name}] field is not an integer")
    return header, claims


def _verify(token: str, header: Mapping[str, Any], rule: JwtRule,
            jwks_by_uri: Mapping[str, Any]) -> dict[str, Any]:
    alg = header["alg"]
    if alg not in ALLOWED_ALGORITHMS:
        raise _Invalid(f"Jwt algorithm {alg!r} is not supported")
    try:
        keys = _jwk_dicts(_jwks_for(rule, jwks_by_uri))
    except (ValueError, jwt.PyJWKSetError) as exc:
        raise _Invalid(f"Jwks doesn't have valid keys ({exc})") from None
    kid = header.get("kid")
    candidates = [k for k in keys if not kid or "kid" not in k or k["kid"] == kid]
    candidates = [k for k in candidates if k.get("alg") in (None, alg)]
    if not candidates:
        raise _Invalid("Jwks doesn't have key to match kid or alg from Jwt")
    for jwk_dict in candidates:
        key = _pyjwk(json.dumps(jwk_dict, sort_keys=True), alg)
        if key is None:
            continue
        try:
            return jwt.decode(token, key.key, algorithms=[alg], leeway=CLOCK_SKEW_SECONDS,
                              options={"verify_aud": False, "verify_iss": False,
                                       "verify_iat": False})
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise _Invalid("Jwt is expired") from None
        except jwt.ImmatureSignatureError:
            raise _Invalid("Jwt not yet valid") from None
        except jwt.InvalidTokenError as exc:
            raise _Invalid(f"Jwt verification fails ({exc})") from None
    raise _Invalid("Jwt verification fails")


def _check_audience(claims: Mapping[str, Any], rule: JwtRule) -> None:
    if not rule.audiences:
        return
    aud = claims.get("aud")
    token_audiences = [aud] if isinstance(aud, str) else list(aud or [])
    if not set(token_audiences) & set(rule.audiences):
        raise _Invalid(AUDIENCE_NOT_ALLOWED)


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _claim_header_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _normalise_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Every value of every header, by lower-case name (a repeated header keeps all its values)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        out.setdefault(k.lower(), []).append(v)
    return out


def _normalise_params(params: Mapping[str, Any] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in (params or {}).items():
        out[k] = list(v) if isinstance(v, (list, tuple)) else [str(v)]
    return out


def _cookies(headers: Mapping[str, list[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in headers.get("cookie") or []:
        for part in line.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                out.setdefault(name, value)
    return out


def collect_rules(request_authentications: Iterable[Mapping[str, Any] | JwtRule]) -> list[JwtRule]:
    rules: list[JwtRule] = []
    for ra in request_authentications:
        rules += [ra] if isinstance(ra, JwtRule) else parse_jwt_rules(ra)
    return rules


def _verify_one(token: str, loc_rules: list[JwtRule],
                jwks_by_uri: Mapping[str, Any]) -> tuple[JwtRule, dict[str, Any]]:
    """The rule (of the token's issuer, declared for this location) that verifies it, and its claims."""
    header, unverified = _parse(token)
    matching = [r for r in loc_rules if r.issuer == unverified.get("iss")]
    if not matching:
        raise _Invalid("Jwt issuer is not configured")
    failure = ""
    for rule in matching:
        try:
            claims = _verify(token, header, rule, jwks_by_uri)
            _check_audience(claims, rule)
            return rule, claims
        except _Invalid as exc:
            failure = failure or str(exc)
    raise _Invalid(failure)


def authenticate(request_authentications_for_workload: Iterable[Mapping[str, Any] | JwtRule],
                 headers: Mapping[str, str] | Iterable[tuple[str, str]],
                 query_params: Mapping[str, Any] | None = None,
                 jwks_by_uri: Mapping[str, Any] | None = None) -> AuthnResult:
    """Authenticate one request against every jwtRule of the RequestAuthentications given.

    Every token found, in every location some rule declares, must verify against a rule of its
    issuer that declares that location; one that does not makes the request "invalid" (401),
    whatever the others are. No token at all is "none"; else "ok", with the principal and claims
    of the first token (headers before parameters, in rule order).
    """
    rules = collect_rules(request_authentications_for_workload)
    jwks_by_uri = jwks_by_uri or {}
    hdrs = _normalise_headers(headers)
    params = _normalise_params(query_params)
    cookies = _cookies(hdrs)

    # The rules declaring each location; several rules (issuers) may share one.
    by_location: dict[Location, list[JwtRule]] = {}
    for rule in rules:
        for loc in rule.locations:
            by_location.setdefault(loc, []).append(rule)

    verified: list[tuple[str, Location, JwtRule, dict[str, Any]]] = []
    for loc, loc_rules in sorted(by_location.items(), key=lambda item: item[0].kind != "header"):
        for token in extract(loc, hdrs, params, cookies):
            try:
                rule, claims = _verify_one(token, loc_rules, jwks_by_uri)
            except _Invalid as exc:
                return AuthnResult("invalid", str(exc))
            verified.append((token, loc, rule, claims))
    if not verified:
        return AuthnResult("none", "no JWT in the request")
    return _success(verified)


def _success(verified: list[tuple[str, Location, JwtRule, dict[str, Any]]]) -> AuthnResult:
    _, _, first_rule, first_claims = verified[0]
    result = AuthnResult("ok", "verified",
                         principal=f"{first_claims.get('iss', '')}/{first_claims.get('sub', '')}",
                         claims=first_claims, issuer=first_rule.issuer)
    for token, loc, rule, claims in verified:
        if not rule.forward_original_token and loc.kind == "header" \
                and loc.name not in result.headers_to_remove:
            result.headers_to_remove.append(loc.name)
        if rule.output_payload_to_header:
            # Envoy forwards the token's own base64url payload segment.
            result.headers_to_add.setdefault(rule.output_payload_to_header, token.split(".")[1])
        for header, claim in rule.output_claim_to_headers:
            value = _claim_header_value(_claim(claims, claim))
            if value is not None:
                result.headers_to_add.setdefault(header, value)
    return result
