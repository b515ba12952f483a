"""Deliberately broken meshes for the chaos tests: Chaos Toolkit actions a test splices into an
experiment's method to show that its hypothesis catches the bug (the experiment deviates)."""
from __future__ import annotations

import subprocess

from reference_impl.cluster import client as cluster_client

NAMESPACE = "chaos-apps"


def fail_open_capture(client: str, configuration: dict = None) -> str:
    """Remove the in-pod capture rules of `client` (an istio-cni that uninstalls redirection when
    the node's ztunnel dies): the pod's traffic then leaves without the mesh, in plaintext."""
    c = cluster_client.ClusterClient(configuration["ambient_cluster"])
    pod = next(p for p in c.list("Pod", namespace=NAMESPACE)
               if p["metadata"]["labels"].get("app") == client and not p["metadata"].get("deletionTimestamp"))
    netns = c.pod_netns(NAMESPACE, pod["metadata"]["name"])
    subprocess.run(["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "ztunnel"], check=True,
                   capture_output=True, timeout=10)
    return netns
