"""One load run: set up the paths on a Target, run Locust in the client pods on one shared
timetable, sample the proxies' CPU and memory at every slot's edges, collect the results.

The timetable: a warm-up round (each path once, `warmup_s`, not counted), then `rounds` rounds;
in each, every available path gets `slot_s` seconds, in an order rotated by one per round, with
`GAP_S` between slots for the answers still in flight. Each client pod runs one Locust process
(`Target.locust_argv`, via `Target.exec`, so inside the pod's network namespace) that sends only
in its own paths' slots. Everything is bounded: the timetable's length is known before the start
and every exec has a timeout just above it.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from conformance.targets.base import PodRef, TargetError, wait_until
from load import interpreter, scenario, sidecar_proof

GAP_S = 0.15
#: Locust's start (gevent, imports) on a busy 2-core machine; the warm-up round absorbs a late one
START_MARGIN_S = 6.0
MAX_RUN_S = 600.0


@dataclass
class Options:
    rate: float = 200.0          # offered requests/s on the path whose slot it is
    users: int = 8               # Locust users per process = keep-alive connections per path
    payload: int = 1024          # response body bytes
    slot_s: float = 3.0
    rounds: int = 3
    warmup_s: float = 1.5
    start_margin_s: float = START_MARGIN_S
    out: Path = Path("out/load")
    run: str = ""

    def check(self) -> None:
        problems = []
        if not 1 <= self.rate <= 20000:
            problems.append(f"--rate {self.rate:g}: choose 1..20000 requests/s")
        if not 1 <= self.users <= 256:
            problems.append(f"--users {self.users}: choose 1..256")
        if not 0 <= self.payload <= 1 << 20:
            problems.append(f"--payload {self.payload}: choose 0..1048576 bytes")
        if not 0.5 <= self.slot_s <= 60 or not 1 <= self.rounds <= 50 or not 0.2 <= self.warmup_s <= 30:
            problems.append("--slot-seconds 0.5..60, --rounds 1..50 and --warmup-seconds 0.2..30")
        if self.duration(len(scenario.PATHS)) > MAX_RUN_S:
            problems.append(f"the timetable would take {self.duration(len(scenario.PATHS)):.0f} s; "
                            f"keep it under {MAX_RUN_S:.0f} s (fewer --rounds or shorter --slot-seconds)")
        if problems:
            raise ValueError("; ".join(problems))

    def duration(self, paths: int) -> float:
        return paths * (self.warmup_s + GAP_S) + self.rounds * paths * (self.slot_s + GAP_S)


@dataclass
class Slot:
    start: float
    end: float
    path: str
    warm: bool


def timetable(paths: list[str], opts: Options, start: float) -> list[Slot]:
    slots, t = [], start
    for name in paths:
        slots.append(Slot(t, t + opts.warmup_s, name, True))
        t += opts.warmup_s + GAP_S
    for r in range(opts.rounds):
        for name in paths[r % len(paths):] + paths[:r % len(paths)]:
            slots.append(Slot(t, t + opts.slot_s, name, False))
            t += opts.slot_s + GAP_S
    return slots


@dataclass
class RunResult:
    paths: list                     # scenario.LoadPath, in order
    results: dict                   # path -> exported Recorder entry (locustfile)
    usage: dict                     # path -> {proxy pod label: {"cpu_s", "rss_max"}}
    conditions: dict
    locust_files: dict = field(default_factory=dict)   # client label -> {file name: text}


# -- setting up ------------------------------------------------------------------------------

def _own_addresses(target, namespaces: tuple[str, ...]) -> set[str]:
    out = set()
    for ns in namespaces:
        svc = target.get("Service", ns, "server") if ns in scenario.server_namespaces(namespaces) else None
        if svc is None:
            out.update(p.ip for p in target.pods(ns) if p.ip)
            continue
        out.update(svc["spec"].get("clusterIP") and [svc["spec"]["clusterIP"]] or [])
        out.update(p.ip for p in target.pods(ns) if p.ip)
    return out


def setup(target, opts: Options, log=print) -> tuple[list[scenario.Placed], list]:
    nodes = target.nodes()
    if len(nodes) < 2:
        raise TargetError(f"the load needs two nodes (client on one, server on the other); the cluster has {nodes}")
    node_a, node_b = nodes[0], nodes[1]
    log(f"setting up the paths: clients on {node_a}, servers on {node_b}")
    names = scenario.namespaces_for(target)
    target.apply(scenario.namespaces(names) + scenario.services(names))
    vip = wait_until(lambda: (target.get("Service", scenario.DIRECT, "server") or {}).get("spec", {}).get("clusterIP"),
                     30, 0.2, "a ClusterIP for Service load-direct/server")
    target.apply(scenario.workloads(target, node_a, node_b, vip, names))
    for ns in names:
        target.wait_ready(ns, timeout=120)
    allowed = _own_addresses(target, names)
    placed = []
    for path in scenario.paths_for(target):
        if path.unavailable:
            placed.append(scenario.Placed(path))
            continue
        client = _only_pod(target, *path.client)
        if path.local_port:
            url = f"http://127.0.0.1:{path.local_port}/bytes/{opts.payload}"
        else:
            svc_ip = target.get("Service", path.server[0], path.server[1])["spec"]["clusterIP"]
            if svc_ip not in allowed:
                raise TargetError(f"path {path.name}: {svc_ip} is no address of the load's own namespaces")
            url = f"http://{svc_ip}:{scenario.APP_PORT}/bytes/{opts.payload}"
        placed.append(scenario.Placed(path, client, url))
    sidecars = _sidecar_pods(target, placed)
    proxies = _proxy_pods(target, node_a, node_b, names) + [
        ("sidecar", f"sidecar {side}", pod, scenario.SIDECAR_CONTAINER) for side, pod in sidecars.items()]
    for p in placed:
        if p.client_pod is None:
            continue
        if p.path.name == "sidecar":
            before = sidecar_proof.counts(target, sidecars["client"], sidecars["server"])
            _wait_path(target, p, log)
            # each probe is its own connection: 3 answers = 3 requests and 3 connections
            sidecar_proof.require_through(
                sidecar_proof.counts(target, sidecars["client"], sidecars["server"]).since(before), 3, 3,
                f"the readiness probe from pod {p.client_pod.namespace}/{p.client_pod.name}")
        else:
            _wait_path(target, p, log)
    return placed, proxies


def _sidecar_pods(target, placed: list[scenario.Placed]) -> dict:
    """{"client": pod, "server": pod} of the sidecar path, checked to be injected; {} without it."""
    path = next((p for p in placed if p.path.name == "sidecar" and p.client_pod is not None), None)
    if path is None:
        return {}
    pods = {"client": path.client_pod, "server": _only_pod(target, path.path.server[0], "server")}
    sidecar_proof.require_injected(list(pods.values()))
    return pods


def _only_pod(target, namespace: str, app: str):
    pods = [p for p in target.pods(namespace, {"app": app}) if p.ready]
    if len(pods) != 1:
        raise TargetError(f"expected one Ready pod app={app} in namespace {namespace}, found {len(pods)}")
    return pods[0]


def _proxy_pods(target, node_a: str, node_b: str, names: tuple[str, ...]) -> list[tuple[str, str, object, str | None]]:
    """(role, label, pod, container) of every proxy whose CPU and memory the run samples."""
    out = [("ztunnel", f"ztunnel {node_a}", target.ztunnel_pod(node_a), None),
           ("ztunnel", f"ztunnel {node_b}", target.ztunnel_pod(node_b), None)]
    for pod in target.waypoint_pods(scenario.WAYPOINT_NS, scenario.WAYPOINT):
        out.append(("waypoint", f"waypoint {pod.node}", pod, None))
    if scenario.ENVOY_WAYPOINT_NS in names:
        for pod in target.waypoint_pods(scenario.ENVOY_WAYPOINT_NS, scenario.WAYPOINT):
            out.append(("envoy-waypoint", f"Envoy waypoint {pod.node}", pod, None))
    out.append(("envoy", "envoy client", _only_pod(target, scenario.DIRECT, "client"), "envoy"))
    out.append(("envoy", "envoy server", _only_pod(target, scenario.DIRECT, "server"), "envoy"))
    return out


_GET = ("import sys, urllib.request\n"
        "try:\n"
        "    r = urllib.request.urlopen(sys.argv[1], timeout=3)\n"
        "    print(r.status, len(r.read()), r.headers.get('x-saw-request-id'))\n"
        "except Exception as e:\n"
        "    print('error', e)\n")


def _wait_path(target, placed: scenario.Placed, log) -> None:
    """3 consecutive whole answers within 30 s (the mesh's config reaches every proxy), each
    through an L7 proxy (the echo saw an x-request-id) exactly when the path has one (a
    waypoint or a sidecar)."""
    want = f"200 {placed_payload(placed.url)} {'yes' if scenario.l7(placed.path) else '-'}"
    streak, deadline = 0, time.monotonic() + 30
    last = ""
    while streak < 3:
        if time.monotonic() > deadline:
            raise TargetError(f"path {placed.path.name}: {placed.url} from pod {placed.client_pod.namespace}/"
                              f"{placed.client_pod.name} did not answer as expected ({want!r}: status, bytes, x-request-id seen) "
                              f"3 times in a row within 30 s; last: {last!r}")
        last = target.exec(placed.client_pod, ["python3", "-c", _GET, placed.url], timeout=10).stdout.strip()
        streak = streak + 1 if last == want else 0
        if streak < 3:
            time.sleep(0.1)
    log(f"  {placed.path.name}: {placed.url} answers")


def placed_payload(url: str) -> int:
    return int(url.rsplit("/", 1)[1])


# -- running ---------------------------------------------------------------------------------

def run(target, opts: Options, placed: list[scenario.Placed], proxies: list, log=print) -> RunResult:
    active = [p for p in placed if p.client_pod is not None]
    start = time.time() + opts.start_margin_s
    slots = timetable([p.path.name for p in active], opts, start)
    end = slots[-1].end
    by_client: dict[PodRef, list[scenario.Placed]] = {}
    for p in active:
        by_client.setdefault(p.client_pod, []).append(p)
    sidecars = {label.split()[-1]: pod for role, label, pod, _ in proxies if role == "sidecar"}
    sidecar_before = sidecar_proof.counts(target, sidecars["client"], sidecars["server"]) if sidecars else None
    load_before = os.getloadavg()
    sampler = _Sampler(target, proxies, slots)
    threads, outcomes = [], {}
    run_dir = f"/tmp/ac-load-{opts.run}"
    for client, paths in by_client.items():
        label = f"{client.namespace}-{paths[0].path.client[1]}"
        names = {p.path.name for p in paths}
        table = {"paths": {p.path.name: p.url for p in paths},
                 "slots": [[s.start, s.end, s.path, s.warm] for s in slots if s.path in names]}
        prefix = f"{run_dir}/{label}/locust"
        argv = [*target.locust_argv(scenario.LOCUSTFILE), "--headless", "-u", str(opts.users), "-r", str(opts.users),
                "-t", f"{int(end - time.time() + 30)}s", "--stop-timeout", "2", "--only-summary",
                "--ac-rate", str(opts.rate), "--ac-payload", str(opts.payload),
                "--ac-timetable", json.dumps(table), "--ac-results", f"{prefix}-hdr.json",
                "--csv", prefix, "--html", f"{prefix}.html", "--loglevel", "WARNING"]
        mkdir = ["mkdir", "-p", f"{run_dir}/{label}"]

        def go(client=client, label=label, argv=argv, mkdir=mkdir):
            try:
                target.exec(client, mkdir, timeout=20)
                outcomes[label] = (client, target.exec(client, argv, timeout=end - time.time() + 60))
            except Exception as e:  # reported below, with the pod it happened in
                outcomes[label] = (client, e)
        threads.append(threading.Thread(target=go, daemon=True))
    log(f"running {len(active)} paths in {len(by_client)} Locust processes: warm-up {opts.warmup_s:g} s each, "
        f"then {opts.rounds} rounds of {opts.slot_s:g} s per path at {opts.rate:g} requests/s "
        f"({end - time.time():.0f} s)")
    for t in threads:
        t.start()
    sampler.start()
    for t in threads:
        t.join(timeout=max(1.0, end - time.time() + 90))
    sampler.join(timeout=10)
    load_after = os.getloadavg()
    results, files = {}, {}
    for label, (client, outcome) in sorted(outcomes.items()):
        if isinstance(outcome, Exception):
            raise TargetError(f"Locust in pod {client.namespace}/{client.name} failed: {outcome}")
        prefix = f"{run_dir}/{label}/locust"
        got = target.exec(client, ["cat", f"{prefix}-hdr.json"], timeout=20)
        if got.returncode != 0:
            raise TargetError(f"Locust in pod {client.namespace}/{client.name} wrote no results (exit "
                              f"{outcome.returncode}): {(outcome.stderr or outcome.stdout).strip()[-800:]}")
        results.update(json.loads(got.stdout)["paths"])
        files[label] = {}
        for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv", "_exceptions.csv", ".html"):
            text = target.exec(client, ["cat", f"{prefix}{suffix}"], timeout=20)
            if text.returncode == 0:
                files[label][f"locust{suffix}"] = text.stdout
        files[label]["locust-stdout.txt"] = outcome.stdout + outcome.stderr
        target.exec(client, ["rm", "-rf", f"{run_dir}/{label}"], timeout=20)
    conditions = {
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cores": os.cpu_count(), "interpreter": interpreter.describe(), "rate": opts.rate, "users": opts.users, "payload": opts.payload,
        "connections_per_path": opts.users, "slot_seconds": opts.slot_s, "rounds": opts.rounds,
        "warmup_seconds": opts.warmup_s, "client_node": active[0].client_pod.node if active else "",
        "server_node": next((p.node for p in target.pods(scenario.DIRECT, {"app": "server"})), ""),
        "sampling_errors": sampler.errors[:5],
    }
    if sidecar_before is not None and "sidecar" in results:
        conditions["sidecar_through"] = _sidecar_evidence(target, sidecars, sidecar_before, results["sidecar"])
    return RunResult([p.path for p in placed], results, sampler.per_path(), conditions, files)


def _sidecar_evidence(target, sidecars: dict, before, result: dict) -> dict:
    """Whether Locust's own requests (not only the readiness probe's) went through both sidecars:
    Locust runs in the client pod's network namespace like any app process there, so its
    connections must be captured to 15001 too; the server's sidecar must have counted every
    request Locust recorded (warm-up ones come on top), over mutual TLS from the client."""
    delta = sidecar_proof.counts(target, sidecars["client"], sidecars["server"]).since(before)
    problems = sidecar_proof.shortfall(delta, result["completed"], 1)
    return {"locust_requests": result["completed"], "server_sidecar_mtls_requests": delta.server_requests,
            "client_sidecar_hbone_connections": delta.client_connections, "problems": problems}


class _Sampler(threading.Thread):
    """Reads every proxy's CPU time and memory at each measured slot's start and end."""

    def __init__(self, target, proxies: list, slots: list[Slot]):
        super().__init__(daemon=True)
        self.target, self.proxies = target, proxies
        self.slots = [s for s in slots if not s.warm]
        self.samples: list[tuple[Slot, dict, dict]] = []
        self.errors: list[str] = []

    def _sample(self) -> dict:
        out = {}
        by_container: dict = {}
        for role, label, pod, container in self.proxies:
            by_container.setdefault(container, []).append((label, pod))
        for container, entries in by_container.items():
            usage = self.target.pod_usage([pod for _, pod in entries], container=container)
            for label, pod in entries:
                out[label] = usage[pod]
        return out

    def run(self):
        for slot in self.slots:
            try:
                time.sleep(max(0.0, slot.start - time.time()))
                before = self._sample()
                time.sleep(max(0.0, slot.end - time.time()))
                after = self._sample()
                self.samples.append((slot, before, after))
            except Exception as e:  # a missing sample leaves a gap, said in the conditions
                self.errors.append(f"{slot.path}: {e}")

    def per_path(self) -> dict:
        roles = {label: role for role, label, _, _ in self.proxies}
        out: dict = {}
        for slot, before, after in self.samples:
            entry = out.setdefault(slot.path, {})
            for label in after:
                e = entry.setdefault(label, {"role": roles[label], "cpu_s": 0.0, "rss_max": 0, "seconds": 0.0})
                e["cpu_s"] += max(0.0, after[label].cpu_seconds - before[label].cpu_seconds)
                e["rss_max"] = max(e["rss_max"], after[label].rss_bytes, before[label].rss_bytes)
                e["seconds"] += slot.end - slot.start
        return out


def teardown(target) -> None:
    for ns in scenario.NAMESPACES:
        try:
            target.delete_namespace(ns)
        except TargetError:
            pass

