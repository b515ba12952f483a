"""The waypoint snapshot -> Envoy resources (listeners and clusters, as JSON-able dicts). Pure.

Input: the same snapshot istiod sends the Python waypoint, bound by waypoint.config (so both
waypoints reject the same bad snapshots). Output: `Resources(listeners, clusters, unsupported)`.
The shape follows Istio's own waypoint (pilot/pkg/networking/core/waypoint*.go), simplified:

    connect_terminate (0.0.0.0:15008, mutual TLS 1.3, the waypoint's SDS certificate, client
      certificates from the mesh root, HTTP/2 CONNECT)
      set_filter_state: io.istio.peer_principal = the peer's URI SAN, shared with the inner
        connection; one virtual host per destination `VIP:port` (or `podIP:port`)
      -> internal cluster inbound-vip|<port>|<host> -> internal listener of that name
    inbound-vip|<port>|<host> (one per fronted service port or workload port)
      HTTP: HCM (codec AUTO: HTTP/1.1 or h2c) with jwt_authn, rbac DENY, rbac ALLOW, router;
      TCP (a port declared TCP): network rbac + tcp_proxy
      -> cluster outbound|<port>||<host>: one endpoint per healthy backend, each the internal
         listener connect_originate|<ip>|<port> (HBONE workloads) or ip:port (plain TCP)
    connect_originate|<ip>|<port>: tcp_proxy tunneling_config CONNECT <ip>:<port>
      -> cluster hbone|<ip>: <ip>:15008, mutual TLS with the waypoint's certificate, the
         workload's SPIFFE identity required of the server

RBAC follows Istio's authz builder: DENY before ALLOW, an ALLOW filter only when an ALLOW policy
applies (none of its rules matching is a 403 `RBAC: access denied`), `from` sources as principals
(`io.istio.peer_principal` filter state), `to` operations and `when` as permissions, JWT claims
from jwt_authn's metadata. What this translation cannot express is listed in
`Resources.unsupported` (feature, reason) and logged by the agent; the conformance target
reports those features NOT_SUPPORTED for an Envoy waypoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.security import AuthorizationPolicy, Condition, JwtRule, Operation, Rule, Source
from ..l7 import Service, Workload
from ..l7.protocols import HTTP, TCP, UNKNOWN
from ..policy.match import StringMatch, is_path_template, path_template_regex
from ..waypoint.config import WaypointConfig
from .routes import envoy_routes, fault_filter

HBONE_PORT = 15008
PEER_PRINCIPAL = "io.istio.peer_principal"
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD_KEY = "payload"   # every provider writes its verified payload under this metadata key
CERT_SECRET = "default"       # Istio's names for the workload certificate and the mesh root
ROOT_SECRET = "ROOTCA"
SPACE_DELIMITED_CLAIMS = ("scope", "permission")

T = "type.googleapis.com/"
HCM_TYPE = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY_TYPE = T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": T + "envoy.extensions.filters.http.router.v3.Router"}}
LISTENER_TYPE = T + "envoy.config.listener.v3.Listener"
CLUSTER_TYPE = T + "envoy.config.cluster.v3.Cluster"
SECRET_TYPE = T + "envoy.extensions.transport_sockets.tls.v3.Secret"

#: What this translation cannot express, by conformance feature (reported NOT_SUPPORTED for an
#: Envoy waypoint: conformance/targets/reference.py keeps an equal copy, checked by a unit test).
NOT_EXPRESSED: dict[str, str] = {
    "L7AuthorizationSourceAddress": (
        "the client's address reaches this waypoint in the HBONE `forwarded` header, which Envoy's RBAC "
        "cannot read (its connection's peer is the inner listener): `ipBlocks` and `remoteIpBlocks` are "
        "translated to match every request in a DENY rule and none in an ALLOW rule"),
    # not a translation gap: Envoy's own CONNECT termination (tried: delayed_close_timeout 0, a 16 MiB
    # connection buffer, the upstream half-close guard either way; each still cut the slow reader off)
    "WaypointConnectionCloseWaitsForSlowReader": (
        "Envoy resets a CONNECT-terminated stream whose upstream (the inner listener) ends before the "
        "client's request has, dropping what still waits for the client's flow-control window: "
        "RST_STREAM INTERNAL_ERROR with the upstream half-close guard off, CONNECT_ERROR with it on"),
}


@dataclass
class Resources:
    listeners: list[dict] = field(default_factory=list)
    clusters: list[dict] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)   # (what, why)

    def note(self, what: str, why: str) -> None:
        if (what, why) not in self.unsupported:
            self.unsupported.append((what, why))


class TranslationError(ValueError):
    """A snapshot the translation cannot turn into Envoy config; the message says where."""


# --- string matchers ------------------------------------------------------------------------------

def _string(pattern: str, *, prefix: str = "", ignore_case: bool = False) -> dict:
    """Istio's stringToMatch: `*` presence, `*x` suffix, `x*` prefix, else exact."""
    m = StringMatch.parse(pattern)
    out: dict[str, Any]
    if m.kind == "presence":
        out = {"safe_regex": {"regex": ".+"}} if not prefix else {"prefix": prefix}
    elif m.kind == "prefix":
        out = {"prefix": prefix + m.value}
    elif m.kind == "suffix":
        out = {"suffix": m.value}
        if prefix:   # the prefix must still be there: a regex says both
            out = {"safe_regex": {"regex": f"{re.escape(prefix)}.*{re.escape(m.value)}"}}
    else:
        out = {"exact": prefix + m.value}
    if ignore_case and "safe_regex" not in out:
        out["ignore_case"] = True
    return out


