"""Istio's security kinds (AuthorizationPolicy, RequestAuthentication, PeerAuthentication).

The one field table and the one parser of each kind. Apply-time validation (`validate`) and the
policy engine (`reference_impl.policy`) both call these parsers, so what a cluster accepts is
exactly what its proxies compile. A parser returns a frozen typed object or raises ManifestError
(through the Checker) naming the object and the field.

The fields and rules are Istio's (api: security/v1beta1/*.proto; is: pkg/config/validation/
validation.go ValidateAuthorizationPolicy, ValidateRequestAuthentication,
ValidatePeerAuthentication; is: pkg/config/security/security.go ValidateAttribute).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping
from urllib.parse import urlparse

from .checker import Checker, describe
from .path_templates import PathTemplateError, path_template_regex, is_path_template

AUTHZ_ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
TARGET_REF_KINDS = ("Gateway", "GatewayClass", "Service", "ServiceEntry")
DRY_RUN_ANNOTATION = "istio.io/dry-run"

# --- the field table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueField:
    """A list-of-strings field of `source`/`operation` (or a `when` key): how its values parse.

    kind: pattern (Istio string match: exact, x*, *x, *) | cidr | port | service_account.
    http: the value needs the HTTP request, so ztunnel cannot enforce it
    (is: pilot/pkg/serviceregistry/ambient/authorization.go httpSources/httpOperations).
    """

    kind: str
    http: bool = False


_P, _PH = ValueField("pattern"), ValueField("pattern", http=True)
_CIDR, _CIDRH = ValueField("cidr"), ValueField("cidr", http=True)
_PORT, _SA = ValueField("port"), ValueField("service_account")

SOURCE_FIELDS: dict[str, ValueField] = {
    "principals": _P, "notPrincipals": _P,
    "requestPrincipals": _PH, "notRequestPrincipals": _PH,
    "namespaces": _P, "notNamespaces": _P,
    "serviceAccounts": _SA, "notServiceAccounts": _SA,
    "ipBlocks": _CIDR, "notIpBlocks": _CIDR,
    "remoteIpBlocks": _CIDRH, "notRemoteIpBlocks": _CIDRH,
}
OPERATION_FIELDS: dict[str, ValueField] = {
    "hosts": _PH, "notHosts": _PH, "ports": _PORT, "notPorts": _PORT,
    "methods": _PH, "notMethods": _PH, "paths": _PH, "notPaths": _PH,
}
# Fields real Istio added after the release this table follows, refused with the way to say it now.
# (istio/api#3665, releaseChannel:extended; a stable-channel install refuses it, and istiod's
# ambient translation neither enforces nor flags it, so ztunnel would silently widen the rule).
_NOT_SERVED = "is not served: it exists only from Istio 1.30, in the extended (alpha) channel"
NOT_SERVED_SOURCE_FIELDS = {
    "trustDomains": 'match the trust domain with principals: ["<trust domain>/*"]',
    "notTrustDomains": 'use notPrincipals: ["<trust domain>/*"]',
}

# `when` keys with a fixed name. http=False: ztunnel enforces it (is: l4WhenAttributes).
WHEN_KEYS: dict[str, ValueField] = {
    "source.ip": _CIDR, "source.namespace": _P, "source.principal": _P,
    "destination.ip": _CIDR, "destination.port": _PORT,
    "source.serviceAccount": ValueField("service_account", http=True),
    "remote.ip": _CIDRH, "connection.sni": _PH, "request.auth.principal": _PH,
    "request.auth.audiences": _PH, "request.auth.presenter": _PH,
}
# Keys written `prefix[name]`; all of them need the HTTP request.
WHEN_MAP_KEYS = ("request.headers", "request.auth.claims")
WHEN_PREFIX_KEYS = ("experimental.envoy.filters.",)
L4_WHEN_KEYS = frozenset(k for k, f in WHEN_KEYS.items() if not f.http)
_WHEN_REJECTED = {
    "destination.namespace": "it is replaced by the policy's metadata.namespace",
    "destination.name": "it was only supported in v1alpha1",
    "destination.user": "it was only supported in v1alpha1",
    "source.trustDomain": "it exists only from Istio 1.30 (extended channel); match "
                          "source.principal \"<trust domain>/*\" instead",
}

AUTHZ_SPEC = ("selector", "targetRef", "targetRefs", "action", "provider", "rules")
AUTHZ_RULE = ("from", "to", "when")
AUTHZ_FROM = ("source",)
AUTHZ_TO = ("operation",)
CONDITION = ("key", "values", "notValues")
TARGET_REF = ("group", "kind", "name", "namespace")
WORKLOAD_SELECTOR = ("matchLabels",)
REQUEST_AUTHN_SPEC = ("selector", "targetRef", "targetRefs", "jwtRules")
JWT_RULE = ("issuer", "audiences", "jwksUri", "jwks", "fromHeaders", "fromParams", "fromCookies",
            "outputPayloadToHeader", "forwardOriginalToken", "outputClaimToHeaders", "timeout")
JWT_HEADER = ("name", "prefix")
JWT_CLAIM_TO_HEADER = ("header", "claim")
PEER_AUTHN_SPEC = ("selector", "mtls", "portLevelMtls")
MTLS = ("mode",)
# Where a token is looked for when a rule names no place (api: request_authentication.proto).
DEFAULT_TOKEN_HEADER = ("authorization", "Bearer ")
DEFAULT_TOKEN_PARAM = "access_token"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- the typed model ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str


@dataclass(frozen=True)
class _FieldBlock:
    """A `source` or `operation`: its fields keyed by spec name, values parsed per the table
    (patterns stay strings, cidr → ip_network, port → int, service_account → ServiceAccount)."""

    values: Mapping[str, tuple]
    TABLE: ClassVar[dict[str, ValueField]] = {}

    def get(self, spec_field: str) -> tuple:
        return self.values.get(spec_field, ())

    def http_fields(self) -> list[str]:
        return [f for f in self.values if self.values[f] and self.TABLE[f].http]


class Source(_FieldBlock):
    """One `from[].source`."""

    TABLE = SOURCE_FIELDS


class Operation(_FieldBlock):
    """One `to[].operation`."""

    TABLE = OPERATION_FIELDS


@dataclass(frozen=True)
class Condition:
    """One `when` entry. Values stay strings (checked per key); source.serviceAccount values
    are written out as `namespace/name`."""

    key: str
    values: tuple[str, ...]
    not_values: tuple[str, ...]

    @property
    def is_l4(self) -> bool:
        return self.key in L4_WHEN_KEYS


@dataclass(frozen=True)
class Rule:
    sources: tuple[Source, ...] = ()
    operations: tuple[Operation, ...] = ()
    conditions: tuple[Condition, ...] = ()

    def l7_attributes(self) -> list[str]:
        """Names of the HTTP-only attributes this rule uses (empty: ztunnel can enforce it all)."""
        found: list[str] = []
        for s in self.sources:
            found += s.http_fields()
        for o in self.operations:
            found += o.http_fields()
        found += [c.key for c in self.conditions if not c.is_l4]
        return sorted(set(found))


@dataclass(frozen=True)
class AuthorizationPolicy:
    name: str
    namespace: str
    action: str = "ALLOW"
    rules: tuple[Rule, ...] = ()
    selector: Mapping[str, str] | None = None   # matchLabels; None = no selector
    target_refs: tuple[Mapping[str, str], ...] = ()
    provider: str | None = None
    dry_run: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class TokenLocation:
    """Where a JWT may be: kind header | param | cookie (header names lowercased)."""

    kind: str
    name: str
    prefix: str = ""


@dataclass(frozen=True)
class JwtRule:
    issuer: str
    source: str                       # `namespace/name` of the RequestAuthentication
    audiences: tuple[str, ...] = ()
    jwks: str | None = None
    jwks_uri: str | None = None
    locations: tuple[TokenLocation, ...] = ()
    forward_original_token: bool = False
    output_payload_to_header: str | None = None
    output_claim_to_headers: tuple[tuple[str, str], ...] = ()   # (header, claim)


@dataclass(frozen=True)
class RequestAuthentication:
    name: str
    namespace: str
    jwt_rules: tuple[JwtRule, ...] = ()
    selector: Mapping[str, str] | None = None
    target_refs: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True)
class PeerAuthentication:
    name: str
    namespace: str
    mode: str = "UNSET"                                   # UNSET inherits
    port_modes: Mapping[int, str] = field(default_factory=dict)
    selector: Mapping[str, str] | None = None
    created: str = ""                                     # metadata.creationTimestamp

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# --- shared parts -------------------------------------------------------------------------------

def _spec(check: Checker, obj: Mapping[str, Any]) -> dict:
    spec = obj.get("spec")
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        check.fail(("spec",), f"expected a mapping, got {describe(spec)}",
                   "write spec as a mapping of `key: value` lines")
    return spec


def workload_selector(check: Checker, spec: dict) -> dict[str, str] | None:
    """Istio's WorkloadSelector: matchLabels only; None when there is no selector."""
    path = ("spec",)
    selector = check.get(spec, "selector", path, dict)
    if selector is None:
        return None
    field_path = (*path, "selector")
    extra = sorted(set(selector) - set(WORKLOAD_SELECTOR))
    if extra:
        check.fail((*field_path, extra[0]), "Istio workload selectors only support matchLabels",
                   "select workloads with matchLabels: {label: value}")
    labels = check.string_map(selector, "matchLabels", field_path)
    for k in labels:
        check.label_key(k, (*field_path, "matchLabels", k))
    return dict(labels)


