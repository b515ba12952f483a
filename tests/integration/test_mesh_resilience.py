"""Control plane down, data plane keeps serving (issue 4 "Resilience", ISTIO-SEMANTICS section 12).

On a real 2-node cluster (httpbin on node-1; sleep and the rogue client on node-0, so every
request crosses both ztunnels) with the article's L4 policy in force, istiod is taken away twice:
scaled to zero, and its pod killed with grace 0. Throughout, a streaming request opened before
keeps receiving bytes, new requests between known workloads succeed, and the rogue client stays
denied. A pod and a policy created meanwhile take effect once istiod is back, and both node
proxies reconnect and acknowledge the new state.
"""
from __future__ import annotations

import time

import pytest

from meshkit import (L4_POLICY, NS, HeldStream, allow_policy, converge, hold, istiod_pods,
                               istiod_proxies, outcome, pinned_pod, pod_of, running_pods,
                               seed_objects, service_account, start_cluster, until, ztunnel_dump,
                               ztunnels_in_sync)

NODES = ("node-0", "node-1")
LATE_SA = "late-sa"
# Long enough to span the outage phase (5 checked rounds, a new pod, istiod back) on a loaded
# machine: the stream must be seen flowing before, during and after.
HELD_SECONDS = 20
# istiod comes back as a new process: the proxies' reconnect backoff is capped at 1.5 s, the
# rest is the pod start and a first derive.
RESYNC_BOUND_S = 10


@pytest.fixture(scope="module")
def c(cluster_factory, worker_id):
    objects = seed_objects(pin={"httpbin-ambient": "node-1", "sleep-ambient": "node-0", "rogue-client": "node-0"})
    c = start_cluster(cluster_factory, worker_id, "res", objects + [service_account(LATE_SA, NS)])
    c.apply([L4_POLICY])
    converge(checks(c), {"sleep": "allowed", "rogue": "denied"}, within=10)
    return c


def checks(c, **extra) -> dict:
    pods = {"sleep": pod_of(c, "sleep-ambient"), "rogue": pod_of(c, "rogue-client"), **extra}
    return {label: (c, NS, pod) for label, pod in pods.items()}


def connected_since(c, wall_time: float) -> set[str]:
    """Nodes whose ztunnel opened its current istiod stream after `wall_time`."""
    proxies = istiod_proxies(c) or {"proxies": []}
    return {p["node"] for p in proxies["proxies"] if p["proxy"] == "ztunnel" and p["connectedAt"] > wall_time}


