"""AMBIENT-L4: joining the mesh by namespace label, PeerAuthentication, and pods outside the mesh."""
from __future__ import annotations

import pytest

from conformance import workloads as w
from conformance.tests.l4table import ALLOWED, DENIED, PORT, Step, allow_from, on_server, run_steps
from conformance.tests.l4world import build_l4_world, spread_nodes


def _pod_identity(pods):
    return {p.name: (p.uid, p.containers, p.restarts) for p in pods}


@pytest.mark.features("AmbientEnrollmentByNamespaceLabel")
def test_namespace_label_enrolls_running_pods_without_restart(scenario):
    """Labelling a namespace `istio.io/dataplane-mode=ambient` MUST bring its running pods under
    ztunnel policy without restarting them or adding containers, and removing the label MUST
    release them."""
    world = build_l4_world(scenario, server_ambient=False)
    srv = world.server_ns
    scenario.apply([w.authorization_policy(srv, "allow-nothing", {})])
    # Outside the mesh nobody enforces the policy: the pod keeps answering.
    scenario.expect_allowed(world.a, world.url, "server namespace not enrolled, allow-nothing present")
    before = _pod_identity(scenario.pods(srv))

    scenario.label_namespace(srv, w.AMBIENT_LABEL)
    scenario.expect_denied(world.a, world.url, "server namespace enrolled: allow-nothing now enforced")
    after = _pod_identity(scenario.pods(srv))
    assert after == before, "enrolling the namespace restarted, replaced or changed its pods"
    assert all(len(c) == 1 for _, c, _ in after.values()), "enrolment added containers to the pods"

    scenario.label_namespace(srv, {"istio.io/dataplane-mode": None})
    scenario.expect_allowed(world.a, world.url, "label removed: pod released from the mesh")
    assert _pod_identity(scenario.pods(srv)) == before, "un-enrolling restarted or replaced pods"


def _uncaptured_client(scenario, node):
    ns = scenario.namespace("out", ambient=False)
    scenario.deploy(w.client(ns, "outsider", node=node), ns)
    return scenario.pod(ns, "outsider")


@pytest.mark.features("PeerAuthenticationStrict")
def test_strict_rejects_plaintext_from_uncaptured_client(l4):
    """With PeerAuthentication STRICT on the server's namespace, ztunnel MUST drop plaintext from a
    pod outside the mesh while mesh clients (mTLS) keep working."""
    outsider = _uncaptured_client(l4.sc, spread_nodes(l4.sc)[1])
    l4.sc.expect_allowed(outsider, l4.url, "plaintext, no PeerAuthentication")
    l4.sc.apply([w.peer_authentication(l4.server_ns, "default", "STRICT")])
    l4.sc.expect_denied(outsider, l4.url, "plaintext under STRICT")
    l4.sc.expect_allowed(l4.a, l4.url, "mTLS client under STRICT")


@pytest.mark.features("PeerAuthenticationPermissive", "PeerAuthenticationStrict")
def test_permissive_accepts_plaintext_from_uncaptured_client(l4):
    """With PeerAuthentication PERMISSIVE, ztunnel MUST accept plaintext from a pod outside the mesh
    (after STRICT had been rejecting it)."""
    outsider = _uncaptured_client(l4.sc, spread_nodes(l4.sc)[1])
    l4.sc.apply([w.peer_authentication(l4.server_ns, "default", "STRICT")])
    l4.sc.expect_denied(outsider, l4.url, "plaintext under STRICT")
    l4.sc.apply([w.peer_authentication(l4.server_ns, "default", "PERMISSIVE")])
    l4.sc.expect_allowed(outsider, l4.url, "plaintext under PERMISSIVE")
    l4.sc.expect_allowed(l4.a, l4.url, "mTLS client under PERMISSIVE")


