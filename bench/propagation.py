"""Propagation time: from `cluster apply` / `delete` of a DENY policy to its enforcement by the real
ztunnels of a local cluster.

    .venv/bin/python bench/propagation.py [--sizes 10,1000] [--policies 100] [--samples 10]
                                          [--interval 0.01] [--name tb-prop] [--profile]

Per size N it starts a real 2-node cluster (`up(virtual_nodes=...)`) and applies: in the ambient
namespace `prop`, a client pod (curl image, sleep) on node-0 and a `tcp-echo` server on node-1
behind the Service `echo`; N-2 workloads as Deployments (with a Service each) on virtual nodes
(docs/INTERNALS.md, "Virtual nodes") in ambient namespaces `sim-*`; P AuthorizationPolicies
selecting only those simulated workloads, so they shape every ztunnel's policy set but not the
probe pair. Istiod derives every workload and service and both ztunnels hold them all.

A probe (this file's `probe` mode, run with `ip netns exec` in the client pod's namespace, so the
client's ztunnel captures it) opens a new TCP connection to the Service every `--interval`
seconds, sends a line and records when the attempt started and its verdict: allowed (the echo
came back) or denied (reset, EOF, refused); a timeout (1 s) is counted apart, as an overloaded
proxy looks the same. Each sample then:
  1. T0 = the moment just before the apply request of a DENY policy for client -> echo;
     apply->enforced = start of the first denied attempt after the last allowed one (started
     after T0): from then on every attempt was denied;
  2. T1 = just before the delete request; delete->enforced likewise, for allowed.
The attempt's start time is what counts, and the search waits until every attempt started
before the found one has finished. "first denied/allowed" (stderr) is the earliest such attempt;
attempts between it and the settled one are "flaps" (a proxy lagging behind its backlog
authorizes CONNECTs later than their start). Also reported per size: apply -> last ztunnel ack
(istiod's debug `proxy_config`: sentAt/ackedAt), how many ztunnels acked, timeouts, the probe's
round trip before any change, the snapshot size and istiod's/the daemon's CPU per flip. With
`--profile` it also times, on the cluster's own store content, istiod's derive + encode and a
ztunnel's decode + state rebuild, with a cProfile of one round.

Everything is bounded: each wait has a deadline, the probe stops after --probe-seconds or when
the bench closes its stdin, and the cluster is torn down at the end (also on failure).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APP_NS = "prop"
SIM_NAMESPACES = 10
PER_DEPLOYMENT = 50
ECHO_PORT = 9000
DENY_NAME = "deny-probe"
ATTEMPT_TIMEOUT = 1.0
ALLOWED, DENIED, LOST = "allowed", "denied", "lost"


def opposite(outcome: str) -> str:
    return DENIED if outcome == ALLOWED else ALLOWED


# ---------------------------------------------------------------------------------- the probe
async def probe(target: str, interval: float, max_seconds: float, max_inflight: int) -> None:
    """Print one JSON line per finished attempt: {"i", "s" (start), "e" (end), "ok", "why"}."""
    host, port = target.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1024) else None)
    inflight: set[asyncio.Task] = set()

    async def attempt(i: int) -> None:
        started = time.monotonic()
        payload = f"probe {i}\n".encode()
        ok, why = False, "ok"
        writer = None
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(payload)
                await writer.drain()
                ok = await reader.readexactly(len(payload)) == payload
                why = "ok" if ok else "garbled"
        except asyncio.IncompleteReadError:
            why = "eof"
        except TimeoutError:
            why = "timeout"
        except OSError as exc:
            why = type(exc).__name__
        finally:
            if writer is not None:
                writer.close()
        sys.stdout.write(json.dumps({"i": i, "s": started, "e": time.monotonic(), "ok": ok, "why": why}) + "\n")
        sys.stdout.flush()

    deadline = time.monotonic() + max_seconds
    next_at = time.monotonic()
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        if len(inflight) < max_inflight:
            task = loop.create_task(attempt(i))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            i += 1
        next_at += interval
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
        except TimeoutError:
            pass
    if inflight:
        await asyncio.wait(inflight, timeout=ATTEMPT_TIMEOUT + 1)


class Probe:
    """The probe process in the client pod's namespace and the attempts it has reported so far."""

    def __init__(self, netns: str, target: str, interval: float, max_seconds: float):
        self.records: list[dict] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, os.path.abspath(__file__), "probe",
             "--target", target, "--interval", str(interval), "--max-seconds", str(max_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            # A timeout is no verdict: an overloaded proxy looks the same as a dropped SYN.
            record["outcome"] = ALLOWED if record["ok"] else LOST if record["why"] == "timeout" else DENIED
            self.records.append(record)

    def since(self, t: float) -> list[dict]:
        return [r for r in list(self.records) if r["s"] >= t]

    def settled(self, t: float, outcome: str, until: float) -> dict | None:
        """The first attempt with `outcome` after the last one with the opposite verdict, among
        attempts started in [t, until): from then on the new state held for every attempt."""
        window = sorted((r for r in self.since(t) if r["s"] < until), key=lambda r: r["s"])
        other = [r["s"] for r in window if r["outcome"] == opposite(outcome)]
        after = [r for r in window if r["outcome"] == outcome and (not other or r["s"] > max(other))]
        return after[0] if after else None

    def first(self, t: float, outcome: str, deadline: float) -> dict | None:
        """The earliest-started attempt from `t` on with `outcome`; waits until every attempt
        started before it has reported, so a slow earlier one cannot be missed."""
        found = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: the probe exited: {self.proc.stderr.read().strip()[-400:]}")
            matches = [r for r in self.since(t) if r["outcome"] == outcome]
            if matches:
                found = min(matches, key=lambda r: r["s"])
                if time.monotonic() > found["s"] + ATTEMPT_TIMEOUT + 0.2:
                    return min([r for r in self.since(t) if r["outcome"] == outcome], key=lambda r: r["s"])
            time.sleep(0.01)
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(ATTEMPT_TIMEOUT + 3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


# -------------------------------------------------------------------------------- the objects
def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"istio.io/dataplane-mode": "ambient"}}}


