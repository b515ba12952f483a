"""Every chaos experiment run as a user runs it (`chaos run chaos/experiments/<x>.yaml` in a
subprocess) on one reference cluster, asserted on its journal: completed, not deviated, the steady
state met before and after, and the experiment's numbers. Each hypothesis is shown to have teeth:
a deliberately broken mesh (or a single waypoint replica) makes the matching experiment deviate."""
from __future__ import annotations

import pathlib

import pytest

import chaoskit

HERE = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def chaos_cluster(cluster_factory):
    return cluster_factory("chaos").name


def _after_kill(experiment: dict, action: dict) -> None:
    steps = experiment["method"]
    at = next(i for i, s in enumerate(steps) if s["name"].startswith("sigkill"))
    steps.insert(at + 1, action)


def test_ztunnel_kill_hurts_only_its_node_fails_closed_and_recovers(chaos_cluster, tmp_path):
    run = chaoskit.run("ztunnel-kill", chaos_cluster, tmp_path)
    run.assert_held()
    traffic = run.traffic()
    fault = next(e["t"] for e in run.events() if e["event"] == "fault-start")
    lost = {name: sum(1 for t, _, o in s["records"] if o != 200 and t >= fault) for name, s in traffic.items()}
    # blast radius: exactly the streams from or to node-1's pods lost requests
    assert lost["client-0>server-0"] == 0, lost
    assert lost["client-1>server-0"] > 0 and lost["client-0>server-1"] > 0, \
        f"the kill did not bite the dead node's pods (no request of theirs failed): {lost}"
    assert run.numbers["streams_hit"] == ["client-1>server-0", "client-0>server-1"]
    assert 0 < run.probe("after", "recovery-seconds") <= 5
    assert run.probe("after", "plaintext-segments-on-dead-node") == 0
    assert (run.out / "timeline.png").stat().st_size > 10_000 and (run.out / "report.md").exists()


def test_ztunnel_kill_deviates_when_the_dead_nodes_pods_fail_open(chaos_cluster, tmp_path):
    """A broken node (capture removed when its ztunnel dies): client-1's calls leave in plaintext,
    which the wire check sees."""
    breakage = {"type": "action", "name": "fail-open-capture-of-client-1",
                "provider": {"type": "python", "module": "chaos_breakage", "func": "fail_open_capture",
                             "arguments": {"client": "client-1"}}}
    run = chaoskit.run("ztunnel-kill", chaos_cluster, tmp_path, change=lambda e: _after_kill(e, breakage),
                       extra_pythonpath=str(HERE))
    assert run.journal["deviated"], run.log[-3000:]
    assert run.probe("after", "plaintext-segments-on-dead-node") > 0


def test_waypoint_ha_two_replicas_lose_no_new_request(chaos_cluster, tmp_path):
    run = chaoskit.run("waypoint-ha", chaos_cluster, tmp_path)
    run.assert_held()
    assert run.probe("after", "l7-requests-failed-after-the-kill") == 0
    l7 = run.traffic()["client-0>server-l7"]["records"]
    assert len(l7) >= 100 and all(o == 200 for _, _, o in l7), "an L7 request failed across the kill"
    assert len(run.method("sigkill-one-waypoint-pod")) == 1


def test_waypoint_ha_deviates_with_a_single_replica(chaos_cluster, tmp_path):
    run = chaoskit.run("waypoint-ha", chaos_cluster, tmp_path, env={"AMBIENT_WAYPOINT_REPLICAS": "1"})
    assert run.journal["status"] == "completed" and run.journal["deviated"], run.log[-3000:]
    assert run.probe("after", "l7-requests-failed-after-the-kill") > 0
