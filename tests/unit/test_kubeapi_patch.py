"""The kubeapi's pure parts: strategic merge patch with the real merge keys and kubectl's
directives, JSON merge / JSON patch, selectors, kubectl's protobuf bodies."""
from __future__ import annotations

import pytest

from reference_impl.cluster.kubeapi import patch, protobuf
from reference_impl.cluster.kubeapi.selectors import field_matcher, label_matcher
from reference_impl.cluster.kubeapi.status import ApiError
from reference_impl.cluster.kubeapi.tables import human_duration

POD_SPEC = {"containers": [
    {"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "http"}],
     "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
    {"name": "b", "image": "y"}]}


def test_containers_env_and_ports_merge_by_their_keys():
    merged = patch.strategic_merge(POD_SPEC, {"containers": [
        {"name": "a", "env": [{"name": "Y", "value": "3"}],
         "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}]}]})
    a, b = merged["containers"]
    assert b == {"name": "b", "image": "y"}
    assert a["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}]
    assert a["ports"] == [{"containerPort": 80, "name": "http", "protocol": "TCP"},
                          {"containerPort": 81}]
    assert POD_SPEC["containers"][0]["env"][1]["value"] == "2", "the original is not changed"


def test_service_ports_merge_on_port_and_lists_without_a_key_are_replaced():
    spec = {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}],
            "tolerations": [{"key": "a"}]}
    merged = patch.strategic_merge(spec, {"ports": [{"port": 443, "targetPort": 8443}],
                                          "tolerations": [{"key": "b"}]})
    assert merged["ports"] == [{"port": 80, "name": "http"},
                               {"port": 443, "name": "https", "targetPort": 8443}]
    assert merged["tolerations"] == [{"key": "b"}]


def test_kubectl_directives():
    deleted = patch.strategic_merge(POD_SPEC, {"containers": [{"name": "b", "$patch": "delete"}]})
    assert [c["name"] for c in deleted["containers"]] == ["a"]
    ordered = patch.strategic_merge(POD_SPEC, {"$setElementOrder/containers": [{"name": "b"},
                                                                               {"name": "a"}]})
    assert [c["name"] for c in ordered["containers"]] == ["b", "a"]
    replaced = patch.strategic_merge({"labels": {"a": "1", "b": "2"}},
                                     {"labels": {"$patch": "replace", "c": "3"}})
    assert replaced == {"labels": {"c": "3"}}
    removed = patch.strategic_merge({"labels": {"a": "1", "b": "2"}}, {"labels": {"a": None}})
    assert removed == {"labels": {"b": "2"}}
    finalizers = patch.strategic_merge({"finalizers": ["x"]}, {"finalizers": ["y"]})
    assert finalizers == {"finalizers": ["x", "y"]}
    with pytest.raises(ApiError):
        patch.strategic_merge(POD_SPEC, {"containers": [{"image": "no-name"}]})


def test_json_merge_and_json_patch():
    assert patch.json_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == \
        {"a": {"c": 2}, "l": [2]}
    doc = {"spec": {"containers": [{"image": "x"}, {"image": "y"}]}}
    out = patch.json_patch(doc, [{"op": "replace", "path": "/spec/containers/1/image", "value": "z"},
                                 {"op": "add", "path": "/spec/replicas", "value": 2},
                                 {"op": "remove", "path": "/spec/containers/0"}])
    assert out == {"spec": {"containers": [{"image": "z"}], "replicas": 2}}
    with pytest.raises(ApiError) as failed:
        patch.json_patch(doc, [{"op": "test", "path": "/spec/containers/0/image", "value": "q"}])
    assert failed.value.code == 422


def test_label_and_field_selectors():
    labels = {"app": "web", "tier": "front"}
    assert label_matcher("app=web,tier!=db")(labels)
    assert not label_matcher("app==db")(labels)
    assert label_matcher("app in (web, api)")(labels) and not label_matcher("app notin (web)")(labels)
    assert label_matcher("tier")(labels) and label_matcher("!legacy")(labels)
    assert not label_matcher("!tier")(labels)
    assert label_matcher("zone notin (a)")(labels), "notin matches objects without the label"
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    assert field_matcher("metadata.name=p,status.phase!=Failed")(pod)
    assert not field_matcher("status.phase=Pending")(pod)
    with pytest.raises(ApiError):
        field_matcher("nonsense")(pod)


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_kubectls_protobuf_namespace_body():
    labels = _field(11, _field(1, b"team") + _field(2, b"mesh"))
    meta = _field(1, b"ambient-apps") + labels
    raw = _field(1, meta)
    type_meta = _field(1, b"v1") + _field(2, b"Namespace")
    body = protobuf.MAGIC + _field(1, type_meta) + _field(2, raw)
    assert protobuf.decode(body) == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "ambient-apps", "labels": {"team": "mesh"}}}
    other = protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"Pod")) + _field(2, raw)
    with pytest.raises(ApiError) as refused:
        protobuf.decode(other)
    assert refused.value.code == 415 and "application/json" in str(refused.value)


def test_ages_print_like_kubectl():
    assert [human_duration(s) for s in (5, 119, 150, 3600, 7 * 3600 + 60, 30 * 3600, 3 * 86400)] \
        == ["5s", "119s", "2m30s", "60m", "7h1m", "30h", "3d"]