def _any_of(items: list[dict], key: str) -> dict:
    return items[0] if len(items) == 1 else {key: {"rules" if key == "or_rules" else "ids": items}}


def _not(matcher: dict, principal: bool) -> dict:
    return {"not_id": matcher} if principal else {"not_rule": matcher}


def _field(values: tuple, not_values: tuple, build, principal: bool) -> list[dict]:
    """One field of a source/operation: any value, and none of the not-values."""
    or_key = "or_ids" if principal else "or_rules"
    out = []
    if values:
        out.append(_any_of([build(v) for v in values], or_key))
    if not_values:
        out.append(_not(_any_of([build(v) for v in not_values], or_key), principal))
    return out


def _and(items: list[dict], principal: bool) -> dict:
    if not items:
        return {"any": True}
    if len(items) == 1:
        return items[0]
    return {"and_ids": {"ids": items}} if principal else {"and_rules": {"rules": items}}


# --- principals (the peer, and the request's JWT) -------------------------------------------------

def _peer(pattern: str) -> dict:
    # Istio writes principals without `spiffe://`; the filter state holds the URI SAN as is.
    return {"filter_state": {"key": PEER_PRINCIPAL, "string_match": _string(pattern, prefix="spiffe://")}}


def _namespace(pattern: str) -> dict:
    m = StringMatch.parse(pattern)
    body = {"presence": "[^/]+", "prefix": re.escape(m.value) + "[^/]*",
            "suffix": "[^/]*" + re.escape(m.value), "exact": re.escape(m.value)}[m.kind]
    return {"filter_state": {"key": PEER_PRINCIPAL,
                             "string_match": {"safe_regex": {"regex": f"spiffe://[^/]+/ns/{body}/.*"}}}}


def _service_account(value, trust_domain: str) -> dict:
    return {"filter_state": {"key": PEER_PRINCIPAL, "string_match": {
        "exact": f"spiffe://{trust_domain}/ns/{value.namespace}/sa/{value.name}"}}}


def _claim(path: list[str], string_match: dict, *, principal: bool = True) -> dict:
    """A verified JWT claim (jwt_authn's payload metadata) equal to / in a list matching a string."""
    meta_path = [{"key": k} for k in [JWT_PAYLOAD_KEY, *path]]

    def metadata(value: dict) -> dict:
        return _jwt_metadata(meta_path, value)
    forms = [metadata({"string_match": string_match}),
             metadata({"list_match": {"one_of": {"string_match": string_match}}})]
    if len(path) == 1 and path[0] in SPACE_DELIMITED_CLAIMS and "exact" in string_match:
        word = re.escape(string_match["exact"])
        forms.append(metadata({"string_match": {"safe_regex": {"regex": f"(.* )?{word}( .*)?"}}}))
    return {"or_ids" if principal else "or_rules": {"ids" if principal else "rules": forms}}


def _jwt_metadata(path: list[dict], value: dict) -> dict:
    return {"sourced_metadata": {"metadata_matcher": {"filter": JWT_FILTER, "path": path, "value": value}}}


def _request_principal(pattern: str, issuers: list[str]) -> dict:
    """`iss/sub` of the verified JWT: jwt_authn keeps the payload, not the pair, so the pattern is
    split at a known issuer (the RequestAuthentications' issuers); `*` is any verified token."""
    m = StringMatch.parse(pattern)
    if m.kind == "presence":
        return _jwt_metadata([{"key": JWT_PAYLOAD_KEY}, {"key": "iss"}], {"present_match": True})
    forms = []
    for iss in issuers:
        head = iss + "/"
        iss_match = _jwt_metadata([{"key": JWT_PAYLOAD_KEY}, {"key": "iss"}], {"string_match": {"exact": iss}})

        def sub(match: dict) -> dict:
            return _jwt_metadata([{"key": JWT_PAYLOAD_KEY}, {"key": "sub"}], {"string_match": match})
        if m.kind == "exact" and m.value.startswith(head):
            forms.append({"and_ids": {"ids": [iss_match, sub({"exact": m.value[len(head):]})]}})
        elif m.kind == "prefix" and m.value.startswith(head):
            rest = m.value[len(head):]
            forms.append({"and_ids": {"ids": [iss_match, sub({"prefix": rest} if rest else
                                                              {"safe_regex": {"regex": ".+"}})]}})
        elif m.kind == "prefix" and head.startswith(m.value):
            forms.append(iss_match)   # `https://iss*`: every subject of a matching issuer
        elif m.kind == "suffix":
            # `*x`: the subject ends with x (an x reaching into the issuer is not split here)
            forms.append({"and_ids": {"ids": [iss_match, sub({"suffix": m.value})]}})
    if not forms:
        # No RequestAuthentication issues such a principal: the pattern can never match.
        return {"not_id": {"any": True}}
    return forms[0] if len(forms) == 1 else {"or_ids": {"ids": forms}}


