"""The sidecar injector's decision table (admission) and what it adds to a pod."""
from __future__ import annotations

import pytest

from reference_impl.cluster import admission
from reference_impl.cluster.store import Store


def pod(labels=None, host_network=False, containers=("app",)) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "labels": labels or {}},
            "spec": {"hostNetwork": host_network, "containers": [{"name": c, "image": "curlimages/curl"}
                                                                 for c in containers]}}


@pytest.mark.parametrize("ns_labels, pod_labels, host_network, containers, injected", [
    ({"istio-injection": "enabled"}, {}, False, ("app",), True),
    ({"istio-injection": "enabled", "istio.io/dataplane-mode": "ambient"}, {}, False, ("app",), True),
    ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"}, False, ("app",), False),
    ({}, {"sidecar.istio.io/inject": "true"}, False, ("app",), True),
    ({"istio-injection": "disabled"}, {"sidecar.istio.io/inject": "true"}, False, ("app",), False),
    ({"istio.io/dataplane-mode": "ambient"}, {}, False, ("app",), False),
    ({}, {}, False, ("app",), False),
    ({"istio-injection": "enabled"}, {}, True, ("app",), False),                 # host network
    ({"istio-injection": "enabled"}, {}, False, ("istio-proxy", "app"), False),  # already has one
])
def test_injection_decision(ns_labels, pod_labels, host_network, containers, injected):
    obj = pod(pod_labels, host_network, containers)
    assert admission.inject(obj, ns_labels) is injected
    names = [c["name"] for c in obj["spec"]["containers"]]
    assert (names == ["istio-proxy", *containers]) if injected else (names == list(containers))
    if injected:
        assert admission.STATUS_ANNOTATION in obj["metadata"]["annotations"]
        assert admission.is_injected_proxy(obj["spec"]["containers"][0])


def test_a_hand_written_istio_proxy_container_gets_no_sidecar_lifecycle():
    assert not admission.is_injected_proxy({"name": "istio-proxy", "image": "curlimages/curl"})


def test_the_store_injects_pods_it_creates_but_not_other_kinds():
    store = Store()
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns",
                                                                        "labels": {"istio-injection": "enabled"}}})
    labels = lambda ns: (store.get("Namespace", "", ns) or {}).get("metadata", {}).get("labels") or {}  # noqa: E731
    store.add_mutating(admission.sidecar_injector(labels))
    created = store.create(pod())
    assert [c["name"] for c in created["spec"]["containers"]] == ["istio-proxy", "app"]
    cm = store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}})
    assert "spec" not in cm
