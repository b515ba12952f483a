"""RequestAuthentication: find, verify and forward JWTs the way Istio configures Envoy's jwt_authn.

ISTIO-SEMANTICS section 8. A request with no token passes with no principal (authorization
decides); a token that is present but malformed, signed by an unknown key, from an issuer no
rule names, expired, not yet valid or for another audience makes the request invalid (the
caller answers 401). Fetching JWKS is the control plane's job: rules with `jwksUri` are looked
up in the `jwks_by_uri` dict the caller passes (a rule with neither `jwks` nor `jwksUri` is
looked up under its issuer, standing in for OpenID discovery).
"""

from __future__ import annotations

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


def extract(location: TokenLocation, headers: Mapping[str, str], params: Mapping[str, list[str]],
            cookies: Mapping[str, str]) -> str | None:
    """The token at `location` in one request, None when there is none."""
    if location.kind == "param":
        values = params.get(location.name) or []
        return values[0] if values and values[0] else None
    if location.kind == "cookie":
        return cookies.get(location.name) or None
    value = headers.get(location.name)
    if value is None:
        return None
    if location.prefix:
        is_default = (location.name, location.prefix) == DEFAULT_TOKEN_HEADER
        head = value[:len(location.prefix)]
        if head != location.prefix and not (
                is_default and head.lower() == location.prefix.lower()):
            return None
        value = value[len(location.prefix):]
    return value.strip() or None


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


class _Invalid(Exception):
    """A token failed; the message is the one Envoy answers with (it becomes the 401 body)."""


def _jwks_for(rule: JwtRule, jwks_by_uri: Mapping[str, Any]) -> str:
    if rule.jwks:
        return rule.jwks
    doc = jwks_by_uri.get(rule.jwks_uri or rule.issuer)
    if doc is None:
        raise _Invalid(f"Jwks remote fetch is failed ({rule.jwks_uri or rule.issuer} not available)")
    return doc if isinstance(doc, str) else json.dumps(doc)


def _verify(token: str, rule: JwtRule, jwks_by_uri: Mapping[str, Any]) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise _Invalid(f"Jwt algorithm {alg!r} is not supported")
    try:
        keys = _jwk_dicts(_jwks_for(rule, jwks_by_uri))
    except (ValueError, jwt.PyJWKSetError) as exc:
        raise _Invalid(f"Jwks doesn't have valid keys ({exc})") from None
    kid = header.get("kid")
    candidates = [k for k in keys if not kid or "kid" not in k or k["kid"] == kid]
    candidates = [k for k in candidates if k.get("alg") in (None, alg)]
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
        raise _Invalid("Audiences in Jwt are not allowed")


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


def _normalise_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for k, v in pairs:
        out.setdefault(k.lower(), v)
    return out


def _normalise_params(params: Mapping[str, Any] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in (params or {}).items():
        out[k] = list(v) if isinstance(v, (list, tuple)) else [str(v)]
    return out


def _cookies(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (headers.get("cookie") or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name, value)
    return out


def collect_rules(request_authentications: Iterable[Mapping[str, Any] | JwtRule]) -> list[JwtRule]:
    rules: list[JwtRule] = []
    for ra in request_authentications:
        rules += [ra] if isinstance(ra, JwtRule) else parse_jwt_rules(ra)
    return rules


def authenticate(request_authentications_for_workload: Iterable[Mapping[str, Any] | JwtRule],
                 headers: Mapping[str, str] | Iterable[tuple[str, str]],
                 query_params: Mapping[str, Any] | None = None,
                 jwks_by_uri: Mapping[str, Any] | None = None) -> AuthnResult:
    """Authenticate one request against every jwtRule of the RequestAuthentications given.

    Like Envoy's `requires_any: [each provider, allow_missing]`: a token that verifies against a
    rule of its issuer makes the request "ok"; a token found but verified by no rule makes it
    "invalid"; no token at all is "none".
    """
    rules = collect_rules(request_authentications_for_workload)
    jwks_by_uri = jwks_by_uri or {}
    hdrs = _normalise_headers(headers)
    params = _normalise_params(query_params)
    cookies = _cookies(hdrs)

    # One token per location; several rules (issuers) may share a location.
    found: dict[Location, tuple[str, list[JwtRule]]] = {}
    for rule in rules:
        for loc in rule.locations:
            if loc in found:
                found[loc][1].append(rule)
                continue
            token = extract(loc, hdrs, params, cookies)
            if token is not None:
                found[loc] = (token, [rule])
    if not found:
        return AuthnResult("none", "no JWT in the request")

    failure = ""
    for loc, (token, loc_rules) in found.items():
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            failure = failure or "Jwt is not in the form of Header.Payload.Signature"
            continue
        issuer = unverified.get("iss")
        matching = [r for r in loc_rules if r.issuer == issuer]
        if not matching:
            failure = failure or "Jwt issuer is not configured"
            continue
        for rule in matching:
            try:
                claims = _verify(token, rule, jwks_by_uri)
                _check_audience(claims, rule)
            except _Invalid as exc:
                failure = failure or str(exc)
                continue
            return _success(token, loc, rule, claims)
    return AuthnResult("invalid", failure)


def _success(token: str, loc: Location, rule: JwtRule, claims: dict[str, Any]) -> AuthnResult:
    result = AuthnResult("ok", "verified", principal=f"{claims.get('iss', '')}/{claims.get('sub', '')}",
                         claims=claims, issuer=rule.issuer)
    if not rule.forward_original_token and loc.kind == "header":
        result.headers_to_remove.append(loc.name)
    if rule.output_payload_to_header:
        # Envoy forwards the token's own base64url payload segment.
        result.headers_to_add[rule.output_payload_to_header] = token.split(".")[1]
    for header, claim in rule.output_claim_to_headers:
        value = _claim_header_value(_claim(claims, claim))
        if value is not None:
            result.headers_to_add[header] = value
    return result
