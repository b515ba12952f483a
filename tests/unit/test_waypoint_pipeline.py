"""The waypoint's per-request decision (authn -> authz -> route) on the seed article's policies."""

import base64
import json

import pytest

from reference_impl.identity import Identity
from reference_impl.waypoint.config import ConfigError, WaypointConfig
from reference_impl.l7.pipeline import RBAC_DENIED_BODY, Tunnel, decide
from reference_impl.l7.routing import Router, resolve
from tests.support.waypoint_seed import (HTTPBIN_UID, SLEEP_IDENTITY_URI, seed_snapshot, seed_token,
                                             workload)

SLEEP = Identity.parse(SLEEP_IDENTITY_URI)
ROGUE = Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/rogue-client")
VIP, PORT = "10.96.0.50", 8000


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def run(snapshot, path, token=None, peer=SLEEP, extra=(), router=None):
    config = WaypointConfig.from_snapshot(snapshot, 1)
    destination = resolve(config, (VIP, PORT))
    assert destination is not None
    headers = [("host", "httpbin-ambient.ambient-apps:8000"), ("user-agent", "curl/8"), *extra]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    return decide(config, router or Router(), Tunnel(peer, "10.244.0.9", destination), "GET", path, headers)


@pytest.mark.parametrize("jwks_inline", [False, True])
def test_article_l7_step(jwks_inline):
    snap = seed_snapshot(jwks_inline=jwks_inline)
    headers_with_token = run(snap, "/headers", seed_token())
    assert (headers_with_token.status, headers_with_token.body) == (403, RBAC_DENIED_BODY)
    ip_without_token = run(snap, "/ip")
    assert (ip_without_token.status, ip_without_token.body) == (403, RBAC_DENIED_BODY)
    ip_with_token = run(snap, "/ip", seed_token())
    assert ip_with_token.forwards, ip_with_token.reason
    assert ip_with_token.upstream.workload.uid == HTTPBIN_UID
    assert ip_with_token.upstream.address == ("10.244.0.5", 80)
    assert ip_with_token.request_principal == "testing@secure.istio.io/testing@secure.istio.io"


def test_tampered_token_is_401_not_403():
    verdict = run(seed_snapshot(), "/ip", tampered(seed_token()))
    assert verdict.status == 401
    assert verdict.body == b"Jwt verification fails"
    assert dict(verdict.reply_headers)["www-authenticate"].startswith('Bearer realm="http://')


def test_unknown_issuer_and_garbage_are_401():
    assert run(seed_snapshot(), "/ip", "not-a-jwt").status == 401


def test_token_is_stripped_before_forwarding_and_request_id_added():
    verdict = run(seed_snapshot(), "/ip", seed_token(), extra=[("x-keep", "yes")])
    names = [name for name, _ in verdict.forward_headers]
    assert "authorization" not in names
    assert ("x-keep", "yes") in verdict.forward_headers
    assert "x-request-id" in names and ("x-forwarded-proto", "http") in verdict.forward_headers


def test_forward_original_token_keeps_it():
    snap = seed_snapshot()
    snap["requestAuthentications"][0]["spec"]["jwtRules"][0]["forwardOriginalToken"] = True
    verdict = run(snap, "/ip", seed_token())
    assert ("authorization", f"Bearer {seed_token()}") in verdict.forward_headers


def test_hop_by_hop_headers_are_not_forwarded():
    verdict = run(seed_snapshot(policies=False), "/ip",
                  extra=[("connection", "keep-alive, x-secret"), ("x-secret", "1"), ("keep-alive", "5")])
    names = {name for name, _ in verdict.forward_headers}
    assert not names & {"connection", "x-secret", "keep-alive"}


def test_other_principal_is_denied_even_with_token():
    assert run(seed_snapshot(), "/ip", seed_token(), peer=ROGUE).status == 403


def test_without_policies_everything_is_forwarded():
    verdict = run(seed_snapshot(policies=False), "/headers")
    assert verdict.forwards and verdict.reason == "allowed: no ALLOW policy applies"


def test_policies_bound_to_other_workloads_do_not_apply():
    snap = seed_snapshot()
    for bound in snap["authorizationPolicies"] + snap["requestAuthentications"]:
        bound["appliesToWorkloads"] = ["Kubernetes//Pod/ambient-apps/someone-else"]
    assert run(snap, "/headers", tampered(seed_token())).forwards


