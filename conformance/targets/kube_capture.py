"""Packet capture on a node of a Kubernetes cluster: tcpdump in a pod of the suite's own.

The pod runs on the node (`nodeName`) in the node's own network namespace (`hostNetwork: true`)
with NET_ADMIN and NET_RAW, in a pinned image that has tcpdump and bash
(`workloads.CAPTURE_IMAGE`, nicolaka/netshoot). Its one container starts tcpdump in the
background, writing a pcap file into an emptyDir, and then sleeps, so the pod outlives tcpdump and
the file can be read back after tcpdump has stopped. Everything else is exec: the target's own
`exec`, so the same code runs against kind and against the reference cluster (whose pods run this
machine's tcpdump and bash).

Two traps, as in the reference target's capture: tcpdump prints "listening on" before the kernel
hands it packets, and SIGTERM drops the packets it has not read yet. So a sentinel UDP datagram
to the node's loopback is sent (and resent) at start until it is in the file, and again at stop()
before tcpdump is stopped: every packet that came before a sentinel is in the file with it.
The pcap comes back base64 over the exec stream (the client decodes an exec's output as text).
"""
from __future__ import annotations

import base64
import binascii
import secrets
import time

from conformance import workloads
from conformance.targets.base import Capture, NotSupported, PodRef, TargetError, wait_until

#: the namespace the capture pods run in (made on first use, labelled for privileged pods)
CAPTURE_NAMESPACE = "ambient-conformance-capture"
CAPTURE_DIR = "/capture"
PCAP = f"{CAPTURE_DIR}/capture.pcap"
LOG = f"{CAPTURE_DIR}/tcpdump.log"
PID = f"{CAPTURE_DIR}/tcpdump.pid"
SENTINEL_PORT = 9           # discard: nothing answers, the datagram only has to be seen
POD_START_SECONDS = 120     # a pull of the capture image if the node lacks it
MARK_SECONDS = 10           # how long a sentinel is resent until tcpdump has written it
TCPDUMP_BUFFER_KIB = 65536  # tcpdump's ring: 256 frames of 256 KiB

# The container: tcpdump in the background (its filter from the environment, so no quoting),
# its pid kept for stop(), then sleep, so the pod stays up for the read-back after tcpdump ends.
# `-Z root`: a tcpdump built to drop privileges would lose the emptyDir it writes into.
# `-B`: in immediate mode every ring frame holds a whole snaplen (256 KiB at -s 0), so the default
# 2 MiB ring holds about 8 packets, and a busy node that is slow to schedule tcpdump drops the rest.
_CONTAINER_SCRIPT = (
    f'tcpdump -i any -n -U --immediate-mode -s 0 -B {TCPDUMP_BUFFER_KIB} -Z root -w {PCAP} "$CAPTURE_FILTER" '
    f'>{LOG} 2>&1 & '
    f'echo $! >{PID}; wait; exec sleep infinity')

# Send the sentinel ($1) to the node's loopback until it is in the file; 1 when it never is.
_MARK_SCRIPT = (
    f'end=$(( $(date +%s) + {MARK_SECONDS} )); '
    f'while [ "$(date +%s)" -lt "$end" ]; do '
    f'  printf %s "$1" >/dev/udp/127.0.0.1/{SENTINEL_PORT} 2>/dev/null; '
    f'  for i in 1 2 3 4 5; do grep -qF -e "$1" {PCAP} 2>/dev/null && exit 0; sleep 0.2; done; '
    f'done; exit 1')

# Stop tcpdump with SIGTERM and wait (10 s) until it is gone; SIGKILL if it does not go.
_STOP_SCRIPT = (
    f'pid=$(cat {PID}); kill -TERM "$pid" 2>/dev/null; '
    'for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.2; done; '
    'kill -KILL "$pid" 2>/dev/null; exit 0')


def capture_filter(bpf_filter: str) -> str:
    """What tcpdump captures: the caller's filter, and the sentinels on the node's loopback."""
    return f"({bpf_filter}) or (udp and host 127.0.0.1 and dst port {SENTINEL_PORT})"


def pod_manifest(name: str, node: str, bpf_filter: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": CAPTURE_NAMESPACE,
                     "labels": {"app": "ambient-conformance-capture"},
                     "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "nodeName": node, "hostNetwork": True, "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            # whatever taints the node has: the capture must run on exactly this node
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "tcpdump", "image": workloads.CAPTURE_IMAGE,
                "imagePullPolicy": workloads.PULL_POLICY,
                "command": ["bash", "-c", _CONTAINER_SCRIPT],
                "env": [{"name": "CAPTURE_FILTER", "value": capture_filter(bpf_filter)}],
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                "volumeMounts": [{"name": "capture", "mountPath": CAPTURE_DIR}]}],
            "volumes": [{"name": "capture", "emptyDir": {}}]}}


