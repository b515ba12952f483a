"""The per-request decision, in Envoy's filter order: pick the endpoint, authenticate the JWT
(RequestAuthentication), authorize (AuthorizationPolicy), then route or answer locally.

Pure: no sockets. `decide` returns either a local reply (401 / 403 / 503, with Envoy's bodies) or
the endpoint and the request headers to forward (token removed unless forwardOriginalToken).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import parse_qs

from ..identity import Identity
from ..policy import L7Request, authenticate, evaluate_l7
from ..policy.match import IPAddress, parse_ip
from .config import L7Config
from .httproute import RouteAction, apply_routes
from .routing import Destination, Router, Upstream

RBAC_DENIED_BODY = b"RBAC: access denied"
NO_HEALTHY_UPSTREAM_BODY = b"no healthy upstream"

# RFC 9110 section 7.6.1 plus the legacy ones; framing headers stay (the HTTP library re-frames).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                        "proxy-authenticate", "proxy-authorization"})


@dataclass(frozen=True)
class Tunnel:
    """What is known about the HBONE tunnel a request arrived on."""

    peer_identity: Identity | None
    client_ip: str | None
    destination: Destination

    # Parsed once per tunnel, not per request (L7Request takes addresses already parsed).
    @cached_property
    def client_address(self) -> IPAddress | None:
        return parse_ip(self.client_ip)

    @cached_property
    def destination_address(self) -> IPAddress | None:
        return parse_ip(self.destination.ip)


@dataclass
class Verdict:
    status: int | None                 # None: forward to `upstream`; else answer locally
    reason: str
    upstream: Upstream | None = None
    body: bytes = b""
    reply_headers: list[tuple[str, str]] = field(default_factory=list)
    forward_headers: list[tuple[str, str]] = field(default_factory=list)
    request_principal: str | None = None
    route: RouteAction | None = None   # set when an HTTP route decided (l7/httproute.py)
    # forward_headers are the client's (as h11 parsed and validated them) plus constants: no
    # JWT claim or route filter put a value there, so they need no validating again upstream
    forward_validated: bool = False

    @property
    def forwards(self) -> bool:
        return self.status is None


# What authenticate and evaluate_l7 answer when no rule and no policy applies (read-only: shared).
_NO_RULES = authenticate((), ())
_NO_POLICY = evaluate_l7((), L7Request())


_UUID4_CLEAR = ~((0xc000 << 48) | (0xf000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def _request_id() -> str:
    """A random (version 4) UUID, as Envoy generates: from the process's PRNG, not a getrandom()
    syscall per request as uuid.uuid4() does (a request id is a correlation tag, not a secret)."""
    bits = random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET   # what uuid.UUID(version=4) sets
    h = "%032x" % bits
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"   # str(UUID), without building one


def hop_by_hop(headers: list[tuple[str, str]]) -> set[str]:
    """The hop-by-hop header names, including those a Connection header lists."""
    names = set(HOP_BY_HOP)
    for name, value in headers:
        if name == "connection":
            names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return names


def _host(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if name == "host":
            return value
    return ""


def decide(config: L7Config, router: Router, tunnel: Tunnel, method: str, target: str,
           headers: list[tuple[str, str]]) -> Verdict:
    """``headers`` are (lower-case name, value) pairs as received."""
    upstream = router.pick(config, tunnel.destination)
    workload_uid = upstream.workload.uid if upstream else None
    service_key = tunnel.destination.service.key if tunnel.destination.service else None
    path, _, query = target.partition("?")

    rules = config.jwt_rules_for(workload_uid, service_key)
    # No rule, no location to find a token in: authenticate's own answer, without the per-request
    # walk of the headers and query it needs only for tokens.
    authn = authenticate(rules, headers, parse_qs(query) if query else {}, config.jwks_by_uri) \
        if rules else _NO_RULES
    if authn.status == "invalid":
        realm = f"http://{_host(headers)}{path}"
        return Verdict(authn.http_status, f"authentication failed: {authn.reason}", body=authn.reason.encode(),
                       reply_headers=[("www-authenticate",
                                       f'Bearer realm="{realm}", error="invalid_token"')])

    policies = config.policies_for(workload_uid, service_key)
    if policies:
        peer = tunnel.peer_identity
        request = L7Request(method=method, path=target, host=_host(headers), port=tunnel.destination.port,
                            headers=headers, source_principal=peer.uri if peer else None,
                            source_namespace=peer.namespace if peer else None,
                            source_ip=tunnel.client_address, dest_ip=tunnel.destination_address, auth=authn)
        decision = evaluate_l7(policies, request)
        request_principal = request.request_principal
    else:   # evaluate_l7's answer without a policy; the principal as L7Request takes it from authn
        decision = _NO_POLICY
        request_principal = authn.principal if authn.status == "ok" else None
    if not decision.allowed:
        return Verdict(403, decision.reason, body=RBAC_DENIED_BODY, request_principal=request_principal)
    routed = apply_routes(config, router, tunnel.destination, method, target, headers)
    if routed is not None:
        if routed.status is not None:
            return Verdict(routed.status, f"{decision.reason}; {routed.reason}", body=routed.body,
                           reply_headers=routed.reply_headers, request_principal=request_principal,
                           route=routed.action)
        upstream, headers = routed.upstream, routed.headers
    if upstream is None:
        return Verdict(503, f"{decision.reason}; no healthy endpoint for {tunnel.destination}",
                       body=NO_HEALTHY_UPSTREAM_BODY, request_principal=request_principal)

    drop = hop_by_hop(headers) | set(authn.headers_to_remove) | set(authn.headers_to_add)
    forward = [(name, value) for name, value in headers if name not in drop]
    forward += list(authn.headers_to_add.items())
    present = {name for name, _ in forward}
    if "x-forwarded-proto" not in present:
        forward.append(("x-forwarded-proto", "http"))
    if "x-request-id" not in present:
        forward.append(("x-request-id", _request_id()))
    return Verdict(None, decision.reason, upstream=upstream, forward_headers=forward,
                   request_principal=request_principal, route=routed.action if routed else None,
                   forward_validated=routed is None and not authn.headers_to_add)
