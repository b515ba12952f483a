"""The seed walkthrough's "as written" variant on a mesh that tells Istio's gateway classes apart:
the article's `gatewayClassName: istio` is reported as the article's error (outcome
`articleError`, with the reason) only when the mesh shows the evidence (it serves GatewayClass
`istio-waypoint`), and the report keeps that outcome apart from failures.

The reference cluster's API serves GatewayClass `istio-waypoint` as istiod's gateway class
controller would, so both sides of the evidence run here through the official client: with the
class the stall is the article's error; with the class deleted it stays the mesh's failure.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import SEED_MANIFESTS
from conformance.convergence import NotConverged
from conformance.report import ARTICLE_ERROR_PREFIX
from conformance.scenario import Scenario
from conformance.targets.kubernetes import KubernetesTarget
from conformance.tests.test_seed_l7 import AS_WRITTEN, Walkthrough
from reference_impl.cluster.kubeapi import kubeconfig_path


def test_the_waypoint_class_decides_whose_error_a_stall_is(cluster_factory):
    cluster = cluster_factory("kartic", SEED_MANIFESTS)
    target = KubernetesTarget(kubeconfig=kubeconfig_path(cluster.name))
    target.start()
    walk = Walkthrough(Scenario(target, "article-error"), AS_WRITTEN)
    stalled = NotConverged("after the waypoint (as-written): requests pass the waypoint: not 3 consecutive")

    assert target.get("GatewayClass", None, "istio-waypoint") is not None
    with pytest.raises(pytest.skip.Exception) as reported:
        walk.skip_if_article_error(stalled)
    assert str(reported.value).startswith(ARTICLE_ERROR_PREFIX), reported.value
    assert "istio-waypoint" in str(reported.value) and "NotConverged" in str(reported.value)

    target.delete([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                    "metadata": {"name": "istio-waypoint"}}])
    assert target.get("GatewayClass", None, "istio-waypoint") is None
    # returns (no skip): the caller re-raises the failure as the mesh's
    assert walk.skip_if_article_error(stalled) is None


def test_an_article_error_is_listed_apart_and_changes_no_level_result(tmp_path):
    (tmp_path / "test_synthetic.py").write_text(textwrap.dedent(f'''
        import pytest

        @pytest.mark.features("SeedWalkthroughL4")
        @pytest.mark.description("The seed MUST work.")
        def test_seed_l4():
            pass

        @pytest.mark.features("SeedWalkthroughWaypoint")
        @pytest.mark.description("The article's waypoint MUST take the traffic.")
        def test_article_waypoint():
            pytest.skip("{ARTICLE_ERROR_PREFIX} the article's class is the ingress class")
    '''))
    report = tmp_path / "report.yaml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path),
                           "--implementation", "acme-mesh/1.2.3", "--report", str(report),
                           "--supported-features", "SeedWalkthroughL4,SeedWalkthroughWaypoint"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    doc = yaml.safe_load(report.read_text())
    assert doc["statistics"] == {"passed": 1, "failed": 0, "skipped": 0, "notSupported": 0, "articleError": 1}
    seed = next(p for p in doc["profiles"] if p["name"] == "SEED-WALKTHROUGH")["core"]
    assert seed["result"] == "success", seed
    assert [t["reason"] for t in seed["articleErrorTests"]] == \
        [f"{ARTICLE_ERROR_PREFIX} the article's class is the ingress class"]
    assert seed["skippedTests"] == [] and seed["failedTests"] == []
    assert "the article's error 1" in done.stdout
