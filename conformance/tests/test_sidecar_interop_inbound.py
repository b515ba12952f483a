"""SIDECAR-INTEROP: calls INTO a sidecar pod, from ambient, sidecar and uncaptured clients."""
from __future__ import annotations

import pytest

from conformance import workloads as w
from conformance.tests.sidecarworld import (INJECT, OTHER, PROXY, allow_principals, forbidden,
                                            sidecar_namespace)


@pytest.mark.features("SidecarInjection", "SidecarInteropAmbientToSidecar", "SidecarInteropSidecarToSidecar")
def test_sidecar_server_sees_each_clients_own_identity(scenario):
    """Pods of an `istio-injection=enabled` namespace MUST run an `istio-proxy` container and
    those of an ambient one MUST NOT; an ambient client's call to the sidecar pod MUST arrive over
    mutual TLS with the ambient client's identity (the sidecar's own metrics say so), and between
    two sidecar pods MUST carry the sidecar client's identity: an ALLOW policy at the server naming
    one client MUST admit it (200) and refuse the other (403), and the other way round."""
    sc = scenario
    side, amb = sidecar_namespace(sc, "sside"), sc.namespace("samb")
    sc.deploy(w.httpbin(side) + w.client(side, "side-cli") + w.client(amb, "amb-cli"), side, amb)
    server, side_cli, amb_cli = sc.pod(side, "httpbin"), sc.pod(side, "side-cli"), sc.pod(amb, "amb-cli")
    for pod in (server, side_cli):
        assert PROXY in pod.containers and len(pod.containers) == 2 and pod.ready, \
            f"{pod.namespace}/{pod.name} in an injection namespace: containers {pod.containers}, ready {pod.ready}"
    assert PROXY not in amb_cli.containers, f"an ambient pod got a sidecar: {amb_cli.containers}"
    amb_id, side_id = w.principal(amb, "amb-cli"), w.principal(side, "side-cli")
    url = w.service_url("httpbin", side, path="/headers")

    sc.expect_allowed(amb_cli, url, "ambient -> sidecar before any policy")
    sc.expect_allowed(side_cli, url, "sidecar -> sidecar before any policy")
    before = sc.sidecar_requests(server, amb_id, mtls=True)
    sc.assert_allowed_now(amb_cli, url, "ambient -> sidecar, counted", count=3)
    after = sc.sidecar_requests(server, amb_id, mtls=True)
    assert after >= before + 3, (f"the sidecar counted {after - before} mutual-TLS requests from {amb_id} "
                                 f"for 3 calls: the calls did not arrive over HBONE with the client's identity")

    allow_principals(sc, side, "one-client", [w.principal(amb, OTHER)])
    sc.converge(amb_cli, url, forbidden, "ambient client, policy naming another identity: expected 403")
    sc.converge(side_cli, url, forbidden, "sidecar client, policy naming another identity: expected 403")
    allow_principals(sc, side, "one-client", [amb_id])
    sc.expect_allowed(amb_cli, url, "ambient client, policy naming it")
    sc.converge(side_cli, url, forbidden, "sidecar client, policy naming the ambient client: expected 403")
    allow_principals(sc, side, "one-client", [side_id])
    sc.expect_allowed(side_cli, url, "sidecar client, policy naming it")
    sc.converge(amb_cli, url, forbidden, "ambient client, policy naming the sidecar client: expected 403")


@pytest.mark.features("SidecarInteropUncapturedToSidecar")
def test_plaintext_into_sidecar_follows_peer_authentication(scenario):
    """A pod outside the mesh MUST reach a sidecar pod under PERMISSIVE (the default), arriving as
    plaintext with no identity; under PeerAuthentication STRICT in the sidecar's namespace it MUST
    be refused while an ambient client still gets 200; back to PERMISSIVE it MUST get in again."""
    sc = scenario
    side, plain, amb = sidecar_namespace(sc, "pside"), sc.namespace("pplain", ambient=False), sc.namespace("pamb")
    sc.deploy(w.httpbin(side) + w.client(plain, "plain-cli") + w.client(amb, "amb-cli"), side, plain, amb)
    server, plain_cli, amb_cli = sc.pod(side, "httpbin"), sc.pod(plain, "plain-cli"), sc.pod(amb, "amb-cli")
    url = w.service_url("httpbin", side)

    sc.expect_allowed(plain_cli, url, "uncaptured -> sidecar under PERMISSIVE")
    assert sc.sidecar_requests(server, None, mtls=False) >= 1, \
        "the sidecar counted no plaintext request without identity from the uncaptured client"
    sc.apply([w.peer_authentication(side, "mtls", "STRICT")])
    sc.expect_denied(plain_cli, url, "uncaptured -> sidecar under STRICT")
    sc.assert_allowed_now(amb_cli, url, "ambient -> sidecar under STRICT (mutual TLS)")
    sc.apply([w.peer_authentication(side, "mtls", "PERMISSIVE")])
    sc.expect_allowed(plain_cli, url, "uncaptured -> sidecar back under PERMISSIVE")


def _with_pod_label(objects: list[dict], key: str, value: str) -> list[dict]:
    """The manifests with `key: value` added to the Deployment's pod template labels."""
    for obj in objects:
        if obj.get("kind") == "Deployment":
            obj["spec"]["template"]["metadata"]["labels"][key] = value
    return objects


@pytest.mark.features("SidecarInjection")
def test_pod_label_opts_out_of_and_into_injection(scenario):
    """In an `istio-injection=enabled` namespace a pod labelled `sidecar.istio.io/inject: "false"`
    MUST NOT get an `istio-proxy` container while its neighbour without the label MUST; in a
    namespace without the injection label a pod labelled `sidecar.istio.io/inject: "true"` MUST get
    one while its neighbour without the label MUST NOT."""
    sc = scenario
    side, plain = sidecar_namespace(sc, "iside"), sc.namespace("iplain", ambient=False)
    sc.deploy(w.client(side, "default-cli") + _with_pod_label(w.client(side, "opt-out"), INJECT, "false")
              + w.client(plain, "plain-cli") + _with_pod_label(w.client(plain, "opt-in"), INJECT, "true"),
              side, plain)
    for ns, name, injected in ((side, "default-cli", True), (side, "opt-out", False),
                               (plain, "plain-cli", False), (plain, "opt-in", True)):
        pod = sc.pod(ns, name)
        assert (PROXY in pod.containers) == injected and pod.ready, \
            f"{ns}/{name}: containers {pod.containers}, ready {pod.ready}; expected " \
            f"{'an' if injected else 'no'} {PROXY} container"
