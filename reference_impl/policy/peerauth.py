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

from ..api.security import PeerAuthentication
from .authz_l4 import Clause, CompiledPolicy, CompiledRule, Match
from .authz_model import DEFAULT_ROOT_NAMESPACE
from .errors import parsed
from .match import StringMatch

# Istio names its converted policies with `_`, which Kubernetes names cannot contain.
STRICT_POLICY_PREFIX = "istio_converted_peer_authentication_"

PeerAuthentications = Iterable[Mapping[str, Any] | PeerAuthentication]


@dataclass(frozen=True)
class EffectiveMode:
    mode: str             # STRICT | PERMISSIVE (DISABLE and "no policy" fold into PERMISSIVE)
    source: str | None    # `namespace/name` of the policy that set it, None when none did
    level: str            # default | mesh | namespace | workload | port


def _parsed(peer_authentications: PeerAuthentications) -> list[PeerAuthentication]:
    return [pa if isinstance(pa, PeerAuthentication) else parsed("PeerAuthentication", pa)
            for pa in peer_authentications]


def _oldest(objs: list[PeerAuthentication]) -> PeerAuthentication | None:
    # RFC 3339 timestamps in UTC sort as strings; the name breaks ties deterministically.
    return min(objs, key=lambda pa: (pa.created, pa.name)) if objs else None


def _select(peer_authentications: list[PeerAuthentication], workload_namespace: str,
            workload_labels: Mapping[str, str] | None, root_namespace: str
            ) -> list[tuple[str, PeerAuthentication | None]]:
    """The governing policy at each level (mesh, namespace, workload); None where there is none."""
    mesh, namespace, workload = [], [], []
    labels = workload_labels or {}
    for pa in peer_authentications:
        if not pa.selector:
            if pa.namespace == root_namespace:
                mesh.append(pa)
            elif pa.namespace == workload_namespace:
                namespace.append(pa)
        elif pa.namespace == workload_namespace and pa.namespace != root_namespace and all(
                labels.get(k) == v for k, v in pa.selector.items()):
            workload.append(pa)
    return [("mesh", _oldest(mesh)), ("namespace", _oldest(namespace)),
            ("workload", _oldest(workload))]


def _effective(peer_authentications: list[PeerAuthentication], workload_namespace: str,
               workload_labels: Mapping[str, str] | None, port: int | None,
               root_namespace: str) -> EffectiveMode:
    result = EffectiveMode("PERMISSIVE", None, "default")
    for level, chosen in _select(peer_authentications, workload_namespace, workload_labels,
                                 root_namespace):
        if chosen is None:
            continue
        if chosen.mode != "UNSET":
            result = EffectiveMode("STRICT" if chosen.mode == "STRICT" else "PERMISSIVE",
                                   chosen.key, level)
        if level != "workload":
            continue
        port_mode = chosen.port_modes.get(port, "UNSET") if port is not None else "UNSET"
        if port_mode != "UNSET":
            result = EffectiveMode("STRICT" if port_mode == "STRICT" else "PERMISSIVE",
                                   chosen.key, "port")
    return result


def effective_mtls_mode(peer_authentications: PeerAuthentications,
                        workload_namespace: str, workload_labels: Mapping[str, str] | None,
                        port: int | None, root_namespace: str = DEFAULT_ROOT_NAMESPACE
                        ) -> EffectiveMode:
    """The mode governing plaintext to `port` (None: the workload's default, ignoring portLevelMtls)."""
    return _effective(_parsed(peer_authentications), workload_namespace, workload_labels, port,
                      root_namespace)


def plaintext_allowed(peer_authentications: PeerAuthentications, workload_namespace: str,
                      workload_labels: Mapping[str, str] | None, port: int,
                      root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> bool:
    """True unless the effective mode for this workload's port is STRICT."""
    return effective_mtls_mode(peer_authentications, workload_namespace, workload_labels, port,
                               root_namespace).mode != "STRICT"


def translate_peer_authentication_for_ztunnel(
        peer_authentications: PeerAuthentications, workload_namespace: str,
        workload_name: str, workload_labels: Mapping[str, str] | None,
        root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> CompiledPolicy | None:
    """The workload's effective PeerAuthentication as a ztunnel DENY policy, as Istio ships it.

    STRICT is "deny any connection without a peer principal" (`not_principals: [presence]`),
    limited to the ports that are STRICT. None when plaintext is allowed on every port. The
    policy is named after the workload and carries its labels as selector; since another
    workload with more labels could match that selector, evaluate it for this workload only
    (pass it to evaluate_l4 next to the workload's AuthorizationPolicies).
    """
    args = (_parsed(peer_authentications), workload_namespace, workload_labels)
    default = _effective(*args, None, root_namespace).mode
    workload_pa = _select(*args, root_namespace)[2][1]
    exceptions = sorted(
        p for p in (workload_pa.port_modes if workload_pa else {})
        if _effective(*args, p, root_namespace).mode != default)
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