# --- permissions (the request) --------------------------------------------------------------------

def _header(name: str, match: dict) -> dict:
    return {"name": name, "string_match": match}


def _path(pattern: str) -> dict:
    if is_path_template(pattern):
        # The same regex the Python waypoint compiles (RE2-compatible). Not RBAC's own
        # `uri_template` permission: Envoy 1.40 aborts (std::terminate) on loading it.
        return {"url_path": {"path": {"safe_regex": {"regex": path_template_regex(pattern).pattern}}}}
    return {"url_path": {"path": _string(pattern)}}


def _port_rule(port: int, listener_port: int | None, principal: bool) -> dict:
    # Each inner listener serves one destination port, so a `ports` value is decided here.
    matches = listener_port is None or port == listener_port
    return {"any": True} if matches else _not({"any": True}, principal)


class _Translator:
    def __init__(self, config: WaypointConfig, out: Resources):
        self.config = config
        self.out = out
        self.issuers = sorted({r.issuer for b in config.authentication for r in b.value})
        self.cluster_for: Any = None   # set by _translate_config: a route backend -> its cluster
        #: translating a DENY rule: a field this Envoy cannot see then matches every request (the
        #: rule denies more), in an ALLOW rule none (it allows less): either way it fails closed
        self.deny = False

    # ---- one rule ----
    def source(self, src: Source) -> dict:
        g, td = src.get, self.config.trust_domain
        items = []
        items += _field(g("principals"), g("notPrincipals"), _peer, True)
        items += _field(g("requestPrincipals"), g("notRequestPrincipals"),
                        lambda p: _request_principal(p, self.issuers), True)
        items += _field(g("namespaces"), g("notNamespaces"), _namespace, True)
        items += _field(g("serviceAccounts"), g("notServiceAccounts"),
                        lambda sa: _service_account(sa, td), True)
        for name in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
            if g(name):
                self.out.note("ipBlocks", f"source.{name}: the client address reaches this waypoint in "
                                          "the HBONE `forwarded` header, which Envoy's RBAC cannot read; the "
                                          "field matches every request in a DENY rule and none in an ALLOW rule")
                items.append(self._unseen())
        return _and(items, True)

    def operation(self, op: Operation, port: int | None) -> dict:
        g = op.get
        items = []
        items += _field(g("hosts"), g("notHosts"),
                        lambda h: {"header": _header(":authority", _string(h, ignore_case=True))}, False)
        items += _field(g("methods"), g("notMethods"),
                        lambda m: {"header": _header(":method", _string(m))}, False)
        items += _field(g("paths"), g("notPaths"), _path, False)
        items += _field(g("ports"), g("notPorts"), lambda p: _port_rule(p, port, False), False)
        return _and(items, False)

    def condition(self, cond: Condition, port: int | None) -> tuple[dict, bool]:
        """(matcher, is it a principal) for one `when`."""
        key = cond.key
        if key.startswith("request.headers["):
            name = key[len("request.headers["):-1]
            return _and(_field(cond.values, cond.not_values,
                               lambda v: {"header": _header(name, _string(v))}, True), True), True
        if key.startswith("request.auth.claims["):
            path = key[len("request.auth.claims["):-1].split("][")
            return _and(_field(cond.values, cond.not_values,
                               lambda v: _claim(path, _string(v)), True), True), True
        if key == "request.auth.principal":
            return _and(_field(cond.values, cond.not_values,
                               lambda v: _request_principal(v, self.issuers), True), True), True
        if key == "request.auth.audiences":
            return _and(_field(cond.values, cond.not_values,
                               lambda v: _claim(["aud"], _string(v)), True), True), True
        if key == "request.auth.presenter":
            return _and(_field(cond.values, cond.not_values,
                               lambda v: _claim(["azp"], _string(v)), True), True), True
        if key == "source.principal":
            return _and(_field(cond.values, cond.not_values, _peer, True), True), True
        if key == "source.namespace":
            return _and(_field(cond.values, cond.not_values, _namespace, True), True), True
        if key == "source.serviceAccount":
            def sa(v: str) -> dict:
                ns, _, name = v.partition("/")
                return {"filter_state": {"key": PEER_PRINCIPAL, "string_match": {
                    "exact": f"spiffe://{self.config.trust_domain}/ns/{ns}/sa/{name}"}}}
            return _and(_field(cond.values, cond.not_values, sa, True), True), True
        if key == "destination.port":
            return _and(_field(cond.values, cond.not_values,
                               lambda p: _port_rule(int(p), port, True), True), True), True
        if key in ("source.ip", "remote.ip", "destination.ip", "connection.sni"):
            self.out.note("ipBlocks", f"when {key}: this waypoint's Envoy sees internal addresses, not the "
                                      "client's or the destination's; the condition matches every request in a "
                                      "DENY rule and none in an ALLOW rule")
            return self._unseen(), True
        # Unknown keys (experimental.envoy.filters.*) have no value at the waypoint: values never
        # match, notValues always do (the Python waypoint's reading).
        never = {"not_id": {"any": True}}
        if cond.values:
            return never, True
        return {"any": True}, True

    def _unseen(self) -> dict:
        return {"any": True} if self.deny else {"not_id": {"any": True}}

    def rule(self, rule: Rule, port: int | None) -> dict:
        principals = [self.source(s) for s in rule.sources]
        permissions = [self.operation(o, port) for o in rule.operations]
        ids = [_any_of(principals, "or_ids")] if principals else []
        for cond in rule.conditions:
            matcher, _ = self.condition(cond, port)
            ids.append(matcher)
        return {"permissions": [_any_of(permissions, "or_rules") if permissions else {"any": True}],
                "principals": [_and(ids, True)]}

    # ---- policies -> rbac filters ----
    def rbac_filters(self, policies: list[AuthorizationPolicy], port: int | None, network: bool,
                     where: str) -> list[dict]:
        """Istio's order: CUSTOM (no provider here: deny), DENY, ALLOW. AUDIT and dry-run: none."""
        policies = [p for p in policies if not p.dry_run]
        filters = []
        denies: dict[str, dict] = {}
        for p in policies:
            if p.action == "CUSTOM":
                denies[f"{p.namespace}/{p.name}/custom"] = {"permissions": [{"any": True}],
                                                             "principals": [{"any": True}]}
        for p in policies:
            if p.action == "DENY":
                for i, rule in enumerate(p.rules):
                    kept = self._l4_only(rule, deny=True) if network else rule
                    if kept is not None:
                        self.deny = True
                        try:
                            denies[f"ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"] = self.rule(kept, port)
                        finally:
                            self.deny = False
        allows_present = any(p.action == "ALLOW" for p in policies)
        allows: dict[str, dict] = {}
        for p in policies:
            if p.action == "ALLOW":
                for i, rule in enumerate(p.rules):
                    if network and rule.l7_attributes():
                        continue   # an HTTP-only rule can never match a TCP connection
                    allows[f"ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"] = self.rule(rule, port)
        kind = "network" if network else "http"
        if denies:
            filters.append(_rbac(kind, "DENY", denies, f"{where}-deny"))
        if allows_present:
            filters.append(_rbac(kind, "ALLOW", allows, f"{where}-allow"))
        return filters

    @staticmethod
    def _l4_only(rule: Rule, deny: bool) -> Rule | None:
        """For a TCP port, Istio keeps a DENY rule's L4 parts (as ztunnel: policy.authz_l4): a
        `from`/`to` left with no L4 field, or an HTTP-only `when`, can never match, so the rule
        is dropped (None); otherwise the rule without its HTTP fields."""
        def keep(block, cls):
            return cls({k: v for k, v in block.values.items() if v and not block.TABLE[k].http})
        sources = tuple(keep(s, Source) for s in rule.sources)
        operations = tuple(keep(o, Operation) for o in rule.operations)
        if (sources and not any(s.values for s in sources)) or \
                (operations and not any(o.values for o in operations)) or \
                any(not c.is_l4 for c in rule.conditions):
            return None
        return Rule(tuple(s for s in sources if s.values), tuple(o for o in operations if o.values),
                    rule.conditions)


