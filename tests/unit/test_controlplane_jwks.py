"""istiod resolves jwksUri for the proxies: local override copies, HTTP fetch, fail-closed."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from reference_impl.controlplane.jwks import EMPTY_JWKS, REPO_ROOT, JwksResolver, jwks_uris, load_overrides

SEED_URI = "https://raw.githubusercontent.com/istio/istio/release-1.18/security/tools/jwt/samples/jwks.json"


def test_the_seed_uri_is_served_from_its_local_copy():
    keys = JwksResolver(lambda: None).resolve({SEED_URI})[SEED_URI]
    assert keys == json.loads((REPO_ROOT / "fixtures/seed/jwks.json").read_text())
    assert keys["keys"], "the seed's key set must not be empty"


def test_jwks_uris_skips_rules_with_inline_keys():
    ras = [{"spec": {"jwtRules": [{"issuer": "a", "jwksUri": "http://x/a"},
                                  {"issuer": "b", "jwksUri": "http://x/b", "jwks": "{\"keys\": []}"}]}},
           {"spec": {}}]
    assert jwks_uris(ras) == {"http://x/a"}


def test_extra_override_file_adds_uris(tmp_path):
    keyfile = tmp_path / "k.json"
    keyfile.write_text(json.dumps({"keys": [{"kty": "EC"}]}))
    extra = tmp_path / "overrides.yaml"
    extra.write_text(f"'http://issuer.test/jwks': {keyfile}\n")
    overrides = load_overrides(str(extra))
    assert SEED_URI in overrides and overrides["http://issuer.test/jwks"] == keyfile
    assert JwksResolver(lambda: None, overrides).resolve({"http://issuer.test/jwks"}) == {
        "http://issuer.test/jwks": {"keys": [{"kty": "EC"}]}}


class _Jwks(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"keys": [{"kty": "RSA", "kid": "k1"}]}).encode() if self.path == "/good" else b"nope"
        self.send_response(200 if self.path == "/good" else 500)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_unknown_uri_is_fetched_in_the_background_and_fails_closed_on_error():
    server = HTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    async def scenario():
        changed = asyncio.Event()
        resolver = JwksResolver(changed.set, overrides={})
        first = resolver.resolve({f"{base}/good", f"{base}/bad"})
        # Not fetched yet: both fail closed until the keys land.
        assert first == {f"{base}/good": EMPTY_JWKS, f"{base}/bad": EMPTY_JWKS}
        for _ in range(2):
            await asyncio.wait_for(changed.wait(), 5)
            changed.clear()
            if len(resolver.keys) == 2:
                break
        return resolver.resolve({f"{base}/good", f"{base}/bad"})

    try:
        resolved = asyncio.run(scenario())
    finally:
        server.shutdown()
    assert resolved[f"{base}/good"] == {"keys": [{"kty": "RSA", "kid": "k1"}]}
    assert resolved[f"{base}/bad"] == EMPTY_JWKS


class _Rotating(BaseHTTPRequestHandler):
    """Serves `document` (a class attribute the test changes), or 503 when it is None."""
    document: dict | None = {"keys": [{"kty": "RSA", "kid": "old"}]}

    def do_GET(self):
        doc = type(self).document
        body = json.dumps(doc).encode() if doc is not None else b"down"
        self.send_response(200 if doc is not None else 503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_keys_are_refetched_on_schedule_and_a_failed_refetch_keeps_the_last_keys():
    server = HTTPServer(("127.0.0.1", 0), _Rotating)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}/jwks"

    async def until(predicate, what):
        for _ in range(100):
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    async def scenario():
        changes = []
        resolver = JwksResolver(lambda: changes.append(1), overrides={}, refresh_seconds=0.2)
        def kid():
            keys = resolver.resolve({uri})[uri]["keys"]
            return keys[0]["kid"] if keys else None

        assert kid() is None, "not fetched yet: fail closed"
        await until(lambda: kid() == "old", "the first fetch")
        _Rotating.document = {"keys": [{"kty": "RSA", "kid": "new"}]}
        await until(lambda: kid() == "new", "the rotated keys")
        _Rotating.document = None
        attempts = resolver.fetches[uri]
        await until(lambda: resolver.fetches[uri] >= attempts + 2, "two failed refetches")
        kept = resolver.resolve({uri})[uri]
        resolver.close()
        return changes, kept

    try:
        changes, kept = asyncio.run(scenario())
    finally:
        server.shutdown()
        _Rotating.document = {"keys": [{"kty": "RSA", "kid": "old"}]}
    assert kept == {"keys": [{"kty": "RSA", "kid": "new"}]}
    assert len(changes) == 2, "one change for the first keys, one for the rotation, none for failures"


def test_refresh_interval_from_istios_variable():
    from reference_impl.controlplane.jwks import DEFAULT_REFRESH_SECONDS, refresh_seconds_from_env
    assert refresh_seconds_from_env({}) == DEFAULT_REFRESH_SECONDS == 1200
    assert refresh_seconds_from_env({"PILOT_JWT_PUB_KEY_REFRESH_INTERVAL": "5s"}) == 5
    assert refresh_seconds_from_env({"PILOT_JWT_PUB_KEY_REFRESH_INTERVAL": "soon"}) == DEFAULT_REFRESH_SECONDS
