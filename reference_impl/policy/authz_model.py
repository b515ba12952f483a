"""AuthorizationPolicy as typed, validated Python objects, plus where a policy applies.

Parsing is strict in the way Istio's validating webhook is: unknown fields, empty
`source`/`operation`, bad ports or IP blocks and unknown `when` keys are rejected with a
`PolicyError` naming the object and the field. Both the ztunnel translation (L4) and the
waypoint evaluator (L7) start from `parse_authorization_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import PolicyError, where
from .match import StringMatch, parse_cidr, parse_port

DEFAULT_ROOT_NAMESPACE = "istio-system"
ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
DRY_RUN_ANNOTATION = "istio.io/dry-run"

# `when` keys ztunnel can enforce (is: l4WhenAttributes); every other key makes a rule L7.
L4_WHEN_KEYS = frozenset({
    "source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"})
# Keys with a fixed name; request.headers[..] and request.auth.claims[..] are matched by prefix.
L7_WHEN_KEYS = frozenset({
    "remote.ip", "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
    "connection.sni"})
BRACKETED_WHEN_KEYS = ("request.headers[", "request.auth.claims[")

SOURCE_FIELDS = {  # spec field → (python field, value type)
    "principals": "str", "notPrincipals": "str",
    "requestPrincipals": "str", "notRequestPrincipals": "str",
    "namespaces": "str", "notNamespaces": "str",
    "ipBlocks": "cidr", "notIpBlocks": "cidr",
    "remoteIpBlocks": "cidr", "notRemoteIpBlocks": "cidr",
    "serviceAccounts": "sa", "notServiceAccounts": "sa",
    "trustDomains": "str", "notTrustDomains": "str",
}
OPERATION_FIELDS = {
    "hosts": "str", "notHosts": "str", "ports": "port", "notPorts": "port",
    "methods": "str", "notMethods": "str", "paths": "str", "notPaths": "str",
}
L7_SOURCE_FIELDS = ("requestPrincipals", "notRequestPrincipals", "remoteIpBlocks",
                    "notRemoteIpBlocks", "trustDomains", "notTrustDomains")
L7_OPERATION_FIELDS = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str


@dataclass(frozen=True)
class Source:
    """One `from[].source`: fields keyed by their spec names (`principals`, `notIpBlocks`, ...)."""

    values: Mapping[str, tuple]

    def get(self, spec_field: str) -> tuple:
        return self.values.get(spec_field, ())

    def l7_fields(self) -> list[str]:
        return [f for f in L7_SOURCE_FIELDS if self.get(f)]


@dataclass(frozen=True)
class Operation:
    """One `to[].operation`, keyed like Source."""

    values: Mapping[str, tuple]

    def get(self, spec_field: str) -> tuple:
        return self.values.get(spec_field, ())

    def l7_fields(self) -> list[str]:
        return [f for f in L7_OPERATION_FIELDS if self.get(f)]


@dataclass(frozen=True)
class Condition:
    """One `when` entry; values stay strings, each evaluator interprets them per key."""

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
        """Names of the L7-only attributes this rule uses (empty: ztunnel can enforce it all)."""
        found: list[str] = []
        for s in self.sources:
            found += s.l7_fields()
        for o in self.operations:
            found += o.l7_fields()
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
class Decision:
    allowed: bool
    reason: str
    policy: str | None = None   # `namespace/name` of the deciding policy, None when no policy decided


# --- parsing ----------------------------------------------------------------------------------

def _strings(value: Any, path: str, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{what}: {path} must be a list, got {type(value).__name__}")
    return value


def _parse_values(kind: str, raw: list, path: str, what: str, rule_namespace: str) -> tuple:
    out = []
    for i, v in enumerate(raw):
        item_path = f"{what}: {path}[{i}]"
        if kind == "port":
            out.append(parse_port(v, item_path))
            continue
        if not isinstance(v, str) or v == "":
            raise PolicyError(f"{item_path} must be a non-empty string, got {v!r}")
        if kind == "str":
            out.append(StringMatch.parse(v))
        elif kind == "cidr":
            out.append(parse_cidr(v, item_path))
        elif kind == "sa":
            ns, sep, sa = v.partition("/")
            out.append(ServiceAccount(ns, sa) if sep else ServiceAccount(rule_namespace, v))
    return tuple(out)


def _parse_fields(block: Any, allowed: dict[str, str], path: str, what: str,
                  rule_namespace: str) -> dict[str, tuple]:
    if not isinstance(block, dict) or not block:
        raise PolicyError(f"{what}: {path} must not be empty; give at least one of "
                          f"{', '.join(allowed)}")
    values: dict[str, tuple] = {}
    for name, raw in block.items():
        if name not in allowed:
            raise PolicyError(f"{what}: {path}.{name} is not a known field; "
                              f"use one of {', '.join(allowed)}")
        values[name] = _parse_values(allowed[name], _strings(raw, f"{path}.{name}", what),
                                     f"{path}.{name}", what, rule_namespace)
    return values


def _check_when_key(key: Any, path: str, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise PolicyError(f"{what}: {path}.key must be a non-empty string")
    if key in L4_WHEN_KEYS or key in L7_WHEN_KEYS:
        return key
    for prefix in BRACKETED_WHEN_KEYS:
        if key.startswith(prefix) and key.endswith("]") and len(key) > len(prefix) + 1:
            return key
    raise PolicyError(
        f"{what}: {path}.key {key!r} is not a supported condition key; use one of "
        f"{', '.join(sorted(L4_WHEN_KEYS | L7_WHEN_KEYS))}, request.headers[<name>], "
        "request.auth.claims[<claim>]")


def _parse_condition(raw: Any, path: str, what: str) -> Condition:
    if not isinstance(raw, dict):
        raise PolicyError(f"{what}: {path} must be a mapping with key and values/notValues")
    unknown = set(raw) - {"key", "values", "notValues"}
    if unknown:
        raise PolicyError(f"{what}: {path}.{sorted(unknown)[0]} is not a known field; "
                          "use key, values, notValues")
    key = _check_when_key(raw.get("key"), path, what)
    values = tuple(_strings(raw.get("values"), f"{path}.values", what))
    not_values = tuple(_strings(raw.get("notValues"), f"{path}.notValues", what))
    if not values and not not_values:
        raise PolicyError(f"{what}: {path} ({key}) needs values or notValues")
    for v in values + not_values:
        if not isinstance(v, str):
            raise PolicyError(f"{what}: {path} ({key}) values must be strings, got {v!r}")
    # Validate typed keys now so evaluation never meets a malformed value.
    for i, v in enumerate(values + not_values):
        if key in ("source.ip", "destination.ip", "remote.ip"):
            parse_cidr(v, f"{what}: {path} ({key}) value {i}")
        elif key == "destination.port":
            parse_port(v, f"{what}: {path} ({key}) value {i}")
    return Condition(key, values, not_values)


def _parse_rule(raw: Any, path: str, what: str, namespace: str) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{what}: {path} must be a mapping (from/to/when)")
    unknown = set(raw) - {"from", "to", "when"}
    if unknown:
        raise PolicyError(f"{what}: {path}.{sorted(unknown)[0]} is not a known field; "
                          "use from, to, when")
    sources, operations = [], []
    for i, f in enumerate(_strings(raw.get("from"), f"{path}.from", what)):
        p = f"{path}.from[{i}]"
        if not isinstance(f, dict) or set(f) != {"source"}:
            raise PolicyError(f"{what}: {p} must be a mapping with exactly one key, source")
        sources.append(Source(_parse_fields(f["source"], SOURCE_FIELDS, f"{p}.source", what,
                                            namespace)))
    for i, t in enumerate(_strings(raw.get("to"), f"{path}.to", what)):
        p = f"{path}.to[{i}]"
        if not isinstance(t, dict) or set(t) != {"operation"}:
            raise PolicyError(f"{what}: {p} must be a mapping with exactly one key, operation")
        operations.append(Operation(_parse_fields(t["operation"], OPERATION_FIELDS,
                                                  f"{p}.operation", what, namespace)))
    conditions = [_parse_condition(c, f"{path}.when[{i}]", what)
                  for i, c in enumerate(_strings(raw.get("when"), f"{path}.when", what))]
    return Rule(tuple(sources), tuple(operations), tuple(conditions))


def parse_match_labels(spec: Mapping[str, Any], what: str) -> dict[str, str] | None:
    """`spec.selector.matchLabels` (None when there is no selector at all)."""
    selector = spec.get("selector")
    if selector is None:
        return None
    if not isinstance(selector, dict):
        raise PolicyError(f"{what}: spec.selector must be a mapping with matchLabels")
    labels = selector.get("matchLabels") or {}
    if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise PolicyError(f"{what}: spec.selector.matchLabels must map label names to strings")
    return dict(labels)


def parse_target_refs(spec: Mapping[str, Any], what: str) -> tuple[dict[str, str], ...]:
    """`targetRef` and `targetRefs` together, each as {group, kind, name[, namespace]}."""
    refs = []
    if spec.get("targetRef") is not None:
        refs.append(spec["targetRef"])
    refs += _strings(spec.get("targetRefs"), "spec.targetRefs", what)
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict) or not ref.get("kind") or not ref.get("name"):
            raise PolicyError(f"{what}: spec.targetRefs[{i}] needs kind and name "
                              "(e.g. kind: Gateway, group: gateway.networking.k8s.io)")
    return tuple(dict(r) for r in refs)


def parse_authorization_policy(obj: Mapping[str, Any] | AuthorizationPolicy) -> AuthorizationPolicy:
    if isinstance(obj, AuthorizationPolicy):
        return obj
    if not isinstance(obj, dict):
        raise PolicyError(f"an AuthorizationPolicy must be a mapping, got {type(obj).__name__}")
    what = where(obj)
    meta = obj.get("metadata") or {}
    if not meta.get("name") or not meta.get("namespace"):
        raise PolicyError(f"{what}: metadata.name and metadata.namespace are required")
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise PolicyError(f"{what}: spec must be a mapping")
    action = spec.get("action") or "ALLOW"
    if action not in ACTIONS:
        raise PolicyError(f"{what}: spec.action {action!r} must be one of {', '.join(ACTIONS)}")
    selector = parse_match_labels(spec, what)
    target_refs = parse_target_refs(spec, what)
    if selector is not None and target_refs:
        raise PolicyError(f"{what}: spec.selector and spec.targetRefs cannot both be set; "
                          "keep one")
    provider = (spec.get("provider") or {}).get("name") if action == "CUSTOM" else None
    if action == "CUSTOM" and not provider:
        raise PolicyError(f"{what}: spec.provider.name is required when action is CUSTOM")
    rules = tuple(_parse_rule(r, f"spec.rules[{i}]", what, meta["namespace"])
                  for i, r in enumerate(_strings(spec.get("rules"), "spec.rules", what)))
    annotations = meta.get("annotations") or {}
    dry_run = str(annotations.get(DRY_RUN_ANNOTATION, "")).lower() in ("true", "1", "t")
    return AuthorizationPolicy(name=meta["name"], namespace=meta["namespace"], action=action,
                               rules=rules, selector=selector, target_refs=target_refs,
                               provider=provider, dry_run=dry_run, raw=obj)


# --- where a policy applies --------------------------------------------------------------------

def _namespace_and_spec(policy: Mapping[str, Any] | AuthorizationPolicy
                        ) -> tuple[str, dict[str, str] | None, bool]:
    if isinstance(policy, AuthorizationPolicy):
        return policy.namespace, policy.selector, bool(policy.target_refs)
    what = where(policy)
    spec = policy.get("spec") or {}
    namespace = (policy.get("metadata") or {}).get("namespace")
    return namespace, parse_match_labels(spec, what), bool(parse_target_refs(spec, what))


def applies_to(policy: Mapping[str, Any] | AuthorizationPolicy, workload_namespace: str,
               workload_labels: Mapping[str, str] | None,
               root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> bool:
    """Whether a selector-style policy (AuthorizationPolicy or RequestAuthentication) covers a workload.

    `selector` → workloads whose labels include matchLabels, in the policy's namespace (in the
    root namespace: in every namespace, as Istio documents). No selector → every workload of the
    namespace; no selector in the root namespace → the whole mesh. Policies with `targetRefs`
    bind to waypoints/gateways/services instead of workloads, so they never apply here.
    """
    namespace, selector, has_target_refs = _namespace_and_spec(policy)
    if has_target_refs:
        return False
    if namespace != root_namespace and namespace != workload_namespace:
        return False
    if selector is None:
        return True
    labels = workload_labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def target_refs(policy: Mapping[str, Any] | AuthorizationPolicy) -> tuple[dict[str, str], ...]:
    """The policy's targetRef/targetRefs, each with `namespace` filled in from the policy's own."""
    if isinstance(policy, AuthorizationPolicy):
        refs, namespace = policy.target_refs, policy.namespace
    else:
        refs = parse_target_refs(policy.get("spec") or {}, where(policy))
        namespace = (policy.get("metadata") or {}).get("namespace")
    return tuple({"group": r.get("group", ""), "kind": r["kind"], "name": r["name"],
                  "namespace": r.get("namespace") or namespace} for r in refs)
