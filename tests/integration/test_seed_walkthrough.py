"""The seed article's walkthrough, end to end on the reference mesh, with the article's own files.

Step 1-2: two namespaces, httpbin in both, sleep in the ambient one; both calls succeed.
Step 3: the waypoint Gateway (the article's Istio 1.18 form) is provisioned and traffic to
httpbin-ambient goes through it without restarting the app pod.
L4 step: `l4-policy.yaml` admits sleep-ambient and refuses the rogue client.
L7 step: `jwt-policy.yaml` + `l7-authz-policy.yaml` give 403 / 403 / 200 (and 401 for a bad token).

Every expectation is checked both ways (before and after the object that changes it), and every
change is awaited as N consecutive expected outcomes within a bound, never a fixed sleep.
"""
from __future__ import annotations

import json
import pathlib
import time

import pytest

from conformance import curl
from meshkit import response

SEED = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "seed"

BOUND_SECONDS = 20
CONSECUTIVE = 3
HTTPBIN = "http://httpbin-ambient.ambient-apps:8000"
TOKEN = (SEED / "demo.jwt").read_text().strip()


def pod_named(cluster, namespace, app):
    pods = [p for p in cluster.list("Pod", namespace=namespace, selector={"app": app})
            if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, f"expected one {app} pod in {namespace}, found {[p['metadata']['name'] for p in pods]}"
    return pods[0]


def converge(cluster, pod, url, accept, what, token=None):
    """Poll until `accept(outcome)` holds CONSECUTIVE times in a row; return the last body."""
    deadline, run, seen = time.monotonic() + BOUND_SECONDS, 0, []
    while True:
        r = response(cluster, "ambient-apps", pod["metadata"]["name"], url, body=True,
                     headers={"Authorization": f"Bearer {token}"} if token else None)
        seen.append(r.outcome)
        run = run + 1 if accept(r.outcome) else 0
        if run >= CONSECUTIVE:
            return r.body
        assert time.monotonic() < deadline, f"{what}: not {CONSECUTIVE} in a row within {BOUND_SECONDS}s; saw {seen[-10:]}"
        time.sleep(0.2)


def is_status(code):
    return lambda outcome: outcome == code


def denied_at_l4_or_l7(outcome):
    # ztunnel refuses the connection (reset/EOF, or a refused connect when its reset lands
    # first); a waypoint that enforces the workload's selector policy (the article's 1.18 form)
    # answers 403. A timeout is a stall, never a deny.
    return outcome == 403 or outcome in curl.L4_REFUSALS


@pytest.fixture(scope="module")
def walkthrough(cluster_factory):
    return cluster_factory("walk", [SEED / "namespaces.yaml", SEED / "httpbin-legacy.yaml",
                                    SEED / "httpbin-ambient.yaml", SEED / "sleep-ambient.yaml"])


def test_the_seed_walkthrough_plays_end_to_end(walkthrough):
    cluster = walkthrough
    sleep = pod_named(cluster, "ambient-apps", "sleep-ambient")
    httpbin = pod_named(cluster, "ambient-apps", "httpbin-ambient")

    # Step 2: both services answer from the ambient sleep pod; ambient pods keep one container.
    converge(cluster, sleep, f"{HTTPBIN}/headers", is_status(200), "sleep -> httpbin-ambient")
    converge(cluster, sleep, "http://httpbin-legacy.legacy-apps:8000/headers", is_status(200),
             "sleep -> httpbin-legacy")
    assert [c["name"] for c in httpbin["spec"]["containers"]] == ["httpbin"]
    assert [c["name"] for c in sleep["spec"]["containers"]] == ["sleep"]

    # Step 3: the waypoint is provisioned as a Deployment and the app pod is not restarted.
    cluster.apply([SEED / "waypoint.yaml"])
    deadline = time.monotonic() + BOUND_SECONDS
    while not any(d["metadata"]["name"] == "httpbin-ambient-waypoint"
                  for d in cluster.list("Deployment", namespace="ambient-apps")):
        assert time.monotonic() < deadline, "no waypoint Deployment was provisioned for the Gateway"
        time.sleep(0.2)
    cluster.wait_ready(timeout=BOUND_SECONDS)
    converge(cluster, sleep, f"{HTTPBIN}/headers", is_status(200), "sleep -> httpbin-ambient via the waypoint")
    [waypoint_pod] = [p for p in cluster.list("Pod", namespace="ambient-apps")
                      if p["metadata"]["name"].startswith("httpbin-ambient-waypoint-")]
    assert "/headers" in cluster.logs("ambient-apps", waypoint_pod["metadata"]["name"]), \
        "the request to httpbin-ambient did not pass through the waypoint"
    after = pod_named(cluster, "ambient-apps", "httpbin-ambient")
    assert after["metadata"]["uid"] == httpbin["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == \
        httpbin["status"]["containerStatuses"][0]["restartCount"]

    # L4 step: the rogue client is admitted before the policy and refused after it.
    cluster.apply([SEED / "rogue-client.yaml"])
    cluster.wait_ready(timeout=BOUND_SECONDS)
    rogue = pod_named(cluster, "ambient-apps", "rogue-client")
    converge(cluster, rogue, f"{HTTPBIN}/headers", is_status(200), "rogue before the L4 policy")
    cluster.apply([SEED / "l4-policy.yaml"])
    converge(cluster, rogue, f"{HTTPBIN}/headers", denied_at_l4_or_l7, "rogue after the L4 policy")
    converge(cluster, sleep, f"{HTTPBIN}/headers", is_status(200), "sleep after the L4 policy")

    # L7 step: the L4 policy goes, the JWT and path policies come.
    cluster.delete([SEED / "l4-policy.yaml"])
    converge(cluster, sleep, f"{HTTPBIN}/ip", is_status(200), "sleep /ip without a token, before L7 policy")
    cluster.apply([SEED / "jwt-policy.yaml", SEED / "l7-authz-policy.yaml"])
    converge(cluster, sleep, f"{HTTPBIN}/headers", is_status(403), "/headers with a valid token", token=TOKEN)
    converge(cluster, sleep, f"{HTTPBIN}/ip", is_status(403), "/ip without a token")
    body = converge(cluster, sleep, f"{HTTPBIN}/ip", is_status(200), "/ip with a valid token", token=TOKEN)
    assert "origin" in json.loads(body), f"/ip did not return httpbin's JSON: {body!r}"
    converge(cluster, sleep, f"{HTTPBIN}/ip", is_status(401), "/ip with a tampered token", token=TOKEN + "x")
    converge(cluster, rogue, f"{HTTPBIN}/ip", is_status(403), "rogue /ip with a valid token", token=TOKEN)
