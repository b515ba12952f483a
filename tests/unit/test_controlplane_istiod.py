"""istiod as a process would run it, against the cluster's real store on a temp Unix socket.

No network namespaces needed: the store (reference_impl.cluster.store + apiserver) runs in this
event loop, istiod watches it over HTTP, and a real XdsClient talks to istiod over istiod.sock.
Pods are written the way the kubelet writes them (store.create with status).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

import pytest
from cryptography import x509

from reference_impl.cluster.apiserver import APIServer
from reference_impl.cluster.store import Store
from reference_impl.controlplane.istiod import Istiod
from reference_impl.identity.ca import CLOCK_SKEW_GRACE
from reference_impl.identity import Identity, make_csr
from reference_impl.xds import CsrRejected, XdsClient, debug_query

NS_AMBIENT = {"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": "ambient-apps", "labels": {"istio.io/dataplane-mode": "ambient"}}}
NS_SYSTEM = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}


def running_pod(ns, name, node, ip, *, sa="default", labels=None, image="img", pid=None):
    status = {"phase": "Running", "podIP": ip, "hostIP": "172.18.0.10",
              "conditions": [{"type": "Ready", "status": "True"}],
              "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0,
                                     "state": {"running": {}}, **({"pid": pid} if pid else {})}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "c", "image": image}]},
            "status": status}


class Harness:
    def __init__(self, directory):
        self.dir = directory
        self.api_sock = os.path.join(directory, "api.sock")
        self.xds_sock = os.path.join(directory, "istiod.sock")
        self.store = Store()
        self.api = APIServer(self.store, {"apply": self.store.apply, "delete": self.store.delete})
        self.istiod: Istiod | None = None
        self.clients: list[XdsClient] = []

    async def start(self):
        await self.api.start(self.api_sock)
        self.store.apply([NS_AMBIENT, NS_SYSTEM])
        await self.start_istiod()

    async def start_istiod(self):
        self.istiod = Istiod(self.dir, self.api_sock)
        await self.istiod.start()

    async def stop_istiod(self):
        await self.istiod.close()
        self.istiod = None

    def ztunnel_client(self, node, pod):
        client = XdsClient(self.xds_sock, proxy="ztunnel", node=node, pod=pod,
                           namespace="istio-system", max_backoff=0.2)
        self.clients.append(client)
        return client

    async def close(self):
        for client in self.clients:
            await client.close()
        if self.istiod is not None:
            await self.istiod.close()
        await self.api.stop()


def run(scenario):
    async def main():
        with tempfile.TemporaryDirectory(prefix="tp-istiod-") as directory:
            harness = Harness(directory)
            await harness.start()
            try:
                await asyncio.wait_for(scenario(harness), 30)
            finally:
                await harness.close()
    asyncio.run(main())


async def poll(predicate, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("condition not reached within the deadline")
        await asyncio.sleep(0.02)


def names(config):
    return sorted(w["name"] for w in config["workloads"])


def test_ztunnel_gets_snapshot_and_policy_change_as_a_new_version():
    async def scenario(h: Harness):
        h.store.create(running_pod("ambient-apps", "httpbin-1", "node-0", "10.244.0.5",
                                   sa="httpbin", labels={"app": "httpbin"}))
        client = h.ztunnel_client("node-0", "ztunnel-a")
        await client.start()
        await poll(lambda: client.config and "httpbin-1" in names(client.config))
        version = client.version
        assert client.config["policies"] == []

        h.store.apply([{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                        "metadata": {"name": "deny-all", "namespace": "ambient-apps"}, "spec": {}}])
        newer = await client.wait_version(newer_than=version, timeout=5)
        [policy] = client.config["policies"]
        assert (policy["name"], policy["scope"]) == ("deny-all", "NAMESPACE")
        stream = h.istiod.server.streams["ztunnel/istio-system/ztunnel-a"]
        await poll(lambda: stream.acked_version == newer)
        assert client.config["meshConfig"]["trustBundle"] == [h.istiod.ca.root_pem]

    run(scenario)


@pytest.mark.parametrize("condition,complaint", [
    ({"key": "request.bogus", "values": ["x"]}, "request.bogus"),
    ({"key": "destination.port", "values": ["http"]}, "not a port number"),
    ({"key": "source.ip", "values": ["10.0.0.300"]}, "not a valid IP"),
])
def test_bad_when_condition_is_rejected_at_apply_and_never_reaches_proxies(condition, complaint):
    async def scenario(h: Harness):
        from reference_impl.api import ManifestError
        client = h.ztunnel_client("node-0", "ztunnel-a")
        await client.start()
        await client.wait_version(timeout=5)
        with pytest.raises(ManifestError, match=complaint):
            h.store.apply([{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                            "metadata": {"name": "bad", "namespace": "ambient-apps"},
                            "spec": {"rules": [{"when": [condition]}]}}])
        assert h.store.get("AuthorizationPolicy", "ambient-apps", "bad") is None
        assert client.config["policies"] == []

    run(scenario)


def test_labelling_a_namespace_changes_capture_of_running_pods():
    async def scenario(h: Harness):
        h.store.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "later"}}])
        h.store.create(running_pod("later", "app", "node-0", "10.244.0.9"))
        client = h.ztunnel_client("node-0", "ztunnel-a")
        await client.start()

        def mode():
            found = [w for w in (client.config or {"workloads": []})["workloads"] if w["name"] == "app"]
            return found[0]["dataplaneMode"] if found else None

        await poll(lambda: mode() == "none")
        h.store.apply([{"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": "later", "labels": {"istio.io/dataplane-mode": "ambient"}}}])
        await poll(lambda: mode() == "ambient")

    run(scenario)


def test_csr_signed_for_a_workload_on_the_node_and_refused_for_another_node():
    async def scenario(h: Harness):
        h.store.create(running_pod("istio-system", "ztunnel-a", "node-0", "172.18.0.10",
                                   image="ambient-conformance/ztunnel", pid=os.getpid()))
        h.store.create(running_pod("ambient-apps", "local", "node-0", "10.244.0.5", sa="local-sa"))
        h.store.create(running_pod("ambient-apps", "remote", "node-1", "10.244.1.5", sa="remote-sa"))
        client = h.ztunnel_client("node-0", "ztunnel-a")
        await client.start()
        await client.wait_version(timeout=5)

        local = Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/local-sa")
        _key, csr = make_csr(local)
        chain, root = await client.sign(local, csr, ttl_seconds=60)
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [local.uri]
        assert root == h.istiod.ca.root_pem
        assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc - CLOCK_SKEW_GRACE).total_seconds() <= 60

        remote = Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/remote-sa")
        _key, csr = make_csr(remote)
        with pytest.raises(CsrRejected) as refused:
            await client.sign(remote, csr)
        assert remote.uri in str(refused.value) and "node-0" in str(refused.value)

    run(scenario)


def test_csr_refused_when_the_hello_lies_about_the_pod_or_the_peer_process():
    async def scenario(h: Harness):
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            h.store.create(running_pod("istio-system", "ztunnel-b", "node-0", "172.18.0.10",
                                       image="ambient-conformance/ztunnel", pid=stranger.pid))
            h.store.create(running_pod("ambient-apps", "local", "node-0", "10.244.0.5", sa="local-sa"))
            identity = Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/local-sa")
            _key, csr = make_csr(identity)

            impostor = h.ztunnel_client("node-0", "ztunnel-b")  # our pid is not the pod's
            await impostor.start()
            with pytest.raises(CsrRejected, match="process on this connection .* is not ztunnel pod istio-system/ztunnel-b"):
                await impostor.sign(identity, csr)
            # Same pod name: istiod would drop one of two streams claiming one pod, so go one at a time.
            await impostor.close()

            wrong_node = h.ztunnel_client("node-1", "ztunnel-b")
            await wrong_node.start()
            with pytest.raises(CsrRejected, match="runs on node node-0, not on node node-1"):
                await wrong_node.sign(identity, csr)
        finally:
            stranger.kill()
            stranger.wait()

    run(scenario)


def test_restarted_istiod_keeps_its_root_and_resyncs_changes_made_while_down():
    async def scenario(h: Harness):
        h.store.create(running_pod("ambient-apps", "before", "node-0", "10.244.0.5"))
        client = h.ztunnel_client("node-0", "ztunnel-a")
        await client.start()
        await poll(lambda: client.config and "before" in names(client.config))
        root, version = h.istiod.ca.root_pem, client.version

        await h.stop_istiod()
        h.store.create(running_pod("ambient-apps", "during", "node-1", "10.244.1.7"))
        await poll(lambda: not client.connected.is_set())
        assert names(client.config) == ["before"]  # last config kept while istiod is away

        await h.start_istiod()
        await poll(lambda: "during" in names(client.config or {"workloads": []}))
        assert client.version > version
        assert h.istiod.ca.root_pem == root

    run(scenario)


def waypoint_gateway() -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "wp", "namespace": "ambient-apps"},
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}


def test_waypoint_gateway_is_provisioned_and_cleaned_up_in_the_store():
    async def scenario(h: Harness):
        gateway = waypoint_gateway()
        h.store.apply([gateway])
        await poll(lambda: all(h.store.get(k, "ambient-apps", "wp")
                               for k in ("Deployment", "Service", "ServiceAccount")))
        deployment = h.store.get("Deployment", "ambient-apps", "wp")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "ambient-conformance/waypoint"
        service = h.store.get("Service", "ambient-apps", "wp")
        assert service["spec"]["clusterIP"] not in (None, "None")

        h.store.delete([gateway])
        await poll(lambda: not any(h.store.get(k, "ambient-apps", "wp")
                                   for k in ("Deployment", "Service", "ServiceAccount")))

    run(scenario)


def test_debug_requests_describe_pods_and_node_proxy_config():
    async def scenario(h: Harness):
        h.store.create(running_pod("istio-system", "ztunnel-a", "node-0", "172.18.0.10",
                                   image="ambient-conformance/ztunnel"))
        h.store.create(running_pod("ambient-apps", "httpbin-1", "node-0", "10.244.0.5",
                                   labels={"app": "httpbin"}))
        h.store.apply([{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                        "metadata": {"name": "only-sleep", "namespace": "ambient-apps"},
                        "spec": {"selector": {"matchLabels": {"app": "httpbin"}},
                                 "rules": [{"from": [{"source": {"namespaces": ["ambient-apps"]}}]}]}}])
        client = h.ztunnel_client("node-0", "ztunnel-a")
        await client.start()
        await poll(lambda: client.config and client.config["policies"])
        stream = h.istiod.server.streams["ztunnel/istio-system/ztunnel-a"]
        await poll(lambda: stream.acked_version == client.version)

        loop = asyncio.get_running_loop()
        described = await loop.run_in_executor(None, lambda: debug_query(
            h.xds_sock, "describe_pod", namespace="ambient-apps", name="httpbin-1"))
        assert (described["dataplaneMode"], described["node"], described["ztunnel"]) == \
            ("ambient", "node-0", "ztunnel-a")
        assert [p["name"] for p in described["policies"]] == ["ambient-apps/only-sleep"]

        dumped = await loop.run_in_executor(None, lambda: debug_query(h.xds_sock, "proxy_config",
                                                                       node="node-0"))
        assert dumped["ackedVersion"] == client.version and dumped["config"] == client.config

        with pytest.raises(LookupError, match="no ztunnel on node 'node-9'"):
            await loop.run_in_executor(None, lambda: debug_query(h.xds_sock, "proxy_config", node="node-9"))

    run(scenario)


def test_waypoint_status_is_written_and_describe_service_says_why_traffic_stays_l4():
    async def scenario(h: Harness):
        from reference_impl.cli_debug import format_describe_service
        gateway = waypoint_gateway()
        httpbin = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "httpbin", "namespace": "ambient-apps",
                                "labels": {"istio.io/use-waypoint": "wp"}},
                   "spec": {"selector": {"app": "httpbin"}, "ports": [{"port": 8000}]}}
        h.store.apply([gateway, httpbin])

        def conditions(kind, name):
            obj = h.store.get(kind, "ambient-apps", name) or {}
            return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or ()}
        await poll(lambda: conditions("Gateway", "wp").get("Programmed", {}).get("status") == "True")
        assert conditions("Gateway", "wp")["Accepted"]["reason"] == "Accepted"
        # No kubelet here, so the waypoint never has a ready pod: no address, nothing may bind yet.
        assert "addresses" not in h.store.get("Gateway", "ambient-apps", "wp")["status"]
        await poll(lambda: "istio.io/WaypointBound" in conditions("Service", "httpbin"))
        bound = conditions("Service", "httpbin")["istio.io/WaypointBound"]
        assert (bound["status"], bound["reason"]) == ("False", "WaypointIsNotReady")

        loop = asyncio.get_running_loop()
        described = await loop.run_in_executor(None, lambda: debug_query(
            h.xds_sock, "describe_service", namespace="ambient-apps", name="httpbin"))
        assert described["waypoint"] is None
        text = format_describe_service(described)
        assert 'Waypoint:        (none: L4 only)  (use-waypoint on the Service: WaypointIsNotReady: ' \
               'waypoint "ambient-apps/wp" is not ready)' in text, text

    run(scenario)
