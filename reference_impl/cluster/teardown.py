"""Remove every trace of a cluster: processes, namespaces (and with them nftables rules and
veths), `/etc/netns` entries and the run dir. Works from what is on the machine (names with the
cluster's prefix, `ip netns pids`) plus `state.json`, so it also cleans up after a daemon that was
killed with SIGKILL.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

from . import naming


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int, start_time: int | None) -> bool:
    """Whether `pid` still runs and is the process that started at `start_time` (zombies are dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and (start_time is None or int(fields[19]) == start_time)


def _kill(pid: int, start_time: int | None = None) -> bool:
    """SIGKILL `pid` if it is still the process we recorded (same start time)."""
    if pid <= 1 or pid == os.getpid():
        return False
    if start_time is not None and _start_time(pid) != start_time:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def read_state(name: str) -> dict | None:
    try:
        with open(naming.state_path(name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cluster_netns(name: str) -> list[str]:
    pattern = naming.netns_pattern(name)
    return [ns for ns in list_netns() if pattern.match(ns)]


def netns_pids(netns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                          timeout=10)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def remaining(name: str) -> dict[str, list]:
    """What of cluster `name` is still on the machine (empty lists when it is all gone)."""
    netns = cluster_netns(name)
    pattern = naming.netns_pattern(name)
    etc = [e for e in (os.listdir(naming.ETC_NETNS) if os.path.isdir(naming.ETC_NETNS) else [])
           if pattern.match(e)]
    pids = sorted({p for ns in netns for p in netns_pids(ns)})
    state = read_state(name) or {}
    recorded = [p for p, start in state.get("pids", []) if start and alive(p, start)]
    return {"netns": netns, "etc_netns": etc, "pids": sorted(set(pids) | set(recorded)),
            "run_dir": [naming.run_dir(name)] if os.path.exists(naming.run_dir(name)) else []}


def remove_cluster(name: str, keep_pid: int | None = None, keep_run_dir: bool = False,
                   kill_daemon: bool = False) -> None:
    state = read_state(name) or {}
    if kill_daemon and state.get("daemon"):
        pid, start = state["daemon"]
        if pid != keep_pid:
            _kill(pid, start)
    for pid, start in state.get("pids", []):
        if pid != keep_pid:
            _kill(pid, start)
    namespaces = cluster_netns(name)
    # Processes in the namespaces (also ones started after state.json was last written).
    for _ in range(3):
        pids = [p for ns in namespaces for p in netns_pids(ns) if p != keep_pid]
        if not pids:
            break
        for pid in pids:
            _kill(pid)
        time.sleep(0.05)
    if namespaces:
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del {ns}\n" for ns in namespaces),
                       text=True, capture_output=True, timeout=30)
    pattern = naming.netns_pattern(name)
    if os.path.isdir(naming.ETC_NETNS):
        for entry in os.listdir(naming.ETC_NETNS):
            if pattern.match(entry):
                shutil.rmtree(os.path.join(naming.ETC_NETNS, entry), ignore_errors=True)
    if not keep_run_dir:
        shutil.rmtree(naming.run_dir(name), ignore_errors=True)


def known_clusters() -> list[str]:
    """Names of clusters with a run dir or namespaces on this machine."""
    names = set()
    if os.path.isdir(naming.RUN_ROOT):
        names.update(n for n in os.listdir(naming.RUN_ROOT) if naming.NAME_RE.match(n))
    for ns in list_netns():
        m = naming.ANY_CLUSTER_NETNS.match(ns)
        if m:
            names.add(m.group(1))
    return sorted(names)