def target_refs(check: Checker, spec: dict, own_namespace: str) -> tuple[dict[str, str], ...]:
    """targetRef and targetRefs together, each {group, kind, name[, namespace]}."""
    path = ("spec",)
    refs = []
    single = check.get(spec, "targetRef", path, dict)
    if single is not None:
        refs.append(((*path, "targetRef"), single))
    refs += check.items(spec, "targetRefs", path)
    if single is not None and spec.get("targetRefs"):
        check.fail((*path, "targetRefs"), "targetRef and targetRefs cannot both be set",
                   "move targetRef into the targetRefs list")
    if refs and spec.get("selector") is not None:
        check.fail((*path, "selector"), "selector and targetRef(s) cannot both be set",
                   "use selector for workloads or targetRefs for a waypoint/gateway, not both")
    for rpath, ref in refs:
        check.known(ref, rpath, TARGET_REF)
        kind = check.enum(ref, "kind", rpath, TARGET_REF_KINDS, required=True)
        check.get(ref, "group", rpath, str)
        name = check.get(ref, "name", rpath, str, required=True, hint=f"name the {kind}")
        check.dns_subdomain(name, (*rpath, "name"))
        ns = check.get(ref, "namespace", rpath, str)
        if ns is not None and ns != own_namespace:
            check.fail((*rpath, "namespace"),
                       f"targets namespace {ns!r} but the policy is in {own_namespace!r}",
                       "create the policy in the target's namespace")
    return tuple(dict(ref) for _, ref in refs)


