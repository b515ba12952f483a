"""AMBIENT-L4, adversarial: an attacker pod of the suite's own (outside the mesh) speaks HBONE
to a captured pod's port 15008 with credentials and requests a ztunnel must refuse
(ISTIO-SEMANTICS section 2). Every refusal is checked beside a control that succeeds."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from conformance import adversary as adv
from conformance import workloads as w
from conformance.convergence import eventually
from conformance.scenario import Scenario
from conformance.targets.base import NotSupported, Pod
from conformance.tests.l4world import spread_nodes

SPOOFED_IP = "203.0.113.7"   # TEST-NET-3: no pod has it


@dataclass
class HboneWorld:
    sc: Scenario
    srv: str
    server: Pod
    other: Pod
    client: Pod
    attacker: Pod

    @property
    def server_identity(self) -> str:
        return adv.spiffe(self.srv, "httpbin")

    def authority(self, port: int = w.HTTP_TARGET_PORT, pod: Pod | None = None) -> str:
        return f"{(pod or self.server).ip}:{port}"

    def probe(self, *attempts: dict) -> dict[str, dict]:
        return adv.probe(self.sc, self.attacker, list(attempts))

    def mesh_creds(self, **kw) -> adv.Credentials:
        return adv.mesh_credentials(self.sc, adv.spiffe(self.attacker.namespace, "attacker"), **kw)

    def valid_attempt(self, name: str, creds: adv.Credentials, root: str, headers: dict | None = None,
                      request_headers: dict | None = None) -> dict:
        return adv.tls_attempt(name, self.server.ip, self.authority(), creds, root, headers=headers,
                               request=adv.http_get(headers=request_headers))


@pytest.fixture(scope="module")
def hbone(target):
    """One server (and a second captured pod), one mesh client and the attacker, for the module."""
    sc = Scenario(target, "adversarial-hbone")
    try:
        server_node, client_node = spread_nodes(sc)
        srv, cli, out = sc.namespace("hsrv"), sc.namespace("hcli"), sc.namespace("hatk", ambient=False)
        sc.apply(w.httpbin(srv, node=server_node) + w.httpbin(srv, name="other", node=server_node)
                 + w.client(cli, "client", node=client_node))
        attacker = adv.deploy_attacker(sc, out, node=client_node)
        sc.ready(srv, cli)
        yield HboneWorld(sc, srv, sc.pod(srv, "httpbin"), sc.pod(srv, "other"), sc.pod(cli, "client"), attacker)
    finally:
        sc.cleanup()


def _expect_valid_tunnel(result: dict, what: str) -> None:
    assert result["outcome"] == "status" and result["status"] == 200 and result["tunnel_status"] == 200, \
        f"{what}: a mesh-valid certificate must get CONNECT 200 and the app's 200 through the tunnel: {result}"


@pytest.mark.features("HBONERejectsUntrustedPeers")
def test_hbone_refuses_clients_without_a_mesh_certificate(hbone):
    """A captured pod's 15008 MUST present the destination's mesh identity and MUST refuse at TLS a
    client with no certificate, and one whose certificate (claiming a mesh identity) comes from a CA
    the mesh does not trust; plaintext sent to 15008 MUST be closed without an HTTP answer; a mesh
    client MUST reach the same pod."""
    root = hbone.sc.mesh_trust_anchors()
    suite_ca = adv.SuiteCA()
    authority = hbone.authority()
    results = hbone.probe(
        adv.tls_attempt("no-cert", hbone.server.ip, authority, None, root, request=adv.http_get()),
        adv.tls_attempt("foreign-ca-attacker", hbone.server.ip, authority,
                        suite_ca.issue(adv.spiffe(hbone.attacker.namespace, "attacker")), root,
                        request=adv.http_get()),
        adv.tls_attempt("foreign-ca-claims-client", hbone.server.ip, authority,
                        suite_ca.issue(adv.spiffe(hbone.client.namespace, "client")), root,
                        request=adv.http_get()),
        adv.plaintext_attempt("plaintext", hbone.server.ip, request=adv.http_get()),
    )
    assert results["no-cert"]["server_identity"] == hbone.server_identity, \
        f"15008 must present the destination's identity {hbone.server_identity}, chained to the mesh root: " \
        f"{results['no-cert']}"
    for name in ("no-cert", "foreign-ca-attacker", "foreign-ca-claims-client"):
        adv.assert_refused_promptly(results[name], {adv.TLS_REFUSED}, f"HBONE client with {name}")
    adv.assert_refused_promptly(results["plaintext"], {"closed", "reset"}, "plaintext on 15008")
    hbone.sc.expect_allowed(hbone.client, w.service_url("httpbin", hbone.srv), "mesh client, same server")
    try:
        creds = hbone.mesh_creds()
    except NotSupported:
        return  # the mesh client above is the control on targets that cannot sign
    # the probe's own HTTP/2 (used in images without h2) is checked on the same control
    results = hbone.probe(hbone.valid_attempt("valid", creds, root),
                          dict(hbone.valid_attempt("valid-minimal-h2", creds, root), minimal_h2=True))
    _expect_valid_tunnel(results["valid"], "valid control")
    _expect_valid_tunnel(results["valid-minimal-h2"], "valid control, the probe's minimal HTTP/2")


@pytest.mark.features("HBONERejectsForeignTrustDomain")
def test_hbone_refuses_other_trust_domain_and_expired_certificates(hbone):
    """HBONE MUST refuse at TLS a client certificate signed by the mesh's own CA for another trust
    domain, and a mesh-signed certificate that has expired, while a valid mesh-signed certificate
    gets CONNECT 200 and the app's answer."""
    root = hbone.sc.mesh_trust_anchors()
    other_domain = adv.mesh_credentials(hbone.sc, adv.spiffe(hbone.attacker.namespace, "attacker",
                                                                    trust_domain="evil.example"))
    results = hbone.probe(
        hbone.valid_attempt("valid", hbone.mesh_creds(), root),
        hbone.valid_attempt("other-trust-domain", other_domain, root),
        hbone.valid_attempt("expired", hbone.mesh_creds(expired=True), root),
    )
    _expect_valid_tunnel(results["valid"], "valid control")
    adv.assert_refused_promptly(results["other-trust-domain"], {adv.TLS_REFUSED}, "mesh CA, trust domain evil.example")
    adv.assert_refused_promptly(results["expired"], {adv.TLS_REFUSED}, "expired mesh certificate")


