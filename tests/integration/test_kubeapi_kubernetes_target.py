"""The conformance suite's `kubernetes` target (the official client: server-side apply, the
dynamic client, exec streams, pods/proxy for ztunnel metrics) run against a reference cluster's
Kubernetes API and its real mesh, instead of a hand-written emulator. The files chosen here
are those that need nothing the reference cluster lacks (the adversarial HBONE probes mount
their scripts from a ConfigMap, which the reference cluster does not serve)."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml

from conftest import REPO
from reference_impl.cluster.kubeapi import kubeconfig_path

FILES = ["test_ambient_l4_seed.py", "test_ambient_l4_authz.py", "test_ambient_l4_enrollment.py",
         "test_ambient_l4_services.py"]


def test_conformance_files_pass_through_the_kubernetes_target(cluster_factory, tmp_path):
    cluster = cluster_factory("ktarget")
    report = tmp_path / "report.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:xdist",
         *[str(REPO / "conformance" / "tests" / f) for f in FILES], "--target", "kubernetes",
         "--kubeconfig", kubeconfig_path(cluster.name), "--report", str(report)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    written = yaml.safe_load(report.read_text())
    assert written["target"] == "kubernetes"
    statistics = written["statistics"]
    assert statistics["failed"] == 0 and statistics["passed"] >= 10, statistics
