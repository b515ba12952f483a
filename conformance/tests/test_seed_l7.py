"""The seed article's walkthrough after its L4 step: Step 3 (the waypoint) and the L7 policy step,
in fixed namespaces `ambient-apps` and `legacy-apps`, in two variants with the same steps and
outcomes:

- **as written**: the article's manifests (fixtures/seed/). Its waypoint has
  `gatewayClassName: istio`, Istio's ingress class in every release, so on a mesh that tells the
  classes apart (one that serves GatewayClass `istio-waypoint`) the Gateway never becomes a
  waypoint and these steps cannot pass: the test then reports the article's error with the reason
  (outcome `articleError`), not a failure of the mesh. The reference mesh accepts the article's
  form, as the article expected of its mesh, and plays the steps.
- **as corrected**: class `istio-waypoint`, the Service bound with `istio.io/use-waypoint`, the
  policies attached by `targetRefs` (seedfiles.corrected). Every mesh, real Istio included, MUST
  pass it.

The jwksUri of jwt-policy.yaml is the article's (Istio's sample key set on GitHub): on a real
cluster istiod fetches it itself, and the test reads nothing from the reference's local copy.

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
from conformance.convergence import NotConverged, eventually
from conformance.report import ARTICLE_ERROR_PREFIX
from conformance.targets.base import PodRef, TargetError
from conformance.tests.seedfiles import USE_WAYPOINT, WAYPOINT_CLASS, attached_to_service, corrected, seed

HTTPBIN = "http://httpbin-ambient.ambient-apps:8000"
ECHO = f"{HTTPBIN}/headers?show_env=1"
WAYPOINT = "httpbin-ambient-waypoint"
AS_WRITTEN, AS_CORRECTED = "as-written", "as-corrected"
#: labels a control plane puts on a Gateway's proxy pods (Gateway API's, and Istio's own)
GATEWAY_POD_LABELS = ("gateway.networking.k8s.io/gateway-name", "istio.io/gateway-name")
#: request headers only an HTTP proxy in the path adds (RFC 9110 Via, the X-Forwarded-* family,
#: Envoy's request id); curl itself sends none of them
PROXY_HEADERS = frozenset({"via", "forwarded", "x-forwarded-proto", "x-forwarded-for", "x-request-id",
                           "x-envoy-attempt-count", "x-forwarded-client-cert"})
UNKNOWN_ISSUER = "someone-else@example.com"


#: why the article's own token may be refused on a real cluster: nothing here serves its key set
JWKS_HINT = ("; a 401 here means the mesh could not verify the article's token: on a real cluster istiod "
             "fetches the jwksUri of jwt-policy.yaml (raw.githubusercontent.com) itself and needs egress to it")


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


class Walkthrough:
    """One variant's manifests for Step 3 and the L7 step."""

    def __init__(self, scenario, variant: str):
        self.scenario, self.variant = scenario, variant

    def waypoint(self) -> list:
        return [seed("waypoint.yaml")] if self.variant == AS_WRITTEN else corrected("waypoint.yaml")

    def policies(self) -> list:
        if self.variant == AS_WRITTEN:
            return [seed("jwt-policy.yaml"), seed("l7-authz-policy.yaml"), suite_request_authentication()]
        return [*corrected("jwt-policy.yaml"), *corrected("l7-authz-policy.yaml"),
                attached_to_service(suite_request_authentication())]

    def bind(self, on: bool) -> None:
        # the article binds nothing (it expects its waypoint to take the namespace's traffic); a
        # current Istio serves only what carries istio.io/use-waypoint
        if self.variant == AS_CORRECTED:
            self.scenario.label("Service", "ambient-apps", "httpbin-ambient", {USE_WAYPOINT: WAYPOINT if on else None})

    def provision(self) -> None:
        """Apply the waypoint Gateway, wait until a Ready proxy pod serves it and requests to
        httpbin-ambient pass it; as written on a mesh whose waypoint class is another, the
        article's error."""
        scenario = self.scenario
        try:
            scenario.apply(self.waypoint())
            self.bind(True)

            def waypoint_pods():
                return [p for p in scenario.pods("ambient-apps")
                        if any(p.labels.get(label) == WAYPOINT for label in GATEWAY_POD_LABELS)]
            eventually(lambda: [any(p.ready for p in waypoint_pods())], bool,
                       what=f"a Ready pod labelled {' or '.join(GATEWAY_POD_LABELS)}={WAYPOINT} in ambient-apps "
                            f"after applying the waypoint ({self.variant})", n_consecutive=1,
                       timeout=convergence.READY_SECONDS)
            scenario.ready("ambient-apps")
            await_proxy_headers(scenario, scenario.pod("ambient-apps", "sleep-ambient"), True,
                                f"after the waypoint ({self.variant}): requests pass the waypoint")
        except (NotConverged, TargetError) as error:
            if self.variant == AS_WRITTEN:
                self.skip_if_article_error(error)
            raise

    def unprovision(self) -> None:
        self.bind(False)
        self.scenario.delete(self.waypoint())

    def skip_if_article_error(self, error: Exception) -> None:
        """The article's error, when this mesh shows it: it serves GatewayClass istio-waypoint, so
        `istio` is not its waypoint class, and the article's Gateway did not take the traffic."""
        waypoint_class = self._object("GatewayClass", None, WAYPOINT_CLASS)
        if waypoint_class is None:
            return   # no evidence the class is wrong here: the mesh's failure, reported as such
        ingress = self._object("GatewayClass", None, "istio") or {}
        gateway = self._object("Gateway", "ambient-apps", WAYPOINT) or {}
        said = "; ".join(f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".strip()
                         for c in (gateway.get("status") or {}).get("conditions") or ())
        pytest.skip(
            f"{ARTICLE_ERROR_PREFIX} the article's waypoint.yaml uses gatewayClassName 'istio', which is "
            f"Istio's ingress class in every release (controller "
            f"{(ingress.get('spec') or {}).get('controllerName', 'unknown')} here; early ambient's waypoint "
            f"class was istio-mesh, Istio 1.18 introduced istio-waypoint), and binds nothing with "
            f"istio.io/use-waypoint: this mesh serves GatewayClass {WAYPOINT_CLASS} (controller "
            f"{(waypoint_class.get('spec') or {}).get('controllerName', 'unknown')}), so the article's Gateway "
            f"is not a waypoint and its Step 3 / L7 step cannot pass ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300]}; Gateway status: {said or 'none'}). The as-corrected "
            "variant plays the same steps.")

    def _object(self, kind: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self.scenario.get(kind, namespace, name)
        except TargetError:   # a target that does not serve the kind: no evidence
            return None


VARIANT = pytest.mark.parametrize("variant", [AS_WRITTEN, AS_CORRECTED])


@pytest.mark.features("SeedWalkthroughWaypoint")
@VARIANT
def test_seed_step_3_waypoint_takes_the_traffic_without_restarting_the_app(scenario, variant):
    """After `waypoint.yaml` (as written: the article's Gateway; as corrected: class
    istio-waypoint and the Service labelled istio.io/use-waypoint) the mesh MUST provision a
    proxy pod for it and route sleep-ambient's requests to httpbin-ambient through an L7 proxy
    (the echoed request gains forwarding headers it lacked on the L4 path) without restarting
    or replacing the httpbin-ambient pod; deleting the Gateway (and the label) MUST return traffic
    to L4. As written, on a mesh whose waypoint class is istio-waypoint, the article's error."""
    walk = Walkthrough(scenario, variant)
    seed_apps(scenario)
    sleep = scenario.pod("ambient-apps", "sleep-ambient")
    app = scenario.pod("ambient-apps", "httpbin-ambient")

    await_proxy_headers(scenario, sleep, False, "before waypoint.yaml: the L4 path adds no HTTP headers")
    walk.provision()

    after = scenario.pod("ambient-apps", "httpbin-ambient")
    assert (after.uid, after.restarts) == (app.uid, app.restarts), \
        f"httpbin-ambient was replaced or restarted: {app.name}/{app.restarts} -> {after.name}/{after.restarts}"
    assert len(after.containers) == 1, f"httpbin-ambient has containers {after.containers}; ambient adds none"

    walk.unprovision()
    await_proxy_headers(scenario, sleep, False, "after deleting waypoint.yaml: back on the L4 path")


@pytest.mark.features("SeedWalkthroughWaypoint", "SeedWalkthroughL7")
@VARIANT
def test_seed_l7_step_jwt_and_path_policy_at_the_waypoint(scenario, variant):
    """With the waypoint in place (as written or as corrected, where the policies attach to the
    Service by targetRefs), `jwt-policy.yaml` + `l7-authz-policy.yaml` MUST give, from
    sleep-ambient: `/headers` with the token 403, `/ip` without a token 403, `/ip` with the token
    200; a token whose signature was changed, and a token of an issuer no rule names (even when
    signed by a key that a rule for another issuer trusts), MUST get 401, while a valid token of
    that other issuer MUST get 403; rogue-client with the token MUST get 403 (its identity is not the
    one allowed). Every deny MUST be a prompt HTTP answer. Before the policies and after deleting
    them every one of these requests MUST get 200. As written, on a mesh whose waypoint class is
    istio-waypoint, the article's error."""
    token = seed("demo.jwt").read_text().strip()
    forged, foreign = tampered(token), suite_token(token, UNKNOWN_ISSUER)
    trusted_elsewhere = suite_token(token, SUITE_ISSUER)
    walk = Walkthrough(scenario, variant)
    seed_apps(scenario, "rogue-client.yaml")
    sleep = scenario.pod("ambient-apps", "sleep-ambient")
    rogue = scenario.pod("ambient-apps", "rogue-client")
    walk.provision()

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
            hint = JWKS_HINT if (policies, status, headers) == ("with", 200, bearer(token)) else ""
            scenario.converge(client, f"{HTTPBIN}{path}", status_is(want),
                              f"{what}, {policies} the policies ({variant}): expected HTTP {want}{hint}",
                              headers=headers)

    play("before")
    policies = walk.policies()
    scenario.apply(policies)
    play("with")   # the denies come first, so the final 200 is judged with both policies in force
    scenario.delete(policies)
    play("after deleting")
