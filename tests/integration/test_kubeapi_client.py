"""The official Python client (kubernetes 37.x) against a reference cluster's Kubernetes API:
watches with resourceVersion (410 when too old), optimistic concurrency (409), 422 Status
causes, generateName, selectors, the three patch types with the real merge keys, server-side
apply, the status subresource of a Gateway, exec over v4.channel.k8s.io."""
from __future__ import annotations

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from conftest import SEED_MANIFESTS
from reference_impl.cluster.kubeapi import kubeconfig_path

NS = "ambient-apps"


@pytest.fixture(scope="module")
def kube(cluster_factory):
    cluster = cluster_factory("kpy", SEED_MANIFESTS)
    api = config.new_client_from_config(config_file=kubeconfig_path(cluster.name))
    yield api
    api.close()


@pytest.fixture
def core(kube):
    return client.CoreV1Api(kube)


@pytest.fixture
def apps(kube):
    return client.AppsV1Api(kube)


def _sleep_pod(core) -> str:
    return core.list_namespaced_pod(NS, label_selector="app=sleep-ambient").items[0].metadata.name


def test_list_then_watch_from_its_resource_version_sees_only_later_changes(core):
    listed = core.list_namespaced_service_account(NS)
    core.create_namespaced_service_account(NS, {"metadata": {"name": "watched-sa"}})
    try:
        events = []
        for event in watch.Watch().stream(core.list_namespaced_service_account, NS,
                                          resource_version=listed.metadata.resource_version,
                                          timeout_seconds=5):
            events.append((event["type"], event["object"].metadata.name))
            if event["object"].metadata.name == "watched-sa":
                break
        assert events == [("ADDED", "watched-sa")]
    finally:
        core.delete_namespaced_service_account("watched-sa", NS)


def test_a_watch_from_a_compacted_resource_version_gets_410(core):
    stream_ = core.list_namespaced_pod(NS, watch=True, resource_version="1",
                                       _preload_content=False, timeout_seconds=5)
    first = next(iter(stream_.stream()))
    import json
    event = json.loads(first)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"


def test_a_stale_resource_version_gets_409_and_a_fresh_one_succeeds(core):
    core.create_namespaced_service_account(NS, {"metadata": {"name": "occ-sa"}})
    try:
        stale = core.read_namespaced_service_account("occ-sa", NS)
        core.patch_namespaced_service_account("occ-sa", NS, {"metadata": {"labels": {"v": "1"}}})
        stale.metadata.labels = {"v": "stale"}
        with pytest.raises(ApiException) as refused:
            core.replace_namespaced_service_account("occ-sa", NS, stale)
        assert refused.value.status == 409
        fresh = core.read_namespaced_service_account("occ-sa", NS)
        fresh.metadata.labels = {"v": "2"}
        assert core.replace_namespaced_service_account("occ-sa", NS, fresh).metadata.labels == {"v": "2"}
    finally:
        core.delete_namespaced_service_account("occ-sa", NS)


def test_invalid_objects_get_422_with_a_cause_naming_the_field(apps):
    body = {"metadata": {"name": "bad-replicas"},
            "spec": {"replicas": -3, "selector": {"matchLabels": {"app": "b"}},
                     "template": {"metadata": {"labels": {"app": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "curlimages/curl"}]}}}}
    with pytest.raises(ApiException) as refused:
        apps.create_namespaced_deployment(NS, body)
    import json
    status = json.loads(refused.value.body)
    assert refused.value.status == 422 and status["reason"] == "Invalid"
    assert status["details"]["kind"] == "Deployment" and status["details"]["name"] == "bad-replicas"
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.replicas"]
    assert status["details"]["causes"][0]["message"].startswith("Invalid value: -3")
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("bad-replicas", NS)
    assert missing.value.status == 404


def test_generate_name_and_already_exists(core):
    made = core.create_namespaced_service_account(NS, {"metadata": {"generateName": "gen-"}})
    try:
        assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == 9
        with pytest.raises(ApiException) as dup:
            core.create_namespaced_service_account(NS, {"metadata": {"name": made.metadata.name}})
        assert dup.value.status == 409 and "already exists" in dup.value.body
    finally:
        core.delete_namespaced_service_account(made.metadata.name, NS)


