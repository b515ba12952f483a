"""The workloads every experiment runs against: one ambient namespace with a server and a client
pinned to each of two nodes, and optionally a waypoint (Istio's current form: a Gateway of class
`istio-waypoint`, bound by the `istio.io/use-waypoint` label) in front of one extra Service.

Plain Kubernetes objects from the conformance suite's own builders, so the same world runs on the
reference cluster and on any cluster with Istio ambient.
"""
from __future__ import annotations

from conformance import workloads as w

NAMESPACE = "chaos-apps"
WAYPOINT = "waypoint"
#: the Service bound to the waypoint: it selects server-1's pod, so L7 and L4-only traffic reach
#: the same pod and only the waypoint tells them apart
L7_SERVICE = "server-l7"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


def server(i: int) -> str:
    return f"server-{i}"


def client(i: int) -> str:
    return f"client-{i}"


def client_manifests(ns: str, name: str, node: str, image: str) -> list[dict]:
    """A client pod that can run the traffic generator (a stock Python image, kept alive)."""
    labels = {"app": name}
    return [w.service_account(ns, name), {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"serviceAccountName": name, "terminationGracePeriodSeconds": 0,
                                       "nodeSelector": {"kubernetes.io/hostname": node},
                                       "containers": [{"name": "client", "image": image,
                                                       "command": ["sleep", "infinity"]}]}}}}]


def waypoint_manifests(ns: str) -> list[dict]:
    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": WAYPOINT, "namespace": ns, "labels": {"istio.io/waypoint-for": "service"}},
               "spec": {"gatewayClassName": "istio-waypoint",
                        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": L7_SERVICE, "namespace": ns, "labels": {"istio.io/use-waypoint": WAYPOINT}},
               "spec": {"selector": {"app": server(1)},
                        "ports": [{"name": "http", "port": w.HTTP_PORT, "targetPort": w.HTTP_TARGET_PORT}]}}
    return [gateway, service]


def remote(i: int) -> str:
    return f"remote-{i}"


def manifests(nodes: list[str], image: str, waypoint: bool = False, remote_servers: bool = False) -> list[dict]:
    """The world on the first two of `nodes`; with `remote_servers`, a second server per node
    (`remote-N`) for cross-node streams only, so a server that same-node streams use never also
    serves a cross-node client (an app blocked on a cut peer, e.g. gunicorn waiting up to 2 s for
    the FIN of a connection it closed, must not pass for the mesh's fault)."""
    if len(nodes) < 2:
        raise ValueError(f"the chaos experiments need two nodes that run workloads; the cluster has "
                         f"{len(nodes)} ({', '.join(nodes) or 'none'})")
    objects = [w.namespace(NAMESPACE, ambient=True)]
    for i, node in enumerate(nodes[:2]):
        objects += w.httpbin(NAMESPACE, name=server(i), node=node)
        objects += client_manifests(NAMESPACE, client(i), node, image)
        if remote_servers:
            objects += w.httpbin(NAMESPACE, name=remote(i), node=node)
    if waypoint:
        objects += waypoint_manifests(NAMESPACE)
    return objects