def _rbac(kind: str, action: str, policies: dict, stat: str) -> dict:
    rules = {"action": action, "policies": policies}
    if kind == "http":
        return {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.rbac.v3.RBAC", "rules": rules}}
    return {"name": "envoy.filters.network.rbac", "typed_config": {
        "@type": T + "envoy.extensions.filters.network.rbac.v3.RBAC", "rules": rules,
        "stat_prefix": stat}}


# --- jwt_authn ------------------------------------------------------------------------------------

#: Envoy refuses a provider whose JWKS has no usable key (and with it the whole listener update,
#: so the previous policies would stay in force); an issuer whose keys istiod could not fetch
#: gets, as in Istio (FakeJwks), a key whose private half nobody has: its tokens all fail (401).
UNUSABLE_JWKS = ('''{"keys": [{"kty": "RSA", "kid": "no-keys", "alg": "RS256", "use": "sig", "n": "ofMI_wxvw-55Yo389PadvYPOMqPGVP01cBZN7U_4FFrgkLBPgWnUwvSL5wH3KK-baiwWVjaU3zAZaibKJcDGmpmmAf_k1rRWPFzvBM-_EmM3qrWLHqM-fI1LuH3jDEWRMZ1-bjA3bq2bNfzstiRnNcBLJI0oR0X4g258qUUlnzhGG0NGJZ_udl8ya1knCC0wOYd0LJ0VIl2dQSKDt5YYf2ldLJHxBBuTZYdLoI-rqXZvJmALA3bWk7jKsAWDzIruiAVw7ccusJtlgFUGnjO6-n20LPWgLsc0ZqiTT60EpHU7geq9IR-SU9RiHtPVnXbijTC0LQIUFWCidWOg50MuGQ", "e": "AQAB"}]}''')


def _usable(jwks: str) -> str:
    try:
        keys = json.loads(jwks).get("keys")
    except (ValueError, AttributeError):
        return UNUSABLE_JWKS
    return jwks if keys else UNUSABLE_JWKS


def _provider(rule: JwtRule, jwks_by_uri: Mapping[str, str]) -> dict:
    if rule.jwks:
        jwks = rule.jwks
    elif rule.jwks_uri:
        # istiod resolves jwksUri; a URI it could not fetch has no keys: that issuer's tokens fail.
        jwks = jwks_by_uri.get(rule.jwks_uri, UNUSABLE_JWKS)
    else:
        jwks = UNUSABLE_JWKS
    provider: dict[str, Any] = {"issuer": rule.issuer, "local_jwks": {"inline_string": _usable(jwks)},
                                "forward": rule.forward_original_token,
                                "payload_in_metadata": JWT_PAYLOAD_KEY, "clock_skew_seconds": 60}
    if rule.audiences:
        provider["audiences"] = list(rule.audiences)
    headers = [{"name": loc.name, **({"value_prefix": loc.prefix} if loc.prefix else {})}
               for loc in rule.locations if loc.kind == "header"]
    params = [loc.name for loc in rule.locations if loc.kind == "param"]
    cookies = [loc.name for loc in rule.locations if loc.kind == "cookie"]
    if headers:
        provider["from_headers"] = headers
    if params:
        provider["from_params"] = params
    if cookies:
        provider["from_cookies"] = cookies
    if rule.locations and not headers:
        provider["from_headers"] = []   # only the named places, not also Authorization
    if rule.output_payload_to_header:
        provider["forward_payload_header"] = rule.output_payload_to_header
    if rule.output_claim_to_headers:
        provider["claim_to_headers"] = [{"header_name": h, "claim_name": c}
                                        for h, c in rule.output_claim_to_headers]
    return provider


def jwt_filter(rules: list[JwtRule], jwks_by_uri: Mapping[str, str]) -> dict | None:
    """Istio's translation: every rule a provider; a request passes with no token, or one token
    that one provider verifies; a token that no provider verifies is 401."""
    if not rules:
        return None
    providers = {}
    for i, rule in enumerate(rules):
        providers[f"origins-{i}"] = _provider(rule, jwks_by_uri)
    # Istio's requirement (pilot/pkg/security/authn/policy_applier.go): one provider: P or
    # allow_missing; several: P1 or ... or Pn or all-of(Pi or allow_missing): a token that a
    # provider of its issuer rejects fails even while another provider finds no token.
    each = [{"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}
            for name in providers]
    requires = each[0] if len(each) == 1 else {"requires_any": {"requirements": [
        *({"provider_name": name} for name in providers), {"requires_all": {"requirements": each}}]}}
    return {"name": JWT_FILTER, "typed_config": {
        "@type": T + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": providers, "bypass_cors_preflight": True,
        "rules": [{"match": {"prefix": "/"}, "requires": requires}]}}


# --- transport sockets ----------------------------------------------------------------------------

def sds(name: str, path: str) -> dict:
    return {"name": name, "sds_config": {"path_config_source": {"path": path,
                                                                 "watched_directory": {"path": _dir(path)}},
                                         "resource_api_version": "V3"}}


def _dir(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _common_tls(secret_dir: str, peer_sans: list[str] | None) -> dict:
    validation: dict[str, Any] = {"name": ROOT_SECRET}
    ctx: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
        "alpn_protocols": ["h2"],
        "tls_certificate_sds_secret_configs": [sds(CERT_SECRET, f"{secret_dir}/{CERT_SECRET}.json")],
    }
    if peer_sans:
        ctx["combined_validation_context"] = {
            "default_validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": san}} for san in peer_sans]},
            "validation_context_sds_secret_config": sds(ROOT_SECRET, f"{secret_dir}/{ROOT_SECRET}.json")}
    else:
        validation = sds(ROOT_SECRET, f"{secret_dir}/{ROOT_SECRET}.json")
        ctx["validation_context_sds_secret_config"] = validation
    return ctx


