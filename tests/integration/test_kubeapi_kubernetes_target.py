"""The conformance suite's `kubernetes` target (the official client: server-side apply, the
dynamic client, exec streams, pods/proxy for ztunnel metrics) run against a reference cluster's
Kubernetes API and its real mesh. A quick slice of the suite: the L4 files and the adversarial
HBONE probes (their scripts come from a ConfigMap volume; the root to check 15008 against from
istiod's `istio-ca-root-cert`; their mesh-signed certificates from `istio-ca-secret`). The whole suite runs this way with
scripts/certify-kubernetes-target.sh."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml

from conftest import REPO
from reference_impl.cluster.kubeapi import kubeconfig_path

FILES = ["test_ambient_l4_seed.py", "test_ambient_l4_authz.py", "test_ambient_l4_enrollment.py",
         "test_ambient_l4_services.py", "test_ambient_l4_adversarial_hbone.py"]


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
    assert statistics["failed"] == 0 and statistics["passed"] >= 14, statistics
    reasons = [t["reason"] for p in written["profiles"] for part in ("core", "extended")
               for t in (p.get(part) or {}).get("notSupportedTests") or []]
    # every probe ran, the mesh-signed ones too (signed with istiod's CA from istio-ca-secret)
    assert not reasons, reasons
