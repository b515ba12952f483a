"""What the `kubernetes` target must survive on a real cluster, tried against a reference
cluster's Kubernetes API (HTTPS, the official client 37.x) and its running mesh:

- ztunnel's /metrics answered with ztunnel's own Content-Type
  (`application/openmetrics-text;charset=utf-8;version=1.0.0`, istio/ztunnel
  src/metrics/server.rs), relayed unchanged by the API server's pod proxy, which the client's
  deserializer refuses;
- exec streams in two threads while a third lists pods and reads metrics (`kubernetes.stream`
  swaps its ApiClient's call_api while a handshake runs);
- delete_namespace returning only once the namespace is gone, so it can be created again.
"""
from __future__ import annotations

import threading
import time

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from conformance import workloads as wl
from conformance.targets.base import PodRef
from conformance.targets.kubernetes import ZTUNNEL_METRICS_PORT, KubernetesTarget
from conftest import SEED_MANIFESTS
from reference_impl.cluster.kubeapi import kubeconfig_path

NS = "ambient-apps"
OPENMETRICS = "application/openmetrics-text"


@pytest.fixture(scope="module")
def target(cluster_factory):
    cluster = cluster_factory("ktreal", SEED_MANIFESTS)
    t = KubernetesTarget(kubeconfig=kubeconfig_path(cluster.name))
    t.start()
    t.wait_ready(NS)
    return t


def test_ztunnel_metrics_in_openmetrics_type_are_read_through_the_pod_proxy(target):
    node = target.nodes()[0]
    zt = target.ztunnel_pod(node)
    name = f"{zt.name}:{ZTUNNEL_METRICS_PORT}"
    raw = target.core.connect_get_namespaced_pod_proxy_with_path(name, zt.namespace, "metrics",
                                                                 _preload_content=False)
    try:
        assert raw.status == 200 and raw.headers["content-type"].startswith(OPENMETRICS), \
            f"ztunnel's /metrics through the pod proxy: {raw.status} {raw.headers.get('content-type')!r}"
    finally:
        raw.release_conn()
    # What the target did before: the client's own deserialization of that answer.
    with pytest.raises(ApiException, match="Unsupported content type") as refused:
        target.core.connect_get_namespaced_pod_proxy_with_path(name, zt.namespace, "metrics")
    assert refused.value.status == 0

    families = {f.name for f in text_string_to_metric_families(target.metrics(node))}
    assert "istio_tcp_connections_opened" in families, sorted(families)


def test_exec_streams_and_api_calls_from_other_threads_do_not_cross(target):
    """Two threads exec while a third lists pods and reads ztunnel metrics as fast as it can:
    every exec returns its own output and every API call its own answer."""
    sleep = target.pods(NS, {"app": "sleep-ambient"})[0]
    ref = PodRef(sleep.namespace, sleep.name)
    node = target.nodes()[0]
    errors: list[str] = []
    done = threading.Event()
    polls = [0]
    execs_per_thread = 25

    def poll() -> None:
        while not done.is_set():
            try:
                assert target.pods(NS, {"app": "sleep-ambient"}), "sleep-ambient not listed"
                assert "istio_tcp_connections_opened" in target.metrics(node)
                polls[0] += 1
            except Exception as e:  # noqa: BLE001 -- every failure is the finding
                errors.append(f"poll: {type(e).__name__}: {str(e)[:200]}")

    def execs(thread: str) -> None:
        deadline = time.monotonic() + 120
        for i in range(execs_per_thread):
            if time.monotonic() > deadline:
                errors.append(f"{thread}: {execs_per_thread} execs took over 120 s ({i} done)")
                return
            word = f"{thread}-{i}"
            try:
                result = target.exec(ref, ["echo", word], timeout=20)
                if (result.returncode, result.stdout.strip()) != (0, word):
                    errors.append(f"exec {word}: {result}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"exec {word}: {type(e).__name__}: {str(e)[:200]}")

    poller = threading.Thread(target=poll, daemon=True)
    workers = [threading.Thread(target=execs, args=(name,), daemon=True) for name in ("a", "b")]
    poller.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=150)
    done.set()
    poller.join(timeout=30)
    assert not any(w.is_alive() for w in workers), "an exec thread hung"
    assert polls[0] >= 10, f"only {polls[0]} polls ran beside the execs; the test proved nothing"
    assert not errors, f"{len(errors)} failures ({polls[0]} polls, 2 x {execs_per_thread} execs):\n" + \
        "\n".join(errors[:10])


def test_delete_namespace_returns_once_it_is_gone_and_it_can_be_made_again(target):
    """The reference API server deletes a namespace at once (it models no Terminating phase), so
    this shows the call's contract, not the wait itself: once it returns the namespace is gone,
    and the same namespace and workload apply again at once."""
    ns = "kt-delete-again"
    for attempt in range(2):
        target.apply([wl.namespace(ns, ambient=True), *wl.client(ns, "c")])
        target.wait_ready(ns)
        assert target.pods(ns), f"attempt {attempt}: no pod in {ns}"
        target.delete_namespace(ns)
        assert target.get("Namespace", None, ns) is None, f"attempt {attempt}: {ns} still there"
    target.delete_namespace(ns)  # already gone: not an error