def _tls_socket(kind: str, ctx: dict, **extra) -> dict:
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": T + f"envoy.extensions.transport_sockets.tls.v3.{kind}TlsContext",
        "common_tls_context": ctx, **extra}}


def secrets(cert_chain: str, key: str, root: str) -> dict[str, dict]:
    """The two SDS files' contents (a DiscoveryResponse-like `resources` list each)."""
    return {
        CERT_SECRET: {"resources": [{"@type": SECRET_TYPE, "name": CERT_SECRET, "tls_certificate": {
            "certificate_chain": {"inline_string": cert_chain}, "private_key": {"inline_string": key}}}]},
        ROOT_SECRET: {"resources": [{"@type": SECRET_TYPE, "name": ROOT_SECRET, "validation_context": {
            "trusted_ca": {"inline_string": root}}}]},
    }


# --- listeners and clusters -----------------------------------------------------------------------

def _internal_address(name: str) -> dict:
    return {"envoy_internal_address": {"server_listener_name": name}}


#: The peer's identity travels from connect_terminate to the inner listener in a PROXY protocol v2
#: TLV (the inner listener is a real loopback socket, not an Envoy internal listener: a user-space
#: socket's close reaches connect_terminate as a reset, which cut `Connection: close` responses off
#: with CONNECT_ERROR; a kernel socket's FIN ends the CONNECT stream cleanly).
PEER_TLV = 0xF0
PEER_METADATA = "istio.peer"
INNER_HOST = "127.0.0.1"
INNER_PORT_BASE, INNER_PORT_SPAN = 20000, 20000
RAW_BUFFER = {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
    "@type": T + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}