@pytest.mark.features("HBONEConnectAuthorityChecked")
def test_hbone_connect_authority_must_name_this_pod_and_a_listening_port(hbone):
    """A mesh-authenticated CONNECT to a pod's 15008 MUST be refused 400 when its authority names
    another pod, MUST be refused (4xx/5xx) when it names the pod's own 15008, and MUST be refused
    503 when it names a port nothing listens on, while the pod's app port gets 200."""
    root, creds = hbone.sc.mesh_trust_anchors(), hbone.mesh_creds()
    ip = hbone.server.ip

    def connect(name, authority):
        return adv.tls_attempt(name, ip, authority, creds, root, request=adv.http_get())
    results = hbone.probe(
        connect("valid", hbone.authority()),
        connect("other-pod", hbone.authority(pod=hbone.other)),
        connect("own-hbone-port", hbone.authority(port=adv.HBONE_PORT)),
        connect("no-listener", hbone.authority(port=w.HTTP_TARGET_PORT + 1)),
        dict(connect("no-listener-minimal-h2", hbone.authority(port=w.HTTP_TARGET_PORT + 1)), minimal_h2=True),
    )
    _expect_valid_tunnel(results["valid"], "valid control")
    adv.assert_refused_promptly(results["other-pod"], set(), "authority names another pod", {400})
    adv.assert_refused_promptly(results["own-hbone-port"], set(), "authority names the pod's own 15008",
                                {400, 401, 403, 503})
    adv.assert_refused_promptly(results["no-listener"], set(), "authority names a port with no listener", {503})
    adv.assert_refused_promptly(results["no-listener-minimal-h2"], set(),
                                "the same, read by the probe's own HTTP/2 (images without h2)", {503})


