"""chaostoolkit-kubernetes' own actions and probes, unchanged, against a reference cluster: they
reach it only through the kubeconfig the cluster writes (KUBECONFIG), as they would a kind
cluster. Run in a subprocess because the kubernetes client reads KUBECONFIG at import."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, SEED_MANIFESTS
from reference_impl.cluster.kubeapi import kubeconfig_path

SCRIPT = r"""
import json
from chaosk8s.deployment.actions import scale_deployment
from chaosk8s.pod.actions import terminate_pods
from chaosk8s.pod.probes import pods_in_phase
from kubernetes import client, config

config.load_kube_config()
core = client.CoreV1Api()
out = {}
before = [p.metadata.name for p in core.list_namespaced_pod(
    "ambient-apps", label_selector="app=sleep-ambient").items]
out["before"] = before
out["in_phase"] = pods_in_phase(label_selector="app=sleep-ambient", phase="Running",
                                ns="ambient-apps")
try:
    pods_in_phase(label_selector="app=sleep-ambient", phase="Succeeded", ns="ambient-apps")
    out["wrong_phase"] = "accepted"
except Exception as exc:
    out["wrong_phase"] = type(exc).__name__ + ": " + str(exc)
out["terminated"] = terminate_pods(label_selector="app=sleep-ambient", ns="ambient-apps",
                                   qty=1, grace_period=0)
scale_deployment(name="sleep-ambient", replicas=2, ns="ambient-apps")
out["replicas"] = client.AppsV1Api().read_namespaced_deployment(
    "sleep-ambient", "ambient-apps").spec.replicas
print(json.dumps(out))
"""


def test_terminate_pods_pods_in_phase_and_scale_deployment(cluster_factory):
    cluster = cluster_factory("kchaos", SEED_MANIFESTS)
    env = dict(os.environ, KUBECONFIG=kubeconfig_path(cluster.name), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["in_phase"] is True
    assert out["wrong_phase"].startswith("ActivityFailed") and "Succeeded" in out["wrong_phase"]
    assert out["terminated"] == out["before"]  # qty=1 of one pod
    assert out["replicas"] == 2
    # The cluster itself did what the actions asked: the killed pod is gone and replaced, and
    # the Deployment runs two pods.
    def pods():
        return [p for p in cluster.list("Pod", "ambient-apps", {"app": "sleep-ambient"})
                if "deletionTimestamp" not in p["metadata"]]
    from waiting import until
    until(lambda: len(pods()) == 2 and all(p["metadata"]["name"] not in out["before"]
                                           for p in pods()), timeout=30, what="two new pods")
    cluster.wait_ready(60)