PROXY_PROTOCOL_UPSTREAM = {"name": "envoy.transport_sockets.upstream_proxy_protocol", "typed_config": {
    "@type": T + "envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
    "config": {"version": "V2", "added_tlvs": [{"type": PEER_TLV, "format_string": {
        "text_format_source": {"inline_string": f"%FILTER_STATE({PEER_PRINCIPAL}:PLAIN)%"}}}]},
    # one upstream connection per peer identity, never another peer's pooled one
    "tlv_as_pool_key": True, "transport_socket": RAW_BUFFER}}


#: connect_terminate: the peer's URI SAN as filter state shared with the upstream connection, where
#: the PROXY protocol TLV's format string reads it (it is evaluated on the upstream connection)
SET_PEER = {"name": "envoy.filters.http.set_filter_state", "typed_config": {
    "@type": T + "envoy.extensions.filters.http.set_filter_state.v3.Config",
    "on_request_headers": [{"object_key": PEER_PRINCIPAL, "factory_key": "envoy.string",
                            "format_string": {"text_format_source": {"inline_string": "%DOWNSTREAM_PEER_URI_SAN%"}},
                            "shared_with_upstream": "ONCE"}]}}


def inner_ports(names: list[str]) -> dict[str, int]:
    """A loopback port per inner listener, stable across snapshots (from the name's hash, probing
    past collisions in name order) so a listener keeps its address while it exists."""
    taken: dict[str, int] = {}
    used: set[int] = set()
    for name in sorted(names):
        offset = int(hashlib.sha256(name.encode()).hexdigest(), 16) % INNER_PORT_SPAN
        while INNER_PORT_BASE + offset in used:
            offset = (offset + 1) % INNER_PORT_SPAN
        used.add(INNER_PORT_BASE + offset)
        taken[name] = INNER_PORT_BASE + offset
    return taken


def _inner_cluster(name: str, port: int) -> dict:
    return {"@type": CLUSTER_TYPE, "name": name, "type": "STATIC", "connect_timeout": "5s",
            "transport_socket": PROXY_PROTOCOL_UPSTREAM,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": INNER_HOST, "port_value": port}}}}]}]}}


@dataclass(frozen=True)
class _Inner:
    name: str                  # listener and cluster name
    authorities: tuple[str, ...]
    port: int
    protocol: str              # l7.protocols HTTP | TCP | UNKNOWN
    upstream: str              # cluster
    service_key: str | None
    workload_uid: str | None


def translate(snapshot: Mapping[str, Any], version: int, secret_dir: str,
              upstream_hbone_port: int = HBONE_PORT, hbone_port: int = HBONE_PORT) -> Resources:
    """Envoy resources for one waypoint snapshot; ConfigError (waypoint.config) for a bad one."""
    config = WaypointConfig.from_snapshot(snapshot, version)
    return _translate_config(config, list(snapshot.get("allServices") or []), secret_dir,
                             upstream_hbone_port, hbone_port)


def _translate_config(config: WaypointConfig, all_services: list[dict], secret_dir: str,
                      upstream_hbone_port: int, hbone_port: int) -> Resources:
    out = Resources()
    t = _Translator(config, out)
    inners: list[_Inner] = []
    originate: dict[tuple[str, int], Workload] = {}
    for vip, service in sorted(config.services_by_vip.items()):
        for port in sorted(service.ports):
            name = f"inbound-vip|{port}|{service.hostname}"
            if any(i.name == name for i in inners):
                inners = [i if i.name != name else _Inner(name, i.authorities + (f"{vip}:{port}",), *_rest(i))
                          for i in inners]
                continue
            upstream = f"outbound|{port}||{service.hostname}"
            out.clusters.append(_service_cluster(upstream, service, port, config, originate))
            inners.append(_Inner(name, (f"{vip}:{port}",), port, service.protocols.get(port, UNKNOWN),
                                 upstream, service.key, None))
    for ip, workload in sorted(config.fronted_workloads_by_ip.items()):
        for port in _workload_ports(workload, all_services):
            name = f"inbound-pod|{port}|{ip}"
            upstream = f"outbound-pod|{port}|{ip}"
            out.clusters.append(_endpoint_cluster(upstream, workload, port, originate))
            inners.append(_Inner(name, (f"{ip}:{port}",), port, UNKNOWN, upstream, None, workload.uid))
    known = {c["name"] for c in out.clusters}

    def cluster_for(service: Service, port: int) -> str:
        """A route's backend service port: its cluster, made the first time a route names it."""
        name = f"outbound|{port}||{service.hostname}"
        if name not in known:
            known.add(name)
            out.clusters.append(_service_cluster(name, service, port, config, originate))
        return name
    t.cluster_for = cluster_for
    ports = inner_ports([inner.name for inner in inners])
    for inner in inners:
        out.clusters.append(_inner_cluster(inner.name, ports[inner.name]))
        out.listeners.append(_inner_listener(t, inner, ports[inner.name]))
    for (ip, port), workload in sorted(originate.items()):
        out.listeners.append(_originate_listener(ip, port))
    for ip, workload in sorted({ip: w for (ip, _), w in originate.items()}.items()):
        out.clusters.append(_hbone_cluster(ip, workload, secret_dir, upstream_hbone_port))
    out.listeners.insert(0, _terminate_listener(inners, secret_dir, hbone_port))
    return out


def _rest(i: _Inner) -> tuple:
    return (i.port, i.protocol, i.upstream, i.service_key, i.workload_uid)


def _workload_ports(workload: Workload, all_services: list[dict]) -> list[int]:
    """The ports a workload-addressed request may use: the target ports of every service that
    selects it (Envoy needs each inner listener named in advance; another port is refused, 503)."""
    ports = set()
    for service in all_services:
        endpoint = (service.get("endpoints") or {}).get(workload.uid)
        if endpoint is None:
            continue
        by_port = endpoint.get("port") or {}
        for service_port, target in (service.get("ports") or {}).items():
            ports.add(int(by_port.get(service_port) or target or 0))
    ports.discard(0)
    return sorted(ports)


def _lb_endpoint(workload: Workload, port: int, originate: dict) -> dict:
    if workload.protocol == "HBONE" and workload.identity is not None:
        originate[(workload.ip, port)] = workload
        address = _internal_address(f"connect_originate|{workload.ip}|{port}")
    else:
        address = {"socket_address": {"address": workload.ip, "port_value": port}}
    return {"endpoint": {"address": address}}


def _service_cluster(name: str, service: Service, port: int, config: WaypointConfig, originate: dict) -> dict:
    endpoints = []
    for ep in service.endpoints:
        workload = config.workloads.get(ep.workload_uid)
        target = ep.ports.get(port) or service.ports.get(port)
        if workload is not None and ep.healthy and workload.healthy and target:
            endpoints.append(_lb_endpoint(workload, target, originate))
    return {"@type": CLUSTER_TYPE, "name": name, "type": "STATIC", "connect_timeout": "10s",
            "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}}


def _endpoint_cluster(name: str, workload: Workload, port: int, originate: dict) -> dict:
    return {"@type": CLUSTER_TYPE, "name": name, "type": "STATIC", "connect_timeout": "10s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                _lb_endpoint(workload, port, originate)]}]}}


def _hbone_cluster(ip: str, workload: Workload, secret_dir: str, port: int) -> dict:
    name = f"hbone|{ip}"
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    return {"@type": CLUSTER_TYPE, "name": name, "type": "STATIC", "connect_timeout": "10s",
            "typed_extension_protocol_options": h2,
            "transport_socket": _tls_socket("Upstream", _common_tls(secret_dir, [workload.identity.uri])),
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}}}]}]}}


