"""Every chaos experiment run as a user runs it (`chaos run chaos/experiments/<x>.yaml` in a
subprocess) on one reference cluster, asserted on its journal: completed, not deviated, the steady
state met before and after, and the experiment's numbers. Each hypothesis is shown to have teeth:
a deliberately broken mesh (or a single waypoint replica) makes the matching experiment deviate."""
from __future__ import annotations

import json
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
    assert run.probe("before", "plaintext-connections-seen-by-servers") == 0
    assert run.probe("after", "plaintext-connections-seen-by-servers") == 0
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


def test_ztunnel_kill_deviates_on_the_servers_view_alone(chaos_cluster, tmp_path):
    """Without the wire check (a target that cannot capture), the servers' node proxies still
    report the fail-open pod's plaintext connections, and the experiment deviates."""
    breakage = {"type": "action", "name": "fail-open-capture-of-client-1",
                "provider": {"type": "python", "module": "chaos_breakage", "func": "fail_open_capture",
                             "arguments": {"client": "client-1"}}}

    def change(experiment):
        _after_kill(experiment, breakage)
        probes = experiment["steady-state-hypothesis"]["probes"]
        probes[:] = [p for p in probes if p["name"] != "plaintext-segments-on-dead-node"]
    run = chaoskit.run("ztunnel-kill", chaos_cluster, tmp_path, change=change, extra_pythonpath=str(HERE))
    assert run.journal["deviated"], run.log[-3000:]
    assert run.probe("after", "plaintext-connections-seen-by-servers") > 0


def test_waypoint_ha_two_replicas_lose_no_new_request(chaos_cluster, tmp_path):
    run = chaoskit.run("waypoint-ha", chaos_cluster, tmp_path)
    run.assert_held()
    assert run.probe("after", "l7-requests-failed-after-the-kill") == 0
    l7 = run.traffic()["client-0>server-l7"]["records"]
    # A request in flight when the SIGKILL lands dies with its waypoint, as on any mesh: the kill
    # window runs from the decision (fault-start) to the pods being gone (fault-applied); each
    # failure must overlap it, and one client sending every 50 ms has at most one there.
    start, applied = (next(e["t"] for e in run.events() if e["event"] == name) for name in ("fault-start", "fault-applied"))
    failed = [(t, lat, o) for t, lat, o in l7 if o != 200]
    in_flight = [r for r in failed if r[0] <= applied and r[0] + r[1] >= start]
    assert len(l7) >= 100 and failed == in_flight and len(in_flight) <= 1, \
        f"L7 requests failed across the kill (window {start:.3f}..{applied:.3f}): {failed}"
    assert len(run.method("sigkill-one-waypoint-pod")) == 1


def test_waypoint_ha_deviates_with_a_single_replica(chaos_cluster, tmp_path):
    run = chaoskit.run("waypoint-ha", chaos_cluster, tmp_path, env={"AMBIENT_WAYPOINT_REPLICAS": "1"})
    assert run.journal["status"] == "completed" and run.journal["deviated"], run.log[-3000:]
    assert run.probe("after", "l7-requests-failed-after-the-kill") > 0


def _lost_after_fault(run) -> dict[str, int]:
    fault = next(e["t"] for e in run.events() if e["event"] == "fault-start")
    return {name: sum(1 for t, _, o in s["records"] if o != 200 and t >= fault) for name, s in run.traffic().items()}


def test_ztunnel_restart_fails_no_request_and_drains_until_the_deadline(chaos_cluster, tmp_path):
    run = chaoskit.run("ztunnel-restart", chaos_cluster, tmp_path)
    run.assert_held()
    assert all(o == 200 for s in run.traffic().values() for _, _, o in s["records"])
    assert sum(len(s["records"]) for s in run.traffic().values()) >= 450  # every 50 ms, 3 streams, 10 s
    held = run.method("long-lived-connection")
    fault = next(e["t"] for e in run.events() if e["event"] == "fault-start")
    ended = (tmp_path / "out" / "test" / "ztunnel-restart" / "held-held.json")
    record = json.loads(ended.read_text())
    assert held["outcome"] in ("reset", "eof") and 4.0 <= record["ended"] - fault <= 6.5, (held, record["ended"] - fault)
    assert run.probe("after", "held-connection-drain-violations") == 0


