"""The faults: flat functions with JSON-friendly arguments, as chaosk8s' are. Each records when
it struck (`fault-start`) or ended (`fault-end`) in the run's event log, for the timeline.

Nodes are named by index (0, 1: the first two nodes that run workloads, where the experiment's
world lives), so one experiment file serves every target. On the kubernetes target, the pod and
Deployment faults go through chaostoolkit-kubernetes' own actions (terminate_pods,
scale_deployment); on the reference target through the conformance Target.
"""
from __future__ import annotations

import time

from chaoslib.exceptions import InterruptExecution

from conformance.targets.base import NotSupported, TargetError, wait_until

from . import world
from .session import Session, failed, session

__all__ = ["kill_ztunnel", "restart_ztunnel", "wait_for_ztunnel", "kill_waypoint_pods", "scale_waypoint",
           "wait_for_waypoint", "stop_control_plane", "start_control_plane", "partition_nodes",
           "heal_nodes", "set_certificate_ttl", "start_capture", "stop_capture", "apply_objects"]

_captures: dict = {}


def node_name(s: Session, node: int | str) -> str:
    nodes = s.target.nodes()
    if isinstance(node, int) or str(node).isdigit():
        if int(node) >= len(nodes):
            raise TargetError(f"node index {node}: the cluster has {len(nodes)} nodes ({', '.join(nodes)})")
        return nodes[int(node)]
    return str(node)


def _terminate(s: Session, pod, grace_period: int, configuration: dict | None) -> None:
    if s.kind == "kubernetes":
        from chaosk8s.pod.actions import terminate_pods
        label = ",".join(f"{k}={v}" for k, v in pod.labels.items())
        terminate_pods(label_selector=label or None, name_pattern=f"^{pod.name}$", ns=pod.namespace,
                       grace_period=grace_period, all=True)
    else:
        s.target.delete_pod(pod, grace_period=grace_period)


def kill_ztunnel(node: int = 1, configuration: dict = None) -> dict:
    """SIGKILL the ztunnel of `node` (a delete with grace period 0: its DaemonSet starts another)."""
    s = session(configuration)
    try:
        name = node_name(s, node)
        old = s.target.ztunnel_pod(name)
        s.event("fault-start", what=f"SIGKILL ztunnel {old.name} on {name}")
        _terminate(s, old, 0, configuration)
    except (TargetError, NotSupported) as e:
        raise failed(f"kill the ztunnel of node {node}", e) from None
    return {"node": name, "pod": old.name}


def restart_ztunnel(node: int = 1, grace_period: int = 30, configuration: dict = None) -> dict:
    """Delete the ztunnel of `node` gracefully (SIGTERM: it drains), as a rolling restart does."""
    s = session(configuration)
    try:
        name = node_name(s, node)
        old = s.target.ztunnel_pod(name)
        s.event("fault-start", what=f"graceful delete of ztunnel {old.name} on {name} (grace {grace_period}s)")
        _terminate(s, old, grace_period, configuration)
    except (TargetError, NotSupported) as e:
        raise failed(f"restart the ztunnel of node {node}", e) from None
    return {"node": name, "pod": old.name}


def wait_for_ztunnel(node: int = 1, timeout: float = 30, configuration: dict = None) -> float:
    """Wait until `node` runs a Ready ztunnel other than the one the fault hit; records fault-end.
    Returns the seconds from the fault to that moment."""
    s = session(configuration)
    start = s.first("fault-start") or time.time()
    hit = next((e.get("what", "") for e in s.events() if e["event"] == "fault-start"), "")
    try:
        name = node_name(s, node)
        wait_until(lambda: any(p.ready and p.node == name and p.name not in hit
                               for p in s.target.pods(s.target.MESH_NAMESPACE, s.target.ZTUNNEL_SELECTOR)),
                   timeout, 0.05, f"a new Ready ztunnel on node {name}")
    except TargetError as e:
        raise failed(f"wait for the ztunnel of node {node}", e) from None
    return round(s.event("fault-end", what=f"a new ztunnel is Ready on {name}") - start, 3)


def _waypoint_pods(s: Session):
    return s.target.pods(world.NAMESPACE, {world.GATEWAY_NAME_LABEL: world.WAYPOINT})


def kill_waypoint_pods(count: int = 1, configuration: dict = None) -> list[str]:
    """SIGKILL `count` of the waypoint's pods (its Deployment replaces them)."""
    s = session(configuration)
    try:
        pods = _waypoint_pods(s)[:count]
        if len(pods) < count:
            raise TargetError(f"the waypoint {world.NAMESPACE}/{world.WAYPOINT} has {len(pods)} pods, "
                              f"fewer than the {count} to kill")
        s.event("fault-start", what=f"SIGKILL waypoint pod(s) {', '.join(p.name for p in pods)}")
        for pod in pods:
            _terminate(s, pod, 0, configuration)
        # A request sent while the SIGKILL was still on its way was in flight at the kill, not
        # started after it: "after the kill" (fault-applied) begins once the pods are gone.
        killed = {p.name for p in pods}
        wait_until(lambda: not killed & {p.name for p in _waypoint_pods(s)}, 10, 0.02,
                   f"the killed waypoint pod(s) {', '.join(sorted(killed))} gone")
        s.event("fault-applied", what=f"waypoint pod(s) {', '.join(sorted(killed))} gone")
    except (TargetError, NotSupported) as e:
        raise failed("kill waypoint pods", e) from None
    return [p.name for p in pods]


