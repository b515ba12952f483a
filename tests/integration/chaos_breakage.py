"""Deliberately broken meshes for the chaos tests: Chaos Toolkit actions a test splices into an
experiment's method to show that its hypothesis catches the bug (the experiment deviates)."""
from __future__ import annotations

import os
import signal
import subprocess
import threading

from reference_impl.cluster import client as cluster_client
from reference_impl.cluster import naming

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


def _istiod_pids(cluster: str) -> list[int]:
    want = f"AC_RUN_DIR={naming.run_dir(cluster)}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"reference_impl.controlplane" not in f.read():
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


def freeze_control_plane(seconds: float, configuration: dict = None) -> list[int]:
    """Stop the istiod process for `seconds` (SIGSTOP, then SIGCONT): a control plane that is Ready
    but pushes nothing yet, so what changed while it was down lands late."""
    pids = _istiod_pids(configuration["ambient_cluster"])
    assert pids, "no istiod process of this cluster to freeze"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)

    def thaw():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    threading.Timer(float(seconds), thaw).start()
    return pids
