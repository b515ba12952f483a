"""The `kubernetes` target's packet capture (a hostNetwork tcpdump pod of its own, read back over
exec) and its workload certificate TTL (istiod's and the ztunnel DaemonSet's env, rolled out, only
with --allow-mesh-restart), through the official client against a reference cluster's API."""
from __future__ import annotations

import secrets
import sys

import pytest

from conformance import workloads as w
from conformance.targets import kube_capture
from conformance.targets.base import NotSupported, wait_until
from conformance.targets.kubernetes import KubernetesTarget
from reference_impl.cluster.kubeapi import kubeconfig_path

_SEND = "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[1].encode(), (sys.argv[2], int(sys.argv[3])))"


@pytest.fixture(scope="module")
def cluster(cluster_factory):
    return cluster_factory("kcapttl")


@pytest.fixture(scope="module")
def target(cluster):
    t = KubernetesTarget(kubeconfig=kubeconfig_path(cluster.name))
    t.start()
    return t


def test_capture_on_a_node_returns_the_filtered_packets_as_pcap_and_removes_its_pod(target):
    ns = "kcap-udp"
    target.apply([w.namespace(ns, ambient=False)] + w.httpbin(ns, node="node-0") + w.client(ns, "client", node="node-1"))
    try:
        target.wait_ready(ns, timeout=60)
        (server,) = target.pods(ns, {"app": "httpbin"})
        (client,) = target.pods(ns, {"app": "client"})
        wanted, unwanted = (f"kcap-{secrets.token_hex(6)}" for _ in range(2))
        capture = target.capture("node-0", "udp and dst port 9999")
        (pod,) = [p for p in target.pods(kube_capture.CAPTURE_NAMESPACE) if p.node == "node-0"]
        for marker, port in ((wanted, 9999), (unwanted, 9998)):
            sent = target.exec(client, [sys.executable, "-c", _SEND, marker, server.ip, str(port)])
            assert sent.returncode == 0, sent.stderr
        data = capture.stop()
    finally:
        target.delete_namespace(ns)
    assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"), \
        f"not a pcap file: {data[:16]!r}"
    assert wanted.encode() in data, "the datagram the filter selects, sent from node-1 to a pod on node-0, is missing"
    assert unwanted.encode() not in data, "the capture ignored its filter"
    assert pod.name.startswith("capture-node-0-")
    wait_until(lambda: pod.name not in {p.name for p in target.pods(kube_capture.CAPTURE_NAMESPACE)}, 30, 0.3,
               "the capture pod to be deleted")


def _env(container, name):
    return next((e.value for e in container.env or () if e.name == name), None)


def _ztunnels(target):
    pods = [p for p in target.core.list_namespaced_pod("istio-system", label_selector="app=ztunnel").items
            if not p.metadata.deletion_timestamp]
    return {p.metadata.uid: _env(p.spec.containers[0], "SECRET_TTL") for p in pods}


def test_certificate_ttl_needs_the_opt_in_then_patches_and_rolls_out_istiod_and_ztunnel(target, monkeypatch):
    monkeypatch.delenv(KubernetesTarget.MESH_RESTART_ENV, raising=False)
    assert "WorkloadCertificateRenewal" not in KubernetesTarget.supported_features()
    with pytest.raises(NotSupported, match="--allow-mesh-restart"):
        target.set_workload_certificate_ttl(9)
    assert set(_ztunnels(target).values()) == {None}, "without the opt-in nothing is patched"

    monkeypatch.setenv(KubernetesTarget.MESH_RESTART_ENV, "1")
    assert "WorkloadCertificateRenewal" in KubernetesTarget.supported_features()
    before = _ztunnels(target)
    target.set_workload_certificate_ttl(9)
    after = _ztunnels(target)
    assert len(after) == len(target.nodes()) and set(after.values()) == {"9s"}
    assert not set(before) & set(after), "every ztunnel pod was replaced"
    ds = target.apps.read_namespaced_daemon_set("ztunnel", "istio-system")
    assert _env(ds.spec.template.spec.containers[0], "TERMINATION_GRACE_PERIOD_SECONDS") == "10", \
        "the patch touched only SECRET_TTL"
    istiod = target.apps.read_namespaced_deployment("istiod", "istio-system")
    assert {_env(c, "DEFAULT_WORKLOAD_CERT_TTL") for c in istiod.spec.template.spec.containers} == {"9s"}
    istiod_pods = target.pods("istio-system", {"app": "istiod"})
    assert len(istiod_pods) == 1 and istiod_pods[0].ready

    target.set_workload_certificate_ttl(None)
    assert len(_ztunnels(target)) == len(target.nodes()) and set(_ztunnels(target).values()) == {None}
    istiod = target.apps.read_namespaced_deployment("istiod", "istio-system")
    assert {_env(c, "DEFAULT_WORKLOAD_CERT_TTL") for c in istiod.spec.template.spec.containers} == {None}