def service_account(name: str, ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def probe_pair() -> list[dict]:
    return [
        namespace(APP_NS), service_account("client", APP_NS), service_account("echo", APP_NS),
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "client", "namespace": APP_NS, "labels": {"app": "client"}},
         "spec": {"serviceAccountName": "client", "nodeSelector": {"kubernetes.io/hostname": "node-0"},
                  "containers": [{"name": "main", "image": "curlimages/curl", "command": ["/bin/sleep", "3650d"]}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "echo", "namespace": APP_NS, "labels": {"app": "echo"}},
         "spec": {"serviceAccountName": "echo", "nodeSelector": {"kubernetes.io/hostname": "node-1"},
                  "containers": [{"name": "echo", "image": "ambient-conformance/tcp-echo",
                                  "ports": [{"name": "tcp", "containerPort": ECHO_PORT}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": APP_NS},
         "spec": {"selector": {"app": "echo"}, "ports": [{"name": "tcp", "port": ECHO_PORT, "targetPort": "tcp"}]}},
    ]


def simulated(workloads: int) -> list[dict]:
    """`workloads` pods on virtual nodes as Deployments of about PER_DEPLOYMENT, one Service each."""
    from reference_impl.cluster.virtual import KWOK_TOLERATION
    deployments = max(2, math.ceil(workloads / PER_DEPLOYMENT))
    objects = [namespace(f"sim-{n}") for n in range(min(SIM_NAMESPACES, deployments))]
    for d in range(deployments):
        ns = f"sim-{d % SIM_NAMESPACES}"
        replicas = workloads // deployments + (1 if d < workloads % deployments else 0)
        labels = {"app": f"app-{d}"}
        objects += [
            service_account(f"sa-{d}", ns),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"app-{d}", "namespace": ns},
             "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels},
                                   "spec": {"serviceAccountName": f"sa-{d}", "nodeSelector": {"type": "kwok"},
                                            "tolerations": [KWOK_TOLERATION],
                                            "containers": [{"name": "app", "image": "ambient-conformance/tcp-echo",
                                                            "ports": [{"name": "http", "containerPort": 8080}]}]}}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"app-{d}", "namespace": ns},
             "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        ]
    return objects


def background_policies(count: int, deployments: int) -> list[dict]:
    """L4 policies of the usual shapes (ALLOW by principal, DENY by namespace + port, ALLOW by
    ipBlock) selecting simulated workloads only."""
    out = []
    for i in range(count):
        d = i % deployments
        ns, other = f"sim-{d % SIM_NAMESPACES}", f"sim-{(d + 1) % SIM_NAMESPACES}"
        if i % 3 == 0:
            action, rules = "ALLOW", [{"from": [{"source": {"principals": [f"cluster.local/ns/{other}/sa/sa-{i}"]}}],
                                       "to": [{"operation": {"ports": ["8080"]}}]}]
        elif i % 3 == 1:
            action, rules = "DENY", [{"from": [{"source": {"namespaces": [other]}}],
                                      "to": [{"operation": {"ports": [str(9000 + i)]}}]}]
        else:
            action, rules = "ALLOW", [{"from": [{"source": {"ipBlocks": [f"10.245.{i % 64 * 4}.0/22"]}}]}]
        out.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                    "metadata": {"name": f"bg-{i}", "namespace": ns},
                    "spec": {"selector": {"matchLabels": {"app": f"app-{d}"}}, "action": action, "rules": rules}})
    return out