def _values(check: Checker, kind: str, values: list[str], path, namespace: str) -> tuple:
    """Check and parse the values of one field of kind `kind` (see ValueField)."""
    out = []
    if kind == "service_account" and len(values) > 16:
        check.fail(path, "may not have more than 16 values", "split the rule")
    for i, value in enumerate(values):
        item = (*path, i)
        if kind == "cidr":
            check.ip_or_cidr(value, item)
            out.append(ipaddress.ip_network(value, strict=False))
        elif kind == "port":
            check.port_string(value, item)
            out.append(int(value))
        elif kind == "service_account":
            if "*" in value:
                check.fail(item, "wildcards are not allowed in service accounts",
                           "list each service account")
            parts = value.split("/")
            if len(parts) > 2 or not all(parts):
                check.fail(item, f"{value!r} is not 'serviceAccount' or "
                           "'namespace/serviceAccount'", "write e.g. ambient-apps/sleep-ambient")
            out.append(ServiceAccount(*parts) if len(parts) == 2
                       else ServiceAccount(namespace, value))
        else:
            if path and path[-1] in ("paths", "notPaths") and is_path_template(value):
                try:
                    path_template_regex(value)
                except PathTemplateError as exc:
                    check.fail(item, str(exc), "write {*} or {**} as a whole path segment, {**} last")
            out.append(value)
    return tuple(out)


