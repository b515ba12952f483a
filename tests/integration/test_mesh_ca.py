"""The real istiod refuses a node proxy an identity of a workload on another node (issue 4, CA).

On a real 2-node cluster (httpbin on node-0, sleep on node-1), against the istiod pod's process:
- over node-1's ztunnel's OWN config stream (the socket the real ztunnel opened, borrowed with
  pidfd_getfd while the ztunnel is paused, so istiod sees that process as the peer), a CSR for
  sleep's identity (a node-1 workload) is signed and one for httpbin's (node-0) is refused with a
  sentence naming the identity and node-1;
- a process in node-1's network namespace that says hello as node-1's ztunnel pod gets neither.
Afterwards the real ztunnel is resumed, resyncs and still carries traffic.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from cryptography import x509

from conformance.targets.reference_ca import config_stream_of, stopped
from reference_impl.cluster import naming
from reference_impl.identity import Identity, make_csr
from reference_impl.xds import protocol

from meshkit import NS, REPO, outcome, pod_of, running_pods, seed_objects, start_cluster, until, ztunnels_in_sync

HTTPBIN_ID = f"spiffe://cluster.local/ns/{NS}/sa/httpbin-ambient"   # on node-0
SLEEP_ID = f"spiffe://cluster.local/ns/{NS}/sa/sleep-ambient"       # on node-1

IMPOSTOR = r"""
import asyncio, json, sys
from reference_impl.identity import Identity, make_csr
from reference_impl.xds import CsrRejected, XdsClient

async def main(sock, pod, identities):
    client = XdsClient(sock, proxy="ztunnel", node="node-1", pod=pod, namespace="istio-system")
    await client.start()
    answers = {}
    try:
        for uri in identities:
            _key, csr = make_csr(Identity.parse(uri))
            try:
                await client.sign(uri, csr, timeout=10)
                answers[uri] = "signed"
            except CsrRejected as exc:
                answers[uri] = f"refused: {exc}"
            except Exception as exc:  # e.g. istiod closed the stream it refused at hello
                answers[uri] = f"no certificate: {type(exc).__name__}: {exc}"
    finally:
        await client.close()
    print(json.dumps(answers))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def c(cluster_factory, worker_id):
    if os.uname().machine not in ("x86_64", "aarch64") or not hasattr(os, "pidfd_open"):
        pytest.skip("borrowing the ztunnel's socket needs pidfd_getfd (Linux x86_64/aarch64)")
    objects = seed_objects(pin={"httpbin-ambient": "node-0", "sleep-ambient": "node-1"})
    objects = [o for o in objects if o["metadata"]["name"] not in ("rogue-client", "rogue-sa")]
    c = start_cluster(cluster_factory, worker_id, "ca", objects)
    until(lambda: ztunnels_in_sync(c), 10, what="both ztunnels connected to istiod")
    return c


def ztunnel_pod(c, node: str) -> dict:
    [pod] = [p for p in running_pods(c, "istio-system", {"app": "ztunnel"}) if p["spec"]["nodeName"] == node]
    return pod


def ask(sock: socket.socket, request_id: str, identity: str, timeout: float = 10) -> dict:
    """Send a CSR on the stream and read until istiod's answer with that id."""
    _key, csr = make_csr(Identity.parse(identity))
    sock.settimeout(timeout)  # keeps the shared descriptor non-blocking, as the ztunnel's loop wants
    sock.sendall(protocol.encode(protocol.csr(request_id, identity, csr)))
    buffered, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        assert data, "istiod closed the ztunnel's stream"
        buffered += data
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            message = json.loads(line)
            if message.get("id") == request_id:
                return message
    raise AssertionError(f"no answer to {request_id} within {timeout}s")


def test_node_proxy_gets_its_own_nodes_identities_and_not_another_nodes(c):
    istiod_sock = os.path.join(naming.run_dir(c.name), "istiod.sock")
    zt = ztunnel_pod(c, "node-1")
    [pid] = [s["pid"] for s in zt["status"]["containerStatuses"]]
    with stopped(pid):
        stream = config_stream_of(pid, istiod_sock)
        try:
            own = ask(stream, "tm-ca-own", SLEEP_ID)
            other = ask(stream, "tm-ca-other", HTTPBIN_ID)
        finally:
            stream.close()
        impostor = subprocess.run(
            ["ip", "netns", "exec", c.node_netns("node-1"), sys.executable, "-c", IMPOSTOR, istiod_sock,
             zt["metadata"]["name"], SLEEP_ID, HTTPBIN_ID],
            capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    # The ztunnel's own stream passes the pod and process checks: the node rule decides.
    assert own["type"] == "cert", f"node-1's ztunnel was refused its own workload's identity: {own}"
    leaf = x509.load_pem_x509_certificate(own["chain"][0].encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [SLEEP_ID]
    assert other["type"] == "error" and "cert" not in other, other
    assert HTTPBIN_ID in other["message"] and "node-1" in other["message"], other["message"]

    assert impostor.returncode == 0, impostor.stderr[-2000:]
    answers = json.loads(impostor.stdout.strip().splitlines()[-1])
    for uri in (SLEEP_ID, HTTPBIN_ID):
        assert answers[uri] != "signed", (uri, answers[uri])
    # istiod refuses a second process's hello for a pod that already has a live stream, so the
    # impostor never reaches the CA, and the real ztunnel's stream is not knocked off.
    [istiod] = running_pods(c, "istio-system", {"app": "istiod"})
    assert "refused a hello" in c.logs("istio-system", istiod["metadata"]["name"]), \
        "istiod did not refuse the impostor's hello"

    # The real ztunnel resumes and serves on the stream it had.
    until(lambda: ztunnels_in_sync(c), 10, what="node-1's ztunnel back in sync after the pause")
    until(lambda: outcome(c, NS, pod_of(c, "sleep-ambient")) == "allowed", 10,
          what="sleep on node-1 reaching httpbin on node-0")
