"""The Envoy waypoint (issue 16) on a real cluster: the root namespace's annotation (what `cluster
up --waypoint envoy` applies) makes istiod provision the seed's waypoint with the Envoy image; the
seed's L7 policies then take effect by replaced LDS files without restarting Envoy (its PID, from
the agent's /stats, is the same before and after), allowed before and denied after."""
from __future__ import annotations

import json
import time

import pytest

from meshkit import response
from reference_impl.cluster import client as cluster_client

from test_seed_walkthrough import HTTPBIN, SEED, TOKEN, converge, is_status, pod_named

BOUND_SECONDS = 20   # the Python waypoint's convergence bound in the seed walkthrough


@pytest.fixture(scope="module")
def envoy_cluster(cluster_factory):
    c = cluster_factory("envoywp", [SEED / "namespaces.yaml", SEED / "httpbin-ambient.yaml",
                                    SEED / "sleep-ambient.yaml"])
    c.apply([cluster_client.waypoint_default("envoy")])
    c.apply([json.loads(json.dumps(o)) for o in _yaml(SEED / "waypoint.yaml")])
    return c


def _yaml(path):
    import yaml
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def _waypoint(c) -> dict:
    deadline = time.monotonic() + 60
    while True:
        pods = [p for p in c.list("Pod", namespace="ambient-apps",
                                  selector={"gateway.networking.k8s.io/gateway-name": "httpbin-ambient-waypoint"})
                if not p["metadata"].get("deletionTimestamp")
                and any(s.get("type") == "Ready" and s.get("status") == "True"
                        for s in (p.get("status") or {}).get("conditions") or ())]
        if pods:
            return pods[0]
        assert time.monotonic() < deadline, "the Envoy waypoint pod did not become ready within 60s"
        time.sleep(0.5)


def _agent_stats(c, pod: dict) -> dict:
    done = c.exec("ambient-apps", pod["metadata"]["name"],
                  ["curl", "-s", "--max-time", "5", "http://127.0.0.1:15021/stats"], timeout=10)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_policy_change_reaches_envoy_without_a_restart(envoy_cluster):
    c = envoy_cluster
    waypoint = _waypoint(c)
    assert [x["image"] for x in waypoint["spec"]["containers"]] == ["ambient-conformance/waypoint-envoy"]
    sleep = pod_named(c, "ambient-apps", "sleep-ambient")
    before = _agent_stats(c, waypoint)
    assert before["implementation"] == "envoy" and before["envoyPid"]

    # Allowed before: through the Envoy waypoint (httpbin sees the waypoint's address, not sleep's).
    body = converge(c, sleep, f"{HTTPBIN}/ip", is_status(200), "sleep -> httpbin via the Envoy waypoint",
                    token=TOKEN)
    assert json.loads(body)["origin"] == waypoint["status"]["podIP"]
    converge(c, sleep, f"{HTTPBIN}/headers", is_status(200), "/headers before the L7 policy", token=TOKEN)

    c.apply([o for name in ("jwt-policy.yaml", "l7-authz-policy.yaml") for o in _yaml(SEED / name)])
    # Denied after, within the Python waypoint's bound; and the positive control still passes.
    converge(c, sleep, f"{HTTPBIN}/headers", is_status(403), "/headers after the L7 policy", token=TOKEN)
    converge(c, sleep, f"{HTTPBIN}/ip", is_status(403), "/ip without a token after the L7 policy")
    converge(c, sleep, f"{HTTPBIN}/ip", is_status(200), "/ip with the token after the L7 policy", token=TOKEN)
    denied = response(c, "ambient-apps", sleep["metadata"]["name"], f"{HTTPBIN}/headers", body=True,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert denied.body.strip() == "RBAC: access denied", denied.body

    after = _agent_stats(c, _waypoint(c))
    assert after["envoyPid"] == before["envoyPid"], "Envoy was restarted to apply the policy"
    assert after["configVersion"] > before["configVersion"]
