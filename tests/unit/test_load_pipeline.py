"""The load's pure parts: the timetable, the options' bounds, the summary's arithmetic (added
latency per hop, the behind flag, the Envoy ratio, cost per 1,000 requests/s), and the
locustfile's open-model schedule (in a subprocess: Locust monkey-patches with gevent at import)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from load import report, runner, scenario, sidecar_proof

REPO = Path(__file__).resolve().parents[2]


def test_timetable_warms_up_each_path_then_rotates_the_rounds_without_overlap():
    opts = runner.Options(slot_s=2.0, rounds=3, warmup_s=0.5)
    slots = runner.timetable(["a", "b", "c"], opts, start=1000.0)
    assert [(s.path, s.warm) for s in slots[:3]] == [("a", True), ("b", True), ("c", True)]
    rounds = [[s.path for s in slots[3 + 3 * r: 6 + 3 * r]] for r in range(3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert all(s.end - s.start == 2.0 for s in slots[3:])
    assert all(later.start >= earlier.end + runner.GAP_S - 1e-9 for earlier, later in zip(slots, slots[1:]))
    assert slots[-1].end - 1000.0 == pytest.approx(opts.duration(3) - runner.GAP_S)


def test_options_refuse_unbounded_runs_and_nonsense():
    runner.Options().check()
    for bad in (dict(rate=0), dict(users=0), dict(payload=-1), dict(rounds=100), dict(slot_s=60, rounds=50)):
        with pytest.raises(ValueError):
            runner.Options(**bad).check()
    # the defaults fit the two minutes with room for the cluster's start
    assert runner.Options().duration(len(scenario.PATHS)) + runner.START_MARGIN_S < 90


def _entry(values_us, scheduled, in_slot, errors=0, seconds=1.0):
    h = HdrHistogram(1, 60_000_000, 3)
    for v in values_us:
        h.record_value(v)
    return {"latency": h.encode().decode(), "service": h.encode().decode(), "scheduled": scheduled,
            "completed": in_slot, "in_slot": in_slot, "late_sends": 0, "errors": errors,
            "error_samples": ["ConnectionResetError()"] * min(errors, 1), "slot_seconds": seconds,
            "max_send_lag_us": 0}


def _run(results, usage=None):
    return runner.RunResult(paths=scenario.paths_for(_NoSidecars()), results=results, usage=usage or {},
                            conditions={"rate": 100, "payload": 1024, "users": 2, "connections_per_path": 2,
                                        "rounds": 1, "slot_seconds": 1, "warmup_seconds": 0.5,
                                        "client_node": "node-0", "server_node": "node-1",
                                        "load_average_before": [0.1, 0.1, 0.1], "load_average_after": [0.2, 0.1, 0.1],
                                        "cores": 2})


class _NoSidecars:
    name = "plain"

    @staticmethod
    def supported_features():
        return frozenset()

    @staticmethod
    def waypoint_choices():
        return {}


class _Sidecars(_NoSidecars):
    name = "sidecars"

    @staticmethod
    def supported_features():
        from conformance import features
        return frozenset(f.name for f in features.features_in(scenario.SIDECAR_PROFILE))


def test_summary_adds_per_hop_flags_a_lagging_path_and_compares_with_envoy():
    results = {"direct": _entry([100] * 100, 100, 100), "baseline": _entry([110] * 100, 100, 100),
               "ambient-l4": _entry([500] * 100, 100, 100),
               "ambient-l7": _entry([1500] * 100, 100, 90),            # 90 of 100/s: behind
               "envoy-hbone": _entry([300] * 100, 100, 100, errors=1)}
    usage = {"ambient-l4": {"ztunnel node-0": {"role": "ztunnel", "cpu_s": 0.05, "rss_max": 50 << 20, "seconds": 1.0}}}
    summary, _ = report.summarize(_run(results, usage))
    paths = summary["paths"]
    assert paths["sidecar"]["status"].startswith("not available: the plain target does not support the "
                                                 "SIDECAR-INTEROP profile")
    assert paths["ambient-l4"]["added_us"]["p50"] == pytest.approx(400, rel=0.01)
    assert paths["ambient-l4"]["added_per_hop_us"]["p50"] == pytest.approx(200, rel=0.01)
    assert paths["ambient-l7"]["added_per_hop_us"]["p99"] == pytest.approx(1400 / 3, rel=0.01)
    assert paths["ambient-l4"]["status"] == "ok"
    assert paths["ambient-l7"]["status"].startswith("BEHIND: achieved 90 of 100")
    assert "1 errors" in paths["envoy-hbone"]["status"]
    assert summary["noise_floor_us"]["p50"] == pytest.approx(10, abs=1)
    assert summary["comparisons"]["ztunnel_hop_over_envoy_hop"]["p50"] == pytest.approx(2.0, rel=0.02)
    assert summary["comparisons"]["waypoint_hop_us"]["p50"] == pytest.approx(1000, rel=0.01)
    zt = summary["cost"]["ambient-l4"]["ztunnel node-0"]
    assert zt["vcpu"] == 0.05 and zt["vcpu_per_1000_rps"] == 0.5 and zt["rss_mb"] == 50.0
    assert zt["istio_1_24"] == {"vcpu_per_1000_rps": 0.06, "mb_per_1000_rps": 12}
    text = report.table(summary)
    assert "not available: the plain target" in text and "BEHIND" in text
    csv_text = report.hops_csv(summary)
    assert csv_text.splitlines()[0].startswith("path,hops,percentile,latency_us,added_us,added_per_hop_us")


class _EnvoyWaypoints(_Sidecars):
    name = "choosy"

    @staticmethod
    def waypoint_choices():
        return {"python": {"impl": "python"}, "envoy": {"impl": "envoy"}}


def test_the_envoy_waypoint_path_runs_where_the_target_offers_the_choice_and_its_hop_is_compared():
    path = next(p for p in scenario.paths_for(_EnvoyWaypoints()) if p.name == "ambient-l7-envoy")
    assert not path.unavailable and path.hops == 3 and scenario.l7(path)
    assert path.proxies == ("ztunnel", "envoy-waypoint") and path.server == (scenario.ENVOY_WAYPOINT_NS, "server")
    names = scenario.namespaces_for(_EnvoyWaypoints())
    assert scenario.ENVOY_WAYPOINT_NS in names
    class Choosy(_FakeK8s):
        waypoint_choices = staticmethod(_EnvoyWaypoints.waypoint_choices)

    gateways = {o["metadata"]["namespace"]: o["metadata"] for o in scenario.workloads(
        Choosy(), "node-a", "node-b", "10.96.0.10", names) if o["kind"] == "Gateway"}
    # the same Gateway in both namespaces; only the Envoy one asks for an implementation
    assert gateways[scenario.ENVOY_WAYPOINT_NS]["annotations"] == {"impl": "envoy"}
    assert "annotations" not in gateways[scenario.WAYPOINT_NS]
    # a target without the choice: no namespace, and the path says why
    assert scenario.ENVOY_WAYPOINT_NS not in scenario.namespaces_for(_NoSidecars())
    assert "offers no choice of waypoint" in next(
        p for p in scenario.paths_for(_NoSidecars()) if p.name == "ambient-l7-envoy").unavailable
    results = {"direct": _entry([100] * 100, 100, 100), "ambient-l4": _entry([500] * 100, 100, 100),
               "ambient-l7": _entry([1500] * 100, 100, 100), "ambient-l7-envoy": _entry([800] * 100, 100, 100)}
    usage = {"ambient-l7-envoy": {"Envoy waypoint node-1": {"role": "envoy-waypoint", "cpu_s": 0.02,
                                                            "rss_max": 40 << 20, "seconds": 1.0}}}
    run = _run(results, usage)
    run.paths = scenario.paths_for(_EnvoyWaypoints())
    summary, _ = report.summarize(run)
    assert summary["comparisons"]["envoy_waypoint_hop_us"]["p50"] == pytest.approx(300, rel=0.01)
    assert summary["comparisons"]["waypoint_hop_us"]["p50"] == pytest.approx(1000, rel=0.01)
    assert summary["cost"]["ambient-l7-envoy"]["Envoy waypoint node-1"]["vcpu_per_1000_rps"] == 0.2
    text = report.table(summary)
    assert "Envoy waypoint hop pXX(ambient-l7-envoy)" in text and "Envoy waypoint node-1" in text


class _FakeK8s(_Sidecars):
    """Enough of a Target for scenario.workloads: Kubernetes' plain client manifests."""
    from conformance.targets.base import Target
    load_client_manifests = Target.load_client_manifests
    probe_manifests = Target.probe_manifests
    PROBE_IMAGE, PROBE_DIR, LOCUST_IMAGE, LOAD_DIR = Target.PROBE_IMAGE, "/p", Target.LOCUST_IMAGE, "/l"


