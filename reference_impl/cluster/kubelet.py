"""The kubelet role: turns scheduled Pod objects into namespaces and processes, and reports back.

- Start: a pod namespace wired to its node (or the node's own namespace for `hostNetwork`), DNS
  files first, then one process per container via `ip netns exec` (own process group, SIGKILL on
  the daemon's death via PR_SET_PDEATHSIG).
- Restart: an exited container is started again (`restartPolicy` Always/OnFailure) with a short
  exponential back-off; `restartCount` goes up.
- Readiness: a TCP connect to the readinessProbe's port (`tcpSocket` or `httpGet`, number or
  port name) or else the container's first containerPort, made from a socket created inside the
  pod's namespace; a container without ports is ready while its process runs.
- Delete: SIGTERM, then SIGKILL after the grace period (`0` = SIGKILL at once); then the namespace
  goes and the Pod object is removed.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so every `Popen` here must
run on the daemon's main (event loop) thread, which lives as long as the daemon.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from reference_impl.apps import images
from reference_impl.netns import netns_path, socket_in

from . import naming, network, sidecar_lifecycle, volumes
from .controllers import is_terminating
from .errors import ClusterError
from .services import ServiceRouting
from .store import NETNS_ANNOTATION, Store, now_iso

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
REPO_ROOT = images.REPO_ROOT
PROBE_PERIOD_READY = 1.0
PROBE_PERIOD_UNREADY = 0.1
MAX_BACKOFF = 10.0


def _die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (tells a pid from a reused one)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Container:
    name: str
    spec: dict
    argv: list[str] | None = None
    error: str | None = None
    waiting: str | None = None   # why it has not started yet (a ConfigMap it mounts is missing)
    proc: subprocess.Popen | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    restart_count: int = 0
    next_start: float = 0.0
    ready: bool = False
    next_probe: float = 0.0
    probing: bool = False
    last_exit: dict | None = None

    @property
    def port(self) -> int | None:
        probe = self.spec.get("readinessProbe") or {}
        for kind in ("tcpSocket", "httpGet"):
            probe_port = (probe.get(kind) or {}).get("port")
            if isinstance(probe_port, int):
                return probe_port
            if isinstance(probe_port, str):
                named = [p for p in self.spec.get("ports") or [] if p.get("name") == probe_port]
                if named:
                    return int(named[0]["containerPort"])
        for port in self.spec.get("ports") or []:
            if port.get("containerPort"):
                return int(port["containerPort"])
        return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    node_index: int
    netns: str
    ip: str
    host_network: bool
    restart_policy: str
    containers: list[Container] = field(default_factory=list)
    start_time: str = ""
    terminating: bool = False
    kill_at: float = 0.0
    proxy_stopping: bool = False   # the injected proxy got its SIGTERM (sidecar_lifecycle)


class Kubelet:
    def __init__(self, cluster: str, store: Store, nodes: list[str], routing: ServiceRouting,
                 env_base: dict[str, str]):
        self.cluster = cluster
        self.store = store
        self.nodes = nodes
        self.routing = routing
        self.env_base = env_base
        self.pods: dict[str, PodRuntime] = {}  # by uid
        self._next_netns = 0
        self._used_ips: dict[int, set[int]] = {i: set() for i in range(len(nodes))}
        self._next_ip: dict[int, int] = {i: 2 for i in range(len(nodes))}
        self._tasks: set[asyncio.Task] = set()

    # -- bookkeeping for teardown --------------------------------------------------------------
    def process_ids(self) -> list[tuple[int, int | None]]:
        out = []
        for rt in self.pods.values():
            for c in rt.containers:
                if c.proc is not None and c.proc.poll() is None:
                    out.append((c.proc.pid, proc_start_time(c.proc.pid)))
        return out

    def pod_namespaces(self) -> list[str]:
        return [rt.netns for rt in self.pods.values() if not rt.host_network]

    # -- the sync loop --------------------------------------------------------------------------
    def sync(self) -> None:
        """Match runtimes to Pod objects; called after store changes and on every tick."""
        seen = set()
        for pod in self.store.list("Pod"):
            node = (pod.get("spec") or {}).get("nodeName")
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            rt = self.pods.get(uid)
            if rt is None:
                if is_terminating(pod):
                    self.store.remove("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"])
                elif node in self.nodes:
                    self._start_pod(pod)
                continue
            if is_terminating(pod):
                self._terminate(rt, pod["metadata"].get("deletionGracePeriodSeconds", 30))
        for uid in [u for u in self.pods if u not in seen]:
            rt = self.pods[uid]
            self._terminate(rt, 0)
            self._finish(rt, remove_object=False)
        now = time.monotonic()
        for rt in list(self.pods.values()):
            if rt.terminating:
                if now >= rt.kill_at or not any(c.running() for c in rt.containers):
                    self._finish(rt, remove_object=True)
                elif (proxy := sidecar_lifecycle.proxy_to_stop(rt)) is not None:
                    _signal_group(proxy.proc, signal.SIGTERM)
                continue
            for c in rt.containers:
                self._supervise(rt, c, now)
            self._report(rt)

    # -- start ----------------------------------------------------------------------------------
    def _allocate_ip(self, node_index: int) -> str:
        used = self._used_ips[node_index]
        for _ in range(253):
            octet = self._next_ip[node_index]
            self._next_ip[node_index] = 2 if octet >= 254 else octet + 1
            if octet not in used:
                used.add(octet)
                return f"10.244.{node_index}.{octet}"
        raise ClusterError(f"node-{node_index} has no free pod address left in its /24")

    def _start_pod(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        node_index = self.nodes.index(spec["nodeName"])
        host_network = bool(spec.get("hostNetwork"))
        if host_network:
            netns, ip = naming.node_netns(self.cluster, node_index), naming.node_ip(node_index)
        else:
            netns = naming.pod_netns(self.cluster, self._next_netns)
            self._next_netns += 1
            ip = self._allocate_ip(node_index)
        rt = PodRuntime(meta["namespace"], meta["name"], meta["uid"], node_index, netns, ip,
                        host_network, spec.get("restartPolicy", "Always"), start_time=now_iso())
        for cspec in spec.get("containers") or []:
            c = Container(cspec.get("name", "main"), cspec)
            try:
                c.argv = images.command_for(str(cspec.get("image", "")), cspec,
                                            f"{rt.namespace}/{rt.name}")
            except images.ImageError as exc:
                c.error = str(exc)
            rt.containers.append(c)
        self.pods[rt.uid] = rt
        if not host_network:
            self.routing.register_netns(netns, rt.namespace, (ip, rt.name))
            try:
                network.add_pod(self.cluster, node_index, netns, f"v{netns.rsplit('-p', 1)[1]}",
                                ip)
            except ClusterError as exc:  # this pod stays broken and says why; others go on
                for c in rt.containers:
                    c.argv, c.error = None, f"pod {rt.namespace}/{rt.name}: {exc}"

        def annotate(p: dict) -> None:
            p["metadata"].setdefault("annotations", {})[NETNS_ANNOTATION] = netns
        self.store.update("Pod", rt.namespace, rt.name, annotate)
        for c in rt.containers:
            if not sidecar_lifecycle.held(rt, c):
                self._start_container(rt, c)
        self._report(rt)

    def _env(self, rt: PodRuntime, c: Container, pod: dict) -> dict[str, str]:
        env = dict(self.env_base)
        env.update({
            "POD_NAME": rt.name, "POD_NAMESPACE": rt.namespace, "POD_UID": rt.uid,
            "NODE_NAME": self.nodes[rt.node_index], "INSTANCE_IP": rt.ip,
            "SERVICE_ACCOUNT": (pod.get("spec") or {}).get("serviceAccountName") or "default",
            "PYTHONUNBUFFERED": "1",
        })
        fields = {"metadata.name": rt.name, "metadata.namespace": rt.namespace,
                  "metadata.uid": rt.uid, "spec.nodeName": self.nodes[rt.node_index],
                  "spec.serviceAccountName": env["SERVICE_ACCOUNT"], "status.podIP": rt.ip,
                  "status.hostIP": naming.node_ip(rt.node_index)}
        for item in c.spec.get("env") or []:
            name = item.get("name")
            if not name:
                continue
            if "value" in item:
                env[str(name)] = str(item["value"])
            field_ref = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if field_ref in fields:
                env[str(name)] = fields[field_ref]
        return env

    def _start_container(self, rt: PodRuntime, c: Container) -> None:
        if c.argv is None:
            return
        pod = self.store.get("Pod", rt.namespace, rt.name) or {}
        try:
            mounts = volumes.mounts_for(self.cluster, self.store, pod, c.spec) if pod else []
            volumes.prepare_targets(mounts)
        except volumes.VolumeNotReady as exc:
            c.waiting = str(exc)
            c.next_start = time.monotonic() + 0.5
            return
        except (volumes.VolumeError, OSError) as exc:
            c.argv, c.error = None, f"pod {rt.namespace}/{rt.name}: {exc}"
            return
        c.waiting = None
        log_path = os.path.join(naming.logs_dir(self.cluster),
                                f"{rt.namespace}_{rt.name}_{c.name}.log")
        with open(log_path, "ab") as log:
            try:
                c.proc = subprocess.Popen(
                    ["ip", "netns", "exec", rt.netns, *c.argv], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, env=self._env(rt, c, pod),
                    cwd=c.spec.get("workingDir") or REPO_ROOT, start_new_session=True,
                    preexec_fn=_preexec(mounts))
            except OSError as exc:
                c.error = f"cannot start {c.argv[0]}: {exc.strerror}"
                return
            except subprocess.SubprocessError as exc:  # the mounts failed in the child
                c.argv, c.error = None, f"pod {rt.namespace}/{rt.name}: cannot mount volumes: {exc}"
                return
        c.started_at = now_iso()
        c.started_mono = time.monotonic()
        c.ready = False
        c.next_probe = 0.0

    # -- supervise ------------------------------------------------------------------------------
    def _supervise(self, rt: PodRuntime, c: Container, now: float) -> None:
        if c.proc is not None and c.proc.poll() is not None:
            code = c.proc.returncode
            c.last_exit = {"exitCode": code if code >= 0 else 128 - code,
                           "reason": "Completed" if code == 0 else "Error",
                           "startedAt": c.started_at, "finishedAt": now_iso()}
            c.proc = None
            c.ready = False
            if rt.restart_policy == "Always" or (rt.restart_policy == "OnFailure" and code != 0):
                ran = now - c.started_mono
                backoff = 0.0 if c.restart_count == 0 or ran > 10 else \
                    min(MAX_BACKOFF, 0.5 * 2 ** min(c.restart_count, 5))
                c.restart_count += 1
                c.next_start = now + backoff
            else:
                c.next_start = float("inf")
        if c.proc is None and c.argv is not None and now >= c.next_start \
                and not sidecar_lifecycle.held(rt, c):
            self._start_container(rt, c)
        if c.running() and not c.probing and now >= c.next_probe:
            if c.port is None:
                c.ready = True
            else:
                c.probing = True
                task = asyncio.get_running_loop().create_task(self._probe(rt, c))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _probe(self, rt: PodRuntime, c: Container) -> None:
        ok = False
        try:
            sock = socket_in(netns_path(rt.netns), socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                    sock, (rt.ip, c.port)), timeout=1.0)
                ok = True
            finally:
                sock.close()
        except (OSError, asyncio.TimeoutError):
            ok = False
        finally:
            c.probing = False
        c.ready = ok and c.running()
        c.next_probe = time.monotonic() + (PROBE_PERIOD_READY if c.ready else PROBE_PERIOD_UNREADY)
        if rt.uid in self.pods and not rt.terminating:
            self._report(rt)

    # -- status ---------------------------------------------------------------------------------
    def _report(self, rt: PodRuntime) -> None:
        pod = self.store.get("Pod", rt.namespace, rt.name)
        if pod is None or pod["metadata"]["uid"] != rt.uid:
            return
        statuses = []
        for c in rt.containers:
            if c.running():
                state = {"running": {"startedAt": c.started_at}}
            elif c.error:
                state = {"waiting": {"reason": "ErrImagePull" if "image" in c.error
                                     else "CreateContainerError", "message": c.error}}
            elif c.last_exit and c.next_start == float("inf"):
                state = {"terminated": c.last_exit}
            else:
                state = {"waiting": {"reason": "CrashLoopBackOff" if c.restart_count
                                     else "ContainerCreating"}}
                if c.waiting:
                    state["waiting"]["message"] = c.waiting
            entry = {"name": c.name, "image": c.spec.get("image"), "ready": c.ready,
                     "started": c.running(), "restartCount": c.restart_count, "state": state,
                     "pid": c.proc.pid if c.running() else None}
            if c.last_exit:
                entry["lastState"] = {"terminated": c.last_exit}
            statuses.append(entry)
        all_ready = bool(rt.containers) and all(c.ready for c in rt.containers)
        if all(("terminated" in s["state"]) for s in statuses) and statuses:
            failed = any(s["state"]["terminated"]["exitCode"] != 0 for s in statuses)
            phase = "Failed" if failed else "Succeeded"
        elif any(c.running() for c in rt.containers) or any(c.restart_count for c in rt.containers):
            phase = "Running"
        else:
            phase = "Pending"
        old_conditions = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
        ready_status = "True" if all_ready else "False"
        ready_cond = old_conditions.get("Ready")
        if ready_cond is None or ready_cond.get("status") != ready_status:
            ready_cond = {"type": "Ready", "status": ready_status, "lastTransitionTime": now_iso()}
        conditions = [{"type": "PodScheduled", "status": "True"}, ready_cond,
                      {"type": "ContainersReady", "status": ready_status}]
        status = {"phase": phase, "podIP": rt.ip, "podIPs": [{"ip": rt.ip}],
                  "hostIP": naming.node_ip(rt.node_index), "startTime": rt.start_time,
                  "conditions": conditions, "containerStatuses": statuses}
        self.store.set_status("Pod", rt.namespace, rt.name, status)

    # -- delete ---------------------------------------------------------------------------------
    def _terminate(self, rt: PodRuntime, grace: int | None) -> None:
        grace = 30 if grace is None else max(0, int(grace))
        deadline = time.monotonic() + grace
        if rt.terminating and deadline >= rt.kill_at:
            return
        first = not rt.terminating
        rt.terminating = True
        rt.kill_at = deadline
        for c in rt.containers:
            c.ready = False
            if c.running():
                if grace != 0 and sidecar_lifecycle.stops_last(rt, c):
                    continue  # the injected proxy gets its SIGTERM once the app has stopped
                _signal_group(c.proc, signal.SIGKILL if grace == 0 else signal.SIGTERM if first
                              else None)
        if first:
            self._report(rt)

    def _finish(self, rt: PodRuntime, remove_object: bool) -> None:
        for c in rt.containers:
            if c.proc is not None:
                _signal_group(c.proc, signal.SIGKILL)
                try:
                    c.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
        if not rt.host_network:
            network.remove_netns(rt.netns)
            self.routing.unregister_netns(rt.netns)
            self._used_ips[rt.node_index].discard(int(rt.ip.rsplit(".", 1)[1]))
        volumes.remove(self.cluster, rt.uid)
        self.pods.pop(rt.uid, None)
        if remove_object:
            pod = self.store.get("Pod", rt.namespace, rt.name)
            if pod is not None and pod["metadata"]["uid"] == rt.uid:
                self.store.remove("Pod", rt.namespace, rt.name)

    def shutdown(self) -> None:
        for rt in list(self.pods.values()):
            for c in rt.containers:
                if c.proc is not None:
                    _signal_group(c.proc, signal.SIGKILL)
        for rt in list(self.pods.values()):
            self._finish(rt, remove_object=False)


def _preexec(mounts: list[volumes.Mount]):
    if not mounts:
        return _die_with_parent
    enter = volumes.enter(mounts)

    def run() -> None:
        _die_with_parent()
        enter()
    return run


def _signal_group(proc: subprocess.Popen, sig: int | None) -> None:
    if sig is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
