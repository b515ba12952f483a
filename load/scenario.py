"""What the load runs on: the namespaces, workloads and paths, as plain Kubernetes objects.

Every path goes from node A to node B, to the same small echo server code answering
`GET /bytes/<payload>` (load/echo.py), through a Service VIP as users call it:

| path | client pod (node A) | server (node B) | proxies on the way |
|---|---|---|---|
| direct | load-direct/client | load-direct/server | none (neither pod captured) |
| baseline | load-direct/baseline | load-direct/server | none: a second uncaptured client on the same node pair; its distance from `direct` is the noise floor |
| ambient-l4 | load-ambient/client | load-ambient/server | client ztunnel → HBONE → server ztunnel |
| ambient-l7 | load-ambient/client | load-waypoint/server | ztunnel → waypoint → ztunnel (Gateway class istio-waypoint, namespace label istio.io/use-waypoint) |
| ambient-l7-envoy | load-ambient/client | load-waypoint-envoy/server | ztunnel → the Envoy waypoint → ztunnel (the same Gateway, annotated to ask for the Envoy implementation), where the target offers that choice (the reference) |
| sidecar | load-sidecar/client | load-sidecar-server/server | client sidecar → HBONE (mTLS, both identities) → server sidecar; both namespaces `istio-injection=enabled`, when the target supports SIDECAR-INTEROP |
| envoy-hbone | load-direct/client | load-direct/server | a real Envoy pair: TCP → HTTP/2 CONNECT over mTLS 1.3 → TCP (load/envoy_peer.py) |
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from load import envoy_peer

DIRECT, AMBIENT, WAYPOINT_NS = "load-direct", "load-ambient", "load-waypoint"
ENVOY_WAYPOINT_NS = "load-waypoint-envoy"
SIDECAR_CLIENT, SIDECAR_SERVER = "load-sidecar", "load-sidecar-server"
NAMESPACES = (DIRECT, AMBIENT, WAYPOINT_NS, ENVOY_WAYPOINT_NS, SIDECAR_CLIENT, SIDECAR_SERVER)
#: the waypoint implementation the ambient-l7-envoy path asks its Gateway for (issue 16)
ENVOY_WAYPOINT = "envoy"
#: the namespaces that only the sidecar path needs (made only when the target has sidecars)
SIDECAR_NAMESPACES = (SIDECAR_CLIENT, SIDECAR_SERVER)
INJECTION = {"istio-injection": "enabled"}
SIDECAR_CONTAINER = "istio-proxy"
WAYPOINT = "waypoint"
APP_PORT = 8080
PYTHON_IMAGE = "docker.io/library/python:3.11.14-slim-bookworm"  # as conformance.workloads (pinned, multi-arch)
ECHO_SOURCE = (Path(__file__).resolve().parent / "echo.py").read_text()
LOCUSTFILE = "locustfile.py"
LOCUSTFILE_SOURCE = (Path(__file__).resolve().parent / LOCUSTFILE).read_text()
SIDECAR_PROFILE = "SIDECAR-INTEROP"


@dataclass(frozen=True)
class LoadPath:
    name: str
    client: tuple[str, str]          # (namespace, app label) of the client pod
    server: tuple[str, str]          # (namespace, Service) it calls
    hops: int                        # proxies on the way (each one a hop)
    description: str
    proxies: tuple[str, ...] = ()    # roles whose cost is this path's: ztunnel, waypoint, envoy-waypoint, envoy
    local_port: int | None = None    # the client calls 127.0.0.1:<port> in its own pod (the peer)
    unavailable: str = ""            # why this path cannot run on the target, if it cannot


PATHS = (
    LoadPath("direct", (DIRECT, "client"), (DIRECT, "server"), 0, "direct: neither pod captured"),
    LoadPath("baseline", (DIRECT, "baseline"), (DIRECT, "server"), 0,
          "baseline: another uncaptured client, same node pair (noise floor)"),
    LoadPath("ambient-l4", (AMBIENT, "client"), (AMBIENT, "server"), 2, "ambient L4: ztunnel → ztunnel",
          ("ztunnel",)),
    LoadPath("ambient-l7", (AMBIENT, "client"), (WAYPOINT_NS, "server"), 3,
          "ambient L7: ztunnel → waypoint → ztunnel", ("ztunnel", "waypoint")),
    LoadPath("ambient-l7-envoy", (AMBIENT, "client"), (ENVOY_WAYPOINT_NS, "server"), 3,
          "ambient L7: ztunnel → Envoy waypoint → ztunnel", ("ztunnel", "envoy-waypoint")),
    LoadPath("sidecar", (SIDECAR_CLIENT, "client"), (SIDECAR_SERVER, "server"), 2,
          "sidecar → sidecar (HBONE, mutual TLS)", ("sidecar",)),
    LoadPath("envoy-hbone", (DIRECT, "client"), (DIRECT, "server"), 2,
          "peer: Envoy → HBONE → Envoy", ("envoy",), local_port=envoy_peer.CLIENT_PORT),
)


def sidecar_missing(target) -> str:
    """Why `target` cannot run the sidecar path ("" when it can): it must support SIDECAR-INTEROP."""
    from conformance import features
    wanted = {f.name for f in features.features_in(SIDECAR_PROFILE)}
    missing = sorted(wanted - set(target.supported_features()))
    if not wanted:
        return f"not available: the suite has no {SIDECAR_PROFILE} profile"
    return (f"not available: the {target.name} target does not support the {SIDECAR_PROFILE} profile "
            f"({len(missing)} of its {len(wanted)} features missing, e.g. {missing[0]})") if missing else ""


def envoy_waypoint_missing(target) -> str:
    """Why `target` cannot run the ambient-l7-envoy path ("" when it can)."""
    if ENVOY_WAYPOINT in target.waypoint_choices():
        return ""
    return (f"not available: the {target.name} target offers no choice of waypoint implementation "
            "(its mesh's own waypoint is the ambient-l7 path)")


def _unavailable(target) -> dict[str, str]:
    """path name -> why it cannot run on `target`, for the paths that cannot."""
    why = {"sidecar": sidecar_missing(target), "ambient-l7-envoy": envoy_waypoint_missing(target)}
    return {name: reason for name, reason in why.items() if reason}


def paths_for(target) -> list[LoadPath]:
    """The paths, those the target cannot run marked unavailable with the reason."""
    why = _unavailable(target)
    return [LoadPath(**{**p.__dict__, "unavailable": why[p.name]}) if p.name in why else p for p in PATHS]


def namespaces_for(target) -> tuple[str, ...]:
    """The load's namespaces on `target`: those of unavailable paths left out."""
    why = _unavailable(target)
    skipped = (SIDECAR_NAMESPACES if "sidecar" in why else ()) + \
        ((ENVOY_WAYPOINT_NS,) if "ambient-l7-envoy" in why else ())
    return tuple(ns for ns in NAMESPACES if ns not in skipped)


