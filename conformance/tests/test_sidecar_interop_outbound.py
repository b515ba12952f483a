"""SIDECAR-INTEROP: calls OUT of a sidecar pod, to ambient and to uncaptured servers."""
from __future__ import annotations

import json

import pytest

from conformance import workloads as w
from conformance.tests.sidecarworld import OTHER, allow_principals, sidecar_namespace


@pytest.mark.features("SidecarInteropSidecarToAmbient", "SidecarInteropSidecarToUncaptured")
def test_sidecar_client_uses_hbone_to_ambient_and_plaintext_to_uncaptured(scenario):
    """A sidecar client's call to an ambient server MUST reach the server's ztunnel over HBONE with
    the sidecar pod's own identity: an L4 policy there naming another identity MUST refuse it and
    one naming the sidecar client MUST admit it, and the ztunnel MUST count the connection under
    that identity. To a server outside the mesh the same client MUST connect in plaintext, from
    its own pod address."""
    sc = scenario
    server_node, client_node = sc.spread_nodes()
    side, amb, plain = sidecar_namespace(sc, "oside"), sc.namespace("oamb"), sc.namespace("oplain", ambient=False)
    sc.deploy(w.client(side, "side-cli", node=client_node) + w.httpbin(amb, node=server_node)
              + w.httpbin(plain, node=server_node), side, amb, plain)
    side_cli, amb_srv = sc.pod(side, "side-cli"), sc.pod(amb, "httpbin")
    side_id = w.principal(side, "side-cli")
    amb_url = w.service_url("httpbin", amb)

    sc.expect_allowed(side_cli, amb_url, "sidecar -> ambient before any policy")
    node = sc.node_of(amb_srv)
    before = sc.connections_opened(node, side_id)
    sc.assert_allowed_now(side_cli, amb_url, "sidecar -> ambient, counted", count=2)
    # One curl run may reuse its connection: at least one new HBONE connection, under that identity.
    assert sc.connections_opened(node, side_id) >= before + 1, \
        f"the server's ztunnel counted no HBONE connections from {side_id}: the sidecar did not present its identity"
    allow_principals(sc, amb, "only", [w.principal(side, OTHER)])
    sc.expect_denied(side_cli, amb_url, "sidecar -> ambient, L4 policy naming another identity")
    allow_principals(sc, amb, "only", [side_id])
    sc.expect_allowed(side_cli, amb_url, "sidecar -> ambient, L4 policy naming the sidecar client")

    plain_url = w.service_url("httpbin", plain, path="/ip")
    sc.expect_allowed(side_cli, plain_url, "sidecar -> uncaptured (plaintext passthrough)")
    origin = w.echoed_origin(json.loads(sc.bodies(side_cli, plain_url, 1)[0]))  # kind (issue 17): go-httpbin's ip:port
    assert origin == side_cli.ip, (f"the uncaptured server saw the call from {origin}, not from the sidecar "
                                   f"pod {side_cli.ip}: it was not passed through as plain TCP")


@pytest.mark.features("SidecarInteropSidecarToAmbient")
def test_sidecar_client_skips_the_destination_waypoint(scenario):
    """Istio's sidecars send HBONE straight to the destination pod, skipping the waypoint the
    destination's service is bound to (ISTIO-SEMANTICS section 10): with a waypoint L7 DENY on
    `/headers`, an ambient client MUST get 403 there (control: 200 on `/get`) while a sidecar client
    MUST get 200 on `/headers`, since its request never passes the waypoint."""
    sc = scenario
    amb = sc.namespace("wamb", labels={"istio.io/use-waypoint": "waypoint"})
    cli_ns, side = sc.namespace("wcli"), sidecar_namespace(sc, "wside")
    sc.apply([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "waypoint", "namespace": amb},
               "spec": {"gatewayClassName": "istio-waypoint",
                        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}},
              w.authorization_policy(amb, "no-headers", {
                  "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}],
                  "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/headers"]}}]}]})])
    sc.deploy(w.httpbin(amb) + w.client(cli_ns, "amb-cli") + w.client(side, "side-cli"), amb, cli_ns, side)
    amb_cli, side_cli = sc.pod(cli_ns, "amb-cli"), sc.pod(side, "side-cli")
    headers_url = w.service_url("httpbin", amb, path="/headers")
    sc.converge(amb_cli, headers_url, lambda o: o == 403,
                "ambient client through the waypoint, L7 DENY /headers: expected 403")
    sc.assert_allowed_now(amb_cli, w.service_url("httpbin", amb), "ambient client, /get through the waypoint")
    sc.assert_allowed_now(side_cli, headers_url, "sidecar client, /headers: the waypoint is skipped")