DENY_POLICY = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": DENY_NAME, "namespace": APP_NS},
               "spec": {"selector": {"matchLabels": {"app": "echo"}}, "action": "DENY",
                        "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/{APP_NS}/sa/client"]}}]}]}}


# ----------------------------------------------------------------------------- the measurement
def until(predicate, what: str, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


class Mesh:
    """istiod's view of the ztunnels (its debug requests)."""

    def __init__(self, cluster: str):
        from reference_impl.cluster import naming
        self.sock = os.path.join(naming.run_dir(cluster), "istiod.sock")
        self.nodes = ["node-0", "node-1"]

    def proxy_config(self, node: str) -> dict | None:
        from reference_impl.xds import debug_query
        try:
            return debug_query(self.sock, "proxy_config", timeout=10, node=node)
        except Exception:  # not connected yet / istiod restarting: the caller polls
            return None

    def acked(self, check) -> list[dict]:
        """Status of the ztunnels whose acknowledged config passes `check`."""
        out = []
        for node in self.nodes:
            status = self.proxy_config(node)
            if status and status.get("config") and status["ackedVersion"] == status["sentVersion"] \
                    and check(status["config"]):
                out.append(status)
        return out


def has_policy(config: dict) -> bool:
    return any(p.get("name") == DENY_NAME and p.get("namespace") == APP_NS for p in config.get("policies") or ())


def ztunnel_captured(c, node_pods: dict[str, str]) -> bool:
    for node, pod in node_pods.items():
        r = subprocess.run(["ip", "netns", "exec", c.node_netns(node), "curl", "-s", "--max-time", "5",
                            "http://127.0.0.1:15000/config_dump"], capture_output=True, text=True, timeout=15)
        try:
            captured = json.loads(r.stdout).get("capturedPods") or []
        except ValueError:
            return False
        if not any(p["namespace"] == APP_NS and p["name"] == pod for p in captured):
            return False
    return True


def run_size(args, size: int) -> dict:
    from reference_impl.cluster import client as cluster
    workloads = size - 2
    virtual_nodes = max(1, math.ceil(workloads / 500))
    deployments = max(2, math.ceil(workloads / PER_DEPLOYMENT))
    cluster.down(args.name)
    started = time.monotonic()
    c = cluster.up(args.name, nodes=2, virtual_nodes=virtual_nodes, timeout=120)
    probe, failed = None, True
    try:
        c.apply(probe_pair() + simulated(workloads))
        c.apply(background_policies(args.policies, deployments))
        c.wait_ready(120)
        mesh = Mesh(args.name)
        pods = c.list("Pod")
        app_pods = sum(1 for p in pods if p["metadata"]["namespace"] == APP_NS
                       or p["metadata"]["namespace"].startswith("sim-"))
        assert app_pods == size, f"{app_pods} application pods, wanted {size}"

        def full(config):
            apps = sum(1 for w in config.get("workloads") or ()
                       if w["namespace"] == APP_NS or w["namespace"].startswith("sim-"))
            return apps >= size and len(config.get("policies") or ()) >= args.policies
        acked = until(lambda: len(mesh.acked(full)) == 2 and mesh.acked(full),
                      f"both ztunnels to ack {size} workloads and {args.policies} policies", 120, 0.5)
        until(lambda: ztunnel_captured(c, {"node-0": "client", "node-1": "echo"}),
              "the ztunnels to capture the client and the echo server", 60, 0.5)
        config = acked[0]["config"]
        snapshot = {"bytes": len(json.dumps(config, sort_keys=True, separators=(",", ":"))),
                    "workloads": len(config["workloads"]), "services": len(config["services"]),
                    "policies": len(config["policies"]),
                    "policy_errors": sum(1 for p in config["policies"] if p.get("error"))}
        vip = c.get("Service", APP_NS, "echo")["spec"]["clusterIP"]
        probe = Probe(c.pod_netns(APP_NS, "client"), f"{vip}:{ECHO_PORT}", args.interval, args.probe_seconds)
        baseline_from = time.monotonic()
        until(lambda: len(probe.since(baseline_from)) >= 50, "50 probe attempts", 30, 0.05)
        baseline = probe.since(baseline_from)
        if not all(r["outcome"] == ALLOWED for r in baseline[-20:]):
            raise SystemExit(f"bench: the probe does not get through before any policy: "
                             f"{[r['why'] for r in baseline[-20:]]}")
        rtt_ms = statistics.median((r["e"] - r["s"]) * 1000 for r in baseline)
        setup_seconds = time.monotonic() - started
        cpu = CpuMeter(c, args.name)
        cpu.mark()
        time.sleep(BASELINE_SECONDS)  # the mesh's cost of carrying the probe's traffic, for reference
        baseline = cpu.mark()
        samples = []
        for k in range(args.samples):
            samples.append(one_sample(c, mesh, probe, args))
            print(f"  {size} workloads, sample {k + 1}: apply->enforced {samples[-1]['apply_ms']:.0f} ms "
                  f"(first denied {samples[-1]['first_denied_ms']:.0f} ms, {samples[-1]['denied_by']}), "
                  f"delete->enforced {samples[-1]['delete_ms']:.0f} ms "
                  f"(first allowed {samples[-1]['first_allowed_ms']:.0f} ms), "
                  f"apply->acked {samples[-1]['ack_ms']:.0f} ms ({samples[-1]['acked']} ztunnels; "
                  f"istiod sent at {samples[-1]['sent_ms']:.0f} ms, sent->acked {samples[-1]['rebuild_ms']:.0f} ms), "
                  f"flaps {samples[-1]['flaps']}, timeouts {samples[-1]['lost']}", file=sys.stderr, flush=True)
        attempts = len(probe.records)
        spent = cpu.mark()
        # istiod and the daemon carry no probe traffic, so their CPU over the samples is the flips'
        # cost; the ztunnels' is dominated by the probe (see the profile for their rebuild cost).
        cpu_per_flip = {k: (spent[k] - baseline[k] * spent["wall"] / baseline["wall"]) / (2 * len(samples)) * 1000
                        for k in ("istiod", "daemon")}
        probe.stop()
        profile_text = profile(c, args) if args.profile else None
        failed = False
        return {"size": size, "samples": samples, "snapshot": snapshot, "attempts": attempts, "rtt_ms": rtt_ms,
                "cpu_per_flip": cpu_per_flip,
                "setup_s": setup_seconds, "profile": profile_text}
    finally:
        if probe is not None:
            probe.stop()
        if failed and args.keep_on_failure:
            print(f"bench: failed; cluster {args.name!r} kept for inspection "
                  f"(`ambient-conformance cluster down --name {args.name}`)", file=sys.stderr)
        else:
            c.down()


def one_sample(c, mesh: Mesh, probe: Probe, args) -> dict:
    wall0, t0 = time.time(), time.monotonic()
    c.apply([DENY_POLICY])
    denied = probe.first(t0, DENIED, deadline=t0 + args.wait)
    if denied is None:
        raise SystemExit(f"bench: the DENY policy was not enforced within {args.wait:g}s")
    acked = until(lambda: mesh.acked(has_policy), "a ztunnel to ack the DENY policy", args.wait, 0.05)
    ack_ms = (max(s["ackedAt"] for s in acked) - wall0) * 1000
    sent_ms = (max(s["sentAt"] for s in acked) - wall0) * 1000  # istiod: watch, derive, encode, send
    rebuild_ms = max(s["ackedAt"] - s["sentAt"] for s in acked) * 1000  # transfer, ztunnel decode+apply
    held = settle(probe, DENIED)
    enforced = probe.settled(t0, DENIED, until=held)
    flaps = sum(1 for r in probe.since(denied["s"]) if r["outcome"] == ALLOWED and r["s"] < held)
    lost = sum(1 for r in probe.since(t0) if r["outcome"] == LOST and r["s"] < held)

    t1 = time.monotonic()
    c.delete([DENY_POLICY])
    allowed = probe.first(t1, ALLOWED, deadline=t1 + args.wait)
    if allowed is None:
        raise SystemExit(f"bench: deleting the DENY policy did not re-open the path within {args.wait:g}s")
    held = settle(probe, ALLOWED)
    reopened = probe.settled(t1, ALLOWED, until=held)
    flaps += sum(1 for r in probe.since(allowed["s"]) if r["outcome"] == DENIED and r["s"] < held)
    lost += sum(1 for r in probe.since(t1) if r["outcome"] == LOST and r["s"] < held)
    return {"apply_ms": (enforced["s"] - t0) * 1000, "first_denied_ms": (denied["s"] - t0) * 1000,
            "delete_ms": (reopened["s"] - t1) * 1000, "first_allowed_ms": (allowed["s"] - t1) * 1000,
            "ack_ms": ack_ms, "sent_ms": sent_ms, "rebuild_ms": rebuild_ms, "acked": len(acked), "flaps": flaps, "lost": lost, "denied_by": denied["why"]}


def settle(probe: Probe, outcome: str, count: int = 20) -> float:
    """Wait for `count` verdicts from attempts started from now on, all `outcome`; returns the
    start of that window (the attempts before it decide where the flip settled)."""
    start = time.monotonic()

    def verdicts():
        done = [r for r in probe.since(start) if r["outcome"] != LOST]
        return done[:count] if len(done) >= count else None
    window = until(verdicts, f"{count} verdicts after the flip", 30, 0.02)
    wrong = [r["why"] for r in window if r["outcome"] != outcome]
    if wrong:
        raise SystemExit(f"bench: the flip did not hold: {len(wrong)} of {count} later attempts "
                         f"went the other way ({', '.join(sorted(set(wrong)))})")
    return start


# ----------------------------------------------------------------------------------- profiling
BASELINE_SECONDS = 3.0


class CpuMeter:
    """CPU seconds used by istiod, each ztunnel and the cluster daemon between two marks."""

    def __init__(self, c, cluster: str):
        from reference_impl.cluster import naming
        with open(naming.state_path(cluster)) as f:
            self.pids = {"daemon": json.load(f)["daemon"][0]}
        for pod in c.list("Pod", "istio-system"):
            role = "istiod" if pod["metadata"]["name"].startswith("istiod") else pod["spec"]["nodeName"]
            for status in (pod.get("status") or {}).get("containerStatuses") or ():
                if status.get("pid"):
                    self.pids["ztunnel " + role if role != "istiod" else role] = status["pid"]
        self._last: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        ticks = os.sysconf("SC_CLK_TCK")
        out = {"wall": time.monotonic()}
        for name, pid in self.pids.items():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / ticks
            except OSError:
                out[name] = 0.0
        return out

    def mark(self) -> dict[str, float]:
        """Usage since the previous mark (and `wall`, the seconds it covers)."""
        now = self._read()
        last, self._last = self._last, now
        if last is None:
            return {}
        return {k: now[k] - last.get(k, now[k]) for k in now}


def profile(c, args) -> str:
    """Where a policy change's time goes at this size, on the cluster's own store content: istiod's
    derive, ztunnel_config and JSON encoding, then a ztunnel's decoding and state rebuild."""
    import cProfile
    import io
    import pstats

    from reference_impl.controlplane.derive import derive_mesh, ztunnel_config
    from reference_impl.ztunnel.state import State

    objects = c.list()
    objects.append(DENY_POLICY)
    rounds = 5
    timings: dict[str, list[float]] = {"derive_mesh": [], "ztunnel_config": [], "json.dumps": [],
                                        "json.loads": [], "ztunnel State()": []}
    profiler = cProfile.Profile()
    for round_ in range(rounds + 1):
        if round_ == rounds:  # timings without the profiler's overhead, then one profiled round
            profiler.enable()
        t = time.perf_counter()
        mesh = derive_mesh(objects, ["root"])
        timings["derive_mesh"].append(time.perf_counter() - t)
        t = time.perf_counter()
        config = ztunnel_config(mesh)
        timings["ztunnel_config"].append(time.perf_counter() - t)
        t = time.perf_counter()
        text = json.dumps(config, sort_keys=True, separators=(",", ":"))
        timings["json.dumps"].append(time.perf_counter() - t)
        t = time.perf_counter()
        decoded = json.loads(text)
        timings["json.loads"].append(time.perf_counter() - t)
        t = time.perf_counter()
        State(decoded, "node-0")
        timings["ztunnel State()"].append(time.perf_counter() - t)
    profiler.disable()
    out = io.StringIO()
    out.write(f"  one policy change, step by step (median of {rounds}, this process, "
              f"{len(text) / 1024:.0f} KiB snapshot):\n")
    for name, values in timings.items():
        out.write(f"    {name:<18} {statistics.median(values[:rounds]) * 1000:8.1f} ms\n")
    try:
        from reference_impl.cluster import naming
        from reference_impl.xds import debug_query
        live = debug_query(os.path.join(naming.run_dir(args.name), "istiod.sock"), "config_dump", timeout=10)
        out.write(f"    (the running istiod's last derive took {live['deriveSeconds'] * 1000:.1f} ms)\n")
    except Exception as exc:  # informative only
        out.write(f"    (the running istiod's derive time is unknown: {exc})\n")
    out.write("  cProfile of one round, by own time:")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(15)
    return out.getvalue()


# ---------------------------------------------------------------------------------------- main


def report(results: list[dict], args) -> None:
    print(f"propagation to enforcement by the real ztunnels: {args.policies} policies, "
          f"{args.samples} samples per size, probe every {args.interval * 1000:g} ms, {os.cpu_count()} CPUs")
    print(f"{'workloads':>9} {'apply->enforced ms':>19} {'delete->enforced ms':>20} {'apply->acked ms':>16} "
          f"{'ztunnels':>8} {'flaps':>5} {'t/o':>4} {'rtt':>5} {'snapshot':>22}")
    print(f"{'':>9} {'p50':>9} {'max':>9} {'p50':>10} {'max':>9} {'p50':>7} {'max':>8} {'acked':>8} "
          f"{'':>5} {'':>4} {'ms':>5}")
    for r in results:
        s = r["samples"]
        apply_ms, delete_ms, ack_ms = ([x[k] for x in s] for k in ("apply_ms", "delete_ms", "ack_ms"))
        snap = r["snapshot"]
        print(f"{r['size']:>9} {statistics.median(apply_ms):>9.0f} {max(apply_ms):>9.0f} {statistics.median(delete_ms):>10.0f} "
              f"{max(delete_ms):>9.0f} {statistics.median(ack_ms):>7.0f} {max(ack_ms):>8.0f} "
              f"{min(x['acked'] for x in s)}/2{'':>4} {sum(x['flaps'] for x in s):>5} "
              f"{sum(x['lost'] for x in s):>4} {r['rtt_ms']:>5.1f} "
              f"{snap['bytes'] / 1024:>8.0f} KiB ({snap['workloads']}w/{snap['services']}s/{snap['policies']}p)")
    for r in results:
        if r["snapshot"]["policy_errors"]:
            print(f"note: {r['snapshot']['policy_errors']} background policies did not compile at {r['size']}")
        per_flip = ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(r["cpu_per_flip"].items()))
        print(f"at {r['size']} workloads: cluster set-up {r['setup_s']:.0f} s, {r['attempts']} probe attempts; "
              f"CPU per flip (apply or delete), above idle: {per_flip}")
        if r["profile"]:
            print(f"\nprofile at {r['size']} workloads:\n{r['profile']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        parser = argparse.ArgumentParser(prog="propagation.py probe")
        parser.add_argument("probe")
        parser.add_argument("--target", required=True, help="IP:PORT")
        parser.add_argument("--interval", type=float, default=0.005)
        parser.add_argument("--max-seconds", type=float, default=600)
        parser.add_argument("--max-inflight", type=int, default=200)
        a = parser.parse_args()
        asyncio.run(probe(a.target, a.interval, min(a.max_seconds, 3600), a.max_inflight))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000", help="workload counts (>= 3), comma-separated")
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.01,
                        help="seconds between probe connections (each one crosses both ztunnels)")
    parser.add_argument("--wait", type=float, default=30, help="give up on one flip after this many seconds")
    parser.add_argument("--probe-seconds", type=float, default=900, help="the probe stops after this")
    parser.add_argument("--name", default="tb-prop", help="cluster name (torn down at the end)")
    parser.add_argument("--profile", action="store_true", help="also profile derive/encode/rebuild per size")
    parser.add_argument("--keep-on-failure", action="store_true", help="leave the cluster up if a size fails")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        raise SystemExit(f"bench: --sizes {args.sizes!r}: give whole numbers separated by commas") from None
    if any(not 3 <= s <= 5000 for s in sizes) or not 1 <= args.samples <= 100 or not 0 <= args.policies <= 1000 \
            or not 0.001 <= args.interval <= 1:
        raise SystemExit("bench: sizes must be 3..5000, --samples 1..100, --policies 0..1000, --interval 0.001..1")
    from reference_impl.cluster.errors import ClusterError
    try:
        results = [run_size(args, size) for size in sizes]
    except ClusterError as exc:
        raise SystemExit(f"bench: {exc}") from None
    report(results, args)


if __name__ == "__main__":
    main()