def test_ztunnel_restart_deviates_when_the_restart_is_a_crash(chaos_cluster, tmp_path):
    """The same experiment with grace period 0 (no drain): requests fail and the long-lived
    connection is cut at once, so the hypothesis must not hold."""
    def crash(experiment):
        step = next(s for s in experiment["method"] if s["name"].startswith("graceful-restart"))
        step["provider"]["arguments"]["grace_period"] = 0
    run = chaoskit.run("ztunnel-restart", chaos_cluster, tmp_path, change=crash)
    assert run.journal["deviated"], run.log[-3000:]


def test_waypoint_kill_fails_only_l7_traffic_and_recovers(chaos_cluster, tmp_path):
    run = chaoskit.run("waypoint-kill", chaos_cluster, tmp_path)
    run.assert_held()
    lost = _lost_after_fault(run)
    assert lost["client-0>server-l7"] > 0, f"killing the only waypoint failed no L7 request: {lost}"
    assert lost["client-0>server-1"] == 0 and lost["client-1>server-0"] == 0, lost
    assert 0 < run.probe("after", "l7-recovery-seconds") <= 5


def test_istiod_down_keeps_traffic_and_lands_changes_after_its_return(chaos_cluster, tmp_path):
    run = chaoskit.run("istiod-down", chaos_cluster, tmp_path)
    run.assert_held()
    checks = {c["check"]: c for c in json.loads((run.out / "checks.json").read_text())}
    assert checks["client-1>server-1 still allowed"]["ok"]
    assert checks["client-1>server-1 denied"]["seconds"] <= 5
    assert checks["client-0>server-2 allowed"]["seconds"] <= 8
    events = {e["event"]: e["t"] for e in run.events()}
    assert events["fault-end"] - events["fault-start"] >= 2, "istiod was not down for the bounded time"


def test_istiod_down_deviates_when_the_returned_istiod_pushes_late(chaos_cluster, tmp_path):
    """istiod Ready again but frozen for 7 s: the policy made while it was down lands past its
    5 s bound, and the experiment deviates."""
    breakage = {"type": "action", "name": "freeze-istiod-for-7s",
                "provider": {"type": "python", "module": "chaos_breakage", "func": "freeze_control_plane",
                             "arguments": {"seconds": 7}}}

    def change(experiment):
        steps = experiment["method"]
        at = next(i for i, s in enumerate(steps) if s["name"] == "scale-istiod-back-to-1")
        steps.insert(at + 1, breakage)
    run = chaoskit.run("istiod-down", chaos_cluster, tmp_path, change=change, extra_pythonpath=str(HERE))
    assert run.journal["deviated"], run.log[-3000:]
    checks = {c["check"]: c for c in json.loads((run.out / "checks.json").read_text())}
    assert checks["client-1>server-1 denied"]["seconds"] > 5, checks


def test_cert_rotation_renews_at_least_twice_without_a_failed_request(chaos_cluster, tmp_path):
    run = chaoskit.run("cert-rotation", chaos_cluster, tmp_path)
    run.assert_held()
    served = run.method("certificates-server-1-serves")
    assert served["distinct"] >= 3 and served["renewals_before_expiry"] == served["distinct"] - 1, served
    assert run.probe("after", "failed-requests") == 0


def test_ca_unreachable_past_half_life_keeps_serving(chaos_cluster, tmp_path):
    run = chaoskit.run("ca-unreachable", chaos_cluster, tmp_path)
    run.assert_held()
    events = {e["event"]: e["t"] for e in run.events()}
    assert events["fault-end"] - events["fault-start"] >= 6, "istiod came back before the certificates' half-life"
    assert run.probe("after", "failed-requests") == 0


def test_node_partition_fails_cross_node_calls_fast_and_heals(chaos_cluster, tmp_path):
    run = chaoskit.run("node-partition", chaos_cluster, tmp_path)
    lost = _lost_after_fault(run)
    assert lost["client-0>remote-1"] > 0 and lost["client-1>remote-0"] > 0, f"the partition cut nothing: {lost}"
    run.assert_held()
    assert run.probe("after", "slowest-call-seconds") <= 1.5
    assert lost["client-0>server-0"] == 0 and lost["client-1>server-1"] == 0, lost