@pytest.mark.features("HBONEForwardedHeaderIgnored", "L4AuthorizationIPBlocks")
def test_hbone_forwarded_header_does_not_change_the_source_address(hbone):
    """An ipBlocks decision MUST use the tunnel's TCP peer: a CONNECT whose `forwarded` header (and
    inner `X-Forwarded-For`) names an address an ALLOW admits MUST still be denied (401), and a DENY
    of the attacker's own address MUST hold whatever `forwarded` says; an ALLOW of its real address
    admits it (200)."""
    root, creds = hbone.sc.mesh_trust_anchors(), hbone.mesh_creds()
    spoof = {"forwarded": f'for="{SPOOFED_IP}:4242"'}
    spoof_inner = {"X-Forwarded-For": SPOOFED_IP, "Forwarded": f"for={SPOOFED_IP}"}

    def batch():
        return [hbone.probe(hbone.valid_attempt("plain", creds, root),
                            hbone.valid_attempt("spoofed", creds, root, headers=spoof, request_headers=spoof_inner))]

    def policy(name, action, block):
        hbone.sc.apply([w.authorization_policy(hbone.srv, name, {"action": action, "rules": [
            {"from": [{"source": {"ipBlocks": [block]}}]}]}, selector_app="httpbin")])

    def status(name):
        return lambda r: r[name]["outcome"] == "status" and r[name]["status"]

    try:
        policy("by-ip", "ALLOW", f"{SPOOFED_IP}/32")
        seen = eventually(batch, lambda r: status("plain")(r) == 401, "ALLOW of the spoofed address in effect",
                        n_consecutive=2)
        assert status("spoofed")(seen[-1]) == 401, \
            f"a forwarded header naming the allowed address admitted the attacker: {seen[-1]['spoofed']}"
        policy("by-ip", "ALLOW", f"{hbone.attacker.ip}/32")
        eventually(batch, lambda r: status("plain")(r) == 200 and status("spoofed")(r) == 200,
                   "ALLOW of the attacker's real address (control)")
        policy("deny-attacker", "DENY", f"{hbone.attacker.ip}/32")
        seen = eventually(batch, lambda r: status("plain")(r) == 401, "DENY of the attacker's address in effect",
                        n_consecutive=2)
        assert status("spoofed")(seen[-1]) == 401, \
            f"a forwarded header naming another address escaped the DENY: {seen[-1]['spoofed']}"
    finally:
        for name in ("by-ip", "deny-attacker"):
            hbone.sc.delete([w.authorization_policy(hbone.srv, name, {})])


@pytest.mark.features("HBONEClientVerifiesServerIdentity")
def test_client_ztunnel_refuses_a_server_with_the_wrong_identity(hbone):
    """A mesh client's ztunnel MUST refuse an HBONE server at the destination pod's 15008 whose
    mesh-signed certificate names another identity (the client sees a prompt reset, and no CONNECT
    reaches that server), while the same server presenting the destination's own identity is used."""
    sc, ns = hbone.sc, hbone.attacker.namespace
    honest_creds = adv.mesh_credentials(sc, adv.spiffe(ns, "honest"))
    liar_creds = adv.mesh_credentials(sc, adv.spiffe(ns, "someone-else"))
    node = sc.node_of(hbone.server)
    honest, liar = adv.deploy_impostor(sc, ns, "honest", node), adv.deploy_impostor(sc, ns, "liar", node)
    runs = {"honest": adv.ServerRun(sc, honest, honest_creds, seconds=8),
            "liar": adv.ServerRun(sc, liar, liar_creds, seconds=8)}
    sc.expect_allowed(hbone.client, f"http://{honest.ip}:{w.HTTP_TARGET_PORT}/", "server with the right identity")
    sc.expect_denied(hbone.client, f"http://{liar.ip}:{w.HTTP_TARGET_PORT}/", "server with the wrong identity")
    counts = {name: run.counts() for name, run in runs.items()}
    assert counts["honest"]["connects"] > 0, f"the control server saw no CONNECT: {counts}"
    assert counts["liar"]["connections"] > 0, f"the client never reached the wrong-identity server: {counts}"
    assert counts["liar"]["connects"] == 0, f"the client sent CONNECT to a server with the wrong identity: {counts}"