def server_namespaces(namespaces: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `namespaces` with a `server` Service and Deployment (all but the sidecar client's)."""
    return tuple(ns for ns in namespaces if ns != SIDECAR_CLIENT)


def l7(path: LoadPath) -> bool:
    """An HTTP proxy on the way (a waypoint, Envoy's too, or a sidecar) adds x-request-id, so the
    echo sees one."""
    return bool({"waypoint", "envoy-waypoint", "sidecar"} & set(path.proxies))


def _namespace(name: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _placement(node: str) -> dict:
    return {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 0}


def _deployment(ns: str, name: str, spec: dict) -> list[dict]:
    labels = {"app": name}
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels},
                                   "spec": {"serviceAccountName": name, **spec}}}}]


def echo_container() -> dict:
    return {"name": "echo", "image": PYTHON_IMAGE, "command": ["python3", "-c", ECHO_SOURCE, str(APP_PORT)],
            "ports": [{"containerPort": APP_PORT}]}


def spiffe(ns: str, sa: str) -> str:
    return f"spiffe://cluster.local/ns/{ns}/sa/{sa}"


def services(namespaces: tuple[str, ...] = NAMESPACES) -> list[dict]:
    """The Services first: the Envoy peer's client needs the server's ClusterIP."""
    out = []
    for ns in server_namespaces(namespaces):
        ports = [{"name": "http", "port": APP_PORT, "targetPort": APP_PORT}]
        if ns == DIRECT:
            ports.append({"name": "tcp-envoy-hbone", "port": envoy_peer.HBONE_PORT,
                          "targetPort": envoy_peer.HBONE_PORT})
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server", "namespace": ns},
                    "spec": {"selector": {"app": "server"}, "ports": ports}})
    return out


