"""The load pipeline end to end on a real reference cluster, a second per path: Locust runs in
the client pods, every path is measured, the peer Envoy pair carries traffic, the proxies' usage
is sampled, and every output file is written. It checks the pipeline, not the numbers (those are
`make load`'s)."""
from __future__ import annotations

import csv
import io
import json

import pytest

from conformance.targets.reference import ReferenceTarget
from load import report, runner, scenario
from load.cli import SMOKE


@pytest.fixture
def load_target(_cluster_host, cluster_name):
    target = ReferenceTarget(cluster=cluster_name("load"))
    target.start()
    yield target
    target.stop()


def test_smoke_run_measures_every_path_and_writes_every_output(load_target, tmp_path):
    opts = runner.Options(out=tmp_path, run="smoke", **SMOKE)
    placed, proxies = runner.setup(load_target, opts, log=lambda m: None)
    result = runner.run(load_target, opts, placed, proxies, log=lambda m: None)
    summary = report.write(result, tmp_path / "smoke")

    measured = {"direct", "baseline", "ambient-l4", "ambient-l7", "ambient-l7-envoy", "sidecar", "envoy-hbone"}
    paths = summary["paths"]
    assert set(paths) == {p.name for p in scenario.PATHS}
    for name in measured:
        e = paths[name]
        # every scheduled request was answered: a whole second per path at 50/s
        assert e["errors"] == 0 and e["requests"] == e["scheduled"] == 50, (name, e)
        assert 0 < e["latency_us"]["p50"] <= e["latency_us"]["p99.9"], (name, e)
    assert set(paths["ambient-l4"]["added_per_hop_us"]) == {"p50", "p90", "p99", "p99.9"}
    assert summary["comparisons"]["ztunnel_hop_over_envoy_hop"]
    # the proxies on each mesh path did work while it ran; the ztunnels were idle on the peer's
    cost = summary["cost"]
    assert {r["role"] for r in cost["ambient-l7"].values()} >= {"ztunnel", "waypoint", "envoy"}
    for label, row in cost["ambient-l7"].items():
        if row["role"] in ("ztunnel", "waypoint"):
            assert row["cpu_seconds"] > 0 and row["rss_mb"] > 10, (label, row)
    assert all(r["cpu_seconds"] > 0 for r in cost["envoy-hbone"].values() if r["role"] == "envoy")
    # issue 16: the same waypoint hop through the Envoy waypoint, measured in the same run
    assert summary["comparisons"]["envoy_waypoint_hop_us"] and summary["comparisons"]["waypoint_hop_us"]
    envoy_waypoints = [r for r in cost["ambient-l7-envoy"].values() if r["role"] == "envoy-waypoint"]
    assert envoy_waypoints and all(r["cpu_seconds"] > 0 and r["rss_mb"] > 10 for r in envoy_waypoints), envoy_waypoints
    # the sidecar path: Locust's own requests went through both istio-proxy containers (its
    # process in the client pod is captured like any app's), and both proxies' cost is sampled
    through = summary["conditions"]["sidecar_through"]
    assert through["problems"] == [] and through["server_sidecar_mtls_requests"] >= 50, through
    assert paths["sidecar"]["status"] == "ok"
    sidecars = {label: r for label, r in cost["sidecar"].items() if r["role"] == "sidecar"}
    assert set(sidecars) == {"sidecar client", "sidecar server"}
    assert all(r["cpu_seconds"] > 0 and r["rss_mb"] > 10 for r in sidecars.values()), sidecars
    idle = {label: cost["direct"][label]["cpu_seconds"] for label in sidecars}   # not on the direct path
    assert all(r["cpu_seconds"] > idle[label] for label, r in sidecars.items()), (sidecars, idle)

    out = tmp_path / "smoke"
    rows = list(csv.DictReader(io.StringIO((out / "hops.csv").read_text())))
    assert {r["path"] for r in rows} == set(paths)
    assert json.loads((out / "summary.json").read_text())["paths"].keys() == paths.keys()
    for png in ("percentiles.png", "cdf.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for client in ("load-direct-client", "load-direct-baseline", "load-ambient-client", "load-sidecar-client"):
        files = out / "locust" / client
        assert (files / "locust.html").stat().st_size > 1000
        stats = (files / "locust_stats.csv").read_text()
        assert "Aggregated" in stats
    assert "ambient-l4" in (out / "locust" / "load-ambient-client" / "locust_stats.csv").read_text()