def test_label_and_field_selectors(core):
    pods = core.list_pod_for_all_namespaces(field_selector="metadata.namespace=istio-system")
    assert pods.items and {p.metadata.namespace for p in pods.items} == {"istio-system"}
    running = core.list_namespaced_pod(NS, field_selector="status.phase=Running",
                                       label_selector="app in (sleep-ambient, httpbin-ambient)")
    assert {p.metadata.labels["app"] for p in running.items} == {"sleep-ambient", "httpbin-ambient"}
    none = core.list_namespaced_pod(NS, label_selector="app notin (sleep-ambient, httpbin-ambient)")
    assert none.items == []


def test_strategic_merge_patch_merges_containers_and_env_by_name(apps):
    name = "smp-target"
    apps.create_namespaced_deployment(NS, {
        "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                     {"name": "a", "image": "curlimages/curl", "command": ["/bin/sleep", "1d"],
                      "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                     {"name": "b", "image": "curlimages/curl", "command": ["/bin/sleep", "1d"]}]}}}})
    try:
        # The Python client sends a dict as a strategic merge patch.
        apps.patch_namespaced_deployment(name, NS, {"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]}]}}}})
        containers = apps.read_namespaced_deployment(name, NS).spec.template.spec.containers
        assert [c.name for c in containers] == ["a", "b"]
        assert [(e.name, e.value) for e in containers[0].env] == [("X", "1"), ("Y", "3"), ("Z", "4")]
        # JSON patch (a list) replaces one element by index.
        apps.patch_namespaced_deployment(name, NS, [
            {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "curlimages/curl:8"}])
        assert apps.read_namespaced_deployment(name, NS).spec.template.spec.containers[1].image == \
            "curlimages/curl:8"
    finally:
        apps.delete_namespaced_deployment(name, NS)


def test_server_side_apply_and_a_gateway_status_subresource(kube):
    from kubernetes import dynamic
    dyn = dynamic.DynamicClient(kube)
    gateways = dyn.resources.get(api_version="gateway.networking.k8s.io/v1", kind="Gateway")
    body = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "ssa-gw", "namespace": NS},
            "spec": {"gatewayClassName": "example", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"}]}}
    made = gateways.server_side_apply(body=body, name="ssa-gw", namespace=NS,
                                      field_manager="test")
    assert made.metadata.managedFields[0]["manager"] == "test"
    try:
        status = {"conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed",
                                  "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        gateways.status.patch(body={"status": status}, name="ssa-gw", namespace=NS,
                              content_type="application/merge-patch+json")
        got = gateways.get(name="ssa-gw", namespace=NS)
        assert got.status.conditions[0].type == "Programmed"
        assert got.spec.gatewayClassName == "example", "a status write must not touch the spec"
    finally:
        gateways.delete(name="ssa-gw", namespace=NS)


def test_exec_over_v4_with_stdin_stdout_stderr_and_the_exit_code(core):
    pod = _sleep_pod(core)
    session = stream(core.connect_get_namespaced_pod_exec, pod, NS,
                     command=["sh", "-c", "read line; echo got:$line; echo oops >&2; exit 5"],
                     stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    session.write_stdin("ping\n")
    session.run_forever(timeout=10)
    assert session.read_stdout() == "got:ping\n"
    assert session.read_stderr() == "oops\n"
    assert session.returncode == 5
    quick = stream(core.connect_get_namespaced_pod_exec, pod, NS, command=["echo", "hi"],
                   stdout=True, stderr=True, stdin=False, tty=False)
    assert quick == "hi\n"


def test_logs_and_unknown_objects(core):
    pod = core.list_namespaced_pod(NS, label_selector="app=httpbin-ambient").items[0].metadata.name
    assert "Booting worker" in core.read_namespaced_pod_log(pod, NS)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("no-such-pod", NS)
    import json
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'pods "no-such-pod" not found'