def _fields(check: Checker, block: dict, path, table: dict[str, ValueField], what: str,
            namespace: str) -> dict[str, tuple]:
    allowed = tuple(table)
    check.known(block, path, allowed)
    if not any(block.get(f) for f in allowed):
        check.fail(path, f"{what} is empty", f"it must not be empty: set at least one of "
                   + ", ".join(allowed))
    parsed = {}
    for name, spec in table.items():
        hint = ('write ports as quoted strings, e.g. ports: ["8000"]'
                if spec.kind == "port" else None)
        values = check.strings(block, name, path, hint=hint, non_empty_values=True)
        if values:
            parsed[name] = _values(check, spec.kind, values, (*path, name), namespace)
    return parsed


# --- AuthorizationPolicy ------------------------------------------------------------------------

def _when_key(check: Checker, key: str, field_path) -> ValueField | None:
    if key in WHEN_KEYS:
        return WHEN_KEYS[key]
    for prefix in (*WHEN_MAP_KEYS, *WHEN_PREFIX_KEYS):
        if key.startswith(prefix):
            open_at = key.find("[")
            if not key.endswith("]") or open_at <= 0 or open_at >= len(key) - 2:
                shown = prefix if prefix in WHEN_MAP_KEYS else prefix + "<filter>"
                check.fail(field_path, f"bad key {key!r}", f"write it as {shown}[name]")
            return None
    if key in _WHEN_REJECTED:
        check.fail(field_path, f"attribute {key!r} is not supported: {_WHEN_REJECTED[key]}",
                   "remove this condition")
    if key.startswith("destination.labels"):
        check.fail(field_path, f"attribute {key!r} is not supported: it is replaced by the "
                   "workload selector", "select the destination with spec.selector instead")
    known = ", ".join((*WHEN_KEYS, *(f"{k}[...]" for k in WHEN_MAP_KEYS)))
    check.fail(field_path, f"unknown attribute {key!r}", f"use one of {known}")


def _condition(check: Checker, cond: dict, cpath, namespace: str) -> Condition:
    check.known(cond, cpath, CONDITION)
    key = check.get(cond, "key", cpath, str, required=True,
                    hint="name the attribute, e.g. key: request.auth.claims[iss]")
    spec = _when_key(check, key, (*cpath, "key"))
    values = check.strings(cond, "values", cpath, non_empty_values=True)
    not_values = check.strings(cond, "notValues", cpath, non_empty_values=True)
    if not values and not not_values:
        check.fail(cpath, f"condition {key!r} has neither values nor notValues",
                   "set values or notValues (at least one)")
    parsed = []
    for name, items in (("values", values), ("notValues", not_values)):
        if spec is not None and spec.kind != "pattern":
            typed = _values(check, spec.kind, items, (*cpath, name), namespace)
            if spec.kind == "service_account":
                items = [f"{sa.namespace}/{sa.name}" for sa in typed]
        parsed.append(tuple(items))
    return Condition(key, parsed[0], parsed[1])


def _rule(check: Checker, rule: dict, rpath, namespace: str) -> Rule:
    check.known(rule, rpath, AUTHZ_RULE)
    sources, operations = [], []
    for key, items in (("from", sources), ("to", operations)):
        if rule.get(key) == []:
            check.fail((*rpath, key), "must not be empty", f"remove {key} or give it entries")
    for fpath, entry in check.items(rule, "from", rpath):
        check.known(entry, fpath, AUTHZ_FROM)
        source = check.get(entry, "source", fpath, dict, required=True,
                           hint="add source: {principals: [...]} (or remove this entry)")
        spath = (*fpath, "source")
        for name in source:
            if name in NOT_SERVED_SOURCE_FIELDS:
                check.fail((*spath, name), _NOT_SERVED, NOT_SERVED_SOURCE_FIELDS[name])
        values = _fields(check, source, spath, SOURCE_FIELDS, "source", namespace)
        if values.keys() & {"serviceAccounts", "notServiceAccounts"}:
            for other in ("principals", "notPrincipals", "namespaces", "notNamespaces"):
                if other in values:
                    check.fail((*spath, other), "cannot be combined with serviceAccounts",
                               "use either serviceAccounts or principals/namespaces")
        sources.append(Source(values))
    for tpath, entry in check.items(rule, "to", rpath):
        check.known(entry, tpath, AUTHZ_TO)
        operation = check.get(entry, "operation", tpath, dict, required=True,
                              hint="add operation: {paths: [...]} (or remove this entry)")
        operations.append(Operation(_fields(check, operation, (*tpath, "operation"),
                                            OPERATION_FIELDS, "operation", namespace)))
    conditions = [_condition(check, cond, cpath, namespace)
                  for cpath, cond in check.items(rule, "when", rpath)]
    return Rule(tuple(sources), tuple(operations), tuple(conditions))


