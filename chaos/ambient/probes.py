"""What the steady-state hypotheses judge. Chaos Toolkit runs a hypothesis before the method and
after it with the same probes, so each probe judges "the traffic observed": before the method a
fresh burst (traffic.window), after it the recording the method's background traffic made. Each
returns a number that is right in both phases: a success rate, a count of violations (streams
that should not have lost a request but did, plaintext segments on the wire), a recovery time.
"""
from __future__ import annotations

import json
import logging
import math

from conformance import pcap
from conformance.targets.base import NotSupported, TargetError

from . import analysis, traffic, world
from .actions import node_name
from .session import failed, session

log = logging.getLogger("chaostoolkit")

__all__ = ["success_rate", "failed_requests", "recovery_seconds", "max_latency_seconds", "plaintext_segments",
           "plaintext_connections_at_servers",
           "held_connection_violations", "mesh_ready", "requests_succeed_now"]


def _window(streams, recording, configuration):
    s = session(configuration)
    try:
        return s, *traffic.window(s, streams, recording)
    except (TargetError, ValueError) as e:
        raise failed("observe traffic", e) from None


def success_rate(streams: list[dict], recording: str = "method", configuration: dict = None) -> float:
    """The lowest success rate among `streams` in the observed traffic."""
    _, records, _ = _window(streams, recording, configuration)
    return min(analysis.success_rate(r) for r in records.values())


def failed_requests(streams: list[dict], recording: str = "method", after: str = "fault-start",
                    configuration: dict = None) -> int:
    """Requests of `streams` that failed, counting only those started once event `after`
    happened (all of them when it did not: the fresh burst before the method)."""
    s, records, _ = _window(streams, recording, configuration)
    since = s.first(after) if after else None
    return sum(analysis.failures(r, since) for r in records.values())


def recovery_seconds(streams: list[dict], recording: str = "method", since: str = "fault-start",
                     configuration: dict = None) -> float:
    """The longest time any of `streams` took from event `since` (the fault's start, or its end:
    fault-end) to its last run of successes (0 when none failed; 3600 when one still failed at
    the end)."""
    s, records, _ = _window(streams, recording, configuration)
    worst = max(analysis.recovery_seconds(r, s.first(since)) for r in records.values())
    return 3600.0 if math.isinf(worst) else worst


def max_latency_seconds(streams: list[dict], recording: str = "method", configuration: dict = None) -> float:
    """The longest any request of `streams` took, failed ones included: a call that fails must
    fail within its timeout, not hang."""
    _, records, _ = _window(streams, recording, configuration)
    return round(max((lat for r in records.values() for _, lat, _ in r), default=0.0), 3)


def plaintext_segments(node: int = 1, port: int = 80, streams: list[dict] = (), configuration: dict = None) -> int:
    """TCP segments carrying data to or from the application `port` on `node`'s network: traffic
    that bypassed the mesh (mesh traffic between pods is HBONE on 15008). Judges the method's
    capture (capture-<node>.pcap) once it exists, else a capture around a fresh burst of `streams`.
    -1 when the target cannot capture packets (then plaintext_connections_at_servers is the check)."""
    s = session(configuration)
    name = node_name(s, node)
    path = s.out / f"capture-{name}.pcap"
    try:
        if path.exists():
            data = path.read_bytes()
        else:
            capture = s.target.capture(name, f"tcp port {port}")
            try:
                traffic.run_streams(s, list(streams), 0.5, 0.05, 2.0)
            finally:
                data = capture.stop()
        leaks = [seg for seg in pcap.tcp_segments(data) if seg.payload and port in (seg.sport, seg.dport)]
    except NotSupported as e:
        log.warning("no wire check on the %s target: %s", s.kind, e)
        return -1
    except (TargetError, pcap.PcapError) as e:
        raise failed(f"watch the wire of node {node}", e) from None
    for seg in leaks[:3]:
        log.warning("plaintext on %s: %s:%s -> %s:%s %r", name, seg.src, seg.sport, seg.dst, seg.dport, seg.payload[:60])
    return len(leaks)


