"""Cluster lifecycle: clean teardown (also after the daemon was SIGKILLed), refusals, CLI errors."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from reference_impl.cluster import client as cluster_client
from reference_impl.cluster import naming, teardown
from reference_impl.cluster.errors import ClusterError

REPO = pathlib.Path(__file__).resolve().parents[2]
SEED = REPO / "fixtures" / "seed"

SLEEP_ONLY = [SEED / "namespaces.yaml", SEED / "sleep-ambient.yaml"]
CLI = [sys.executable, "-m", "reference_impl.cli"]


def nothing_left(name: str) -> dict:
    left = teardown.remaining(name)
    return {k: v for k, v in left.items() if v}


def test_down_leaves_nothing_behind(cluster_factory, cluster_name):
    c = cluster_factory("down", SLEEP_ONLY)
    name = c.name
    (pod,) = c.list("Pod", "ambient-apps")
    pid = pod["status"]["containerStatuses"][0]["pid"]
    assert nothing_left(name)  # sanity: the probe sees a running cluster
    assert teardown.cluster_netns(name)
    # Nothing in the machine's own namespace: no interface peers into the cluster's namespaces.
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"ac-{name}-" not in host_links
    assert f"ac-{name}-" in subprocess.run(
        ["ip", "-n", f"ac-{name}-fabric", "-o", "link"], capture_output=True, text=True).stdout
    c.down()
    assert nothing_left(name) == {}
    assert not os.path.exists(f"/proc/{pid}")
    with pytest.raises(ClusterError, match="no cluster named"):
        cluster_client.ClusterClient(name)


def test_sigkilled_daemon_is_cleaned_up_by_the_next_up(cluster_factory):
    c = cluster_factory("crash", SLEEP_ONLY)
    name = c.name
    state = teardown.read_state(name)
    old_pids = [tuple(p) for p in state["pids"]]
    old_daemon = tuple(state["daemon"])
    assert old_pids
    os.kill(old_daemon[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while teardown.alive(*old_daemon) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not teardown.alive(*old_daemon)
    assert teardown.cluster_netns(name)  # the crash left the namespaces behind

    new = cluster_client.up(name, nodes=2, manifests=[str(p) for p in SLEEP_ONLY])
    try:
        assert not any(teardown.alive(pid, start) for pid, start in old_pids)
        new_state = teardown.read_state(name)
        assert tuple(new_state["daemon"]) != old_daemon
        (pod,) = new.list("Pod", "ambient-apps")
        assert new.exec("ambient-apps", pod["metadata"]["name"], ["true"]).returncode == 0
        # Every process in the cluster's namespaces belongs to the new daemon's pods.
        live = {pid for pid, _ in new_state["pids"]}
        in_netns = {p for ns in teardown.cluster_netns(name) for p in teardown.netns_pids(ns)}
        assert in_netns <= live | {p for p in in_netns if _is_child_of(p, live)}
    finally:
        new.down()
    assert nothing_left(name) == {}


def _is_child_of(pid: int, parents: set[int]) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) in parents
    except OSError:
        return True  # gone meanwhile


def test_up_refuses_a_running_cluster_name(seed_cluster):
    with pytest.raises(ClusterError, match="already running.*cluster down"):
        cluster_client.up(seed_cluster.name)


def test_failed_up_leaves_nothing_and_says_why(cluster_name, _cluster_host, tmp_path):
    name = cluster_name("fail")
    bad = tmp_path / "pending.yaml"
    bad.write_text("""
apiVersion: v1
kind: Pod
metadata: {name: nowhere, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: node-9}
  containers: [{name: c, image: sleep}]
""")
    with pytest.raises(ClusterError) as info:
        cluster_client.up(name, manifests=[str(bad)], timeout=3)
    assert "default/nowhere" in str(info.value) and "nodeSelector" in str(info.value)
    assert nothing_left(name) == {}


def test_bad_manifest_stops_up_before_anything_starts(cluster_name, _cluster_host, tmp_path):
    name = cluster_name("badup")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\nkind: [\n")
    with pytest.raises(Exception) as info:
        cluster_client.up(name, manifests=[str(bad)])
    assert "bad.yaml" in str(info.value) and "document 2" in str(info.value)
    assert nothing_left(name) == {}


def run_cli(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          **kw)


def test_cli_errors_are_one_line_without_traceback(seed_cluster, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: default}\n"
                   "spec: {replicas: many}\n")
    for args in (["cluster", "apply", "-f", str(bad), "--name", seed_cluster.name],
                 ["cluster", "get", "pods", "--name", "tc-none-such"],
                 ["cluster", "logs", "ghost", "--name", seed_cluster.name],
                 ["cluster", "up", "--name", "Bad_Name"]):
        proc = run_cli(*args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: ")


def test_cli_get_exec_and_exit_code(seed_cluster):
    proc = run_cli("cluster", "get", "pods", "-n", "ambient-apps", "--name", seed_cluster.name)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "NODE", "IP"]
    sleep = next(r.split() for r in rows if r.startswith("sleep-ambient-"))
    assert sleep[1:3] == ["1/1", "Running"]
    proc = run_cli("cluster", "exec", "-n", "ambient-apps", sleep[0], "--name", seed_cluster.name,
                   "--", "sh", "-c", "exit 7")
    assert proc.returncode == 7
    proc = run_cli("cluster", "get", "pods", "-A", "-o", "json", "--name", seed_cluster.name)
    names = {p["metadata"]["name"] for p in json.loads(proc.stdout)["items"]}
    assert sleep[0] in names


def test_without_root_the_error_names_what_is_missing(tmp_path):
    proc = subprocess.run([sys.executable, "-c",
                           # Python's own files live under /root here: load them before dropping root.
                           "import os; from reference_impl.cli import main, build_parser; "
                           "build_parser(); os.setuid(65534); raise SystemExit(main("
                           "['cluster', 'up', '--name', 'tc-noroot']))"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        "error: the reference cluster needs root and Linux network namespaces (not running as "
        "root); run as root, or use --target kubernetes against a real cluster")
    assert not os.path.exists(naming.run_dir("tc-noroot"))
