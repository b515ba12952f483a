"""The node proxy's pod reconcile on scratch namespaces (no cluster): a real Ztunnel, on uvloop as
in its pod, capturing and releasing pods as snapshots name them.

Each case is one way a pod's capture went missing after istiod came back (test_mesh_resilience,
pod-killed): a snapshot is applied whole even when releasing a pod fails, a capture that failed
is retried without waiting for another snapshot, and a pod created again under the same name is
captured in its new namespace.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import pytest
import uvloop

from reference_impl.identity import CertificateAuthority, CertificateManager
from reference_impl.xds import MeshConfig, Workload as WorkloadResource, ZtunnelSnapshot
from reference_impl.ztunnel import capture
from reference_impl.ztunnel.proxy import Ztunnel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft"),
]

NS = "apps"


def workload(name: str, netns: str, ip: str, pod_uid: str | None = None) -> WorkloadResource:
    return WorkloadResource(uid=f"Kubernetes//Pod/{NS}/{name}", name=name, namespace=NS, workload_ips=[ip],
                            node="node-0", service_account=name,
                            identity=f"spiffe://cluster.local/ns/{NS}/sa/{name}", netns=netns,
                            pod_uid=pod_uid or f"uid-{name}-{netns}")


def snapshot(*workloads: WorkloadResource) -> dict:
    return ZtunnelSnapshot(mesh_config=MeshConfig(), workloads=list(workloads), services=[], policies=[],
                           peer_authentications=[]).to_dict()


class Namespaces:
    """Scratch pod namespaces `tr-<pid>-<name>`, deleted at the end."""

    def __init__(self):
        self.prefix = f"tr-{os.getpid() % 100000}"
        self.made: set[str] = set()

    def name(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def add(self, short: str) -> str:
        netns = self.name(short)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, capture_output=True)
        self.made.add(netns)
        return netns

    def delete(self, netns: str) -> None:
        subprocess.run(["ip", "netns", "del", netns], check=True, capture_output=True)
        self.made.discard(netns)

    def cleanup(self) -> None:
        for netns in list(self.made):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


@pytest.fixture
def namespaces():
    ns = Namespaces()
    try:
        yield ns
    finally:
        ns.cleanup()


def run(scenario, tmp_path) -> None:
    """Run `scenario(ztunnel)` on uvloop with a Ztunnel whose certificates come from a local CA."""
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")

    async def sign(identity, csr_pem):
        return [ca.sign_csr(csr_pem, identity, 3600)], ca.root_pem

    async def main():
        ztunnel = Ztunnel("node-0", CertificateManager(sign))
        try:
            await scenario(ztunnel)
        finally:
            await ztunnel.apply(snapshot(), 10_000)   # releases every pod still held
            await ztunnel.certs.close()

    uvloop.run(main())


def captured_in(ztunnel: Ztunnel, name: str) -> str | None:
    """The namespace the proxy holds pod `name` in, if its capture rules are there too."""
    pod = ztunnel.pods.get(f"Kubernetes//Pod/{NS}/{name}")
    return pod.netns if pod is not None and capture.installed(pod.netns) else None


def test_releasing_a_pod_whose_namespace_is_gone_does_not_cost_the_rest_of_the_snapshot(namespaces, tmp_path):
    # The pod deleted while istiod was away: the first snapshot of the new istiod releases it
    # after its namespace is gone, and captures the pod created meanwhile. Releasing ran `ip netns
    # exec` of the missing namespace, which under uvloop failed (1 time in 6) with a RuntimeError
    # that aborted the reconcile and NACKed the snapshot: the new pod was never captured.
    async def scenario(ztunnel):
        for round_ in range(30):
            gone, late = namespaces.add(f"g{round_}"), namespaces.add(f"l{round_}")
            await ztunnel.apply(snapshot(workload(f"gone-{round_}", gone, "10.244.0.2")), 2 * round_ + 1)
            assert captured_in(ztunnel, f"gone-{round_}") == gone
            namespaces.delete(gone)
            await ztunnel.apply(snapshot(workload(f"late-{round_}", late, "10.244.0.3")), 2 * round_ + 2)
            assert f"Kubernetes//Pod/{NS}/gone-{round_}" not in ztunnel.pods
            assert captured_in(ztunnel, f"late-{round_}") == late, f"round {round_}"
            namespaces.delete(late)
    run(scenario, tmp_path)


def test_a_capture_command_in_a_namespace_that_is_gone_fails_with_its_own_error(namespaces):
    # `ip netns exec` exits at once without reading its input: the batch written to it met a
    # closed pipe now and then, and uvloop raised RuntimeError instead of the command's error.
    netns = namespaces.name("never")

    async def main():
        for _ in range(100):
            with pytest.raises(capture.CaptureError, match=f'remove capture rules in netns {netns}: '
                                                           f'Cannot open network namespace "{netns}"'):
                await capture.remove_async(netns)

    uvloop.run(main())


def test_a_release_that_fails_is_logged_and_the_other_pods_are_still_reconciled(namespaces, tmp_path, monkeypatch):
    old, new = namespaces.add("old"), namespaces.add("new")

    async def remove_fails(netns):
        raise RuntimeError("unable to perform operation on <WriteUnixTransport closed=True>")

    async def scenario(ztunnel):
        await ztunnel.apply(snapshot(workload("old", old, "10.244.0.2")), 1)
        monkeypatch.setattr(capture, "remove_async", remove_fails)
        await ztunnel.apply(snapshot(workload("new", new, "10.244.0.3")), 2)   # not raised: not NACKed
        monkeypatch.undo()
        assert list(ztunnel.pods) == [f"Kubernetes//Pod/{NS}/new"]
        assert captured_in(ztunnel, "new") == new
    run(scenario, tmp_path)


def test_a_capture_that_failed_is_retried_without_another_snapshot(namespaces, tmp_path):
    async def scenario(ztunnel):
        netns = namespaces.name("later")   # not created yet: the capture fails
        await ztunnel.apply(snapshot(workload("later", netns, "10.244.0.4")), 1)
        assert captured_in(ztunnel, "later") is None
        namespaces.add("later")
        deadline = time.monotonic() + 10
        while captured_in(ztunnel, "later") is None:
            assert time.monotonic() < deadline, "the failed capture was not retried"
            await asyncio.sleep(0.1)
        assert ztunnel.version == 1   # no snapshot came in between
    run(scenario, tmp_path)


def test_a_pod_created_again_under_the_same_name_is_captured_in_its_new_namespace(namespaces, tmp_path):
    # A workload's uid is its namespace and name: the pod deleted and created again while istiod
    # was away comes back with the same uid, another namespace and another pod uid.
    first, second = namespaces.add("first"), namespaces.add("second")

    async def scenario(ztunnel):
        await ztunnel.apply(snapshot(workload("web-0", first, "10.244.0.5", pod_uid="a")), 1)
        assert captured_in(ztunnel, "web-0") == first
        namespaces.delete(first)
        await ztunnel.apply(snapshot(workload("web-0", second, "10.244.0.6", pod_uid="b")), 2)
        assert captured_in(ztunnel, "web-0") == second
    run(scenario, tmp_path)


def test_a_capture_command_given_up_on_is_killed(namespaces, tmp_path, monkeypatch):
    # Capture rules installed after the proxy gave up on a pod would send its traffic to ports
    # nobody listens on: a command past its timeout must not finish its work later.
    netns = namespaces.add("slow")
    monkeypatch.setattr(capture, "COMMAND_TIMEOUT_S", 0.3)
    marker = tmp_path / "finished"
    step = capture._Step(("sh", "-c", f"sleep 1.5; touch {marker}"), "", "run a slow step")

    async def main():
        with pytest.raises(capture.CaptureError, match="no answer within 0.3s"):
            await capture._run_async(netns, [step])

    uvloop.run(main())
    time.sleep(2)
    assert not marker.exists()
