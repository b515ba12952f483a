"""AMBIENT-L4, adversarial: the mesh CA and workload certificates (ISTIO-SEMANTICS section 3).

A node proxy asks the CA with its own credentials, so the CA must check WHICH identities that
proxy may hold: only those of workloads on its node. And workload certificates are short-lived,
so a mesh must replace them before they expire without a call failing."""
from __future__ import annotations

import time

import pytest

from conformance import adversary as adv
from conformance import workloads as w
from conformance.scenario import Scenario

#: a workload certificate lifetime short enough to see two renewals within the test
TTL_SECONDS = 6
#: slack for the probe's and the CA's whole-second clocks
CLOCK_SLACK_SECONDS = 2


def _two_nodes(sc: Scenario) -> tuple[str, str]:
    first, second = sc.spread_nodes()
    if first is None:
        pytest.skip("needs two nodes: a node proxy is asked for another node's workload")
    return first, second


def _signed_for(answer, spiffe_id: str, what: str) -> None:
    assert answer.signed, f"{what}: the CA refused {spiffe_id}: {answer.refusal}"
    assert answer.identities == (spiffe_id,), f"{what}: asked for {spiffe_id}, signed {answer.identities}"


def _refused(answer, spiffe_id: str, what: str) -> None:
    assert not answer.signed, f"{what}: the CA signed {spiffe_id} (SANs {answer.identities}); it must refuse"
    assert answer.refusal, f"{what}: the CA refused {spiffe_id} without saying why"


@pytest.mark.features("CARefusesForeignIdentity")
def test_node_proxy_gets_only_its_own_nodes_identities(scenario):
    """A certificate request made with a node proxy's own credentials MUST be signed for a workload
    on that proxy's node and MUST be refused for a workload on another node, for an identity no
    pod has, for the same service account name in another namespace and for another trust
    domain; the same proxy's own workload is signed again after the refusals, and the other node's
    proxy gets the mirror image."""
    sc = scenario
    node_x, node_y = _two_nodes(sc)
    ns, other_ns = sc.namespace("ca"), sc.namespace("ca-other")
    sc.deploy(w.client(ns, "on-x", node=node_x) + w.client(ns, "on-y", node=node_y), ns)
    on_x, on_y = adv.spiffe(ns, "on-x"), adv.spiffe(ns, "on-y")
    nobody = adv.spiffe(ns, "nobody")
    namesake = adv.spiffe(other_ns, "on-x")   # on-x's service account name, in a namespace without it
    elsewhere = adv.spiffe(ns, "on-x", trust_domain="evil.example")

    own, foreign, no_pod, other_namespace, other_domain, own_again = sc.request_certificate_as_node_proxy(
        node_x, [on_x, on_y, nobody, namesake, elsewhere, on_x])
    _signed_for(own, on_x, f"{node_x}'s node proxy for its own node's workload")
    _refused(foreign, on_y, f"{node_x}'s node proxy for a workload on {node_y}")
    _refused(no_pod, nobody, f"{node_x}'s node proxy for an identity no pod has")
    _refused(other_namespace, namesake, f"{node_x}'s node proxy for its workload's service account name in "
                                        f"another namespace")
    _refused(other_domain, elsewhere, f"{node_x}'s node proxy for another trust domain")
    _signed_for(own_again, on_x, f"{node_x}'s node proxy for its own node's workload, after the refusals")

    mirror_own, mirror_foreign = sc.request_certificate_as_node_proxy(node_y, [on_y, on_x])
    _signed_for(mirror_own, on_y, f"{node_y}'s node proxy for its own node's workload")
    _refused(mirror_foreign, on_x, f"{node_y}'s node proxy for a workload on {node_x}")


def _served(sc: Scenario, attacker, server, root: str) -> dict:
    """The certificate `server`'s 15008 presents now, verified against the mesh's root."""
    attempt = adv.tls_attempt("served", server.ip, f"{server.ip}:{w.HTTP_TARGET_PORT}", None, root)
    result = adv.probe(sc, attacker, [attempt])["served"]
    assert result["server_cert_sha256"] and result["server_not_after"], (
        f"{server.namespace}/{server.name}'s 15008 presented no certificate the mesh's root verifies "
        f"(an expired one fails verification): {result}")
    return result


@pytest.mark.features("WorkloadCertificateRenewal")
def test_served_certificate_is_renewed_before_expiry_and_calls_never_fail(scenario):
    """With a 6 s workload certificate TTL, the certificate a captured pod's 15008 serves MUST
    expire within the TTL of being first seen, MUST be replaced by a new one before it expires, at
    least twice, and calls between two captured pods on different nodes MUST all succeed meanwhile."""
    sc = scenario
    server_node, client_node = _two_nodes(sc)
    sc.set_workload_certificate_ttl(TTL_SECONDS)
    try:
        srv, cl, att = sc.namespace("srv"), sc.namespace("cl"), sc.namespace("att", ambient=False)
        sc.apply(w.httpbin(srv, node=server_node) + w.client(cl, "client", node=client_node))
        attacker = adv.deploy_attacker(sc, att, node=client_node)
        sc.ready(srv, cl)
        server, client, url = sc.pod(srv, "httpbin"), sc.pod(cl, "client"), w.service_url("httpbin", srv)
        sc.expect_allowed(client, url, f"client -> httpbin under a {TTL_SECONDS} s certificate TTL")
        root = sc.mesh_trust_anchors()

        certs: list[dict] = []   # each distinct served certificate, with when it was first seen
        outcomes: list = []
        deadline = time.time() + 4 * TTL_SECONDS
        while len(certs) < 3 and time.time() < deadline:
            seen = _served(sc, attacker, server, root)
            seen_at = time.time()
            assert seen["server_not_after"] > seen_at - 1, \
                f"httpbin's 15008 served a certificate that expired at {seen['server_not_after']}: {seen}"
            assert seen["server_not_after"] <= seen_at + TTL_SECONDS + CLOCK_SLACK_SECONDS, (
                f"httpbin's 15008 served, at {seen_at:.0f}, a certificate valid until "
                f"{seen['server_not_after']:.0f}: the {TTL_SECONDS} s workload certificate TTL was not applied")
            if not certs or certs[-1]["server_cert_sha256"] != seen["server_cert_sha256"]:
                certs.append({**seen, "seen_at": seen_at})
            outcomes += sc.outcomes(client, url, count=2)
    finally:
        sc.set_workload_certificate_ttl(None)

    assert len(certs) >= 3, (f"httpbin's 15008 served {len(certs)} distinct certificate(s) in "
                             f"{4 * TTL_SECONDS} s under a {TTL_SECONDS} s TTL; expected at least two renewals")
    for old, new in zip(certs, certs[1:]):
        assert new["seen_at"] < old["server_not_after"], (
            f"the certificate valid until {old['server_not_after']:.0f} was replaced only at "
            f"{new['seen_at']:.1f}, after it expired")
    assert outcomes and all(o == 200 for o in outcomes), \
        f"calls client -> httpbin across the renewals: expected HTTP 200 every time, got {outcomes}"