def _plaintext_inbound(s, node_names: list[str]) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for name in node_names:
        for family in text_string_to_metric_families(s.target.metrics(name)):
            total += sum(x.value for x in family.samples if x.name == "istio_tcp_connections_opened_total"
                         and x.labels.get("reporter") == "destination"
                         and x.labels.get("destination_workload_namespace") == world.NAMESPACE
                         and x.labels.get("connection_security_policy") != "mutual_tls")
    return total


def plaintext_connections_at_servers(streams: list[dict] = (), configuration: dict = None) -> int:
    """The servers' view of the source: connections the node proxies of every node accepted for
    the experiment's pods WITHOUT mutual TLS (Istio's istio_tcp_connections_opened_total,
    reporter=destination, connection_security_policy other than mutual_tls) since the steady state
    was first probed. Before the method: those opened across a fresh burst of `streams`."""
    s = session(configuration)
    baseline = s.out / "plaintext-baseline.json"
    try:
        nodes = s.target.nodes()[:2]
        if not baseline.exists():
            start = _plaintext_inbound(s, nodes)
            traffic.run_streams(s, list(streams), 0.5, 0.05, 2.0)
            end = _plaintext_inbound(s, nodes)
            baseline.write_text(json.dumps(end))
            return int(end - start)
        return int(_plaintext_inbound(s, nodes) - json.loads(baseline.read_text()))
    except TargetError as e:
        raise failed("read the node proxies' connection metrics", e) from None


def held_connection_violations(recording: str = "held", drain_seconds: float = 5, slack: float = 1.5,
                               configuration: dict = None) -> int:
    """0 when the long-lived connection of `recording` (if the method held one) lived on after the
    graceful restart until the drain deadline and ended then; 1 when it was cut earlier, outlived
    the deadline by more than `slack`, or never saw the restart."""
    s = session(configuration)
    path = s.out / f"held-{recording}.json"
    fault = s.first("fault-start")
    if not path.exists() or fault is None:
        return 0
    held = json.loads(path.read_text())
    drain_seconds, slack = float(drain_seconds), float(slack)
    ended_after = held["ended"] - fault
    last_byte = (held["chunks"][-1][0] - fault) if held["chunks"] else -math.inf
    ok = (held["started"] < fault and drain_seconds - slack <= ended_after <= drain_seconds + slack
          and last_byte >= drain_seconds - slack - 1 and held["outcome"] != "timeout")
    log.info("held connection: %s %.2fs after the fault (last byte at %.2fs; drain deadline %gs)",
             held["outcome"], ended_after, last_byte, drain_seconds)
    return 0 if ok else 1


def mesh_ready(configuration: dict = None) -> bool:
    """Every node runs a Ready ztunnel and istiod is Ready (chaosk8s' daemon_set_fully_available
    and pods_in_phase on the kubernetes target)."""
    s = session(configuration)
    t = s.target
    try:
        if s.kind == "kubernetes":
            from chaosk8s.daemonset.probes import daemon_set_fully_available
            from chaosk8s.pod.probes import pods_in_phase
            return bool(daemon_set_fully_available("ztunnel", t.MESH_NAMESPACE)
                        and pods_in_phase("app=istiod", "Running", t.MESH_NAMESPACE))
        ztunnels = t.pods(t.MESH_NAMESPACE, t.ZTUNNEL_SELECTOR)
        return ({p.node for p in ztunnels if p.ready} >= set(t.nodes())
                and any(p.ready for p in t.pods(t.MESH_NAMESPACE, {"app": "istiod"})))
    except TargetError as e:
        raise failed("check the mesh", e) from None


def requests_succeed_now(streams: list[dict], count: int = 5, configuration: dict = None) -> float:
    """The lowest success rate of a fresh burst of `count` requests per stream, made now."""
    s = session(configuration)
    try:
        fresh = traffic.run_streams(s, streams, count * 0.05 + 2, 0.05, 2.0)
    except (TargetError, ValueError) as e:
        raise failed("send fresh requests", e) from None
    return min(analysis.success_rate(r["records"][:count]) for r in fresh.values())