@pytest.mark.parametrize("how", ["scaled-to-zero", "pod-killed"])
def test_data_plane_serves_while_istiod_is_down_and_takes_changes_when_it_is_back(c, how):
    until(lambda: ztunnels_in_sync(c), 10, what="both ztunnels in sync before the outage")
    versions = {node: ztunnel_dump(c, node)["version"] for node in NODES}
    late_pod, late_policy = f"late-{how.split('-')[0]}", f"allow-late-{how.split('-')[0]}"
    late = [pinned_pod(late_pod, NS, "node-0", LATE_SA), allow_policy(late_policy, [f"cluster.local/ns/{NS}/sa/{LATE_SA}"])]
    held = HeldStream(c, NS, pod_of(c, "sleep-ambient"), HELD_SECONDS)
    try:
        until(held.flowing, 10, what="the first byte of the held stream")
        down_wall, down_at = time.time(), time.monotonic()
        old_istiod = istiod_pods(c)[0]["metadata"]["name"]
        if how == "scaled-to-zero":
            c.scale("istio-system", "istiod", 0)
            until(lambda: not istiod_pods(c) and istiod_proxies(c) is None, 10, what="istiod gone")
            # What the proxies hold once istiod is gone: "in sync" above is not "quiescent", and
            # under load a pod event istiod had not derived yet was pushed after it.
            versions = {node: ztunnel_dump(c, node)["version"] for node in NODES}
        else:
            c.delete_pod("istio-system", old_istiod, grace_period=0)

        # Known workloads, last configuration: new connections keep working, the policy holds.
        hold(checks(c), {"sleep": "allowed", "rogue": "denied"}, rounds=5, within=60)
        c.apply(late)
        until(lambda: running_pods(c, NS, {"app": late_pod}), 15, what=f"pod {late_pod} running")

        if how == "scaled-to-zero":
            # Nobody can tell the proxies yet: the new pod is not captured, so it reaches httpbin
            # in plaintext, without identity, and the ALLOW policy in force denies it.
            assert outcome(c, NS, late_pod) == "denied"
            assert {node: ztunnel_dump(c, node)["version"] for node in NODES} == versions, \
                "a node proxy changed configuration while istiod was scaled to zero"
            # The drip sends a byte every 0.25 s and the checks above can take less than that.
            until(lambda: held.bytes_between(down_at, time.monotonic()) > 0, 5,
                  what="a byte of the held stream while istiod is down")
            c.scale("istio-system", "istiod", 1)
        back_at = time.monotonic()

        until(lambda: connected_since(c, down_wall) >= set(NODES) and ztunnels_in_sync(c), RESYNC_BOUND_S,
              what="both ztunnels reconnected to the new istiod and acknowledged its snapshot")
        assert istiod_pods(c)[0]["metadata"]["name"] != old_istiod
        for zt in running_pods(c, "istio-system", {"app": "ztunnel"}):
            assert "while istiod is away" in c.logs("istio-system", zt["metadata"]["name"]), \
                f"{zt['metadata']['name']} did not report keeping its config while istiod was away"
        try:
            converge(checks(c, late=late_pod), {"sleep": "allowed", "rogue": "denied", "late": "allowed"}, within=15)
        except AssertionError as failure:   # say what the node proxies did about the late pod
            raise AssertionError(f"{failure}\n{late_pod_story(c, late_pod, LATE_SA)}") from None
        resynced = {node: ztunnel_dump(c, node) for node in NODES}
        for node in NODES:
            assert resynced[node]["version"] > versions[node], f"{node}'s ztunnel did not take a newer snapshot"
            assert any(p["name"] == late_policy for p in resynced[node]["policies"]), node
        assert any(cert["identity"].endswith(f"/sa/{LATE_SA}") and cert["state"] == "Available"
                   for cert in resynced["node-0"]["certificates"]), "the new pod's ztunnel holds no certificate for it"

        rc, received, status = held.finish()
        assert (rc, status) == (0, "200") and received == HELD_SECONDS * 4, \
            f"held stream: curl exit {rc}, HTTP {status}, {received}/{HELD_SECONDS * 4} bytes"
        assert held.arrivals[0] < down_at and held.arrivals[-1] > back_at, "the held stream did not span the outage"
    finally:
        held.close()
        if how == "scaled-to-zero":
            c.scale("istio-system", "istiod", 1)
        c.delete(late)


def late_pod_story(c, pod: str, sa: str) -> str:
    """The ztunnels' log lines about a pod and its identity (capture and its errors, certificate,
    refusals), what each node proxy holds for it, and istiod's view of their streams."""
    lines = []
    for zt in running_pods(c, "istio-system", {"app": "ztunnel"}):
        name = zt["metadata"]["name"]
        lines += [f"{name}: {line}" for line in c.logs("istio-system", name).splitlines()
                  if f"/{pod}" in line or f'"{pod}"' in line or f"/sa/{sa}" in line][-15:]
    for node in NODES:   # what each node proxy holds: the pod's workload and whether it captured it
        dump = ztunnel_dump(c, node)
        held = [{k: w.get(k) for k in ("name", "node", "workloadIps", "status")}
                for w in dump.get("workloads", ()) if w.get("name") == pod]
        captured = any(p.get("name") == pod for p in dump.get("capturedPods", ()))
        lines.append(f"{node}'s ztunnel at version {dump.get('version')}: workload {held or 'absent'}, "
                     f"captured: {captured}")
    for p in (istiod_proxies(c) or {"proxies": []})["proxies"]:   # a NACK names no pod
        if p["proxy"] == "ztunnel":
            lines.append(f"istiod's stream to {p['node']}: sent {p['sentVersion']}, acked {p['ackedVersion']}"
                         + (f", NACK {p['nack']}" if p.get("nack") else ""))
    return "ztunnel log lines about the late pod:\n" + "\n".join(lines or ["(none)"])