def namespaces(names: tuple[str, ...] = NAMESPACES) -> list[dict]:
    ambient = {"istio.io/dataplane-mode": "ambient"}
    labels = {DIRECT: {}, AMBIENT: ambient, WAYPOINT_NS: {**ambient, "istio.io/use-waypoint": WAYPOINT},
              ENVOY_WAYPOINT_NS: {**ambient, "istio.io/use-waypoint": WAYPOINT},
              SIDECAR_CLIENT: INJECTION, SIDECAR_SERVER: INJECTION}
    return [_namespace(ns, labels[ns]) for ns in names]


def workloads(target, node_a: str, node_b: str, direct_server_vip: str,
              names: tuple[str, ...] = NAMESPACES) -> list[dict]:
    """Clients on node A (Locust pods, via the target), servers and the waypoint's Gateway."""
    pki = envoy_peer.PeerPKI()
    client_id, server_id = spiffe(DIRECT, "client"), spiffe(DIRECT, "server")
    envoy_server = envoy_peer.container("envoy", envoy_peer.server_bootstrap(pki.leaf(server_id), client_id,
                                                                            APP_PORT), envoy_peer.HBONE_PORT)
    envoy_client = envoy_peer.container("envoy", envoy_peer.client_bootstrap(
        pki.leaf(client_id), server_id, (direct_server_vip, envoy_peer.HBONE_PORT), APP_PORT), envoy_peer.CLIENT_PORT)
    files = {LOCUSTFILE: LOCUSTFILE_SOURCE}
    objects = [*target.load_client_manifests(DIRECT, "client", node_a, files, [envoy_client]),
               *target.load_client_manifests(DIRECT, "baseline", node_a, files),
               *target.load_client_manifests(AMBIENT, "client", node_a, files)]
    if SIDECAR_CLIENT in names:  # the injection adds the istio-proxy container, as users deploy
        objects += target.load_client_manifests(SIDECAR_CLIENT, "client", node_a, files)
    for o in objects:  # the suite's pods never linger: a run's teardown is immediate
        if o["kind"] == "Deployment":
            o["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 0
    objects += _deployment(DIRECT, "server", {**_placement(node_b), "containers": [echo_container(), envoy_server]})
    for ns in [n for n in server_namespaces(names) if n != DIRECT]:
        objects += _deployment(ns, "server", {**_placement(node_b), "containers": [echo_container()]})
    objects.append(waypoint_gateway(WAYPOINT_NS))
    if ENVOY_WAYPOINT_NS in names:
        objects.append(waypoint_gateway(ENVOY_WAYPOINT_NS, target.waypoint_choices()[ENVOY_WAYPOINT]))
    return objects


def waypoint_gateway(namespace: str, annotations: dict | None = None) -> dict:
    metadata = {"name": WAYPOINT, "namespace": namespace, "labels": {"istio.io/waypoint-for": "service"}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": metadata,
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}


@dataclass
class Placed:
    """A path once its pods exist: the client pod and the URL it calls."""
    path: LoadPath
    client_pod: object = None         # a conformance.targets.base.Pod
    url: str = ""