@pytest.mark.features("UncapturedInterop")
def test_ambient_and_uncaptured_pods_call_each_other(l4):
    """An ambient pod MUST reach a pod outside the mesh and vice versa; plaintext from outside the
    mesh MUST carry no identity, so it fails a `principals` rule and passes a `notPrincipals` rule."""
    sc = l4.sc
    outsider = _uncaptured_client(sc, spread_nodes(sc)[1])
    plain_ns = sc.namespace("plain", ambient=False)
    sc.deploy(w.httpbin(plain_ns), plain_ns)
    plain_url = w.service_url("httpbin", plain_ns)
    sc.expect_allowed(l4.a, plain_url, "ambient client -> uncaptured server")
    sc.expect_allowed(outsider, l4.url, "uncaptured client -> ambient server")

    run_steps(l4, "plaintext has no identity", (
        Step("principals: [a]", on_server("mesh-only", allow_from(principals=["a"])),
             (("outsider", PORT, DENIED), ("a", PORT, ALLOWED))),
        Step("notPrincipals: [a]", on_server("mesh-only", allow_from(notPrincipals=["a"])),
             (("outsider", PORT, ALLOWED), ("a", PORT, DENIED)))), clients={"outsider": outsider})


DATAPLANE_MODE = "istio.io/dataplane-mode"


@pytest.mark.features("AmbientEnrollmentByPodLabel")
def test_a_pods_own_dataplane_mode_label_beats_its_namespaces(scenario):
    """A pod's own `istio.io/dataplane-mode` label MUST beat its namespace's: under an allow-nothing
    policy in each namespace, a pod labelled `none` in an ambient namespace MUST stay reachable (outside
    the mesh) while its unlabelled neighbour is denied, and a pod labelled `ambient` in a namespace
    outside the mesh MUST be denied (enrolled) while its neighbour stays reachable. Labelling a running
    pod `none` MUST release it and removing the label MUST enroll it again, without a restart."""
    server_node, client_node = spread_nodes(scenario)
    amb, plain, cli = scenario.namespace("pamb"), scenario.namespace("pplain", ambient=False), scenario.namespace("pcli")
    scenario.deploy(w.whoami_deployment(amb, "member", node=server_node)
                    + w.whoami_deployment(amb, "optout", node=server_node, pod_labels={DATAPLANE_MODE: "none"})
                    + w.whoami_deployment(plain, "optin", node=server_node, pod_labels={DATAPLANE_MODE: "ambient"})
                    + w.whoami_deployment(plain, "bystander", node=server_node)
                    + w.client(cli, "client-a", node=client_node), amb, plain, cli)
    client = scenario.pod(cli, "client-a")
    pods = {app: scenario.pod(ns, app) for ns, app in
            ((amb, "member"), (amb, "optout"), (plain, "optin"), (plain, "bystander"))}
    url = {app: f"http://{pod.ip}:{w.WHOAMI_PORT}/name" for app, pod in pods.items()}
    for app in pods:
        scenario.expect_allowed(client, url[app], f"{app}, before any policy")
    before = _pod_identity(scenario.pods(amb) + scenario.pods(plain))

    scenario.apply([w.authorization_policy(amb, "allow-nothing", {}), w.authorization_policy(plain, "allow-nothing", {})])
    scenario.expect_denied(client, url["member"], "ambient namespace, allow-nothing: the unlabelled pod")
    scenario.assert_allowed_now(client, url["optout"], "ambient namespace, allow-nothing: the pod labelled `none`")
    scenario.expect_denied(client, url["optin"], "namespace outside the mesh: the pod labelled `ambient`")
    scenario.assert_allowed_now(client, url["bystander"], "namespace outside the mesh: the unlabelled pod")

    member = pods["member"]
    scenario.label("Pod", amb, member.name, {DATAPLANE_MODE: "none"})
    scenario.expect_allowed(client, url["member"], "the running pod labelled `none`: released from the mesh")
    scenario.label("Pod", amb, member.name, {DATAPLANE_MODE: None})
    scenario.expect_denied(client, url["member"], "the label removed from the running pod: enrolled again")
    assert _pod_identity(scenario.pods(amb) + scenario.pods(plain)) == before, \
        "a pod's enrolment label restarted, replaced or changed pods"
