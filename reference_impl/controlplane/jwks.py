"""JWKS for RequestAuthentication rules that name a `jwksUri`: istiod fetches, proxies get keys.

In Istio the control plane resolves `jwksUri` and ships the keys inline, so a waypoint never
reaches out itself. This machine (and many CI runners) has no internet, so a `jwksUri` is first
looked up in an override map: `jwks_overrides.yaml` beside this file (the seed article's Istio
sample URI → `fixtures/seed/jwks.json`), then a file named by `AC_JWKS_OVERRIDES` (a YAML/JSON map
of URI → path). Anything else is fetched over HTTP(S) in the background. Until keys are known, or
when the fetch fails, the URI maps to an empty key set: every token of that issuer is then
rejected (401), which is Istio's own fail-closed behaviour for an unreachable JWKS.

Like istiod's JwksResolver, a fetched URI is fetched again on a schedule
(`PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, Istio's variable, default 20m), so rotated keys reach the
proxies; a failed fetch is retried with backoff from 1 s up to that interval. A refetch that fails
keeps the keys last fetched (istiod does the same); a URI never fetched stays empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Callable

import httpx
import yaml

log = logging.getLogger("controlplane.jwks")

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN_OVERRIDES = Path(__file__).with_name("jwks_overrides.yaml")
FETCH_TIMEOUT_SECONDS = 5.0
EMPTY_JWKS = {"keys": []}
REFRESH_ENV = "PILOT_JWT_PUB_KEY_REFRESH_INTERVAL"
DEFAULT_REFRESH_SECONDS = 20 * 60.0
FIRST_RETRY_SECONDS = 1.0


def refresh_seconds_from_env(env=os.environ) -> float:
    """The refetch interval: a Go duration ("20m", "5s") in PILOT_JWT_PUB_KEY_REFRESH_INTERVAL."""
    from .__main__ import parse_duration
    value = env.get(REFRESH_ENV)
    if value is None:
        return DEFAULT_REFRESH_SECONDS
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        log.error("%s=%r is not a positive Go duration such as \"20m\"; using %gs", REFRESH_ENV, value,
                  DEFAULT_REFRESH_SECONDS)
        return DEFAULT_REFRESH_SECONDS
    return seconds


def load_overrides(extra_file: str | None = None) -> dict[str, Path]:
    overrides: dict[str, Path] = {}
    for file in [BUILTIN_OVERRIDES, extra_file]:
        if not file:
            continue
        try:
            data = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            log.error("JWKS override file %s unreadable (%s); ignoring it", file, exc)
            continue
        for uri, path in data.items():
            resolved = Path(path)
            overrides[str(uri)] = resolved if resolved.is_absolute() else REPO_ROOT / resolved
    return overrides


def jwks_uris(request_authentications: list[dict]) -> set[str]:
    return {rule["jwksUri"]
            for ra in request_authentications
            for rule in (ra.get("spec") or {}).get("jwtRules") or []
            if rule.get("jwksUri") and not rule.get("jwks")}


class JwksResolver:
    """Keys per jwksUri, from overrides or fetched (and refetched) in the background; `on_change`
    fires when the keys of a URI change."""

    def __init__(self, on_change: Callable[[], None], overrides: dict[str, Path] | None = None,
                 refresh_seconds: float | None = None):
        self.on_change = on_change
        self.overrides = load_overrides(os.environ.get("AC_JWKS_OVERRIDES")) if overrides is None else overrides
        self.refresh_seconds = refresh_seconds_from_env() if refresh_seconds is None else refresh_seconds
        self.keys: dict[str, dict] = {}
        self.fetches: dict[str, int] = {}      # attempts per URI, for tests and the debug dump
        self._tasks: dict[str, asyncio.Task] = {}

    def resolve(self, uris: set[str]) -> dict[str, dict]:
        out = {}
        for uri in sorted(uris):
            if uri not in self.keys and uri not in self._tasks:
                self._load(uri)
            out[uri] = self.keys.get(uri, EMPTY_JWKS)
        return out

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    def _load(self, uri: str) -> None:
        path = self.overrides.get(uri)
        if path is not None:
            try:
                self.keys[uri] = json.loads(path.read_text())
                log.info("jwksUri %s served from the local copy %s", uri, path)
            except (OSError, ValueError) as exc:
                log.error("jwksUri %s: local copy %s unreadable (%s); tokens of that issuer "
                          "will be rejected", uri, path, exc)
                self.keys[uri] = EMPTY_JWKS
            return
        self._tasks[uri] = asyncio.get_running_loop().create_task(self._keep_fetching(uri),
                                                                  name=f"jwks {uri}")

    async def _keep_fetching(self, uri: str) -> None:
        retry = FIRST_RETRY_SECONDS
        while True:
            document = await self._fetch(uri)
            if document is not None:
                retry = FIRST_RETRY_SECONDS
                changed = self.keys.get(uri) != document
                self.keys[uri] = document
                wait = self.refresh_seconds
            else:
                changed = uri not in self.keys
                self.keys.setdefault(uri, EMPTY_JWKS)   # a refetch failure keeps the last keys
                wait, retry = retry, min(retry * 2, self.refresh_seconds)
            if changed:
                self.on_change()
            await asyncio.sleep(wait)

    async def _fetch(self, uri: str) -> dict | None:
        self.fetches[uri] = self.fetches.get(uri, 0) + 1
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client:
                response = await client.get(uri)
                response.raise_for_status()
                document = response.json()
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise ValueError("the document has no `keys` list")
            log.info("fetched jwksUri %s (%d keys)", uri, len(document["keys"]))
            return document
        except (httpx.HTTPError, ValueError) as exc:
            log.error("fetching jwksUri %s failed (%s); tokens of that issuer are rejected until it "
                      "answers; set AC_JWKS_OVERRIDES to a map of URI -> local file to serve it offline",
                      uri, exc)
            return None
