"""The istio-cni role's view of pods: which network namespace a captured pod lives in.

Real Istio's CNI agent learns this from the container runtime and hands ztunnel the namespace;
here the kubelet records it on the pod (annotation ambient-conformance.io/netns), read from the
API server when the snapshot does not carry it.
"""
from __future__ import annotations

import logging

import httpx

from .state import Workload

NETNS_ANNOTATION = "ambient-conformance.io/netns"
log = logging.getLogger("ztunnel")


class PodNetnsResolver:
    def __init__(self, api_sock: str):
        self.api_sock = api_sock

    async def __call__(self, workload: Workload) -> str | None:
        transport = httpx.AsyncHTTPTransport(uds=self.api_sock)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://store", timeout=5) as client:
                r = await client.get("/objects", params={"kind": "Pod", "namespace": workload.namespace})
                r.raise_for_status()
        except (httpx.HTTPError, OSError) as exc:
            log.warning("cannot read pod %s/%s from the API server at %s: %s",
                        workload.namespace, workload.name, self.api_sock, exc)
            return None
        for pod in r.json().get("items", []):
            meta = pod.get("metadata") or {}
            if meta.get("name") == workload.name or meta.get("uid") == workload.uid:
                return (meta.get("annotations") or {}).get(NETNS_ANNOTATION)
        return None