def parse_authorization_policy(check: Checker, obj: Mapping[str, Any], namespace: str,
                               name: str) -> AuthorizationPolicy:
    spec = _spec(check, obj)
    path = ("spec",)
    check.known(spec, path, AUTHZ_SPEC)
    selector = workload_selector(check, spec)
    refs = target_refs(check, spec, namespace)
    action = check.enum(spec, "action", path, AUTHZ_ACTIONS, default="ALLOW")
    provider = check.get(spec, "provider", path, dict)
    if action == "CUSTOM" and not (provider or {}).get("name"):
        check.fail((*path, "provider"), "action CUSTOM needs a provider (provider.name)",
                   "add provider: {name: <extension provider>}")
    if provider is not None:
        if action != "CUSTOM":
            check.fail((*path, "provider"), f"provider is only allowed with action CUSTOM, "
                       f"not {action}", "remove provider or set action: CUSTOM")
        check.known(provider, (*path, "provider"), ("name",))
        check.get(provider, "name", (*path, "provider"), str, required=True,
                  hint="name the extension provider")
    rules = tuple(_rule(check, rule, rpath, namespace)
                  for rpath, rule in check.items(spec, "rules", path))
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    dry_run = str(annotations.get(DRY_RUN_ANNOTATION, "")).lower() in ("true", "1", "t")
    return AuthorizationPolicy(name=name, namespace=namespace, action=action, rules=rules,
                               selector=selector, target_refs=refs,
                               provider=(provider or {}).get("name"), dry_run=dry_run, raw=obj)


# --- RequestAuthentication ----------------------------------------------------------------------

def _jwks_uri(check: Checker, uri: str, field_path) -> None:
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        check.fail(field_path, f"{uri!r} is not an http(s) URL", "write an http:// or https:// URL")


def _inline_jwks(check: Checker, text: str, field_path) -> None:
    try:
        document = json.loads(text)
    except ValueError as exc:
        check.fail(field_path, f"is not JSON ({exc.msg} at line {exc.lineno})",
                   'paste the JWKS document, {"keys": [...]}')
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        check.fail(field_path, "is not a JWKS document", 'it must be {"keys": [...]}')


def _jwt_rule(check: Checker, rule: dict, jpath, source: str) -> JwtRule:
    check.known(rule, jpath, JWT_RULE)
    issuer = check.get(rule, "issuer", jpath, str, required=True,
                       hint="add the issuer (the token's iss claim)")
    if not issuer.strip():
        check.fail((*jpath, "issuer"), "issuer is empty", "add the issuer")
    audiences = check.strings(rule, "audiences", jpath, non_empty_values=True)
    uri = check.get(rule, "jwksUri", jpath, str)
    if uri:
        _jwks_uri(check, uri, (*jpath, "jwksUri"))
    jwks = check.get(rule, "jwks", jpath, str, hint="inline JWKS is a JSON string: use a | block")
    if jwks:
        _inline_jwks(check, jwks, (*jpath, "jwks"))
    locations = []
    for hpath, header in check.items(rule, "fromHeaders", jpath):
        check.known(header, hpath, JWT_HEADER)
        name = check.get(header, "name", hpath, str, required=True, hint="name the header")
        if not name:
            check.fail((*hpath, "name"), "header name is empty", "name the header")
        prefix = check.get(header, "prefix", hpath, str) or ""
        locations.append(TokenLocation("header", name.lower(), prefix))
    locations += [TokenLocation("param", p)
                  for p in check.strings(rule, "fromParams", jpath, non_empty_values=True)]
    locations += [TokenLocation("cookie", c)
                  for c in check.strings(rule, "fromCookies", jpath, non_empty_values=True)]
    if not locations:
        locations = [TokenLocation("header", *DEFAULT_TOKEN_HEADER),
                     TokenLocation("param", DEFAULT_TOKEN_PARAM)]
    forward = check.get(rule, "forwardOriginalToken", jpath, bool)
    payload_header = check.get(rule, "outputPayloadToHeader", jpath, str)
    claim_headers = []
    for opath, out in check.items(rule, "outputClaimToHeaders", jpath):
        check.known(out, opath, JWT_CLAIM_TO_HEADER)
        header = check.get(out, "header", opath, str, required=True, hint="name the header")
        claim = check.get(out, "claim", opath, str, required=True, hint="name the claim")
        if not header or not claim:
            check.fail(opath, "header and claim must not be empty", "name the header and the claim")
        claim_headers.append((header.lower(), claim))
    check.get(rule, "timeout", jpath, str, hint='write a duration string such as "5s"')
    return JwtRule(issuer=issuer, source=source, audiences=tuple(audiences), jwks=jwks or None,
                   jwks_uri=uri or None, locations=tuple(locations),
                   forward_original_token=bool(forward),
                   output_payload_to_header=payload_header.lower() if payload_header else None,
                   output_claim_to_headers=tuple(claim_headers))


