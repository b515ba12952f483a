"""Server-side apply's field ownership with the real kubectl: each manager's managedFields entry
lists the fields it applied (FieldsV1, list items by merge key); another manager applying a
different value to an owned field gets the conflict, kubectl's `--force-conflicts` takes the
field over, and applying the same value shares it."""
from __future__ import annotations

import json

import pytest

from kubeapi_support import KUBECTLS, Kubectl

pytestmark = pytest.mark.skipif(not KUBECTLS, reason="no kubectl")


def _deployment(replicas: int, image_tag: str = "") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: owned, namespace: mf-test, labels: {{team: a}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: owned}}}}
  template:
    metadata: {{labels: {{app: owned}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers: [{{name: main, image: "python:3.11-slim{image_tag}", command: [sleep, infinity]}}]
"""


def _entries(k) -> dict:
    got = json.loads(k("get", "deploy", "owned", "-n", "mf-test", "-o", "json",
                       "--show-managed-fields").stdout)
    return {m["manager"]: m for m in got["metadata"]["managedFields"]}, got


def test_field_ownership_conflicts_and_force(cluster_factory, tmp_path):
    cluster = cluster_factory("kmf", nodes=1)
    k = Kubectl(KUBECTLS[0], cluster.name, tmp_path)
    k("create", "ns", "mf-test")
    k("apply", "--server-side", "-f", "-", input=_deployment(1))
    entries, _ = _entries(k)
    fields = entries["kubectl"]["fieldsV1"]
    assert entries["kubectl"]["operation"] == "Apply"
    assert "f:replicas" in fields["f:spec"]
    assert 'k:{"name":"main"}' in fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert "f:team" in fields["f:metadata"]["f:labels"] and "f:name" not in fields["f:metadata"]

    # the same value from another manager: no conflict, both own it
    k("apply", "--server-side", "--field-manager=other", "-f", "-", input=_deployment(1))
    entries, _ = _entries(k)
    assert "f:replicas" in entries["kubectl"]["fieldsV1"]["f:spec"]
    assert "f:replicas" in entries["other"]["fieldsV1"]["f:spec"]

    # another value: the conflict names the owner and the field, and nothing changes
    refused = k("apply", "--server-side", "--field-manager=other", "-f", "-",
                input=_deployment(3), check=False)
    assert refused.returncode == 1
    assert 'conflict with "kubectl": .spec.replicas' in refused.stderr, refused.stderr
    assert _entries(k)[1]["spec"]["replicas"] == 1

    # forced: the field changes hands
    k("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-",
      input=_deployment(3))
    entries, got = _entries(k)
    assert got["spec"]["replicas"] == 3
    assert "f:replicas" not in entries["kubectl"]["fieldsV1"]["f:spec"]
    assert "f:replicas" in entries["other"]["fieldsV1"]["f:spec"]
    # and now the first manager is the one refused
    again = k("apply", "--server-side", "-f", "-", input=_deployment(1), check=False)
    assert again.returncode == 1 and 'conflict with "other": .spec.replicas' in again.stderr


def test_a_repeated_apply_changes_nothing(cluster_factory, tmp_path):
    cluster = cluster_factory("kmf2", nodes=1)
    k = Kubectl(KUBECTLS[0], cluster.name, tmp_path)
    k("create", "ns", "mf-test")
    k("apply", "--server-side", "-f", "-", input=_deployment(1))
    k("apply", "--server-side", "--field-manager=other", "-f", "-", input=_deployment(1))
    _, before = _entries(k)
    k("apply", "--server-side", "-f", "-", input=_deployment(1))
    _, after = _entries(k)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"]["managedFields"] == before["metadata"]["managedFields"]


def _peer_authentication(ports: dict) -> str:
    levels = ", ".join(f"{port}: {{mode: {mode}}}" for port, mode in ports.items())
    return f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: ports, namespace: mf-test}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls: {{{levels}}}
"""


def test_an_apply_removes_the_map_keys_its_manager_no_longer_applies(cluster_factory, tmp_path):
    """As kube-apiserver: a field the manager applied before and leaves out now is removed (a merge
    would keep port 80 in portLevelMtls for good, and a PeerAuthentication would keep its mode)."""
    cluster = cluster_factory("kmf3", nodes=1)
    k = Kubectl(KUBECTLS[0], cluster.name, tmp_path)
    k("create", "ns", "mf-test")

    def ports() -> set[str]:
        got = json.loads(k("get", "peerauthentication", "ports", "-n", "mf-test", "-o", "json").stdout)
        return {str(p) for p in got["spec"].get("portLevelMtls") or {}}

    k("apply", "--server-side", "-f", "-", input=_peer_authentication({80: "PERMISSIVE"}))
    k("apply", "--server-side", "-f", "-", input=_peer_authentication({8000: "PERMISSIVE"}))
    assert ports() == {"8000"}
    k("apply", "--server-side", "-f", "-", input=_peer_authentication({80: "PERMISSIVE", 9000: "DISABLE"}))
    assert ports() == {"80", "9000"}