def test_the_sidecar_path_runs_between_two_injection_namespaces_only_where_sidecars_exist():
    side = next(p for p in scenario.paths_for(_Sidecars()) if p.name == "sidecar")
    assert not side.unavailable and side.hops == 2 and side.proxies == ("sidecar",) and scenario.l7(side)
    assert side.client == (scenario.SIDECAR_CLIENT, "client") and side.server == (scenario.SIDECAR_SERVER, "server")
    names = scenario.namespaces_for(_Sidecars())
    labels = {o["metadata"]["name"]: o["metadata"]["labels"] for o in scenario.namespaces(names)}
    assert labels[scenario.SIDECAR_CLIENT] == labels[scenario.SIDECAR_SERVER] == {"istio-injection": "enabled"}
    assert {o["metadata"]["namespace"] for o in scenario.services(names)} == set(names) - {scenario.SIDECAR_CLIENT}
    objects = scenario.workloads(_FakeK8s(), "node-a", "node-b", "10.96.0.10", names)
    deployments = {(o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"]["template"]["spec"]
                   for o in objects if o["kind"] == "Deployment"}
    # the same echo server on the same node as every other path's; the proxy comes from injection
    assert deployments[(scenario.SIDECAR_SERVER, "server")]["containers"] == [scenario.echo_container()]
    assert deployments[(scenario.SIDECAR_SERVER, "server")]["nodeSelector"] == {"kubernetes.io/hostname": "node-b"}
    assert deployments[(scenario.SIDECAR_CLIENT, "client")]["nodeSelector"] == {"kubernetes.io/hostname": "node-a"}
    # no sidecar support: neither namespace is made, and the path says why
    assert not set(scenario.SIDECAR_NAMESPACES) & set(scenario.namespaces_for(_NoSidecars()))
    assert "SIDECAR-INTEROP" in next(p for p in scenario.paths_for(_NoSidecars()) if p.name == "sidecar").unavailable


def test_a_sidecar_path_the_sidecars_did_not_see_is_flagged_and_its_cost_is_beside_istios():
    run = _run({"direct": _entry([100] * 100, 100, 100), "sidecar": _entry([900] * 100, 100, 100)},
               {"sidecar": {"sidecar client": {"role": "sidecar", "cpu_s": 0.04, "rss_max": 70 << 20, "seconds": 1.0}}})
    run.paths = scenario.paths_for(_Sidecars())
    evidence = {"locust_requests": 100, "server_sidecar_mtls_requests": 0.0, "client_sidecar_hbone_connections": 0.0}
    run.conditions["sidecar_through"] = {**evidence, "problems": sidecar_proof.shortfall(
        sidecar_proof.Counts(0.0, 0.0), 100, 1)}
    summary, _ = report.summarize(run)
    status = summary["paths"]["sidecar"]["status"]
    assert status.startswith("NOT THROUGH THE SIDECARS") and "not 100" in status, status
    row = summary["cost"]["sidecar"]["sidecar client"]
    assert row["vcpu_per_1000_rps"] == 0.4 and row["istio_1_24"] == {"vcpu_per_1000_rps": 0.2, "mb_per_1000_rps": 60}
    text = report.table(summary)
    assert "sidecar client" in text and "0.2 / 60" in text and "NOT THROUGH THE SIDECARS" in text
    run.conditions["sidecar_through"] = {**evidence, "server_sidecar_mtls_requests": 130.0,
                                         "client_sidecar_hbone_connections": 2.0,
                                         "problems": sidecar_proof.shortfall(sidecar_proof.Counts(130.0, 2.0), 100, 1)}
    assert report.summarize(run)[0]["paths"]["sidecar"]["status"] == "ok"


SIDECAR_METRICS = """\
# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",source_principal="spiffe://cluster.local/ns/load-sidecar/sa/client",destination_principal="spiffe://cluster.local/ns/load-sidecar-server/sa/server",connection_security_policy="mutual_tls",response_code="200"} 7.0
istio_requests_total{reporter="destination",source_principal="unknown",destination_principal="spiffe://cluster.local/ns/load-sidecar-server/sa/server",connection_security_policy="none",response_code="200"} 50.0
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{reporter="source",source_principal="spiffe://cluster.local/ns/load-sidecar/sa/client",destination_principal="spiffe://cluster.local/ns/load-sidecar-server/sa/server",connection_security_policy="mutual_tls"} 3.0
istio_tcp_connections_opened_total{reporter="source",source_principal="spiffe://cluster.local/ns/load-sidecar/sa/client",destination_principal="unknown",connection_security_policy="none"} 9.0
"""


def test_the_sidecar_proof_counts_only_mutual_tls_between_the_paths_own_identities():
    from conformance.targets.base import Pod, TargetError

    class Metrics:
        @staticmethod
        def sidecar_metrics(pod):
            return SIDECAR_METRICS
    client = Pod(scenario.SIDECAR_CLIENT, "client-1", labels={"app": "client"}, containers=("istio-proxy", "locust"))
    server = Pod(scenario.SIDECAR_SERVER, "server-1", labels={"app": "server"}, containers=("echo",))
    assert sidecar_proof.counts(Metrics(), client, server) == sidecar_proof.Counts(7.0, 3.0)
    sidecar_proof.require_through(sidecar_proof.Counts(7.0, 3.0), 3, 3, "the probe")
    with pytest.raises(TargetError, match="plaintext|not 3"):
        sidecar_proof.require_through(sidecar_proof.Counts(0.0, 3.0), 3, 3, "the probe")
    sidecar_proof.require_injected([client])
    with pytest.raises(TargetError, match="load-sidecar-server/server-1 has no istio-proxy container.*"
                                          "istio-injection=enabled"):
        sidecar_proof.require_injected([client, server])


def test_the_open_model_schedule_fixes_every_request_time_in_advance():
    code = """
import json, sys, time
sys.argv = ["locust"]
from load import locustfile as lf
now = time.time() + 100
slots = [lf.Slot(now, now + 1.0, "a", "u", True), lf.Slot(now + 1.2, now + 3.2, "b", "v", False)]
rec = lf.Recorder()
s = lf.Schedule(slots, 50, rec)
times = []
while (got := s.next()) is not None:
    times.append((got[0], got[1].path))
print(json.dumps({"times": times, "scheduled": rec.paths["b"]["scheduled"], "slot_seconds": rec.paths["b"]["slot_seconds"],
                  "start": s.slots[0].start, "end": s.end}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    times = got["times"]
    assert [p for _, p in times].count("a") == 50 and [p for _, p in times].count("b") == 100
    assert got["scheduled"] == 100 and got["slot_seconds"] == pytest.approx(2.0)
    gaps = [b[0] - a[0] for a, b in zip(times, times[1:]) if a[1] == b[1]]
    assert all(g == pytest.approx(0.02) for g in gaps)
    assert times[0][0] == pytest.approx(got["start"]) and times[-1][0] < got["end"]


KUBELET_RESOURCE_METRICS = """\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="istio-proxy",namespace="istio-system",pod="ztunnel-abc"} 12.5 1700000000000
container_cpu_usage_seconds_total{container="envoy",namespace="load-direct",pod="client-1"} 3.25 1700000000000
container_cpu_usage_seconds_total{container="locust",namespace="load-direct",pod="client-1"} 40 1700000000000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="istio-proxy",namespace="istio-system",pod="ztunnel-abc"} 1.2e+07 1700000000000
container_memory_working_set_bytes{container="envoy",namespace="load-direct",pod="client-1"} 6.5e+07 1700000000000
container_memory_working_set_bytes{container="locust",namespace="load-direct",pod="client-1"} 9e+07 1700000000000
"""


def test_kubernetes_pod_usage_reads_the_kubelets_resource_metrics_per_container():
    from conformance.targets.base import PodRef
    from conformance.targets.kubernetes import KubernetesTarget

    class Kubelets:
        def connect_get_node_proxy_with_path(self, node, path):
            assert (node, path) == ("node-a", "metrics/resource")
            return KUBELET_RESOURCE_METRICS

    target = KubernetesTarget(api_client=object())
    target.core = Kubelets()
    target.pod_node = lambda pod: "node-a"
    zt, client = PodRef("istio-system", "ztunnel-abc"), PodRef("load-direct", "client-1")
    whole = target.pod_usage([zt, client])
    assert whole[zt].cpu_seconds == 12.5 and whole[zt].rss_bytes == 12_000_000
    assert whole[client].cpu_seconds == 43.25
    envoy = target.pod_usage([client], container="envoy")
    assert envoy[client].cpu_seconds == 3.25 and envoy[client].rss_bytes == 65_000_000