def scale_waypoint(replicas: int = 2, configuration: dict = None) -> int:
    """Scale the waypoint's Deployment and wait until that many of its pods are Ready."""
    s = session(configuration)
    try:
        if s.kind == "kubernetes":
            from chaosk8s.deployment.actions import scale_deployment
            scale_deployment(world.WAYPOINT, replicas, ns=world.NAMESPACE)
        else:
            s.target.scale(world.NAMESPACE, world.WAYPOINT, replicas)
        wait_until(lambda: len([p for p in _waypoint_pods(s) if p.ready]) == replicas == len(_waypoint_pods(s)),
                   60, 0.1, f"{replicas} Ready waypoint pods")
    except TargetError as e:
        raise failed(f"scale the waypoint to {replicas}", e) from None
    return replicas


def wait_for_waypoint(replicas: int = 1, timeout: float = 30, configuration: dict = None) -> float:
    """Wait until `replicas` waypoint pods are Ready again; records fault-end; returns the seconds
    since the fault."""
    s = session(configuration)
    start = s.first("fault-start") or time.time()
    replicas = int(replicas)
    try:
        wait_until(lambda: len([p for p in _waypoint_pods(s) if p.ready]) >= replicas, timeout, 0.05,
                   f"{replicas} Ready waypoint pods")
    except TargetError as e:
        raise failed("wait for the waypoint", e) from None
    return round(s.event("fault-end", what=f"{replicas} waypoint pod(s) Ready") - start, 3)


def stop_control_plane(configuration: dict = None) -> bool:
    """Scale istiod to zero and wait until none of its pods runs."""
    s = session(configuration)
    s.event("fault-start", what="istiod scaled to 0")
    try:
        s.target.stop_control_plane()
    except TargetError as e:
        raise failed("stop the control plane", e) from None
    return True


def start_control_plane(configuration: dict = None) -> bool:
    """Scale istiod back to one replica and wait until it is Ready; records fault-end."""
    s = session(configuration)
    try:
        s.target.start_control_plane()
    except TargetError as e:
        raise failed("start the control plane", e) from None
    s.event("fault-end", what="istiod Ready again")
    return True


def partition_nodes(a: int = 0, b: int = 1, configuration: dict = None) -> str:
    """Drop every packet between nodes `a` and `b` (nftables in the cluster's fabric)."""
    s = session(configuration)
    try:
        na, nb = node_name(s, a), node_name(s, b)
        s.target.partition_nodes(na, nb)
        s.event("fault-start", what=f"link {na} <-> {nb} dropped")
    except NotSupported as e:
        # without the fault the hypothesis would hold vacuously: stop the experiment instead
        raise InterruptExecution(f"partition node {a} from node {b}: not supported: {e}") from None
    except TargetError as e:
        raise failed(f"partition node {a} from node {b}", e) from None
    return f"{na}|{nb}"


def heal_nodes(a: int = 0, b: int = 1, configuration: dict = None) -> str:
    """Undo partition_nodes (also the rollback: safe when nothing is partitioned)."""
    s = session(configuration)
    try:
        na, nb = node_name(s, a), node_name(s, b)
        s.target.heal_nodes(na, nb)
    except (TargetError, NotSupported) as e:
        raise failed(f"heal the link between node {a} and node {b}", e) from None
    if s.first("fault-start") and not s.first("fault-end"):
        s.event("fault-end", what=f"link {na} <-> {nb} healed")
    return f"{na}|{nb}"


def set_certificate_ttl(seconds: int | None = None, configuration: dict = None) -> int | None:
    """Make the mesh issue workload certificates living `seconds` (None: its default)."""
    s = session(configuration)
    try:
        s.target.set_workload_certificate_ttl(seconds)
    except (TargetError, NotSupported) as e:
        raise failed(f"set the workload certificate TTL to {seconds}", e) from None
    return seconds


def start_capture(node: int = 1, bpf_filter: str = "tcp", configuration: dict = None) -> str:
    """Start a packet capture on `node`'s network (Target.capture); stop_capture saves it."""
    s = session(configuration)
    try:
        name = node_name(s, node)
        _captures[name] = s.target.capture(name, bpf_filter)
    except NotSupported as e:
        return f"not supported: {e}"   # the wire check then answers -1 (probes.plaintext_segments)
    except TargetError as e:
        raise failed(f"capture on node {node}", e) from None
    return name


def stop_capture(node: int = 1, configuration: dict = None) -> int:
    """Stop the capture on `node`; writes capture-<node>.pcap in the run; returns its size."""
    s = session(configuration)
    name = node_name(s, node)
    capture = _captures.pop(name, None)
    if capture is None:
        return 0
    data = capture.stop()
    (s.out / f"capture-{name}.pcap").write_bytes(data)
    return len(data)


def apply_objects(objects: list[dict], event: str = "", configuration: dict = None) -> int:
    """Apply Kubernetes objects (namespace defaults to the experiment's); records `event`."""
    s = session(configuration)
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("namespace", world.NAMESPACE)
    if event:
        s.event(event, what=", ".join(f"{o['kind']} {o['metadata']['name']}" for o in objects))
    try:
        s.target.apply(objects)
    except TargetError as e:
        raise failed("apply objects", e) from None
    return len(objects)
