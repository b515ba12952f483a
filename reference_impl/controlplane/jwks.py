"""JWKS for RequestAuthentication rules that name a `jwksUri`: istiod fetches, proxies get keys.

In Istio the control plane resolves `jwksUri` and ships the keys inline, so a waypoint never
reaches out itself. This machine (and many CI runners) has no internet, so a `jwksUri` is first
looked up in an override map: `jwks_overrides.yaml` beside this file (the seed article's Istio
sample URI → `fixtures/seed/jwks.json`), then a file named by `AC_JWKS_OVERRIDES` (a YAML/JSON map
of URI → path). Anything else is fetched over HTTP(S) in the background. Until keys are known, or
when the fetch fails, the URI maps to an empty key set: every token of that issuer is then
rejected (401), which is Istio's own fail-closed behaviour for an unreachable JWKS.
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
    """Keys per jwksUri, from overrides or a background fetch; `on_change` fires when keys land."""

    def __init__(self, on_change: Callable[[], None], overrides: dict[str, Path] | None = None):
        self.on_change = on_change
        self.overrides = load_overrides(os.environ.get("AC_JWKS_OVERRIDES")) if overrides is None else overrides
        self.keys: dict[str, dict] = {}
        self._fetching: set[str] = set()

    def resolve(self, uris: set[str]) -> dict[str, dict]:
        out = {}
        for uri in sorted(uris):
            if uri not in self.keys:
                self._load(uri)
            out[uri] = self.keys.get(uri, EMPTY_JWKS)
        return out

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
        if uri not in self._fetching:
            self._fetching.add(uri)
            asyncio.get_running_loop().create_task(self._fetch(uri))

    async def _fetch(self, uri: str) -> None:
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client:
                response = await client.get(uri)
                response.raise_for_status()
                document = response.json()
            if not isinstance(document.get("keys"), list):
                raise ValueError("the document has no `keys` list")
            self.keys[uri] = document
            log.info("fetched jwksUri %s (%d keys)", uri, len(document["keys"]))
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.error("fetching jwksUri %s failed (%s); tokens of that issuer will be rejected; "
                      "set AC_JWKS_OVERRIDES to a map of URI -> local file to serve it offline",
                      uri, exc)
            self.keys[uri] = EMPTY_JWKS
        finally:
            self._fetching.discard(uri)
        self.on_change()