def test_target_ref_policies_apply_to_all_traffic():
    snap = seed_snapshot(policies=False)
    snap["authorizationPolicies"] = [{
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-post", "namespace": "ambient-apps"},
        "spec": {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                 "name": "httpbin-ambient-waypoint"}],
                 "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/deny*"]}}]}]},
        "appliesToWorkloads": None, "appliesToServices": None}]
    assert run(snap, "/deny/x").status == 403
    assert run(snap, "/ip").forwards


def test_a_service_attached_policy_follows_the_service_addressed_not_its_pods():
    snap = seed_snapshot(policies=False)
    deny = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-all-paths", "namespace": "ambient-apps"},
            "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "other"}],
                     "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["*"]}}]}]},
            "appliesToWorkloads": None}
    snap["authorizationPolicies"] = [dict(deny, appliesToServices=["ambient-apps/other.ambient-apps.svc.cluster.local"])]
    assert run(snap, "/ip").forwards, "a policy attached to another Service must not govern this one"
    service_key = snap["allServices"][0]["namespace"] + "/" + snap["allServices"][0]["hostname"]
    snap["authorizationPolicies"] = [dict(deny, appliesToServices=[service_key])]
    assert run(snap, "/ip").status == 403


def test_allowed_but_no_healthy_endpoint_is_503():
    snap = seed_snapshot(policies=False)
    snap["workloads"][0]["status"] = "Unhealthy"
    verdict = run(snap, "/ip")
    assert (verdict.status, verdict.body) == (503, b"no healthy upstream")


def test_round_robin_over_healthy_endpoints():
    snap = seed_snapshot(policies=False)
    service = snap["allServices"][0]
    for i, status in ((1, "Healthy"), (2, "Unhealthy")):
        snap["workloads"].append(workload(f"httpbin-ambient-{i}", f"10.244.1.{i}",
                                          "spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient",
                                          status=status))
        uid = snap["workloads"][-1]["uid"]
        service["endpoints"][uid] = {"workloadUid": uid, "port": {"8000": 80}, "status": "Healthy"}
    router = Router()
    picked = [run(snap, "/ip", router=router).upstream.workload.ip for _ in range(4)]
    assert sorted(set(picked)) == ["10.244.0.5", "10.244.1.1"]
    assert picked[0] != picked[1] and picked[0] == picked[2]


def test_resolve_only_what_the_waypoint_fronts():
    config = WaypointConfig.from_snapshot(seed_snapshot(), 1)
    assert resolve(config, (VIP, PORT)).service.name == "httpbin-ambient"
    assert resolve(config, (VIP, 9999)) is None
    assert resolve(config, ("10.96.0.99", PORT)) is None
    by_pod = resolve(config, ("10.244.0.5", 80))
    assert by_pod.workload.uid == HTTPBIN_UID
    assert Router().pick(config, by_pod).address == ("10.244.0.5", 80)


@pytest.mark.parametrize("mutate, words", [
    (lambda s: s.update(services=["ambient-apps/missing.svc"]), "services: 'ambient-apps/missing.svc'"),
    (lambda s: s.update(workloads="nope"), "workloads: Input should be a valid list"),
    (lambda s: s["workloads"][0].pop("workloadIps"), "workloads[0]: missing field `workloadIps`"),
    (lambda s: s["allServices"][0].update(addresses=[]), "allServices[0]: unknown field `addresses`"),
    (lambda s: s["workloads"][0].update(identity="cluster.local/ns/x/sa/y"), "workloads[0].identity"),
    (lambda s: s["authorizationPolicies"][0]["spec"].update(action="MAYBE"),
     "authorizationPolicies[0] (ambient-apps/allow-ip-path-with-jwt)"),
    (lambda s: s.update(jwksByUri={"https://x": {"nokeys": 1}}), "jwksByUri['https://x']"),
])
def test_bad_snapshots_name_the_field(mutate, words):
    snap = seed_snapshot()
    mutate(snap)
    with pytest.raises(ConfigError) as err:
        WaypointConfig.from_snapshot(snap, 7)
    message = str(err.value)
    assert "version 7" in message and words in message, message
    assert "\n" not in message


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_a_forged_alg_is_a_401_answer_not_a_crash():
    # issue 9: a token whose `alg` is a list raised inside the request's task
    claims = json.loads(base64.urlsafe_b64decode(seed_token().split(".")[1] + "=="))
    forged = f"{_b64({'alg': ['RS256'], 'typ': 'JWT'})}.{_b64(claims)}.c2ln"
    verdict = run(seed_snapshot(), "/ip", forged)
    assert verdict.status == 401
    assert dict(verdict.reply_headers)["www-authenticate"] == \
        'Bearer realm="http://httpbin-ambient.ambient-apps:8000/ip", error="invalid_token"'


