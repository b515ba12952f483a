"""AuthorizationPolicy / PeerAuthentication / RequestAuthentication as the proxies receive them.

The translation itself lives in reference_impl.policy (pure); this module decides which policy
goes to which proxy, and turns a policy that cannot be compiled into a fail-closed deny for the
workloads it was meant for (logged with the reason, never silently dropped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from reference_impl.policy import authz_l4
from reference_impl.policy.errors import PolicyError

from .index import ROOT_NAMESPACE, meta, ns_name

log = logging.getLogger("controlplane.policies")

_reported: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class ZtunnelPolicy:
    key: str                      # namespace/name
    compiled: dict                # CompiledPolicy.to_dict(), what ztunnel enforces
    selector: dict | None
    error: str | None = None      # set when `compiled` is the fail-closed replacement
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = dict(self.compiled)
        if self.error:
            out["error"] = self.error
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _selector_labels(spec: dict) -> dict | None:
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        return None
    labels = selector.get("matchLabels")
    return dict(labels) if isinstance(labels, dict) else {}


def _fail_closed(policy: dict, reason: str) -> ZtunnelPolicy:
    namespace, name = ns_name(policy)
    spec = policy.get("spec") if isinstance(policy.get("spec"), dict) else {}
    selector = _selector_labels(spec)
    if selector:
        scope = "WORKLOAD_SELECTOR"
    elif namespace == ROOT_NAMESPACE:
        scope = "GLOBAL"
    else:
        scope = "NAMESPACE"
        selector = None
    # One DENY rule with no clauses matches every connection: deny-all for the policy's scope.
    compiled = authz_l4.CompiledPolicy(name, namespace, scope, "DENY",
                                       rules=[authz_l4.CompiledRule([])], selector=selector)
    return ZtunnelPolicy(f"{namespace}/{name}", compiled.to_dict(), selector, error=reason)


def ztunnel_policies(policies: list[dict]) -> list[ZtunnelPolicy]:
    """The L4 form of every AuthorizationPolicy ztunnel enforces (section 5 translation)."""
    out = []
    for policy in policies:
        namespace, name = ns_name(policy)
        try:
            translation = authz_l4.ztunnel_translation(policy, ROOT_NAMESPACE)
        except (PolicyError, ValueError, TypeError, KeyError) as exc:
            reason = f"AuthorizationPolicy {namespace}/{name} cannot be compiled ({exc}); " \
                     f"its workloads are denied all traffic until it is fixed"
            if _reported.get((namespace, name)) != reason:
                _reported[(namespace, name)] = reason
                log.error("%s", reason)
            out.append(_fail_closed(policy, reason))
            continue
        _reported.pop((namespace, name), None)
        if translation.policy is None:
            continue
        compiled = translation.policy
        out.append(ZtunnelPolicy(compiled.key, compiled.to_dict(), compiled.selector,
                                 warnings=tuple(translation.warnings)))
    return out


def slim(obj: dict) -> dict:
    """An object as shipped raw to proxies: identity, age and spec, without status noise."""
    m = meta(obj)
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "metadata": {"name": m.get("name"), "namespace": m.get("namespace"),
                         "creationTimestamp": m.get("creationTimestamp"),
                         "labels": m.get("labels") or {}, "annotations": m.get("annotations") or {}},
            "spec": obj.get("spec") or {}}
