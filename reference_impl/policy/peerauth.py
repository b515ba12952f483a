"""PeerAuthentication in ambient: may plaintext reach a captured workload's port?

HBONE is always mutual TLS, so PeerAuthentication only decides plaintext arriving on 15006
(ISTIO-SEMANTICS section 6; is:pilot/pkg/serviceregistry/ambient/authorization.go,
`convertedSelectorPeerAuthentications`). Precedence: mesh (root namespace, no selector) →
namespace (no selector) → workload (selector, not in the root namespace) → the workload
policy's `portLevelMtls` entry for the port. `UNSET` (or no `mtls`) inherits; `DISABLE` counts
as `PERMISSIVE`; no policy at all allows plaintext. When several policies compete at one level
the oldest (`metadata.creationTimestamp`) wins, as in Istio.

Known Istio quirks deliberately NOT reproduced (they read as bugs and contradict section 6):
a port-level `DISABLE` under an UNSET workload mode with a STRICT parent stays STRICT in
Istio, and a PERMISSIVE workload's STRICT port is skipped when only the mesh policy is STRICT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .authz_l4 import Clause, CompiledPolicy, CompiledRule, Match
from .authz_model import DEFAULT_ROOT_NAMESPACE, parse_match_labels
from .errors import PolicyError, where
from .match import StringMatch, parse_port

MODES = ("UNSET", "STRICT", "PERMISSIVE", "DISABLE")
# Istio names its converted policies with `_`, which Kubernetes names cannot contain.
STRICT_POLICY_PREFIX = "istio_converted_peer_authentication_"


@dataclass(frozen=True)
class EffectiveMode:
    mode: str             # STRICT | PERMISSIVE (DISABLE and "no policy" fold into PERMISSIVE)
    source: str | None    # `namespace/name` of the policy that set it, None when none did
    level: str            # default | mesh | namespace | workload | port


def _mode(block: Any, what: str, path: str) -> str:
    if block is None:
        return "UNSET"
    if not isinstance(block, Mapping):
        raise PolicyError(f"{what}: {path} must be a mapping with a mode")
    mode = block.get("mode") or "UNSET"
    if mode not in MODES:
        raise PolicyError(f"{what}: {path}.mode {mode!r} must be one of {', '.join(MODES)}")
    return mode


def _age_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    # RFC 3339 timestamps in UTC sort as strings; the name breaks ties deterministically.
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def _oldest(objs: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return min(objs, key=_age_key) if objs else None


def _select(peer_authentications: Iterable[Mapping[str, Any]], workload_namespace: str,
            workload_labels: Mapping[str, str] | None, root_namespace: str
            ) -> list[tuple[str, Mapping[str, Any] | None]]:
    """The governing policy at each level (mesh, namespace, workload); None where there is none."""
    mesh, namespace, workload = [], [], []
    labels = workload_labels or {}
    for pa in peer_authentications:
        what = where(pa)
        spec = pa.get("spec") or {}
        if not isinstance(spec, Mapping):
            raise PolicyError(f"{what}: spec must be a mapping")
        ns = (pa.get("metadata") or {}).get("namespace")
        selector = parse_match_labels(spec, what)
        if not selector:
            if ns == root_namespace:
                mesh.append(pa)
            elif ns == workload_namespace:
                namespace.append(pa)
        elif ns == workload_namespace and ns != root_namespace and all(
                labels.get(k) == v for k, v in selector.items()):
            workload.append(pa)
    return [("mesh", _oldest(mesh)), ("namespace", _oldest(namespace)),
            ("workload", _oldest(workload))]


def _port_modes(pa: Mapping[str, Any]) -> dict[int, str]:
    port_level = (pa.get("spec") or {}).get("portLevelMtls") or {}
    if not isinstance(port_level, Mapping):
        raise PolicyError(f"{where(pa)}: spec.portLevelMtls must map port numbers to {{mode: ...}}")
    return {parse_port(raw, f"{where(pa)}: spec.portLevelMtls[{raw}]"):
            _mode(block, where(pa), f"spec.portLevelMtls[{raw}]")
            for raw, block in port_level.items()}


def effective_mtls_mode(peer_authentications: Iterable[Mapping[str, Any]],
                        workload_namespace: str, workload_labels: Mapping[str, str] | None,
                        port: int | None, root_namespace: str = DEFAULT_ROOT_NAMESPACE
                        ) -> EffectiveMode:
    """The mode governing plaintext to `port` (None: the workload's default, ignoring portLevelMtls)."""
    result = EffectiveMode("PERMISSIVE", None, "default")

    def key(obj: Mapping[str, Any]) -> str:
        meta = obj.get("metadata") or {}
        return f"{meta.get('namespace')}/{meta.get('name')}"

    for level, chosen in _select(peer_authentications, workload_namespace, workload_labels,
                                 root_namespace):
        if chosen is None:
            continue
        spec = chosen.get("spec") or {}
        mode = _mode(spec.get("mtls"), where(chosen), "spec.mtls")
        if mode != "UNSET":
            result = EffectiveMode("STRICT" if mode == "STRICT" else "PERMISSIVE", key(chosen),
                                   level)
        if level != "workload":
            continue
        port_mode = _port_modes(chosen).get(port, "UNSET") if port is not None else "UNSET"
        if port_mode != "UNSET":
            result = EffectiveMode("STRICT" if port_mode == "STRICT" else "PERMISSIVE",
                                   key(chosen), "port")
    return result


def plaintext_allowed(peer_authentications: Iterable[Mapping[str, Any]], workload_namespace: str,
                      workload_labels: Mapping[str, str] | None, port: int,
                      root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> bool:
    """True unless the effective mode for this workload's port is STRICT."""
    return effective_mtls_mode(peer_authentications, workload_namespace, workload_labels, port,
                               root_namespace).mode != "STRICT"


def translate_peer_authentication_for_ztunnel(
        peer_authentications: Iterable[Mapping[str, Any]], workload_namespace: str,
        workload_name: str, workload_labels: Mapping[str, str] | None,
        root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> CompiledPolicy | None:
    """The workload's effective PeerAuthentication as a ztunnel DENY policy, as Istio ships it.

    STRICT is "deny any connection without a peer principal" (`not_principals: [presence]`),
    limited to the ports that are STRICT. None when plaintext is allowed on every port. The
    policy is named after the workload and carries its labels as selector; since another
    workload with more labels could match that selector, evaluate it for this workload only
    (pass it to evaluate_l4 next to the workload's AuthorizationPolicies).
    """
    peer_authentications = list(peer_authentications)
    args = (peer_authentications, workload_namespace, workload_labels)
    default = effective_mtls_mode(*args, None, root_namespace).mode
    workload_pa = _select(*args, root_namespace)[2][1]
    exceptions = sorted(
        p for p in (_port_modes(workload_pa) if workload_pa else {})
        if effective_mtls_mode(*args, p, root_namespace).mode != default)
    no_identity = StringMatch("presence")
    if default == "STRICT":
        match = Match(not_principals=[no_identity], not_destination_ports=exceptions)
    elif exceptions:
        match = Match(not_principals=[no_identity], destination_ports=exceptions)
    else:
        return None
    return CompiledPolicy(
        name=f"{STRICT_POLICY_PREFIX}{workload_name}", namespace=workload_namespace,
        scope="WORKLOAD_SELECTOR", action="DENY",
        rules=[CompiledRule([Clause([match])])], selector=dict(workload_labels or {}))
