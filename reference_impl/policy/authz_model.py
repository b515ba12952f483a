"""AuthorizationPolicy for the policy engine: the parsed model, where a policy applies, decisions.

The model and its validation are api.security's (the same parser `kubectl apply` goes through),
so the engine compiles exactly what the cluster accepted. Both the ztunnel translation (L4) and
the waypoint evaluator (L7) start from `parse_authorization_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..api.security import (  # noqa: F401  (the model, re-exported for the engine's users)
    L4_WHEN_KEYS, AuthorizationPolicy, Condition, Operation, Rule, ServiceAccount, Source)
from .errors import PolicyError, parsed  # noqa: F401  (PolicyError: callers import it here)

DEFAULT_ROOT_NAMESPACE = "istio-system"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    policy: str | None = None   # `namespace/name` of the deciding policy, None when no policy decided


def parse_authorization_policy(obj: Mapping[str, Any] | AuthorizationPolicy) -> AuthorizationPolicy:
    """The validated model of one AuthorizationPolicy dict; PolicyError naming object and field."""
    if isinstance(obj, AuthorizationPolicy):
        return obj
    return parsed("AuthorizationPolicy", obj)


# --- where a policy applies --------------------------------------------------------------------

def _selector_policy(policy: Mapping[str, Any] | AuthorizationPolicy):
    """The parsed AuthorizationPolicy or RequestAuthentication (by `kind`; default the former)."""
    if not isinstance(policy, Mapping):
        return policy  # already parsed
    if policy.get("kind") == "RequestAuthentication":
        return parsed("RequestAuthentication", policy)
    return parse_authorization_policy(policy)


def applies_to(policy: Mapping[str, Any] | AuthorizationPolicy, workload_namespace: str,
               workload_labels: Mapping[str, str] | None,
               root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> bool:
    """Whether a selector-style policy (AuthorizationPolicy or RequestAuthentication) covers a workload.

    `selector` → workloads whose labels include matchLabels, in the policy's namespace (in the
    root namespace: in every namespace, as Istio documents). No selector → every workload of the
    namespace; no selector in the root namespace → the whole mesh. Policies with `targetRefs`
    bind to waypoints/gateways/services instead of workloads, so they never apply here.
    """
    pol = _selector_policy(policy)
    if pol.target_refs:
        return False
    if pol.selector is not None:
        scope = "WORKLOAD_SELECTOR"
    else:
        scope = "GLOBAL" if pol.namespace == root_namespace else "NAMESPACE"
    return binds(scope, pol.namespace, pol.selector, workload_namespace, workload_labels, root_namespace)


def binds(scope: str, policy_namespace: str, selector: Mapping[str, str] | None,
          workload_namespace: str, workload_labels: Mapping[str, str] | None,
          root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> bool:
    """Whether a policy of this scope covers a workload: the one selector-binding rule, applied by
    the control plane (which sends ztunnel each workload's bound policies) and by the tests."""
    if scope == "GLOBAL":
        return True
    if policy_namespace != workload_namespace and not (
            scope == "WORKLOAD_SELECTOR" and policy_namespace == root_namespace):
        return False
    labels = workload_labels or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def target_refs(policy: Mapping[str, Any] | AuthorizationPolicy) -> tuple[dict[str, str], ...]:
    """The policy's targetRef/targetRefs, each with `namespace` filled in from the policy's own."""
    pol = _selector_policy(policy)
    refs, namespace = pol.target_refs, pol.namespace
    return tuple({"group": r.get("group", ""), "kind": r["kind"], "name": r["name"],
                  "namespace": r.get("namespace") or namespace} for r in refs)
