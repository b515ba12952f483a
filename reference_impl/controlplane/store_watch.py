"""istiod's view of the store (the API-server role): `GET /watch` on AC_API_SOCK into a local cache.

The store keeps every object; istiod only caches. On every (re)connect the watch starts with a
SYNC of everything, which replaces the cache, so a restarted istiod or a dropped stream resyncs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

import httpx

from reference_impl.api import object_key

log = logging.getLogger("controlplane.store")

BASE = "http://store"


class StoreError(RuntimeError):
    """The store refused a request (its message says why)."""


class StoreWatch:
    def __init__(self, api_sock: str, on_change: Callable[[], None], max_backoff: float = 1.0):
        self.api_sock = api_sock
        self.on_change = on_change
        self.max_backoff = max_backoff
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.resource_version = "0"
        self.synced = asyncio.Event()
        self.syncs = 0

    def _client(self, read_timeout: float | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=self.api_sock),
                                 base_url=BASE, timeout=httpx.Timeout(10.0, read=read_timeout))

    async def run(self) -> None:
        backoff = 0.05
        while True:
            try:
                async with self._client(read_timeout=None) as client:
                    async with client.stream("GET", "/watch") as response:
                        response.raise_for_status()
                        backoff = 0.05
                        async for line in response.aiter_lines():
                            if line.strip():
                                self._handle(json.loads(line))
                log.warning("store closed the watch; reconnecting")
            except (httpx.HTTPError, OSError, json.JSONDecodeError) as exc:
                log.warning("store watch on %s failed (%s); retrying in %.2fs", self.api_sock, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "SYNC":
            self.objects = {object_key(o): o for o in event.get("objects") or ()}
            self.resource_version = str(event.get("resourceVersion", self.resource_version))
            self.syncs += 1
            self.synced.set()
            log.info("synced %d objects at resourceVersion %s", len(self.objects), self.resource_version)
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            obj = event.get("object") or {}
            key = object_key(obj)
            if kind == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            self.resource_version = (obj.get("metadata") or {}).get("resourceVersion") or self.resource_version
        else:
            log.warning("ignoring unknown watch event %r", kind)
            return
        self.on_change()

    async def post(self, path: str, body: dict) -> dict:
        async with self._client(read_timeout=30.0) as client:
            response = await client.post(path, json=body)
        if response.status_code >= 400:
            try:
                message = response.json().get("error")
            except ValueError:
                message = response.text
            raise StoreError(f"store {path} answered {response.status_code}: {message}")
        return response.json()

    async def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        params = {"kind": kind}
        if namespace:
            params["namespace"] = namespace
        async with self._client(read_timeout=30.0) as client:
            response = await client.get("/objects", params=params)
        response.raise_for_status()
        return response.json()["items"]


def list_objects_sync(api_sock: str, kind: str) -> list[dict]:
    """A blocking list, for callers running in a worker thread (the CA's recheck)."""
    with httpx.Client(transport=httpx.HTTPTransport(uds=api_sock), base_url=BASE, timeout=10.0) as client:
        response = client.get("/objects", params={"kind": kind})
    response.raise_for_status()
    return response.json()["items"]
