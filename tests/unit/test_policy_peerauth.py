"""PeerAuthentication in ambient (ISTIO-SEMANTICS section 6): may plaintext reach a port?"""

import pytest

import json

from reference_impl.policy import (
    CompiledPolicy, PolicyError, effective_mtls_mode, evaluate_l4, plaintext_allowed,
    translate_peer_authentication_for_ztunnel)

LABELS = {"app": "httpbin"}


def pa(namespace, mode=None, selector=None, ports=None, name="default", created="2024-01-01T00:00:00Z"):
    spec = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {p: {"mode": m} for p, m in ports.items()}
    return {"kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": spec}


MESH = "istio-system"
CASES = [
    # (id, policies, port, plaintext allowed)
    ("none-allows", [], 8000, True),
    ("mesh-strict", [pa(MESH, "STRICT")], 8000, False),
    ("mesh-permissive", [pa(MESH, "PERMISSIVE")], 8000, True),
    ("mesh-disable-is-permissive", [pa(MESH, "DISABLE")], 8000, True),
    ("mesh-unset", [pa(MESH)], 8000, True),
    ("namespace-strict", [pa("apps", "STRICT")], 8000, False),
    ("other-namespace-strict-ignored", [pa("other", "STRICT")], 8000, True),
    ("namespace-permissive-over-mesh-strict", [pa(MESH, "STRICT"), pa("apps", "PERMISSIVE")], 8000, True),
    ("namespace-strict-over-mesh-permissive", [pa(MESH, "PERMISSIVE"), pa("apps", "STRICT")], 8000, False),
    ("namespace-unset-inherits-mesh-strict", [pa(MESH, "STRICT"), pa("apps")], 8000, False),
    ("workload-strict", [pa("apps", "STRICT", selector=LABELS)], 8000, False),
    ("workload-selector-miss", [pa("apps", "STRICT", selector={"app": "other"})], 8000, True),
    ("workload-permissive-over-namespace-strict",
     [pa("apps", "STRICT"), pa("apps", "PERMISSIVE", selector=LABELS, name="wl")], 8000, True),
    ("workload-disable-over-namespace-strict",
     [pa("apps", "STRICT"), pa("apps", "DISABLE", selector=LABELS, name="wl")], 8000, True),
    ("workload-unset-inherits-namespace",
     [pa("apps", "STRICT"), pa("apps", selector=LABELS, name="wl")], 8000, False),
    ("workload-strict-over-mesh-permissive",
     [pa(MESH, "PERMISSIVE"), pa("apps", "STRICT", selector=LABELS)], 8000, False),
    ("root-namespace-selector-ignored", [pa(MESH, "STRICT", selector=LABELS)], 8000, True),
    ("empty-match-labels-is-namespace-level", [pa("apps", "STRICT", selector={})], 8000, False),
    # portLevelMtls
    ("port-permissive-in-strict-workload",
     [pa("apps", "STRICT", selector=LABELS, ports={8000: "PERMISSIVE"})], 8000, True),
    ("port-permissive-other-port-stays-strict",
     [pa("apps", "STRICT", selector=LABELS, ports={8000: "PERMISSIVE"})], 9000, False),
    ("port-strict-in-permissive-workload",
     [pa("apps", "PERMISSIVE", selector=LABELS, ports={8000: "STRICT"})], 8000, False),
    ("port-strict-other-port-permissive",
     [pa("apps", "PERMISSIVE", selector=LABELS, ports={8000: "STRICT"})], 9000, True),
    ("port-permissive-unset-workload-strict-namespace",
     [pa("apps", "STRICT"), pa("apps", selector=LABELS, ports={8000: "PERMISSIVE"}, name="wl")], 8000, True),
    ("port-strict-unset-workload-no-parent",
     [pa("apps", selector=LABELS, ports={"8000": "STRICT"})], 8000, False),
    ("port-disable-is-permissive", [pa("apps", "STRICT", selector=LABELS, ports={8000: "DISABLE"})], 8000, True),
    ("port-unset-inherits", [pa("apps", "STRICT", selector=LABELS, ports={8000: "UNSET"})], 8000, False),
    # several policies at one level: the oldest wins
    ("oldest-namespace-policy-wins",
     [pa("apps", "PERMISSIVE", name="new", created="2024-05-01T00:00:00Z"),
      pa("apps", "STRICT", name="old", created="2024-01-01T00:00:00Z")], 8000, False),
    ("oldest-workload-policy-wins",
     [pa("apps", "STRICT", selector=LABELS, name="new", created="2024-05-01T00:00:00Z"),
      pa("apps", "PERMISSIVE", selector=LABELS, name="old", created="2024-01-01T00:00:00Z")], 8000, True),
]


@pytest.mark.parametrize("policies, port, allowed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plaintext_allowed(policies, port, allowed):
    assert plaintext_allowed(policies, "apps", LABELS, port) is allowed


def test_effective_mode_names_its_source():
    mode = effective_mtls_mode([pa(MESH, "STRICT"), pa("apps", "STRICT", selector=LABELS, name="wl",
                                                        ports={8000: "PERMISSIVE"})],
                               "apps", LABELS, 8000)
    assert (mode.mode, mode.source, mode.level) == ("PERMISSIVE", "apps/wl", "port")
    assert effective_mtls_mode([], "apps", LABELS, 1).level == "default"


def test_bad_mode_is_a_clear_error():
    with pytest.raises(PolicyError, match=r"PeerAuthentication apps/default: spec.mtls.mode: "
                                          r"unknown value 'STRICTER'"):
        plaintext_allowed([pa("apps", "STRICTER")], "apps", LABELS, 8000)


def test_port_level_mtls_needs_a_workload_selector():
    # Istio refuses it at apply (and so does api.validate); the engine reads the same model.
    with pytest.raises(PolicyError, match=r"spec.portLevelMtls: portLevelMtls needs a workload selector"):
        plaintext_allowed([pa("apps", "STRICT", ports={8000: "PERMISSIVE"})], "apps", LABELS, 8000)


@pytest.mark.parametrize("policies, port, allowed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_ztunnel_deny_policy_enforces_the_same(policies, port, allowed):
    compiled = translate_peer_authentication_for_ztunnel(policies, "apps", "httpbin-0", LABELS)
    wired = [] if compiled is None else [CompiledPolicy.from_dict(json.loads(json.dumps(compiled.to_dict())))]
    plaintext = {"source_principal": None, "source_ip": "10.244.0.5", "dest_ip": "10.244.1.7",
                 "dest_port": port}
    mtls = {**plaintext, "source_principal": "spiffe://cluster.local/ns/other/sa/x"}
    assert evaluate_l4(wired, plaintext).allowed is allowed
    assert evaluate_l4(wired, mtls).allowed, "PeerAuthentication never denies mTLS"
    # A port nobody configured follows the workload's default mode.
    assert evaluate_l4(wired, {**plaintext, "dest_port": 12345}).allowed is plaintext_allowed(
        policies, "apps", LABELS, 12345)
