"""The sidecar's snapshot binding: derived by istiod for one pod, read back by the proxy."""
from __future__ import annotations

import pytest

from reference_impl.controlplane.derive import derive_mesh
from reference_impl.controlplane.sidecars import sidecar_config
from reference_impl.sidecar.capture import rules_text
from reference_impl.sidecar.config import ConfigError, SidecarConfig


def _pod(ns, name, ip, labels, sidecar):
    containers = ([{"name": "istio-proxy", "image": "ambient-conformance/sidecar"}] if sidecar else []) + \
        [{"name": "app", "image": "docker.io/kennethreitz/httpbin"}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": name, "labels": labels,
                         "annotations": {"sidecar.istio.io/status": "{}"} if sidecar else {}},
            "spec": {"nodeName": "node-0", "serviceAccountName": name, "containers": containers},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy", "labels": {"istio-injection": "enabled"}}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "amb", "labels": {"istio.io/dataplane-mode": "ambient"}}},
    _pod("legacy", "web", "10.244.0.5", {"app": "web"}, True),
    _pod("amb", "cli", "10.244.1.5", {"app": "cli"}, False),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "legacy"},
     "spec": {"clusterIP": "10.96.0.9", "selector": {"app": "web"}, "ports": [{"port": 8000, "targetPort": 80}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "web", "namespace": "legacy"},
     "spec": {"selector": {"matchLabels": {"app": "web"}}, "rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "other", "namespace": "legacy"},
     "spec": {"selector": {"matchLabels": {"app": "other"}}, "rules": [{}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "wp", "namespace": "legacy"},
     "spec": {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "w"}], "rules": [{}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "strict", "namespace": "legacy"},
     "spec": {"mtls": {"mode": "STRICT"}}},
]


def test_istiod_sends_a_sidecar_its_pod_and_only_the_selector_policies_covering_it():
    snapshot = sidecar_config(derive_mesh(OBJECTS), "legacy", "web")
    assert [p["metadata"]["name"] for p in snapshot["authorizationPolicies"]] == ["web"]
    config = SidecarConfig.from_snapshot(snapshot, 3)
    assert config.own is not None and config.own.ip == "10.244.0.5"
    assert str(config.identity) == "spiffe://cluster.local/ns/legacy/sa/web"
    assert config.mesh_services_by_vip["10.96.0.9"].ports == {8000: 80}
    assert config.workloads_by_ip["10.244.1.5"].protocol == "HBONE"   # ambient: reached over HBONE
    assert not config.plaintext_allowed(80)                            # STRICT in its namespace
    assert len(config.authorization) == 1 and len(config.l4_policies) == 1


def test_a_pod_istiod_does_not_know_gets_no_own_workload():
    config = SidecarConfig.from_snapshot(sidecar_config(derive_mesh(OBJECTS), "legacy", "gone"), 1)
    assert config.own is None and not config.plaintext_allowed(80)


def test_a_bad_snapshot_is_one_sentence_naming_the_field():
    snapshot = sidecar_config(derive_mesh(OBJECTS), "legacy", "web")
    snapshot["workloads"][0]["identity"] = "not-a-spiffe-id"
    with pytest.raises(ConfigError, match=r"sidecar snapshot version 7: workloads\[0\]\.identity"):
        SidecarConfig.from_snapshot(snapshot, 7)
    del snapshot["peerAuthentications"]
    with pytest.raises(ConfigError, match="missing field `peerAuthentications`"):
        SidecarConfig.from_snapshot(snapshot, 8)


def test_capture_rules_exempt_the_proxy_and_its_ports():
    text = rules_text()
    assert "meta mark 0x539 return" in text and "redirect to :15001" in text and "redirect to :15006" in text
    assert "tcp dport { 15008, 15020, 15021, 15090 } return" in text