def _originate_listener(ip: str, port: int) -> dict:
    name = f"connect_originate|{ip}|{port}"
    tcp = {"@type": TCP_PROXY_TYPE, "stat_prefix": name, "cluster": f"hbone|{ip}",
           "tunneling_config": {"hostname": f"{ip}:{port}"}}
    return {"@type": LISTENER_TYPE, "name": name, "internal_listener": {},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp}]}]}


def _terminate_listener(inners: list[_Inner], secret_dir: str, port: int) -> dict:
    hosts = [{"name": inner.name, "domains": list(inner.authorities),
              "routes": [{"match": {"connect_matcher": {}},
                          "route": {"cluster": inner.name, "timeout": "0s",
                                    "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}]}
             for inner in inners]
    hosts.append({"name": "unknown", "domains": ["*"], "routes": [{
        "match": {"connect_matcher": {}},
        "direct_response": {"status": 503, "body": {"inline_string":
                                                     "neither a service port nor a workload this waypoint serves\n"}}}]})
    hcm = {"@type": HCM_TYPE, "stat_prefix": "connect_terminate", "codec_type": "HTTP2",
           "http2_protocol_options": {"allow_connect": True},
           "upgrade_configs": [{"upgrade_type": "CONNECT"}],
           "stream_idle_timeout": "0s",
           # The agent writes CDS before LDS, but Envoy may read the two files in either order:
           # a route to a cluster not yet known answers 503 until it is, instead of a rejected LDS.
           "route_config": {"name": "connect_terminate", "virtual_hosts": hosts, "validate_clusters": False},
           "http_filters": [SET_PEER, ROUTER]}
    tls = _tls_socket("Downstream", _common_tls(secret_dir, None), require_client_certificate=True)
    return {"@type": LISTENER_TYPE, "name": "connect_terminate",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
            "filter_chains": [{"transport_socket": tls, "filters": [
                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}


def _bound(bounds: list, inner: _Inner, config: WaypointConfig, out: Resources) -> list:
    """The policies that govern an inner listener's requests. A legacy waypoint's selector policy
    (appliesToWorkloads) binds per endpoint, which Envoy picks after RBAC: it applies here when it
    covers every endpoint of the service, and not at all (noted) when it covers only some."""
    if inner.workload_uid is not None:
        return [b.value for b in bounds if b.covers(inner.workload_uid, None)]
    service = next((s for s in config.services_by_vip.values() if s.key == inner.service_key), None)
    uids = {ep.workload_uid for ep in service.endpoints} if service else set()
    chosen = []
    for b in bounds:
        if b.applies_to_services is not None and inner.service_key not in b.applies_to_services:
            continue
        if b.applies_to is None or (uids and uids <= b.applies_to):
            chosen.append(b.value)
        elif uids & b.applies_to:
            out.note("legacySelectorPolicies", f"a legacy waypoint's selector policy covers only some endpoints "
                                               f"of {inner.service_key}; Envoy picks the endpoint after RBAC, so "
                                               "it is not applied there")
    return chosen


def _inner_listener(t: _Translator, inner: _Inner, port: int) -> dict:
    config = t.config
    policies = _bound(config.authorization, inner, config, t.out)
    jwt_rules = [r for rules in _bound(config.authentication, inner, config, t.out) for r in rules]
    # The PROXY header's TLV -> connection metadata -> the filter state RBAC principals read.
    peer = {"name": "envoy.filters.network.set_filter_state", "typed_config": {
        "@type": T + "envoy.extensions.filters.network.set_filter_state.v3.Config",
        "on_new_connection": [{"object_key": PEER_PRINCIPAL, "factory_key": "envoy.string", "format_string": {
            "text_format_source": {"inline_string": f"%DYNAMIC_METADATA({PEER_METADATA}:principal)%"}}}]}}
    chains = []
    if inner.protocol != TCP:
        http_filters = []
        jwt = jwt_filter(jwt_rules, config.jwks_by_uri)
        if jwt:
            http_filters.append(jwt)
        http_filters += t.rbac_filters(policies, inner.port, False, inner.name)
        routes = [{"match": {"prefix": "/"}, "route": {"cluster": inner.upstream, "timeout": "0s"}}]
        table = config.routes.get(inner.service_key) if inner.service_key else None
        if table is not None and table.routes_port(inner.port):
            routes = envoy_routes(table, inner.port, t.cluster_for)
            http_filters.append(fault_filter())
        http_filters.append(ROUTER)
        hcm = {"@type": HCM_TYPE, "stat_prefix": inner.name, "codec_type": "AUTO",
               "request_headers_timeout": "5s", "max_request_headers_kb": 60,
               "upgrade_configs": [{"upgrade_type": "websocket"}],
               "route_config": {"name": inner.name, "validate_clusters": False, "virtual_hosts": [{
                   "name": inner.name, "domains": ["*"],
                   "routes": routes}]},
               "http_filters": http_filters}
        chain: dict[str, Any] = {"filters": [peer, {"name": "envoy.filters.network.http_connection_manager",
                                                    "typed_config": hcm}]}
        if inner.protocol == UNKNOWN:
            chain["filter_chain_match"] = {"application_protocols": ["http/1.1", "h2c"]}
        chains.append(chain)
    if inner.protocol != HTTP:
        filters = [peer, *t.rbac_filters(policies, inner.port, True, inner.name)]
        filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": TCP_PROXY_TYPE, "stat_prefix": inner.name, "cluster": inner.upstream}})
        chains.append({"filters": filters})
    listener_filters = [{"name": "envoy.filters.listener.proxy_protocol", "typed_config": {
        "@type": T + "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
        "rules": [{"tlv_type": PEER_TLV, "on_tlv_present": {"metadata_namespace": PEER_METADATA,
                                                            "key": "principal"}}]}}]
    listener: dict[str, Any] = {"@type": LISTENER_TYPE, "name": inner.name,
                                "address": {"socket_address": {"address": INNER_HOST, "port_value": port}},
                                "listener_filters": listener_filters, "filter_chains": chains}
    if inner.protocol == UNKNOWN:
        listener_filters.append({"name": "envoy.filters.listener.http_inspector", "typed_config": {
            "@type": T + "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}})
        listener["listener_filters_timeout"] = "5s"
        listener["continue_on_listener_filters_timeout"] = True
    return listener


def bootstrap(node_id: str, cluster: str, config_dir: str, admin_port: int = 15000) -> dict:
    """Envoy's bootstrap: the admin on loopback, LDS and CDS from files the agent replaces."""
    def source(kind: str) -> dict:
        return {"path_config_source": {"path": f"{config_dir}/{kind}.json",
                                       "watched_directory": {"path": config_dir}},
                "resource_api_version": "V3"}
    return {"node": {"id": node_id, "cluster": cluster},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
                "@type": T + "envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}],
            "dynamic_resources": {"lds_config": source("lds"), "cds_config": source("cds")},
            # With this guard on (Envoy's default), a CONNECT-terminated stream whose upstream (the
            # inner listener) half-closes before the client has is reset (CONNECT_ERROR), which
            # cuts off a `Connection: close` response at the client; off, the upstream's FIN ends
            # the stream cleanly, as the Python waypoint does.
            "layered_runtime": {"layers": [{"name": "static", "static_layer": {
                "envoy.reloadable_features.allow_multiplexed_upstream_half_close": False}}]}}
