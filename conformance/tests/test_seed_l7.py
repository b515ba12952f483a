"""The seed article's walkthrough after its L4 step: Step 3 (the waypoint) and the L7 policy step,
with its own manifests (fixtures/seed/) as written: fixed namespaces `ambient-apps` and
`legacy-apps`, the waypoint in the article's Istio 1.18 form (ISTIO-SEMANTICS section 9).

"Through the waypoint" is observed from outside only: httpbin echoes the request it received
(`/headers?show_env=1`), and an L7 proxy that re-originates the request adds forwarding headers
(Envoy always sends `X-Forwarded-Proto` to an HTTP/1.1 upstream and generates `X-Request-Id`),
while ztunnel's L4 path delivers the client's bytes unchanged. The L7 verdicts (403 / 401 as HTTP
answers, never resets) say the same again.
"""
from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conformance import convergence
from conformance.convergence import eventually
from conformance.targets.base import PodRef
from conformance.tests.seedfiles import seed

HTTPBIN = "http://httpbin-ambient.ambient-apps:8000"
ECHO = f"{HTTPBIN}/headers?show_env=1"
WAYPOINT = "httpbin-ambient-waypoint"
#: labels a control plane puts on a Gateway's proxy pods (Gateway API's, and Istio 1.18's own)
GATEWAY_POD_LABELS = ("gateway.networking.k8s.io/gateway-name", "istio.io/gateway-name")
#: request headers only an HTTP proxy in the path adds (RFC 9110 Via, the X-Forwarded-* family,
#: Envoy's request id); curl itself sends none of them
PROXY_HEADERS = frozenset({"via", "forwarded", "x-forwarded-proto", "x-forwarded-for", "x-request-id",
                           "x-envoy-attempt-count", "x-forwarded-client-cert"})
UNKNOWN_ISSUER = "someone-else@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tampered(token: str) -> str:
    """The token with one byte of its signature changed; header and claims stay valid."""
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0xFF
    return ".".join([head, payload, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()])


#: A key the suite owns, trusted by a RequestAuthentication of its own (issuer SUITE_ISSUER), so
#: a token it signs for another issuer tells "the issuer is checked" from "the signature is".
SUITE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SUITE_KID = "conformance-suite-key"
SUITE_ISSUER = "conformance-suite@example.com"


def suite_token(like: str, issuer: str) -> str:
    """A well-formed, unexpired RS256 token with the sample token's claims, signed by SUITE_KEY."""
    claims = {**jwt.decode(like, options={"verify_signature": False}),
              "iss": issuer, "sub": issuer, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SUITE_KEY, algorithm="RS256", headers={"kid": SUITE_KID})


def suite_request_authentication() -> dict:
    """A second RequestAuthentication on httpbin-ambient trusting SUITE_KEY for SUITE_ISSUER only."""
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SUITE_KEY.public_key())),
           "kid": SUITE_KID, "alg": "RS256", "use": "sig"}
    return {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "conformance-suite-jwt", "namespace": "ambient-apps"},
            "spec": {"selector": {"matchLabels": {"app": "httpbin-ambient"}},
                     "jwtRules": [{"issuer": SUITE_ISSUER, "jwks": json.dumps({"keys": [jwk]})}]}}


def echoed_headers(scenario, client: PodRef, url: str = ECHO) -> tuple[object, frozenset[str]]:
    """(the request's outcome, lower-case names of the request headers httpbin received)."""
    response, = scenario.responses(client, url, body=True)
    if response.outcome != 200:
        return response.outcome, frozenset()
    try:
        return 200, frozenset(name.lower() for name in json.loads(response.body).get("headers", {}))
    except (ValueError, AttributeError):
        return 200, frozenset({"<not httpbin's JSON>"})


def await_proxy_headers(scenario, client: PodRef, present: bool, what: str) -> None:
    """N consecutive 200s whose echoed request does (or does not) carry a proxy's headers."""
    def expected(observation) -> bool:
        status, names = observation
        return status == 200 and bool(names & PROXY_HEADERS) == present
    eventually(lambda: [echoed_headers(scenario, client)], expected,
               what=f"{what} ({client.namespace}/{client.name} -> {ECHO})")


def status_is(code: int):
    return lambda outcome: outcome == code


def seed_apps(scenario, *extra: str) -> None:
    """Steps 1-2 of the article (namespaces, httpbin-ambient, sleep-ambient) plus `extra` manifests."""
    for ns in ("ambient-apps", "legacy-apps"):
        scenario.adopt_namespace(ns)
    scenario.apply(seed("namespaces.yaml"))
    scenario.deploy([seed("httpbin-ambient.yaml"), seed("sleep-ambient.yaml"), *map(seed, extra)],
                    "ambient-apps")