def test_a_forged_header_token_does_not_ride_along_with_a_valid_query_token():
    valid_query = run(seed_snapshot(), f"/ip?access_token={seed_token()}")
    assert valid_query.forwards, valid_query.reason
    both = run(seed_snapshot(), f"/ip?access_token={seed_token()}", tampered(seed_token()))
    assert both.status == 401, both.reason


def test_without_policies_or_jwt_rules_the_verdict_is_the_engines_own():
    # decide() skips authenticate and evaluate_l7 when nothing applies: their answers must stand.
    verdict = run(seed_snapshot(policies=False), "/ip?a=1", seed_token())
    assert verdict.forwards and verdict.reason == "allowed: no ALLOW policy applies"
    assert verdict.request_principal is None   # no rule: the token is not even looked at
    assert ("authorization", f"Bearer {seed_token()}") in verdict.forward_headers


def test_a_verified_token_names_the_principal_when_no_policy_applies():
    snap = seed_snapshot()
    snap["authorizationPolicies"] = []
    claims = json.loads(base64.urlsafe_b64decode(seed_token().split(".")[1] + "=="))
    verdict = run(snap, "/ip", seed_token())
    assert verdict.forwards and verdict.reason == "allowed: no ALLOW policy applies"
    assert verdict.request_principal == f"{claims['iss']}/{claims['sub']}"
    assert "authorization" not in [name for name, _ in verdict.forward_headers]
    assert run(snap, "/ip", tampered(seed_token())).status == 401


def test_request_ids_are_version_4_uuids_as_uuid_formats_them(monkeypatch):
    import random
    import uuid

    from reference_impl.l7 import pipeline

    for bits in (0, (1 << 128) - 1, 0x0123456789ABCDEF0123456789ABCDEF, random.getrandbits(128)):
        monkeypatch.setattr(pipeline.random, "getrandbits", lambda n, bits=bits: bits)
        assert pipeline._request_id() == str(uuid.UUID(int=bits, version=4))


def test_what_applies_to_a_destination_is_found_once_per_config_version():
    config = WaypointConfig.from_snapshot(seed_snapshot(), 1)
    first = config.policies_for(HTTPBIN_UID, None)
    assert [p.key for p in first] == ["ambient-apps/allow-ip-path-with-jwt"]
    assert config.policies_for(HTTPBIN_UID, None) is first            # no walk of every policy again
    assert config.jwt_rules_for(HTTPBIN_UID, None) is config.jwt_rules_for(HTTPBIN_UID, None)
    assert config.policies_for("another-workload", None) == ()
    # a policy bound while the config is still being built is seen by the next lookup
    config.authorization.append(config.authorization[0])
    assert len(config.policies_for(HTTPBIN_UID, None)) == 2


def test_endpoints_are_found_once_per_config_version_and_a_new_version_sees_health_changes():
    from reference_impl.l7 import routing

    snap = seed_snapshot(policies=False)
    snap["workloads"].append(workload("httpbin-ambient-1", "10.244.1.1",
                                      "spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient"))
    uid = snap["workloads"][-1]["uid"]
    snap["allServices"][0]["endpoints"][uid] = {"workloadUid": uid, "port": {"8000": 80}, "status": "Healthy"}
    config = WaypointConfig.from_snapshot(snap, 1)
    destination, router = resolve(config, (VIP, PORT)), Router()
    assert routing._candidates(config, destination.service, PORT) is routing._candidates(config, destination.service, PORT)
    assert {router.pick(config, destination).workload.ip for _ in range(4)} == {"10.244.0.5", "10.244.1.1"}
    snap["workloads"][-1]["status"] = "Unhealthy"
    newer = WaypointConfig.from_snapshot(snap, 2)   # a connection keeps the Destination it resolved
    assert {router.pick(newer, destination).workload.ip for _ in range(4)} == {"10.244.0.5"}


def test_a_policy_attached_to_one_service_is_not_found_for_another_service_of_the_same_pod():
    from reference_impl.l7.config import Bound

    config = WaypointConfig.from_snapshot(seed_snapshot(policies=False), 1)
    policy = object()
    config.authorization.append(Bound(policy, None, frozenset({"ns/alpha"})))
    assert config.policies_for(HTTPBIN_UID, "ns/beta") == ()          # looked up first, then cached
    assert config.policies_for(HTTPBIN_UID, "ns/alpha") == (policy,)
    assert config.policies_for(HTTPBIN_UID, "ns/beta") == ()
