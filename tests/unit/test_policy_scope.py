"""Where a policy applies: selector → workloads, no selector → namespace, root namespace → mesh."""

import pytest

from reference_impl.policy import applies_to, select_policies, target_refs, translate_for_ztunnel

HTTPBIN = {"app": "httpbin", "version": "v1"}


def ap(namespace, spec):
    return {"kind": "AuthorizationPolicy", "metadata": {"name": "p", "namespace": namespace},
            "spec": spec}


SELECT_HTTPBIN = {"selector": {"matchLabels": {"app": "httpbin"}}}
CASES = [
    # (id, policy namespace, spec, workload namespace, workload labels, applies)
    ("selector-matches-labels", "apps", SELECT_HTTPBIN, "apps", HTTPBIN, True),
    ("selector-other-labels", "apps", SELECT_HTTPBIN, "apps", {"app": "sleep"}, False),
    ("selector-no-labels", "apps", SELECT_HTTPBIN, "apps", None, False),
    ("selector-other-namespace", "apps", SELECT_HTTPBIN, "other", HTTPBIN, False),
    ("selector-all-labels-required", "apps", {"selector": {"matchLabels": {"app": "httpbin", "version": "v2"}}},
     "apps", HTTPBIN, False),
    ("selector-empty-match-labels-whole-namespace", "apps", {"selector": {"matchLabels": {}}}, "apps", {}, True),
    ("namespace-policy-same-namespace", "apps", {}, "apps", HTTPBIN, True),
    ("namespace-policy-other-namespace", "apps", {}, "other", HTTPBIN, False),
    ("root-namespace-whole-mesh", "istio-system", {}, "other", HTTPBIN, True),
    ("root-namespace-selector-every-namespace", "istio-system", SELECT_HTTPBIN, "apps", HTTPBIN, True),
    ("root-namespace-selector-needs-labels", "istio-system", SELECT_HTTPBIN, "apps", {"app": "x"}, False),
    ("target-refs-never-apply-to-workloads", "apps",
     {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp"}]},
     "apps", HTTPBIN, False),
]


@pytest.mark.parametrize("pol_ns, spec, wl_ns, labels, applies", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_applies_to(pol_ns, spec, wl_ns, labels, applies):
    policy = ap(pol_ns, spec)
    assert applies_to(policy, wl_ns, labels) is applies
    compiled = translate_for_ztunnel(policy)
    if compiled is not None:
        # The compiled form a ztunnel receives must scope exactly like the source object.
        assert compiled.applies_to(wl_ns, labels) is applies
        assert (select_policies([compiled.to_dict()], wl_ns, labels) != []) is applies


def test_custom_root_namespace():
    policy = ap("mesh-root", {})
    assert applies_to(policy, "apps", {}, root_namespace="mesh-root")
    assert not applies_to(policy, "apps", {})
    assert translate_for_ztunnel(policy, root_namespace="mesh-root").scope == "GLOBAL"


def test_target_refs_normalised():
    policy = ap("apps", {"targetRefs": [{"kind": "Service", "name": "httpbin"},
                                        {"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                         "name": "wp"}]})
    assert target_refs(policy) == (
        {"group": "", "kind": "Service", "name": "httpbin", "namespace": "apps"},
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "wp", "namespace": "apps"})


def test_applies_to_request_authentication_too():
    ra = {"kind": "RequestAuthentication", "metadata": {"name": "jwt", "namespace": "apps"},
          "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "jwtRules": []}}
    assert applies_to(ra, "apps", HTTPBIN)
    assert not applies_to(ra, "apps", {"app": "sleep"})
