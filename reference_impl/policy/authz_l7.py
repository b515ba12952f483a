"""AuthorizationPolicy at the waypoint (L7): HTTP request matching and the ALLOW/DENY decision.

Follows the Envoy RBAC that Istio generates (is:pilot/pkg/security/authz/builder, model,
matcher): within a rule `from`, `to` and every `when` must match; within `from`/`to` any
entry; within an entry every field; within a field any value, and no `not*` value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .authz_model import (
    AuthorizationPolicy, Condition, Decision, Operation, Rule, Source,
    parse_authorization_policy)
from .match import (
    IPAddress, StringMatch, ip_in, is_path_template, parse_cidr, parse_ip, parse_port,
    path_template_regex, PeerSource, positive_negative)

# Envoy's jwt_authn turns these space-separated string claims into lists (Istio configures it).
SPACE_DELIMITED_CLAIMS = ("scope", "permission")


@dataclass
class L7Request(PeerSource):
    """One HTTP request as the waypoint sees it.

    `source_*` describe the HBONE peer (its mTLS identity); `remote_ip` is the original client
    (X-Forwarded-For), defaulting to `source_ip`. `request_principal` is `iss/sub` of a verified
    JWT and `claims` its payload; pass `auth=` (a jwt_authn.AuthnResult) to fill both.
    """

    method: str = "GET"
    path: str = "/"
    host: str = ""
    port: int = 0
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = field(default_factory=dict)
    source_principal: str | None = None
    source_namespace: str | None = None
    source_ip: IPAddress | str | None = None
    remote_ip: IPAddress | str | None = None
    dest_ip: IPAddress | str | None = None
    sni: str | None = None
    request_principal: str | None = None
    claims: Mapping[str, Any] | None = None
    auth: Any = None   # a jwt_authn.AuthnResult; when it is "ok" it fills the two fields above

    def __post_init__(self) -> None:
        self.port = int(self.port or 0)
        if self.auth is not None and getattr(self.auth, "status", None) == "ok":
            self.request_principal = self.request_principal or self.auth.principal
            self.claims = self.claims if self.claims is not None else self.auth.claims
        self.source_ip = parse_ip(self.source_ip)
        self.remote_ip = parse_ip(self.remote_ip) or self.source_ip
        self.dest_ip = parse_ip(self.dest_ip)
        pairs = self.headers.items() if isinstance(self.headers, Mapping) else self.headers
        merged: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            # Envoy matches a repeated header against its values joined with commas.
            merged[key] = f"{merged[key]},{value}" if key in merged else str(value)
        self._headers = merged

    def header(self, name: str) -> str | None:
        name = name.lower()
        pseudo = {":method": self.method, ":path": self.path, ":authority": self.host}
        if name in pseudo:
            return pseudo[name] or None
        return self._headers.get(name)

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0].split("#", 1)[0]


def _claim_values(claims: Mapping[str, Any] | None, path: list[str]) -> list[str]:
    """The string values of a (nested) claim; a list claim gives all its string elements."""
    value: Any = claims
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return []
        value = value[part]
    if isinstance(value, str):
        if path[-1] in SPACE_DELIMITED_CLAIMS and len(path) == 1:
            return value.split()
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _bracket_path(key: str, prefix: str) -> list[str]:
    """`request.auth.claims[a][b]` → ["a", "b"]."""
    inner = key[len(prefix):-1]
    return inner.split("][")


def _condition_candidates(key: str, req: L7Request) -> tuple[str, list[Any]]:
    """(how to compare, the request's value(s)) for one `when` key."""
    if key.startswith("request.headers["):
        value = req.header(_bracket_path(key, "request.headers[")[0])
        return "str", [] if value is None else [value]
    if key.startswith("request.auth.claims["):
        return "str", _claim_values(req.claims, _bracket_path(key, "request.auth.claims["))
    simple: dict[str, tuple[str, Any]] = {
        "source.ip": ("ip", req.source_ip), "remote.ip": ("ip", req.remote_ip),
        "destination.ip": ("ip", req.dest_ip), "destination.port": ("port", req.port),
        "source.namespace": ("str", req.namespace), "source.principal": ("str", req.principal),
        "request.auth.principal": ("str", req.request_principal),
        "request.auth.presenter": ("str", (req.claims or {}).get("azp")),
        "connection.sni": ("str", req.sni),
    }
    if key == "request.auth.audiences":
        return "str", _claim_values(req.claims, ["aud"])
    if key == "source.serviceAccount":
        # api.security writes these values as `namespace/name`; no wildcards are allowed.
        ident = req.identity
        return "str", [] if ident is None else [f"{ident.namespace}/{ident.service_account}"]
    if key not in simple:
        # experimental.envoy.filters.* read Envoy filter metadata the reference waypoint never
        # has: no value, so `values` never match and `notValues` always do.
        return "str", []
    kind, value = simple[key]
    return kind, [] if value is None or value == "" else [value]


# `when` values stay strings in the model; parse each distinct one once, not per request.
_pattern = functools.lru_cache(maxsize=4096)(StringMatch.parse)
_cidr = functools.lru_cache(maxsize=4096)(parse_cidr)


@functools.lru_cache(maxsize=4096)
def _path_matcher(pattern: str):
    """A `paths` value: an Envoy URI template when it holds {*} / {**}, else an Istio string match."""
    if is_path_template(pattern):
        regex = path_template_regex(pattern)
        return lambda path: regex.fullmatch(path) is not None
    match = StringMatch.parse(pattern)
    return match.matches


def _condition_matches(cond: Condition, req: L7Request) -> bool:
    kind, candidates = _condition_candidates(cond.key, req)

    def pred(pattern: str) -> bool:
        if kind == "ip":
            net = _cidr(pattern, cond.key)
            return any(ip_in(net, c) for c in candidates)
        if kind == "port":
            return any(parse_port(pattern, cond.key) == c for c in candidates)
        return any(_pattern(pattern).matches(c) for c in candidates)

    return positive_negative(cond.values, cond.not_values, pred)


def _field(values: tuple, negatives: tuple, pred) -> bool:
    return positive_negative(values, negatives, pred)


def _source_matches(src: Source, req: L7Request) -> bool:
    ident, principal, namespace = req.identity, req.principal, req.namespace
    g = src.get
    return (
        _field(g("principals"), g("notPrincipals"), lambda p: _pattern(p).matches(principal))
        and _field(g("requestPrincipals"), g("notRequestPrincipals"),
                   lambda p: _pattern(p).matches(req.request_principal))
        and _field(g("namespaces"), g("notNamespaces"), lambda p: _pattern(p).matches(namespace))
        and _field(g("ipBlocks"), g("notIpBlocks"), lambda n: ip_in(n, req.source_ip))
        and _field(g("remoteIpBlocks"), g("notRemoteIpBlocks"), lambda n: ip_in(n, req.remote_ip))
        and _field(g("serviceAccounts"), g("notServiceAccounts"),
                   lambda sa: ident is not None and (sa.namespace, sa.name)
                   == (ident.namespace, ident.service_account)))


def _operation_matches(op: Operation, req: L7Request) -> bool:
    g = op.get
    return (
        _field(g("hosts"), g("notHosts"), lambda p: _pattern(p).matches(req.host, ignore_case=True))
        and _field(g("methods"), g("notMethods"), lambda p: _pattern(p).matches(req.method))
        and _field(g("paths"), g("notPaths"), lambda p: _path_matcher(p)(req.path_only))
        and _field(g("ports"), g("notPorts"), lambda p: p == req.port))


def rule_matches(rule: Rule, req: L7Request) -> bool:
    if rule.sources and not any(_source_matches(s, req) for s in rule.sources):
        return False
    if rule.operations and not any(_operation_matches(o, req) for o in rule.operations):
        return False
    return all(_condition_matches(c, req) for c in rule.conditions)


def policy_matches(policy: AuthorizationPolicy, req: L7Request) -> bool:
    return any(rule_matches(r, req) for r in policy.rules)


#: what the reference waypoint does with the actions it does not implement (no ext-authz, no audit sink)
UNSUPPORTED_ACTIONS = {
    "CUSTOM": "action CUSTOM is not supported by this waypoint (it has no ext-authz extension providers): "
              "like Istio with a provider it cannot find, it denies every request the policy covers",
    "AUDIT": "action AUDIT is not supported by this waypoint (it has no audit sink): the policy is not "
             "enforced and changes no decision",
}


def unsupported_action(policy: Mapping[str, Any] | AuthorizationPolicy) -> str | None:
    """Why this waypoint cannot enforce `policy` as written (CUSTOM, AUDIT), else None."""
    parsed = parse_authorization_policy(policy)
    reason = UNSUPPORTED_ACTIONS.get(parsed.action)
    return None if reason is None else f"AuthorizationPolicy {parsed.key}: {reason}"


def evaluate_l7(policies: Iterable[Mapping[str, Any] | AuthorizationPolicy],
                request: L7Request) -> Decision:
    """Decide an HTTP request against the policies bound to this waypoint (the caller selects them).

    CUSTOM first: the reference waypoint has no ext-authz provider, so, as istiod does for a
    CUSTOM policy whose provider it cannot resolve, a CUSTOM policy denies every request it
    covers (never an ALLOW). Then DENY (an explicit DENY wins), then: no ALLOW policy → allow; an
    ALLOW matches → allow; else deny (403 at the waypoint). AUDIT policies change no decision, and
    dry-run policies are skipped. A proxy deciding many requests should pass policies already
    parsed with `parse_authorization_policy`.
    """
    parsed = [parse_authorization_policy(p) for p in policies]
    parsed = [p for p in parsed if not p.dry_run]
    for p in parsed:
        if p.action == "CUSTOM":
            return Decision(False, f"denied by CUSTOM policy {p.key}: provider {p.provider!r} is not "
                                   "available at this waypoint (fail closed)", p.key)
    for p in parsed:
        if p.action == "DENY" and policy_matches(p, request):
            return Decision(False, f"denied by DENY policy {p.key}", p.key)
    allows = [p for p in parsed if p.action == "ALLOW"]
    if not allows:
        return Decision(True, "allowed: no ALLOW policy applies")
    for p in allows:
        if policy_matches(p, request):
            return Decision(True, f"allowed by ALLOW policy {p.key}", p.key)
    return Decision(False, "denied: no ALLOW policy matched "
                           f"({', '.join(p.key for p in allows)})")
