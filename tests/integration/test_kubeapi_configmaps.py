"""ConfigMaps through the reference cluster's Kubernetes API with the real kubectl: CRUD, ConfigMap
volumes mounted read-only at their mountPath in the pod's own mount namespace (and nowhere else),
a pod waiting for a missing ConfigMap, istiod's `istio-ca-root-cert` in every namespace and its
`istio-waypoint` GatewayClass."""
from __future__ import annotations

import json
import os

import pytest

from kubeapi_support import KUBECTLS, Kubectl
from reference_impl.cluster import naming

pytestmark = pytest.mark.skipif(not KUBECTLS, reason="no kubectl")


@pytest.fixture(scope="module")
def cluster(cluster_factory):
    return cluster_factory("kcm", nodes=1)


@pytest.fixture
def k(cluster, tmp_path):
    return Kubectl(KUBECTLS[0], cluster.name, tmp_path)


def _pod(ns: str, mount: str, config_map: str = "probes") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: python:3.11-slim
    command: ["sleep", "infinity"]
    volumeMounts: [{{name: files, mountPath: {mount}}}]
  volumes:
  - name: files
    configMap: {{name: {config_map}, items: [{{key: hello.py, path: bin/hello.py}}]}}
"""


def test_a_configmap_volume_is_the_pods_own_read_only_files(k, cluster):
    mount = f"/ac-test-{cluster.name}"
    k("create", "ns", "cm-vol")
    k("create", "configmap", "probes", "-n", "cm-vol", "--from-literal=hello.py=print('hi from cm')")
    assert k("get", "cm", "probes", "-n", "cm-vol", "-o", "jsonpath={.data.hello\\.py}").stdout == \
        "print('hi from cm')"
    k("apply", "-f", "-", input=_pod("cm-vol", mount))
    k("wait", "--for=condition=Ready", "pod/reader", "-n", "cm-vol", "--timeout=30s")
    out = k("exec", "reader", "-n", "cm-vol", "--", "python3", f"{mount}/bin/hello.py")
    assert out.stdout == "hi from cm\n"
    # read-only, as the kubelet mounts ConfigMap volumes
    write = k("exec", "reader", "-n", "cm-vol", "--", "sh", "-c", f"echo x > {mount}/new", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    # the mount is the pod's alone: the machine (and every other pod) sees the empty mount point
    assert os.listdir(mount) == []
    k("delete", "pod", "reader", "-n", "cm-vol", "--grace-period=0", "--force")
    k("delete", "ns", "cm-vol")
    os.rmdir(mount)


def test_a_pod_waits_for_its_configmap(k, cluster):
    mount = f"/ac-test-{cluster.name}-wait"
    k("create", "ns", "cm-wait")
    k("apply", "-f", "-", input=_pod("cm-wait", mount, config_map="later"))
    waiting = k("get", "pod", "reader", "-n", "cm-wait", "-o", "json")
    state = json.loads(waiting.stdout)["status"]["containerStatuses"][0]["state"]
    assert state["waiting"]["reason"] == "ContainerCreating"
    assert 'configmap "later" not found' in state["waiting"]["message"]
    k("create", "configmap", "later", "-n", "cm-wait", "--from-literal=hello.py=print(2)")
    k("wait", "--for=condition=Ready", "pod/reader", "-n", "cm-wait", "--timeout=30s")
    assert k("exec", "reader", "-n", "cm-wait", "--", "python3", f"{mount}/bin/hello.py").stdout == "2\n"
    k("delete", "ns", "cm-wait")
    os.rmdir(mount)


def test_a_mount_of_an_undeclared_volume_is_refused_naming_the_field(k):
    bad = """
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: default}
spec:
  containers:
  - {name: main, image: python:3.11-slim, command: [sleep, infinity],
     volumeMounts: [{name: nowhere, mountPath: /x}]}
"""
    out = k("apply", "-f", "-", input=bad, check=False)
    assert out.returncode == 1
    assert 'The Pod "bad" is invalid' in out.stderr
    assert "spec.containers[0].volumeMounts[0].name" in out.stderr


def test_istiod_publishes_its_root_in_every_namespace(k, cluster):
    k("create", "ns", "cm-root")
    root = open(os.path.join(naming.run_dir(cluster.name), "ca", "root-cert.pem")).read()
    for ns in ("istio-system", "default", "cm-root"):
        k("wait", "--for=create", f"configmap/istio-ca-root-cert", "-n", ns, "--timeout=20s")
        got = k("get", "cm", "istio-ca-root-cert", "-n", ns, "-o", "jsonpath={.data.root-cert\\.pem}")
        assert got.stdout == root
    k("delete", "ns", "cm-root")


def test_the_istio_waypoint_gateway_class_is_accepted(k):
    out = k("get", "gatewayclasses")
    assert out.stdout.split("\n")[0].split() == ["NAME", "CONTROLLER", "ACCEPTED", "AGE"]
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("istio-waypoint"))
    assert row[1:3] == ["istio.io/mesh-controller", "True"]
    assert "gatewayclasses" in k("api-resources", "--api-group=gateway.networking.k8s.io").stdout
