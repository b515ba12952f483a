"""istiod as the `istiod` pod of a real local cluster: snapshots, changes, outages, debug CLI.

A test XdsClient in this process plays a node proxy (the real ztunnel is its own issue): it says
hello as a ztunnel of node-0 and must receive, acknowledge and keep the mesh's config.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from reference_impl.api import ManifestError
from reference_impl.cluster import naming
from reference_impl.cluster.errors import ClusterError
from reference_impl.xds import XdsClient

NAMESPACE = "tp-apps"
APP = [
    {"apiVersion": "v1", "kind": "Namespace",
     "metadata": {"name": NAMESPACE, "labels": {"istio.io/dataplane-mode": "ambient"}}},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "client", "namespace": NAMESPACE}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "client", "namespace": NAMESPACE},
     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "client"}},
              "template": {"metadata": {"labels": {"app": "client"}},
                           "spec": {"serviceAccountName": "client",
                                    "containers": [{"name": "sleep", "image": "curlimages/curl",
                                                    "command": ["/bin/sleep", "3650d"]}]}}}},
]


def policy(name, spec=None):
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec or {}}


class ProxyThread:
    """An XdsClient on its own event loop, so the test body can stay synchronous."""

    def __init__(self, socket_path):
        self.loop = asyncio.new_event_loop()
        self.client = XdsClient(socket_path, proxy="ztunnel", node="node-0", pod="tp-test-proxy",
                                namespace="istio-system", max_backoff=1.0)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.client.start(), self.loop).result(5)

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            config = self.client.config
            if config is not None and predicate(config):
                return config
            time.sleep(0.05)
        raise AssertionError(f"{what} not seen within {timeout}s (version {self.client.version})")

    def close(self):
        asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def policy_names(config):
    return {p["name"] for p in config["policies"]}


def istiod_pods(cluster):
    return [p for p in cluster.list("Pod", "istio-system")
            if p["metadata"]["name"].startswith("istiod") and not p["metadata"].get("deletionTimestamp")]


def wait_istiod_running(cluster, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = [p for p in istiod_pods(cluster) if (p.get("status") or {}).get("phase") == "Running"]
        if pods:
            return pods[0]
        time.sleep(0.1)
    raise AssertionError("no running istiod pod")


@pytest.fixture(scope="module")
def cluster(cluster_factory):
    # One cluster per xdist worker: the module's tests may be spread over both workers.
    return cluster_factory("cp", manifests=(), nodes=2, timeout=90)


@pytest.fixture
def proxy(cluster):
    p = ProxyThread(os.path.join(naming.run_dir(cluster.name), "istiod.sock"))
    yield p
    p.close()


def test_istiod_runs_as_a_host_network_pod_and_serves_the_mesh(cluster, proxy):
    pod = wait_istiod_running(cluster)
    assert pod["spec"].get("hostNetwork") is True
    cluster.apply(APP)
    config = proxy.wait_for(
        lambda c: any(w["namespace"] == NAMESPACE and w["status"] == "Healthy" for w in c["workloads"]),
        30, "the client workload, healthy")
    [workload] = [w for w in config["workloads"] if w["namespace"] == NAMESPACE]
    assert workload["protocol"] == "HBONE" and workload["dataplaneMode"] == "ambient"
    assert workload["identity"] == f"spiffe://cluster.local/ns/{NAMESPACE}/sa/client"
    assert workload["node"] in ("node-0", "node-1") and workload["netns"]
    assert config["meshConfig"]["trustBundle"][0].startswith("-----BEGIN CERTIFICATE-----")


def test_policy_apply_and_delete_reach_the_proxy_as_new_versions(cluster, proxy):
    cluster.apply(APP)
    proxy.wait_for(lambda c: True, 20, "a first snapshot")
    before = proxy.client.version
    cluster.apply([policy("tp-deny-all")])
    proxy.wait_for(lambda c: "tp-deny-all" in policy_names(c), 10, "the applied policy")
    assert proxy.client.version > before
    cluster.delete([policy("tp-deny-all")])
    proxy.wait_for(lambda c: "tp-deny-all" not in policy_names(c), 10, "the policy's removal")


def test_policy_with_unknown_when_key_is_rejected_at_apply_with_the_field_named(cluster, proxy):
    bad = policy("tp-bad", {"rules": [{"when": [{"key": "request.nonsense", "values": ["x"]}]}]})
    with pytest.raises((ClusterError, ManifestError), match=r"when\[0\]\.key"):
        cluster.apply(APP + [bad])
    assert cluster.get("AuthorizationPolicy", NAMESPACE, "tp-bad") is None


def test_scaled_to_zero_proxy_keeps_config_and_resyncs_when_istiod_is_back(cluster, proxy):
    cluster.apply(APP + [policy("tp-kept")])
    proxy.wait_for(lambda c: "tp-kept" in policy_names(c), 20, "the first policy")
    try:
        cluster.scale("istio-system", "istiod", 0)
        deadline = time.monotonic() + 20
        while proxy.client.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not proxy.client.connected.is_set(), "the stream survived istiod scaled to 0"
        cluster.apply([policy("tp-while-down")])
        assert "tp-kept" in policy_names(proxy.client.config)  # last config kept
        assert "tp-while-down" not in policy_names(proxy.client.config)
        version_while_down = proxy.client.version
    finally:
        cluster.scale("istio-system", "istiod", 1)
    proxy.wait_for(lambda c: "tp-while-down" in policy_names(c), 30, "the policy applied while istiod was down")
    assert proxy.client.version > version_while_down
    cluster.delete([policy("tp-kept"), policy("tp-while-down")])


def test_killed_istiod_pod_is_replaced_and_the_proxy_reconnects(cluster, proxy):
    proxy.wait_for(lambda c: True, 30, "a first snapshot")
    old = wait_istiod_running(cluster)
    connects = proxy.client.connects
    cluster.delete_pod("istio-system", old["metadata"]["name"], grace_period=0)
    # the policy's namespace with it: on its own worker this test may run before the one that made it
    cluster.apply([APP[0], policy("tp-after-kill")])
    proxy.wait_for(lambda c: "tp-after-kill" in policy_names(c), 30, "config from the replacement istiod")
    assert proxy.client.connects > connects
    assert wait_istiod_running(cluster)["metadata"]["name"] != old["metadata"]["name"]
    cluster.delete([policy("tp-after-kill")])


def test_cli_describe_pod_and_proxy_config(cluster, proxy):
    cluster.apply(APP)
    config = proxy.wait_for(lambda c: any(w["namespace"] == NAMESPACE for w in c["workloads"]),
                            30, "the client workload")
    [workload] = [w for w in config["workloads"] if w["namespace"] == NAMESPACE]
    cli = [sys.executable, "-m", "reference_impl.cli", "cluster"]
    described = subprocess.run(cli + ["describe", "pod", workload["name"], "-n", NAMESPACE,
                                      "--name", cluster.name], capture_output=True, text=True, timeout=30)
    assert described.returncode == 0, described.stderr
    assert "Data-plane mode: ambient" in described.stdout
    assert f"Node:            {workload['node']}" in described.stdout

    # node-0's proxy (the cluster's own ztunnel, or this test's stand-in) must show the config
    # it acknowledged, and that config must hold the new workload.
    in_sync = re.compile(r"sent version (\d+), acknowledged version \1\b")
    deadline = time.monotonic() + 10
    while True:
        shown = subprocess.run(cli + ["proxy-config", "node-0", "--name", cluster.name],
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        if (in_sync.search(shown.stdout) and workload["uid"] in shown.stdout) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert in_sync.search(shown.stdout), shown.stdout[:300]
    assert workload["uid"] in shown.stdout

    missing = subprocess.run(cli + ["describe", "pod", "nope", "-n", NAMESPACE, "--name", cluster.name],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "pod tp-apps/nope not found" in missing.stderr
