"""AMBIENT-L4, adversarial: which workloads a policy covers. Each "changes nothing" check runs
after a barrier (a later change whose effect is seen), so it is not just a slow push."""
from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from conformance import workloads as w
from conformance.scenario import Scenario
from conformance.targets.base import Pod
from conformance.tests.l4world import spread_nodes


@dataclass
class ScopeWorld:
    sc: Scenario
    one: str        # server namespace 1 (httpbin with a second port)
    two: str        # server namespace 2
    a: Pod
    b: Pod
    outsider: Pod   # outside the mesh: plaintext, no identity

    def url(self, ns: str, port: int = w.HTTP_PORT) -> str:
        return w.service_url("httpbin", ns, port=port)

    @property
    def root(self) -> str:
        return self.sc.mesh_namespace

    def remove(self, *objects: dict) -> None:
        self.sc.delete(list(objects))


@pytest.fixture(scope="module")
def scope(target):
    sc = Scenario(target, "adversarial-scope")
    try:
        server_node, client_node = spread_nodes(sc)
        one, two, cli = sc.namespace("sone"), sc.namespace("stwo"), sc.namespace("scli")
        out = sc.namespace("sout", ambient=False)
        sc.apply(w.httpbin(one, node=server_node, alt_port=True) + w.httpbin(two, node=server_node)
                 + w.client(cli, "client-a", node=client_node) + w.client(cli, "client-b", node=client_node)
                 + w.client(out, "outsider", node=client_node))
        sc.ready(one, two, cli, out)
        yield ScopeWorld(sc, one, two, sc.pod(cli, "client-a"), sc.pod(cli, "client-b"), sc.pod(out, "outsider"))
    finally:
        sc.cleanup()


def _deny_principal(ns: str, name: str, principal: str, **extra) -> dict:
    spec = {"action": "DENY", "rules": [{"from": [{"source": {"principals": [principal]}}]}], **extra}
    return w.authorization_policy(ns, name, spec)


@pytest.mark.features("L4PolicyScope")
def test_namespace_policy_covers_its_namespace_only_and_empty_selector_match_changes_nothing(scope):
    """An allow-nothing policy without a selector MUST deny its own namespace's workloads and MUST
    NOT affect a workload in another namespace; an allow-nothing policy whose selector matches no
    pod MUST change nothing."""
    sc = scope.sc
    sc.expect_allowed(scope.a, scope.url(scope.one), "namespace one, before any policy")
    sc.expect_allowed(scope.a, scope.url(scope.two), "namespace two, before any policy")
    no_match = w.authorization_policy(scope.two, "selects-nothing", {}, selector_app="no-such-app")
    namespace_wide = w.authorization_policy(scope.one, "allow-nothing", {})
    try:
        sc.apply([no_match])
        sc.apply([namespace_wide])
        sc.expect_denied(scope.a, scope.url(scope.one), "allow-nothing in namespace one")
        sc.assert_allowed_now(scope.a, scope.url(scope.two),
                               "namespace two: namespace one's policy and a selector matching nothing")
    finally:
        scope.remove(no_match, namespace_wide)
    sc.expect_allowed(scope.a, scope.url(scope.one), "namespace one, policy removed")


@pytest.mark.features("L4PolicyRootNamespace")
def test_root_namespace_policy_applies_mesh_wide(scope):
    """A DENY without a selector in the root namespace MUST deny its client in every namespace, and
    MUST NOT deny other clients."""
    sc = scope.sc
    sc.expect_allowed(scope.b, scope.url(scope.two), "client B, before any policy")
    mesh_wide = _deny_principal(scope.root, f"cf-deny-b-{sc.suffix}", w.principal(scope.a.namespace, "client-b"))
    try:
        sc.apply([mesh_wide])
        sc.expect_denied(scope.b, scope.url(scope.one), "root-namespace DENY of B, namespace one")
        sc.expect_denied(scope.b, scope.url(scope.two), "root-namespace DENY of B, namespace two")
        sc.assert_allowed_now(scope.a, scope.url(scope.two), "client A under the root-namespace DENY of B")
    finally:
        scope.remove(mesh_wide)
    sc.expect_allowed(scope.b, scope.url(scope.two), "client B, root policy removed")


