"""AMBIENT-L4: workload identity carried over mTLS between nodes."""
from __future__ import annotations

import secrets

import pytest

from conformance import pcap
from conformance import workloads as w
from conformance.tests.l4table import ALLOWED, DENIED, PORT, Step, allow_from, on_server, run_steps
from conformance.tests.l4world import spread_nodes

HBONE_PORT = 15008


@pytest.mark.features("MeshMutualTLSIdentity")
def test_policy_tells_clients_on_another_node_apart(l4):
    """Between nodes, ztunnel MUST present each client workload's own identity, so that an ALLOW
    policy naming one client's principal admits it and denies another client on the same node."""
    assert l4.sc.node_of(l4.a) == l4.sc.node_of(l4.b)
    if len(l4.sc.nodes()) > 1:
        assert l4.sc.node_of(l4.a) != l4.sc.node_of(l4.server), "clients must be remote"
    l4.sc.expect_allowed(l4.b, l4.url, "before any policy")
    run_steps(l4, "identity across nodes", (
        Step("principals: [a]", on_server("only-one", allow_from(principals=["a"])),
             (("b", PORT, DENIED), ("a", PORT, ALLOWED))),
        Step("principals: [b]", on_server("only-one", allow_from(principals=["b"])),
             (("a", PORT, DENIED), ("b", PORT, ALLOWED)))))


def _capture_calls(sc, node, client, server_ip, url, marker):
    capture = sc.capture(node, f"tcp and host {client.ip} and host {server_ip}")
    try:
        outcomes = sc.outcomes(client, url, headers={"X-Conformance-Marker": marker}, count=3)
    finally:
        data = capture.stop()
    return outcomes, data


@pytest.mark.features("MeshMutualTLSOnTheWire", "MeshMutualTLSIdentity")
def test_node_link_carries_only_tls_to_hbone_port(l4):
    """Captured on the server's node, traffic between two ambient pods on different nodes MUST be
    only TCP to or from port 15008 and MUST NOT show the request's plaintext, while the same
    capture between two pods outside the mesh does show it."""
    sc = l4.sc
    server_node, client_node = spread_nodes(sc)
    if server_node is None:
        pytest.skip("NOT_SUPPORTED: the target has a single node; the test needs two")
    marker = "cf-marker-" + secrets.token_hex(8)
    url = w.service_url("httpbin", l4.server_ns, path=f"/anything/{marker}")
    sc.expect_allowed(l4.a, url, "ambient call to capture")

    outcomes, data = _capture_calls(sc, server_node, l4.a, l4.server.ip, url, marker)
    assert outcomes == [200] * 3, f"captured ambient calls failed: {outcomes}"
    segments = pcap.tcp_segments(data)
    assert segments, "the capture saw no packet between the ambient client and server"
    not_hbone = [s for s in segments if HBONE_PORT not in (s.sport, s.dport)]
    assert not not_hbone, f"traffic between ambient pods that is not HBONE: {not_hbone[:3]}"
    assert marker.encode() not in data, "the request's plaintext is visible on the node link"

    # Control: the same capture sees plaintext between pods outside the mesh.
    plain_srv, plain_cli = sc.namespace("psrv", ambient=False), sc.namespace("pcli", ambient=False)
    sc.deploy(w.httpbin(plain_srv, node=server_node) + w.client(plain_cli, "plain", node=client_node),
              plain_srv, plain_cli)
    plain_client, plain_server = sc.pod(plain_cli, "plain"), sc.pod(plain_srv, "httpbin")
    plain_url = w.service_url("httpbin", plain_srv, path=f"/anything/{marker}")
    sc.expect_allowed(plain_client, plain_url, "plaintext call to capture")
    outcomes, data = _capture_calls(sc, server_node, plain_client, plain_server.ip, plain_url, marker)
    assert outcomes == [200] * 3, f"captured plaintext calls failed: {outcomes}"
    seen = sorted({(x.src, x.sport, x.dst, x.dport) for x in pcap.tcp_segments(data)})
    assert marker.encode() in data, ("control failed: the capture did not see plaintext it should see "
                                     f"(client {plain_client.ip}, server {plain_server.ip}; flows seen {seen})")
