"""ReplicaSets through the reference cluster's Kubernetes API with the real kubectl: a Deployment
owns a ReplicaSet per pod template, which owns the pods (ownerReferences by uid), as `kubectl get
rs` and `kubectl describe deploy` show them; a rollout moves the replicas to a new one."""
from __future__ import annotations

import json

import pytest

from kubeapi_support import KUBECTLS, Kubectl

pytestmark = pytest.mark.skipif(not KUBECTLS, reason="no kubectl")

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: rs-test}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{name: main, image: python:3.11-slim, command: [sleep, infinity]}]
"""


def test_a_deployment_owns_a_replicaset_that_owns_its_pods(cluster_factory, tmp_path):
    cluster = cluster_factory("krs", nodes=1)
    k = Kubectl(KUBECTLS[0], cluster.name, tmp_path)
    k("create", "ns", "rs-test")
    k("apply", "-f", "-", input=DEPLOYMENT)
    k("rollout", "status", "deploy/web", "-n", "rs-test", "--timeout=30s")
    deploy = json.loads(k("get", "deploy", "web", "-n", "rs-test", "-o", "json").stdout)
    [rs] = json.loads(k("get", "rs", "-n", "rs-test", "-o", "json").stdout)["items"]
    assert rs["metadata"]["ownerReferences"][0]["uid"] == deploy["metadata"]["uid"]
    assert (rs["spec"]["replicas"], rs["status"]["readyReplicas"]) == (2, 2)
    pods = json.loads(k("get", "pods", "-n", "rs-test", "-o", "json").stdout)["items"]
    assert len(pods) == 2
    assert {p["metadata"]["ownerReferences"][0]["uid"] for p in pods} == {rs["metadata"]["uid"]}
    table = k("get", "rs", "-n", "rs-test").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert table[1].split()[:4] == [rs["metadata"]["name"], "2", "2", "2"]
    assert f"NewReplicaSet:   {rs['metadata']['name']} (2/2 replicas created)" in \
        k("describe", "deploy", "web", "-n", "rs-test").stdout

    k("rollout", "restart", "deploy/web", "-n", "rs-test")
    k("rollout", "status", "deploy/web", "-n", "rs-test", "--timeout=30s")
    sets = {r["metadata"]["name"]: r for r in
            json.loads(k("get", "rs", "-n", "rs-test", "-o", "json").stdout)["items"]}
    new = next(name for name in sets if name != rs["metadata"]["name"])
    assert sets[new]["spec"]["replicas"] == 2
    assert rs["metadata"]["name"] not in sets or sets[rs["metadata"]["name"]]["spec"]["replicas"] == 0
    denied = k("delete", "rs", new, "-n", "rs-test", check=False)
    assert denied.returncode == 1 and "not allowed" in denied.stderr
