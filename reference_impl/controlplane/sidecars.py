"""What istiod sends one sidecar (istio-proxy): its own workload, the mesh's workloads and
services, and the selector policies covering its pod (ISTIO-SEMANTICS section 10).

A sidecar enforces AuthorizationPolicy (L4 and L7), RequestAuthentication and PeerAuthentication
itself, so the raw objects that select its pod travel with the snapshot; policies with
`targetRefs` are for waypoints and never apply to a sidecar.
"""

from __future__ import annotations

from reference_impl.policy import PolicyError
from reference_impl.policy.authz_model import applies_to
from reference_impl.xds import BoundPolicy, KubeObject, SidecarSnapshot

from .derive import Mesh, mesh_config
from .index import ROOT_NAMESPACE, workload_uid
from .policies import slim


def _covers(policy: dict, namespace: str, labels: dict) -> bool:
    try:
        return applies_to(policy, namespace, labels, ROOT_NAMESPACE)
    except PolicyError:
        # A policy that does not parse still names its scope; the sidecar fails it closed.
        return (policy.get("metadata") or {}).get("namespace") in (namespace, ROOT_NAMESPACE)


def sidecar_config(mesh: Mesh, namespace: str, pod_name: str) -> dict:
    pod = mesh.index.get("Pod", namespace, pod_name)
    uid = workload_uid(pod) if pod is not None else None
    workload = mesh.workloads.get(uid) if uid else None
    labels = workload.labels if workload is not None else {}
    bound = {"AuthorizationPolicy": [], "RequestAuthentication": []}
    if workload is not None:
        for kind, out in bound.items():
            for policy in mesh.index.kind(kind):
                if _covers(policy, namespace, labels):
                    out.append(BoundPolicy(**slim(policy), appliesToWorkloads=None))
    return SidecarSnapshot(
        mesh_config=mesh_config(mesh.trust_bundle),
        workload=uid if workload is not None else None,
        workloads=sorted(mesh.workloads.values(), key=lambda w: w.uid),
        services=sorted(mesh.services.values(), key=lambda s: (s.namespace, s.hostname)),
        authorization_policies=bound["AuthorizationPolicy"],
        request_authentications=bound["RequestAuthentication"],
        peer_authentications=[KubeObject.model_validate(slim(pa))
                              for pa in mesh.index.kind("PeerAuthentication")],
        jwks_by_uri={},
    ).to_dict()