def provision_waypoint(scenario) -> None:
    """Apply the article's waypoint Gateway and wait until a Ready proxy pod serves it."""
    scenario.apply(seed("waypoint.yaml"))

    def waypoint_pods():
        return [p for p in scenario.pods("ambient-apps")
                if any(p.labels.get(label) == WAYPOINT for label in GATEWAY_POD_LABELS)]
    eventually(lambda: [any(p.ready for p in waypoint_pods())], bool,
               what=f"a Ready pod labelled {' or '.join(GATEWAY_POD_LABELS)}={WAYPOINT} in ambient-apps "
                    f"after applying waypoint.yaml", n_consecutive=1, timeout=convergence.READY_SECONDS)
    scenario.ready("ambient-apps")


@pytest.mark.features("SeedWalkthroughWaypoint")
def test_seed_step_3_waypoint_takes_the_traffic_without_restarting_the_app(scenario):
    """After `waypoint.yaml` (the article's Gateway, Istio 1.18 form) the mesh MUST provision a
    proxy pod for it and route sleep-ambient's requests to httpbin-ambient through an L7 proxy
    (the echoed request gains forwarding headers it lacked on the L4 path) without restarting
    or replacing the httpbin-ambient pod; deleting the Gateway MUST return traffic to L4."""
    seed_apps(scenario)
    sleep = scenario.pod("ambient-apps", "sleep-ambient")
    app = scenario.pod("ambient-apps", "httpbin-ambient")

    await_proxy_headers(scenario, sleep, False, "before waypoint.yaml: the L4 path adds no HTTP headers")
    provision_waypoint(scenario)
    await_proxy_headers(scenario, sleep, True, "after waypoint.yaml: requests pass the waypoint")

    after = scenario.pod("ambient-apps", "httpbin-ambient")
    assert (after.uid, after.restarts) == (app.uid, app.restarts), \
        f"httpbin-ambient was replaced or restarted: {app.name}/{app.restarts} -> {after.name}/{after.restarts}"
    assert len(after.containers) == 1, f"httpbin-ambient has containers {after.containers}; ambient adds none"

    scenario.delete(seed("waypoint.yaml"))
    await_proxy_headers(scenario, sleep, False, "after deleting waypoint.yaml: back on the L4 path")


@pytest.mark.features("SeedWalkthroughWaypoint", "SeedWalkthroughL7")
def test_seed_l7_step_jwt_and_path_policy_at_the_waypoint(scenario):
    """With the waypoint in place, `jwt-policy.yaml` + `l7-authz-policy.yaml` MUST give, from
    sleep-ambient: `/headers` with the token 403, `/ip` without a token 403, `/ip` with the token
    200; a token whose signature was changed, and a token of an issuer no rule names (even when
    signed by a key that a rule for another issuer trusts), MUST get 401, while a valid token of
    that other issuer MUST get 403; rogue-client with the token MUST get 403 (its identity is not the
    one allowed). Every deny MUST be a prompt HTTP answer. Before the policies and after deleting
    them every one of these requests MUST get 200."""
    token = seed("demo.jwt").read_text().strip()
    forged, foreign = tampered(token), suite_token(token, UNKNOWN_ISSUER)
    trusted_elsewhere = suite_token(token, SUITE_ISSUER)
    seed_apps(scenario, "rogue-client.yaml")
    sleep = scenario.pod("ambient-apps", "sleep-ambient")
    rogue = scenario.pod("ambient-apps", "rogue-client")
    provision_waypoint(scenario)
    await_proxy_headers(scenario, sleep, True, "the waypoint serves httpbin-ambient")

    cases = [  # (client, path, headers, status with the policies, what)
        (sleep, "/headers", bearer(token), 403, "sleep /headers with the token: not an allowed path"),
        (sleep, "/ip", bearer(forged), 401, "sleep /ip with a token whose signature was changed"),
        (sleep, "/ip", bearer(foreign), 401, f"sleep /ip with a token of issuer {UNKNOWN_ISSUER}, signed "
                                             "by a key a rule for another issuer trusts"),
        (sleep, "/ip", bearer(trusted_elsewhere), 403, f"sleep /ip with a valid token of {SUITE_ISSUER}: "
                                                       "authenticated, but not the allowed principal"),
        (sleep, "/ip", None, 403, "sleep /ip without a token: no iss claim"),
        (rogue, "/ip", bearer(token), 403, "rogue-client /ip with the token: not sleep-ambient's identity"),
        (sleep, "/ip", bearer(token), 200, "sleep /ip with the token: the one allowed request"),
    ]

    def play(policies: str) -> None:
        for client, path, headers, status, what in cases:
            want = status if policies == "with" else 200
            scenario.converge(client, f"{HTTPBIN}{path}", status_is(want),
                              f"{what}, {policies} the policies: expected HTTP {want}", headers=headers)

    play("before")
    policies = [seed("jwt-policy.yaml"), seed("l7-authz-policy.yaml"), suite_request_authentication()]
    scenario.apply(policies)
    play("with")   # the denies come first, so the final 200 is judged with both policies in force
    scenario.delete(policies)
    play("after deleting")