class PodCapture(Capture):
    """A running capture in pod `CAPTURE_NAMESPACE/capture-<node>-<token>` of `target`, a
    KubernetesTarget (its core API for the pod, its exec for everything in it)."""

    def __init__(self, target, node: str, bpf_filter: str):
        from kubernetes.client.exceptions import ApiException
        self.target = target
        token = secrets.token_hex(4)
        self.pod = PodRef(CAPTURE_NAMESPACE, f"capture-{_dns_label(node)[:40]}-{token}")
        self.node = node
        self.sentinel = f"cf-capture-sentinel-{secrets.token_hex(8)}"
        _ensure_namespace(target.core)
        try:
            target.core.create_namespaced_pod(CAPTURE_NAMESPACE, pod_manifest(self.pod.name, node, bpf_filter))
        except ApiException as e:
            if e.status == 403:   # Pod Security admission or RBAC: this cluster will not run it
                raise NotSupported(f"the cluster refused the packet-capture pod (hostNetwork, NET_ADMIN/NET_RAW) "
                                   f"in namespace {CAPTURE_NAMESPACE}: {_reason(e)}") from None
            raise TargetError(f"create the packet-capture pod {self.pod.name} on node {node}: {_reason(e)}") from None
        try:
            self._wait_running()
            self._wait_listening()
            if not self._mark(self.sentinel + "-start"):
                raise TargetError(f"tcpdump in pod {self.pod.namespace}/{self.pod.name} on node {node} wrote no "
                                  f"packet within {MARK_SECONDS}s: {self._log()[:300]}")
        except BaseException:
            self._delete()
            raise

    # -- start ---------------------------------------------------------------------------------
    def _wait_running(self) -> None:
        last: list = []

        def running() -> bool:
            pod = self.target.core.read_namespaced_pod(self.pod.name, self.pod.namespace)
            last[:] = [pod]
            if pod.status is None:  # not yet written by the API server's pod strategy
                return False
            if pod.status.phase in ("Failed", "Succeeded"):
                raise TargetError(f"the packet-capture pod {self.pod.name} on node {self.node} ended "
                                  f"({pod.status.phase}) before it was used: {_waiting_reason(pod)}")
            statuses = pod.status.container_statuses or []
            return pod.status.phase == "Running" and bool(statuses) and all(
                s.state and s.state.running for s in statuses)
        try:
            wait_until(running, POD_START_SECONDS, 0.3, f"the packet-capture pod {self.pod.name} on node "
                                                         f"{self.node} to run")
        except TargetError as e:
            why = _waiting_reason(last[0]) if last else ""
            raise TargetError(f"{e}{': ' + why if why else ''}") from None

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + MARK_SECONDS
        while "listening on" not in (log := self._log()):
            alive = self._exec(["bash", "-c", f'kill -0 "$(cat {PID})"']).returncode == 0
            if not alive or time.monotonic() > deadline:
                raise TargetError(f"tcpdump did not start in pod {self.pod.namespace}/{self.pod.name} on node "
                                  f"{self.node}: {log.strip()[:300] or '(no output)'}")
            time.sleep(0.1)

    # -- the pod -------------------------------------------------------------------------------
    def _exec(self, argv: list[str], timeout: float = 30):
        return self.target.exec(self.pod, argv, timeout=timeout)

    def _log(self) -> str:
        return self._exec(["cat", LOG]).stdout

    def _mark(self, sentinel: str) -> bool:
        """Send `sentinel` until tcpdump has written it: then every packet before it is written."""
        return self._exec(["bash", "-c", _MARK_SCRIPT, "mark", sentinel],
                          timeout=MARK_SECONDS + 20).returncode == 0

    def _delete(self) -> None:
        self.target.delete_pod(self.pod, grace_period=0)

    # -- stop ----------------------------------------------------------------------------------
    def stop(self) -> bytes:
        try:
            self._mark(self.sentinel + "-end")
            self._exec(["bash", "-c", _STOP_SCRIPT], timeout=30)
            result = self._exec(["base64", PCAP], timeout=60)
            if result.returncode != 0:
                raise TargetError(f"could not read the capture back from pod {self.pod.namespace}/{self.pod.name}: "
                                  f"base64 exit {result.returncode}: {result.stderr.strip()[:300]}")
            try:
                return base64.b64decode("".join(result.stdout.split()), validate=True)
            except binascii.Error as e:
                raise TargetError(f"the capture read back from pod {self.pod.namespace}/{self.pod.name} is not "
                                  f"base64 ({e})") from None
        finally:
            self._delete()


def _ensure_namespace(core) -> None:
    from kubernetes.client.exceptions import ApiException
    # Pod Security admission's own label: the capture pod is privileged (hostNetwork, capabilities)
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": CAPTURE_NAMESPACE,
                         "labels": {"pod-security.kubernetes.io/enforce": "privileged",
                                    "app.kubernetes.io/managed-by": "ambient-conformance"}}}
    try:
        core.create_namespace(body)
    except ApiException as e:
        if e.status == 403:
            raise NotSupported(f"the suite may not create namespace {CAPTURE_NAMESPACE} for its packet-capture "
                               f"pods: {_reason(e)}") from None
        if e.status != 409:   # 409: there already (another worker, an earlier run)
            raise TargetError(f"create namespace {CAPTURE_NAMESPACE} for the packet-capture pods: "
                              f"{_reason(e)}") from None


def _dns_label(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return out or "node"


def _waiting_reason(pod) -> str:
    for s in (pod.status.container_statuses or []) if pod and pod.status else []:
        state = s.state
        if state and state.waiting:
            return f"{state.waiting.reason}: {state.waiting.message or ''}".strip(": ")
        if state and state.terminated:
            return f"exited {state.terminated.exit_code} ({state.terminated.reason or ''})"
    return ""


def _reason(e) -> str:
    from conformance.targets.kubernetes import _reason as reason
    return reason(e)