def parse_request_authentication(check: Checker, obj: Mapping[str, Any], namespace: str,
                                 name: str) -> RequestAuthentication:
    spec = _spec(check, obj)
    check.known(spec, ("spec",), REQUEST_AUTHN_SPEC)
    selector = workload_selector(check, spec)
    refs = target_refs(check, spec, namespace)
    source = f"{namespace}/{name}"
    rules = tuple(_jwt_rule(check, rule, jpath, source)
                  for jpath, rule in check.items(spec, "jwtRules", ("spec",)))
    return RequestAuthentication(name, namespace, rules, selector, refs)


# --- PeerAuthentication -------------------------------------------------------------------------

def parse_peer_authentication(check: Checker, obj: Mapping[str, Any], namespace: str,
                              name: str) -> PeerAuthentication:
    spec = _spec(check, obj)
    path = ("spec",)
    check.known(spec, path, PEER_AUTHN_SPEC)
    selector = workload_selector(check, spec)
    mode = "UNSET"
    mtls = check.get(spec, "mtls", path, dict)
    if mtls is not None:
        check.known(mtls, (*path, "mtls"), MTLS)
        mode = check.enum(mtls, "mode", (*path, "mtls"), MTLS_MODES, default="UNSET")
    port_modes = {}
    port_level = check.get(spec, "portLevelMtls", path, dict)
    if port_level:
        if selector is None:
            check.fail((*path, "portLevelMtls"), "portLevelMtls needs a workload selector",
                       "add spec.selector.matchLabels or move the port rules to a "
                       "workload-specific policy")
        for port, setting in port_level.items():
            ppath = (*path, "portLevelMtls", str(port))
            text = str(port)
            if isinstance(port, bool) or not text.isdigit() or not 1 <= int(text) <= 65535:
                check.fail(ppath, f"{port!r} is not a port number", "use ports 1 to 65535")
            if not isinstance(setting, dict):
                check.fail(ppath, f"expected a mapping, got {describe(setting)}",
                           "write {mode: STRICT|PERMISSIVE|DISABLE}")
            check.known(setting, ppath, MTLS)
            port_modes[int(text)] = check.enum(setting, "mode", ppath, MTLS_MODES, default="UNSET")
    created = str((obj.get("metadata") or {}).get("creationTimestamp") or "")
    return PeerAuthentication(name, namespace, mode, port_modes, selector, created)


PARSERS = {
    "AuthorizationPolicy": parse_authorization_policy,
    "RequestAuthentication": parse_request_authentication,
    "PeerAuthentication": parse_peer_authentication,
}


def parse(kind: str, obj: Mapping[str, Any]):
    """The typed object of one security kind from a stored (or shipped) dict: metadata.name and
    metadata.namespace must be set; apiVersion is not looked at. ManifestError naming
    `Kind namespace/name` and the field when it is not valid."""
    check = Checker(None, None)
    check.kind = kind
    if not isinstance(obj, Mapping):
        check.fail((), f"expected a mapping, got {describe(obj)}", f"pass the {kind} object")
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    check.name = name if isinstance(name, str) else None
    check.namespace = namespace if isinstance(namespace, str) else None
    if not check.name or not check.namespace:
        check.fail(("metadata",), "metadata.name and metadata.namespace are required",
                   "name the object and its namespace")
    return PARSERS[kind](check, obj, namespace, name)
