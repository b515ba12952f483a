"""AuthorizationPolicy at the node proxy (L4): the ztunnel wire shape, translation, evaluation.

Translation follows Istio's `convertAuthorizationPolicy`/`handleRule`
(is:pilot/pkg/serviceregistry/ambient/authorization.go); evaluation follows ztunnel's
`Authorization::matches` (zt:src/rbac.rs). The compiled form mirrors ztunnel's Authorization:
policy → rules (ORed) → clauses (ANDed) → matches (ORed) → fields (ANDed; values ORed).

Two details of that shape carry section 5's rules:
- an empty match (all fields empty) is skipped, so a clause made only of empty matches never
  matches: a DENY rule whose L7 parts were stripped to nothing can never fire;
- a rule with no clauses matches everything (`rules: [{}]`), a policy with no rules matches
  nothing (`spec: {}` is allow-nothing; an ALLOW whose rules were all dropped denies all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .authz_model import binds  # noqa: F401  (re-exported: the control plane binds with it)
from .authz_model import (
    DEFAULT_ROOT_NAMESPACE, AuthorizationPolicy, Condition, Decision, Rule, ServiceAccount,
    parse_authorization_policy)
from .errors import PolicyError
from .match import (
    IPAddress, IPNetwork, StringMatch, ip_in, parse_cidr, parse_ip, parse_port, PeerSource, positive_negative)

SCOPES = ("GLOBAL", "NAMESPACE", "WORKLOAD_SELECTOR")

_STRING_FIELDS = ("namespaces", "not_namespaces", "principals", "not_principals")
_SA_FIELDS = ("service_accounts", "not_service_accounts")
_IP_FIELDS = ("source_ips", "not_source_ips", "destination_ips", "not_destination_ips")
_PORT_FIELDS = ("destination_ports", "not_destination_ports")
MATCH_FIELDS = _STRING_FIELDS + _SA_FIELDS + _IP_FIELDS + _PORT_FIELDS


@dataclass(frozen=True)
class Connection(PeerSource):
    """What ztunnel knows about an inbound connection. `source_principal` is None for plaintext."""

    source_ip: IPAddress | None
    dest_ip: IPAddress | None
    dest_port: int
    source_principal: str | None = None
    source_namespace: str | None = None

    @classmethod
    def of(cls, conn: "Connection | Mapping[str, Any]") -> "Connection":
        if isinstance(conn, Connection):
            return conn
        return cls(source_ip=parse_ip(conn.get("source_ip")), dest_ip=parse_ip(conn.get("dest_ip")),
                   dest_port=int(conn.get("dest_port") or 0),
                   source_principal=conn.get("source_principal"),
                   source_namespace=conn.get("source_namespace"))


@dataclass
class Match:
    """ztunnel's RbacMatch: every non-empty field must match; within a field any value."""

    namespaces: list[StringMatch] = field(default_factory=list)
    not_namespaces: list[StringMatch] = field(default_factory=list)
    principals: list[StringMatch] = field(default_factory=list)
    not_principals: list[StringMatch] = field(default_factory=list)
    service_accounts: list[ServiceAccount] = field(default_factory=list)
    not_service_accounts: list[ServiceAccount] = field(default_factory=list)
    source_ips: list[IPNetwork] = field(default_factory=list)
    not_source_ips: list[IPNetwork] = field(default_factory=list)
    destination_ips: list[IPNetwork] = field(default_factory=list)
    not_destination_ips: list[IPNetwork] = field(default_factory=list)
    destination_ports: list[int] = field(default_factory=list)
    not_destination_ports: list[int] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not any(getattr(self, f) for f in MATCH_FIELDS)

    def matches(self, conn: Connection) -> bool:
        ident, principal, namespace = conn.identity, conn.principal, conn.namespace
        return (
            positive_negative(self.destination_ips, self.not_destination_ips,
                              lambda n: ip_in(n, conn.dest_ip))
            and positive_negative(self.source_ips, self.not_source_ips,
                                  lambda n: ip_in(n, conn.source_ip))
            and positive_negative(self.destination_ports, self.not_destination_ports,
                                  lambda p: p == conn.dest_port)
            and positive_negative(self.service_accounts, self.not_service_accounts,
                                  lambda sa: ident is not None and sa.namespace == ident.namespace
                                  and sa.name == ident.service_account)
            and positive_negative(self.principals, self.not_principals,
                                  lambda m: m.matches(principal))
            and positive_negative(self.namespaces, self.not_namespaces,
                                  lambda m: m.matches(namespace)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in MATCH_FIELDS:
            values = getattr(self, f)
            if not values:
                continue
            if f in _STRING_FIELDS:
                out[f] = [v.to_dict() for v in values]
            elif f in _SA_FIELDS:
                out[f] = [{"namespace": v.namespace, "service_account": v.name} for v in values]
            elif f in _IP_FIELDS:
                out[f] = [str(v) for v in values]
            else:
                out[f] = list(values)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> "Match":
        if not isinstance(data, Mapping):
            raise PolicyError(f"{path} must be a mapping of match fields")
        unknown = set(data) - set(MATCH_FIELDS)
        if unknown:
            raise PolicyError(f"{path}.{sorted(unknown)[0]} is not a match field; "
                              f"use {', '.join(MATCH_FIELDS)}")
        m = cls()
        for f, values in data.items():
            if not isinstance(values, list):
                raise PolicyError(f"{path}.{f} must be a list")
            if f in _STRING_FIELDS:
                parsed = [StringMatch.from_dict(v) for v in values]
            elif f in _SA_FIELDS:
                parsed = [ServiceAccount(v["namespace"], v["service_account"]) for v in values]
            elif f in _IP_FIELDS:
                parsed = [parse_cidr(v, f"{path}.{f}") for v in values]
            else:
                parsed = [parse_port(v, f"{path}.{f}") for v in values]
            setattr(m, f, parsed)
        return m


@dataclass
class Clause:
    matches: list[Match] = field(default_factory=list)

    def matches_conn(self, conn: Connection) -> bool:
        if not self.matches:
            return True
        return any(m.matches(conn) for m in self.matches if not m.is_empty())


@dataclass
class CompiledRule:
    clauses: list[Clause] = field(default_factory=list)

    def matches_conn(self, conn: Connection) -> bool:
        return all(c.matches_conn(conn) for c in self.clauses)


@dataclass
class CompiledPolicy:
    """ztunnel's Authorization, plus the selector so a proxy can tell which workloads it covers."""

    name: str
    namespace: str
    scope: str            # GLOBAL | NAMESPACE | WORKLOAD_SELECTOR
    action: str           # ALLOW | DENY
    rules: list[CompiledRule] = field(default_factory=list)
    selector: dict[str, str] | None = None
    dry_run: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def matches(self, conn: Connection | Mapping[str, Any]) -> bool:
        conn = Connection.of(conn)
        return any(r.matches_conn(conn) for r in self.rules)

    def applies_to(self, workload_namespace: str, workload_labels: Mapping[str, str] | None,
                   root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> bool:
        return binds(self.scope, self.namespace, self.selector, workload_namespace, workload_labels,
                     root_namespace)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "namespace": self.namespace, "scope": self.scope,
            "action": self.action,
            "rules": [{"clauses": [{"matches": [m.to_dict() for m in c.matches]}
                                   for c in r.clauses]} for r in self.rules],
            "dry_run": self.dry_run,
        }
        if self.selector is not None:
            out["selector"] = dict(self.selector)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CompiledPolicy":
        if not isinstance(data, Mapping):
            raise PolicyError(f"a compiled authorization must be a mapping, got {data!r}")
        what = f"authorization {data.get('namespace')}/{data.get('name')}"
        if data.get("scope") not in SCOPES or data.get("action") not in ("ALLOW", "DENY"):
            raise PolicyError(f"{what}: scope must be one of {', '.join(SCOPES)} and action "
                              "ALLOW or DENY")
        try:
            rules = [CompiledRule([Clause([Match.from_dict(m, f"{what}: rules[{i}].clauses[{j}]"
                                                           f".matches[{k}]")
                                           for k, m in enumerate(c.get("matches", []))])
                                   for j, c in enumerate(r.get("clauses", []))])
                     for i, r in enumerate(data.get("rules", []))]
        except (KeyError, TypeError, AttributeError) as exc:
            raise PolicyError(f"{what}: malformed rules ({exc})") from None
        return cls(name=data["name"], namespace=data["namespace"], scope=data["scope"],
                   action=data["action"], rules=rules, selector=data.get("selector"),
                   dry_run=bool(data.get("dry_run", False)))


@dataclass(frozen=True)
class Translation:
    """The result of translating one AuthorizationPolicy for ztunnel.

    `policy` is None when ztunnel ignores the object (`ignored` says why); `warnings` are
    the status messages Istio would write (L7 attributes dropped or stripped).
    """

    policy: CompiledPolicy | None
    warnings: tuple[str, ...] = ()
    ignored: str | None = None


# --- translation -------------------------------------------------------------------------------

def _when_match(cond: Condition) -> Match:
    """A `when` condition as one match; non-L4 keys give an empty match (never matches)."""
    m = Match()
    if not cond.is_l4:
        return m
    for values, negate in ((cond.values, False), (cond.not_values, True)):
        prefix = "not_" if negate else ""
        if cond.key == "source.namespace":
            setattr(m, prefix + "namespaces", [StringMatch.parse(v) for v in values])
        elif cond.key == "source.principal":
            setattr(m, prefix + "principals", [StringMatch.parse(v) for v in values])
        elif cond.key == "source.ip":
            setattr(m, prefix + "source_ips", [parse_cidr(v, cond.key) for v in values])
        elif cond.key == "destination.ip":
            setattr(m, prefix + "destination_ips", [parse_cidr(v, cond.key) for v in values])
        elif cond.key == "destination.port":
            setattr(m, prefix + "destination_ports", [parse_port(v, cond.key) for v in values])
    return m


def _patterns(values: tuple[str, ...]) -> list[StringMatch]:
    return [StringMatch.parse(v) for v in values]


def _compile_rule(rule: Rule) -> CompiledRule:
    clauses: list[Clause] = []
    if rule.operations:
        clauses.append(Clause([Match(destination_ports=list(op.get("ports")),
                                     not_destination_ports=list(op.get("notPorts")))
                               for op in rule.operations]))
    if rule.sources:
        clauses.append(Clause([Match(
            source_ips=list(s.get("ipBlocks")), not_source_ips=list(s.get("notIpBlocks")),
            namespaces=_patterns(s.get("namespaces")),
            not_namespaces=_patterns(s.get("notNamespaces")),
            service_accounts=list(s.get("serviceAccounts")),
            not_service_accounts=list(s.get("notServiceAccounts")),
            principals=_patterns(s.get("principals")),
            not_principals=_patterns(s.get("notPrincipals")),
        ) for s in rule.sources]))
    clauses += [Clause([_when_match(c)]) for c in rule.conditions]
    return CompiledRule(clauses)


def _can_fire(rule: CompiledRule) -> bool:
    return all(not c.matches or any(not m.is_empty() for m in c.matches) for c in rule.clauses)


def ztunnel_translation(policy: Mapping[str, Any] | AuthorizationPolicy,
                        root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> Translation:
    """Translate an AuthorizationPolicy into what ztunnel enforces (ISTIO-SEMANTICS section 5).

    Ignored (policy None): `targetRef(s)` policies (they are for waypoints), `CUSTOM` and
    `AUDIT` actions (ztunnel has no ext-authz or audit log: Istio leaves them out of ztunnel's
    config and writes an "unsupported" status), and dry-run policies.
    ALLOW rules that use any L7 attribute are dropped whole; DENY rules keep only their L4 parts.
    """
    pol = parse_authorization_policy(policy)
    if pol.target_refs:
        return Translation(None, ignored="targetRefs policies are enforced by waypoints, "
                                         "not ztunnel")
    if pol.action not in ("ALLOW", "DENY"):
        return Translation(None, ignored=f"ztunnel does not support the {pol.action} action")
    if pol.dry_run:
        return Translation(None, ignored="ztunnel does not support dry-run policies")
    if pol.selector is not None:
        scope = "WORKLOAD_SELECTOR"
    elif pol.namespace == root_namespace:
        scope = "GLOBAL"
    else:
        scope = "NAMESPACE"
    compiled = CompiledPolicy(pol.name, pol.namespace, scope, pol.action,
                              selector=pol.selector)
    l7_found: set[str] = set()
    for rule in pol.rules:
        l7 = rule.l7_attributes()
        l7_found.update(l7)
        if pol.action == "ALLOW" and l7:
            continue
        compiled.rules.append(_compile_rule(rule))
    warnings: tuple[str, ...] = ()
    if l7_found:
        if pol.action == "ALLOW":
            effect = ("Within an ALLOW policy, rules matching HTTP attributes are omitted. "
                      "This will be more restrictive than requested.")
        elif not any(_can_fire(r) for r in compiled.rules):
            effect = ("After omitting unsupported HTTP attributes, this DENY policy has no "
                      "enforceable rules at ztunnel and will have no effect. Deploy a waypoint "
                      "proxy and use a targetRef to enforce this policy.")
        else:
            effect = ("DENY policy with HTTP attributes is enforced without the HTTP rules. "
                      "This will be more restrictive than requested.")
        warnings = (f"ztunnel does not support HTTP attributes (found: "
                    f"{', '.join(sorted(l7_found))}). In ambient mode you must use a waypoint "
                    f"proxy to enforce HTTP rules. {effect}",)
    return Translation(compiled, warnings)


def translate_for_ztunnel(policy: Mapping[str, Any] | AuthorizationPolicy,
                          root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> CompiledPolicy | None:
    """The compiled policy ztunnel enforces, or None when ztunnel ignores it (see ztunnel_translation)."""
    return ztunnel_translation(policy, root_namespace).policy


# --- evaluation --------------------------------------------------------------------------------

def _compiled(policies: Iterable[Any], root_namespace: str) -> list[CompiledPolicy]:
    out = []
    for p in policies:
        if isinstance(p, CompiledPolicy):
            out.append(p)
        elif isinstance(p, Mapping) and "scope" in p and "rules" in p and "spec" not in p:
            out.append(CompiledPolicy.from_dict(p))
        else:
            compiled = translate_for_ztunnel(p, root_namespace)
            if compiled is not None:
                out.append(compiled)
    return [p for p in out if not p.dry_run]


def select_policies(policies: Iterable[Any], workload_namespace: str,
                    workload_labels: Mapping[str, str] | None,
                    root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> list[CompiledPolicy]:
    """The compiled policies (from objects, compiled forms or their dicts) covering one workload."""
    return [p for p in _compiled(policies, root_namespace)
            if p.applies_to(workload_namespace, workload_labels, root_namespace)]


def evaluate_l4(policies: Iterable[Any], conn: Connection | Mapping[str, Any],
                root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> Decision:
    """Decide a connection against the policies that apply to its destination workload.

    `policies` may be AuthorizationPolicy dicts, CompiledPolicy objects or their to_dict()
    form; the caller selects the ones covering the destination (see `select_policies`).
    Any DENY matches → deny; no ALLOW policy → allow; any ALLOW matches → allow; else deny.
    """
    conn = Connection.of(conn)
    compiled = _compiled(policies, root_namespace)
    for p in compiled:
        if p.action == "DENY" and p.matches(conn):
            return Decision(False, f"denied by DENY policy {p.key}", p.key)
    allows = [p for p in compiled if p.action == "ALLOW"]
    if not allows:
        return Decision(True, "allowed: no ALLOW policy applies")
    for p in allows:
        if p.matches(conn):
            return Decision(True, f"allowed by ALLOW policy {p.key}", p.key)
    return Decision(False, "denied: no ALLOW policy matched "
                           f"({', '.join(p.key for p in allows)})")
