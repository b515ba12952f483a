"""The Kubernetes REST API of the reference cluster (HTTPS on loopback, client certificates),
so that real kubectl, the official Python client and chaostoolkit-kubernetes drive it.

`start(daemon)` is the daemon's one hook: it makes the API's CA and certificates, serves the API
on 127.0.0.1 and writes the kubeconfig (`<run dir>/kubeconfig`, mode 0600).
"""
from __future__ import annotations

import os

from reference_impl.cluster import naming

from .pki import ApiPKI
from .server import KubeAPIServer

__all__ = ["KubeAPIServer", "ApiPKI", "kubeconfig_path", "start"]
HOST = "127.0.0.1"


def kubeconfig_path(cluster: str) -> str:
    return os.path.join(naming.run_dir(cluster), "kubeconfig")


async def start(cluster: str, store, ops: dict) -> KubeAPIServer:
    pki = ApiPKI(os.path.join(naming.run_dir(cluster), "kubeapi"), cluster)
    pki.create(HOST)
    server = KubeAPIServer(cluster, store, ops, pki)
    port = await server.start(HOST, 0)
    pki.write_kubeconfig(kubeconfig_path(cluster), f"https://{HOST}:{port}")
    return server
