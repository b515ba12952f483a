"""Validation of ConfigMaps, pod volumes and GatewayClasses (issue 14), and how the kubelet
makes a pod's ConfigMap volume: each key a file, `items` renaming, a missing ConfigMap waited for,
an unsupported volume type refused in one sentence."""
from __future__ import annotations

import os

import pytest

from reference_impl import api
from reference_impl.cluster import volumes
from reference_impl.cluster.store import Store


def _pod(volumes_=None, mounts=None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": "python:3.11-slim",
                                     "volumeMounts": mounts or []}], "volumes": volumes_ or []}}


def _error(obj) -> str:
    with pytest.raises(api.ManifestError) as info:
        api.validate(obj)
    return str(info.value)


def test_configmaps_and_gateway_classes_are_checked_field_by_field():
    good = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a.py": "x"}, "binaryData": {"b.bin": "AAE="}}
    assert api.validate(good)["metadata"]["namespace"] == "default"
    assert "data.bad/key" in _error(dict(good, data={"bad/key": "x"}))
    assert "duplicate of key" in _error(dict(good, binaryData={"a.py": "AA=="}))
    assert "a ConfigMap has no spec" in _error(dict(good, spec={}))
    cls = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
           "metadata": {"name": "istio-waypoint", "namespace": "ignored"},
           "spec": {"controllerName": "istio.io/mesh-controller"}}
    assert "namespace" not in api.validate(cls)["metadata"]
    assert "spec.controllerName" in _error(dict(cls, spec={}))
    assert "domain-prefixed" in _error(dict(cls, spec={"controllerName": "istio"}))


def test_volume_mounts_must_name_a_volume_at_an_absolute_path():
    cm = {"name": "files", "configMap": {"name": "c"}}
    api.validate(_pod([cm], [{"name": "files", "mountPath": "/etc/x"}]))
    assert "spec.containers[0].volumeMounts[0].name" in \
        _error(_pod([cm], [{"name": "other", "mountPath": "/etc/x"}]))
    assert "not an absolute path" in _error(_pod([cm], [{"name": "files", "mountPath": "etc"}]))
    assert "duplicate volume name" in _error(_pod([cm, cm]))
    escaping = {"name": "files", "configMap": {"name": "c", "items": [{"key": "k", "path": "../k"}]}}
    assert "without '..'" in _error(_pod([escaping]))


def test_the_kubelet_makes_a_configmap_volume_of_files(tmp_path, monkeypatch):
    monkeypatch.setattr(volumes.naming, "run_dir", lambda cluster: str(tmp_path / cluster))
    store = Store()
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    pod = _pod([{"name": "files", "configMap": {"name": "c", "items": [{"key": "a", "path": "d/b"}]}},
                {"name": "scratch", "emptyDir": {}}],
               [{"name": "files", "mountPath": "/x"}, {"name": "scratch", "mountPath": "/y"}])
    pod["metadata"]["uid"] = "u1"
    with pytest.raises(volumes.VolumeNotReady, match='configmap "c" not found'):
        volumes.mounts_for("k", store, pod, pod["spec"]["containers"][0])
    store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"},
                  "data": {"a": "hello", "unlisted": "no"}})
    mounts = volumes.mounts_for("k", store, pod, pod["spec"]["containers"][0])
    assert [(m.target, m.read_only) for m in mounts] == [("/x", True), ("/y", False)]
    assert open(os.path.join(mounts[0].source, "d", "b")).read() == "hello"
    assert not os.path.exists(os.path.join(mounts[0].source, "unlisted"))
    pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    with pytest.raises(volumes.VolumeError, match="type hostPath; the reference cluster mounts only"):
        volumes.mounts_for("k", store, pod, {"volumeMounts": [{"name": "host", "mountPath": "/z"}]})
    volumes.remove("k", "u1")
    assert not os.path.exists(volumes.pod_dir("k", "u1"))
