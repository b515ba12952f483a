"""SIDECAR-INTEROP: RequestAuthentication and L7 AuthorizationPolicy enforced at the sidecar itself."""
from __future__ import annotations

import json

import pytest

from conformance import workloads as w
from conformance.tests.seedfiles import seed
from conformance.tests.sidecarworld import forbidden, sidecar_namespace

ISSUER = "testing@secure.istio.io"   # the issuer of Istio's sample token (fixtures/seed/demo.jwt)


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    return ".".join([head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])


@pytest.mark.features("SidecarPolicyL7")
def test_jwt_and_path_policy_at_the_sidecar(scenario):
    """With a selector RequestAuthentication (the sample token's issuer, keys inline) and an ALLOW
    policy for that request principal on GET /ip at a sidecar pod, an ambient client MUST get:
    /ip with the token 200, /ip without a token 403, /headers with the token 403, and /ip with a
    token whose signature was changed 401; before the policies /headers MUST get 200."""
    sc = scenario
    side, amb = sidecar_namespace(sc, "jside"), sc.namespace("jamb")
    sc.deploy(w.httpbin(side) + w.client(amb, "amb-cli"), side, amb)
    client = sc.pod(amb, "amb-cli")
    token = seed("demo.jwt").read_text().strip()
    jwks = json.dumps(json.loads(seed("jwks.json").read_text()))
    ip_url, headers_url = (w.service_url("httpbin", side, path=p) for p in ("/ip", "/headers"))
    sc.expect_allowed(client, headers_url, "before any policy")

    sc.apply([{"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
               "metadata": {"name": "jwt", "namespace": side},
               "spec": {"selector": {"matchLabels": {"app": "httpbin"}},
                        "jwtRules": [{"issuer": ISSUER, "jwks": jwks}]}},
              w.authorization_policy(side, "ip-with-token", {
                  "action": "ALLOW",
                  "rules": [{"from": [{"source": {"requestPrincipals": [f"{ISSUER}/{ISSUER}"]}}],
                             "to": [{"operation": {"methods": ["GET"], "paths": ["/ip"]}}]}]},
                  selector_app="httpbin")])
    sc.converge(client, ip_url, forbidden, "/ip without a token: expected 403")
    sc.converge(client, headers_url, forbidden, "/headers with the token: expected 403", headers=_bearer(token))
    sc.converge(client, ip_url, lambda o: o == 401, "/ip with a changed signature: expected 401",
                headers=_bearer(_tampered(token)))
    sc.expect_allowed(client, ip_url, "/ip with the token", headers=_bearer(token))