@pytest.mark.features("L4PolicyTargetRefsIgnored")
def test_target_refs_policies_are_not_enforced_by_ztunnel(scope):
    """A DENY-everything AuthorizationPolicy attached with `targetRefs` (to the Service, with no
    waypoint) MUST NOT be enforced by ztunnel, while the same policy with a selector is."""
    sc = scope.sc
    sc.expect_allowed(scope.a, scope.url(scope.two), "before any policy")
    by_ref = w.authorization_policy(scope.two, "deny-all-by-ref", {
        "action": "DENY", "rules": [{}], "targetRefs": [{"group": "", "kind": "Service", "name": "httpbin"}]})
    by_selector = w.authorization_policy(scope.one, "deny-all-by-selector",
                                         {"action": "DENY", "rules": [{}]}, selector_app="httpbin")
    try:
        sc.apply([by_ref])
        sc.apply([by_selector])
        sc.expect_denied(scope.a, scope.url(scope.one), "the same DENY with a selector (barrier)")
        sc.assert_allowed_now(scope.a, scope.url(scope.two), "DENY attached by targetRefs")
    finally:
        scope.remove(by_ref, by_selector)


def _peer_auth(ns: str, name: str, mode: str | None, selector_app: str | None = None,
               ports: dict | None = None) -> dict:
    """A PeerAuthentication; `mode` None leaves out `mtls` (the mode is UNSET: inherited)."""
    pa = w.peer_authentication(ns, name, mode or "UNSET")
    if mode is None:
        del pa["spec"]["mtls"]
    if selector_app:
        pa["spec"]["selector"] = {"matchLabels": {"app": selector_app}}
    if ports:
        pa["spec"]["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    return pa


@pytest.mark.features("PeerAuthenticationPrecedence", "PeerAuthenticationStrict", "PeerAuthenticationPermissive")
def test_peer_authentication_workload_beats_namespace_beats_mesh(scope):
    """For plaintext from outside the mesh: a mesh-wide STRICT (root namespace) MUST drop it; a
    namespace PERMISSIVE MUST override that; a workload STRICT MUST override the namespace's; and
    removing each in turn MUST restore the level below, while a mesh client keeps working. A
    workload STRICT whose selector matches no pod MUST change nothing throughout, and a workload
    policy that leaves the mode UNSET (only a PERMISSIVE port) MUST inherit the mesh's STRICT on
    every other port."""
    sc, out, url = scope.sc, scope.outsider, scope.url(scope.one)
    mesh = _peer_auth(scope.root, f"cf-mesh-{sc.suffix}", "STRICT")
    namespace = _peer_auth(scope.one, "default", "PERMISSIVE")
    workload = _peer_auth(scope.one, "httpbin-strict", "STRICT", selector_app="httpbin")
    selects_nothing = _peer_auth(scope.one, "selects-nothing", "STRICT", selector_app="no-such-app")
    unset = _peer_auth(scope.one, "httpbin-unset", None, selector_app="httpbin", ports={w.ALT_PORT: "PERMISSIVE"})
    sc.expect_allowed(out, url, "plaintext, no PeerAuthentication")
    try:
        sc.apply([selects_nothing])
        sc.apply([mesh])
        sc.expect_denied(out, url, "mesh STRICT")
        sc.apply([namespace])
        sc.expect_allowed(out, url, "namespace PERMISSIVE over mesh STRICT")
        sc.apply([workload])
        sc.expect_denied(out, url, "workload STRICT over namespace PERMISSIVE")
        sc.assert_allowed_now(scope.a, url, "mesh client under STRICT")
        scope.remove(workload)
        sc.expect_allowed(out, url, "workload policy removed: namespace PERMISSIVE again")
        scope.remove(namespace)
        sc.expect_denied(out, url, "namespace policy removed: mesh STRICT again")
        sc.apply([unset])
        sc.expect_allowed(out, scope.url(scope.one, port=w.ALT_PORT), "workload mode UNSET, PERMISSIVE on the second port")
        sc.expect_denied(out, url, "workload mode UNSET under mesh STRICT: the main port inherits STRICT")
    finally:
        scope.remove(mesh, namespace, workload, selects_nothing, unset)
    sc.expect_allowed(out, url, "every PeerAuthentication removed")


def _created(sc: Scenario, obj: dict) -> str:
    meta = obj["metadata"]
    return ((sc.get(obj["kind"], meta["namespace"], meta["name"]) or {}).get("metadata") or {}).get(
        "creationTimestamp") or ""


def _apply_after(sc: Scenario, obj: dict, earlier: dict, timeout: float = 10) -> None:
    """Create `obj` with a creationTimestamp later than `earlier`'s (whole seconds, so a tie is
    possible): re-created until the API server stamps it later."""
    first, deadline = _created(sc, earlier), time.monotonic() + timeout
    while True:
        sc.apply([obj])
        if _created(sc, obj) > first:
            return
        assert time.monotonic() < deadline, f"{obj['metadata']['name']} kept {earlier['metadata']['name']}'s timestamp"
        sc.delete([obj])
        time.sleep(0.5)   # not an assertion: the next second of the API server's clock


@pytest.mark.features("PeerAuthenticationPrecedence", "PeerAuthenticationStrict", "PeerAuthenticationPermissive")
def test_the_oldest_peer_authentication_of_a_level_wins(scope):
    """When two namespace PeerAuthentications compete, the older MUST govern: an older STRICT MUST
    keep dropping plaintext after a newer PERMISSIVE lands beside it, and the newer MUST govern once
    the older is deleted."""
    sc, out, url, alt = scope.sc, scope.outsider, scope.url(scope.one), scope.url(scope.one, port=w.ALT_PORT)
    older = _peer_auth(scope.one, "older-strict", "STRICT")
    newer = _peer_auth(scope.one, "newer-permissive", "PERMISSIVE")
    barrier = _peer_auth(scope.one, "httpbin-alt-permissive", None, selector_app="httpbin", ports={w.ALT_PORT: "PERMISSIVE"})
    sc.expect_allowed(out, url, "plaintext, no PeerAuthentication")
    try:
        sc.apply([older])
        sc.expect_denied(out, url, "namespace STRICT")
        _apply_after(sc, newer, older)
        sc.apply([barrier])
        sc.expect_allowed(out, alt, "barrier, applied after the newer policy: PERMISSIVE on the second port")
        sc.expect_denied(out, url, "a newer namespace PERMISSIVE beside the older STRICT: the older governs")
        scope.remove(older)
        sc.expect_allowed(out, url, "the older policy deleted: the newer PERMISSIVE governs")
    finally:
        scope.remove(older, newer, barrier)


@pytest.mark.features("PeerAuthenticationPortLevel", "PeerAuthenticationStrict", "PeerAuthenticationPermissive")
def test_port_level_mtls_overrides_the_workload_mode_per_port(scope):
    """A workload PeerAuthentication STRICT with `portLevelMtls` PERMISSIVE on one port MUST drop
    plaintext to the other port only, and PERMISSIVE with STRICT on that port MUST drop plaintext to
    that port only. A `portLevelMtls` port is the pod's (the Service's targetPort): PERMISSIVE on 80
    MUST let plaintext through the service port 8000 that targets it, and PERMISSIVE on 8000 MUST NOT."""
    sc, out = scope.sc, scope.outsider
    main, alt = scope.url(scope.one), scope.url(scope.one, port=w.ALT_PORT)
    sc.expect_allowed(out, alt, "second port, no PeerAuthentication")
    try:
        sc.apply([_peer_auth(scope.one, "ports", "STRICT", "httpbin", {w.ALT_PORT: "PERMISSIVE"})])
        sc.expect_denied(out, main, "STRICT, main port")
        sc.assert_allowed_now(out, alt, "STRICT with PERMISSIVE on the second port")
        sc.apply([_peer_auth(scope.one, "ports", "PERMISSIVE", "httpbin", {w.ALT_PORT: "STRICT"})])
        sc.expect_denied(out, alt, "PERMISSIVE with STRICT on the second port")
        sc.assert_allowed_now(out, main, "PERMISSIVE, main port")
        sc.apply([_peer_auth(scope.one, "ports", "STRICT", "httpbin", {w.HTTP_TARGET_PORT: "PERMISSIVE"})])
        sc.expect_allowed(out, main, f"STRICT with PERMISSIVE on the pod's port {w.HTTP_TARGET_PORT}, "
                                     f"through service port {w.HTTP_PORT}")
        sc.expect_denied(out, alt, f"STRICT with PERMISSIVE on {w.HTTP_TARGET_PORT} only: the second port")
        sc.apply([_peer_auth(scope.one, "ports", "STRICT", "httpbin", {w.HTTP_PORT: "PERMISSIVE"})])
        sc.expect_denied(out, main, f"STRICT with PERMISSIVE on the service port {w.HTTP_PORT}, which is no pod port")
    finally:
        scope.remove(_peer_auth(scope.one, "ports", "STRICT"))
