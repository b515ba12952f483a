"""Who may get a certificate for which identity (ISTIO-SEMANTICS section 3).

A node proxy (ztunnel) gets certificates only for identities of workloads scheduled on its node;
a waypoint or a sidecar only for its own pod's service account. The proxy's hello names its pod: the pod must
exist in the store, be a ztunnel (or waypoint) pod on the node it claims, and, when the kubelet
recorded container pids, the peer process of the socket (SO_PEERCRED) must be that container's
process or one of its children.
"""

from __future__ import annotations

from reference_impl.identity.spiffe import Identity, IdentityError
from reference_impl.xds.server import CsrRefused, ProxyStream

from .index import (GATEWAY_NAME_LABEL, TRUST_DOMAIN, MeshIndex, labels_of, pod_identity,
                    pod_node, pod_terminating)

ZTUNNEL_IMAGE = "ambient-conformance/ztunnel"
WAYPOINT_IMAGE = "ambient-conformance/waypoint"
SIDECAR_IMAGE = "ambient-conformance/sidecar"
_PROXY_IMAGES = {"ztunnel": ZTUNNEL_IMAGE, "waypoint": WAYPOINT_IMAGE, "sidecar": SIDECAR_IMAGE}


def _images(pod: dict) -> list[str]:
    return [c.get("image") or "" for c in (pod.get("spec") or {}).get("containers") or ()]


def _container_pids(pod: dict) -> list[int]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    return [s["pid"] for s in statuses if isinstance(s.get("pid"), int) and s["pid"] > 0]


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def is_descendant(pid: int, ancestors: list[int], max_depth: int = 16) -> bool:
    current = pid
    for _ in range(max_depth):
        if current in ancestors:
            return True
        if current is None or current <= 1:
            return False
        current = _parent_pid(current)
    return False


def _caller_pod(index: MeshIndex, stream: ProxyStream) -> dict:
    hello = stream.hello
    pod = index.get("Pod", hello.namespace, hello.pod)
    who = f"{hello.proxy} pod {hello.namespace}/{hello.pod}"
    if pod is None:
        raise CsrRefused(f"{who} (node {hello.node}) does not exist in the cluster; refusing to sign")
    if pod_terminating(pod):
        raise CsrRefused(f"{who} is terminating; refusing to sign")
    if pod_node(pod) != hello.node:
        raise CsrRefused(f"{who} runs on node {pod_node(pod) or '(none)'}, not on node {hello.node} "
                         f"as its hello claims; refusing to sign")
    expected_image = _PROXY_IMAGES[hello.proxy]
    if not any(expected_image in image for image in _images(pod)):
        raise CsrRefused(f"{who} does not run the {expected_image} image; only node proxies and "
                         f"waypoints and sidecars may request certificates")
    pids = _container_pids(pod)
    if pids and stream.peer_pid is not None and not is_descendant(stream.peer_pid, pids):
        raise CsrRefused(f"the process on this connection (pid {stream.peer_pid}) is not {who} "
                         f"(container pids {pids}); refusing to sign")
    return pod


def identity_on_node(index: MeshIndex, identity: Identity, identity_uri: str, node: str) -> bool:
    """Some pod that is not terminating runs on `node` as `identity_uri` (the node authorizer's
    rule, shared by the config stream's CA and the gRPC CA)."""
    return any(pod_node(pod) == node and not pod_terminating(pod) and pod_identity(pod) == identity_uri
               for pod in index.pods_by_namespace.get(identity.namespace, ()))


def parse_mesh_identity(identity_uri: str) -> Identity:
    """The identity `identity_uri` names, if it is a SPIFFE identity of this mesh's trust domain;
    ValueError with the reason otherwise (each CA answers it in its own protocol's terms)."""
    try:
        identity = Identity.parse(identity_uri)
    except IdentityError as exc:
        raise ValueError(f"{identity_uri!r} is not a mesh identity: {exc}") from None
    if identity.trust_domain != TRUST_DOMAIN:
        raise ValueError(f"identity {identity_uri} is outside the mesh trust domain {TRUST_DOMAIN}")
    return identity


def authorize_csr(index: MeshIndex, stream: ProxyStream, identity_uri: str) -> Identity:
    """The Identity to sign for, or CsrRefused naming the identity and node."""
    hello = stream.hello
    try:
        identity = parse_mesh_identity(identity_uri)
    except ValueError as exc:
        raise CsrRefused(f"cannot sign: {exc}") from None
    if hello.proxy not in _PROXY_IMAGES:
        raise CsrRefused(f"a {hello.proxy!r} connection may not request certificates")
    caller = _caller_pod(index, stream)
    if hello.proxy == "waypoint":
        if pod_identity(caller) != identity_uri or GATEWAY_NAME_LABEL not in labels_of(caller):
            raise CsrRefused(f"waypoint pod {hello.namespace}/{hello.pod} may only get its own identity "
                             f"{pod_identity(caller)}, not {identity_uri}")
        return identity
    if hello.proxy == "sidecar":
        # An injected istio-proxy holds only its own pod's identity, as Istio's pilot-agent does.
        if pod_identity(caller) != identity_uri:
            raise CsrRefused(f"sidecar of pod {hello.namespace}/{hello.pod} may only get its own identity "
                             f"{pod_identity(caller)}, not {identity_uri}")
        return identity
    if identity_on_node(index, identity, identity_uri, hello.node):
        return identity
    raise CsrRefused(f"identity {identity_uri} belongs to no pod on node {hello.node}; "
                     f"ztunnel {hello.namespace}/{hello.pod} may only get identities of workloads "
                     f"scheduled on its node")

