"""Added latency of a waypoint hop, and requests/s per waypoint core.

Starts a 2-node local cluster with one ambient namespace: a client pod on node-0, a server pod on
node-1, a waypoint (Gateway of class istio-waypoint) and two Services that select the same server
pod, one bound to the waypoint (`istio.io/use-waypoint`) and one not. So both paths have the same
client, server, nodes and ztunnels, and differ only by the waypoint:

    L4:  client -> ztunnel A -> HBONE -> ztunnel B -> server
    L7:  client -> ztunnel A -> HBONE -> waypoint (HTTP/1.1 parse, L7 authz, re-originate)
                                       -> HBONE -> ztunnel B -> server

Latency: one keep-alive connection per path from inside the client pod's namespace, single small
requests alternating between the paths (interleaved samples); added latency per waypoint hop =
pXX(L7) - pXX(L4). Throughput: --connections keep-alive connections through the waypoint, each
sending requests back to back for --seconds; requests/s per waypoint core = requests / CPU seconds
the waypoint process used meanwhile (its utime + stime in /proc).

    sudo .venv/bin/python bench/waypoint_hop.py [--requests 2000] [--connections 8] [--seconds 10]
                                                [--profile FILE]   # py-spy of the waypoint meanwhile
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tunnel_bulk import connect_from, pod  # noqa: E402 (the house's bench helpers)

HTTP_PORT = 8080
NS = "bench-waypoint"
BODY = b"ok"


def serve() -> None:
    """The pod side: an HTTP/1.1 keep-alive responder that says whether a proxy re-originated the
    request (an `x-request-id` came with it), stdlib only."""
    def http(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except ConnectionError:   # the measuring side closed its connections hard
                data = b""
            if not data:
                return conn.close()
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                via = b"yes" if b"\r\nx-request-id:" in head.lower() else b"no"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                             b"X-Via-Proxy: " + via + b"\r\n\r\n" + BODY)

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", HTTP_PORT))
    s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=http, args=(c,), daemon=True).start()


def request(sock) -> tuple[float, bytes]:
    """(microseconds, response head) of one GET on a keep-alive connection."""
    t = time.perf_counter()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: waypoint-hop\r\nAccept: */*\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the connection closed before the response")
        got += chunk
    head, body = got.split(b"\r\n\r\n", 1)
    while len(body) < len(BODY):   # every response has the same 2-byte body
        body += sock.recv(4096)
    return (time.perf_counter() - t) * 1e6, head


def manifests() -> list[dict]:
    objs = [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": NS, "labels": {"istio.io/dataplane-mode": "ambient"}}},
            pod("client", NS, "node-0"), pod("server", NS, "node-1"),
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
             "metadata": {"name": "waypoint", "namespace": NS},
             "spec": {"gatewayClassName": "istio-waypoint",
                      "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}]
    for name, labels in (("server-l4", {}), ("server-l7", {"istio.io/use-waypoint": "waypoint"})):
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": NS, "labels": labels},
                     "spec": {"selector": {"app": "server"},
                              "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT}]}})
    return objs


def interleaved(socks: dict, requests: int, max_seconds: float, one) -> dict[str, list[float]]:
    """Microseconds of `requests` single requests per path, alternating the paths' order each round
    (so drift on the machine lands on every path alike); `one(sock)` -> microseconds."""
    samples = {name: [] for name in socks}
    stop = time.monotonic() + max_seconds
    for i in range(requests):
        if time.monotonic() > stop:
            break
        for name in (list(socks) if i % 2 == 0 else list(socks)[::-1]):
            samples[name].append(one(socks[name]))
    return samples


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's threads, from the scheduler's nanosecond clock
    (/proc/PID/task/*/schedstat; utime + stime count 10 ms ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:   # a thread that ended meanwhile
            pass
    return total / 1e9


def waypoint_pid(c) -> int:
    for p in c.list("Pod", NS):
        if p["metadata"]["name"].startswith("waypoint"):
            for status in p.get("status", {}).get("containerStatuses") or ():
                if status.get("pid"):
                    return int(status["pid"])
    raise SystemExit("no running waypoint pod with a pid in namespace " + NS)


def wait_for_paths(netns: str, vips: dict[str, str], deadline_s: float = 60) -> None:
    """Until server-l7 answers through the waypoint and server-l4 around it."""
    end = time.monotonic() + deadline_s
    while True:
        seen = {}
        for name, vip in vips.items():
            try:
                s = connect_from(netns, (vip, HTTP_PORT), deadline_s=5)
                seen[name] = b"x-via-proxy: yes" in request(s)[1].lower()
                s.close()
            except OSError:
                seen[name] = None
        if seen == {"server-l4": False, "server-l7": True}:
            return
        if time.monotonic() > end:
            raise SystemExit(f"the paths never settled (through a proxy?): {seen}")
        time.sleep(0.5)


def throughput(netns: str, vip: str, connections: int, seconds: float, pid: int,
               profile: str | None = None, syscalls: str | None = None) -> tuple[int, float, float]:
    """(requests, wall seconds, waypoint CPU seconds) of `connections` closed-loop clients; with
    `profile`, py-spy samples the waypoint meanwhile into that file (collapsed stacks); with
    `syscalls`, `strace -c` counts its system calls into that file (strace slows it: the
    requests/s of such a run are not comparable)."""
    socks = [connect_from(netns, (vip, HTTP_PORT)) for _ in range(connections)]
    for s in socks:
        request(s)
    counts = [0] * connections
    stop = threading.Event()

    def loop(i):
        while not stop.is_set():
            request(socks[i])
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(connections)]
    spy = None
    if profile:
        py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        spy = subprocess.Popen([py_spy, "record", "-p", str(pid), "-o", profile, "--format", "raw",
                                "-d", str(int(seconds)), "-r", "250", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tracer = None
    if syscalls:
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", syscalls, "-p", str(pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)   # attached before the first request
    cpu_before, t = cpu_seconds(pid), time.perf_counter()
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join(10)
    wall, cpu = time.perf_counter() - t, cpu_seconds(pid) - cpu_before
    for s in socks:
        s.close()
    if spy is not None:
        spy.wait(30)
    if tracer is not None:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    return sum(counts), wall, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=2000, help="latency samples per path (interleaved)")
    ap.add_argument("--connections", type=int, default=8, help="closed-loop connections for throughput")
    ap.add_argument("--seconds", type=float, default=10, help="throughput run length")
    ap.add_argument("--max-seconds", type=float, default=120, help="stop latency sampling after this long")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the waypoint during the throughput run "
                                                        "(collapsed stacks, for flamegraph.pl or by hand)")
    ap.add_argument("--syscalls", metavar="FILE", help="strace -c the waypoint during the throughput run "
                                                         "(system calls per request = count / requests)")
    ap.add_argument("--cluster", default=f"twb{os.getpid() % 1000}")
    args = ap.parse_args(argv)
    if args.serve:
        serve()
        return 0
    from reference_impl.cluster import client as cluster
    print(f"starting cluster {args.cluster} (2 nodes)...", flush=True)
    c = cluster.up(args.cluster, nodes=2, manifests=manifests(), timeout=120)
    server = None
    try:
        c.wait_ready(timeout=90)
        server = subprocess.Popen(["ip", "netns", "exec", c.pod_netns(NS, "server"), sys.executable, __file__, "--serve"])
        netns = c.pod_netns(NS, "client")
        vips = {name: c.get("Service", NS, name)["spec"]["clusterIP"] for name in ("server-l4", "server-l7")}
        wait_for_paths(netns, vips)
        socks = {name: connect_from(netns, (vip, HTTP_PORT)) for name, vip in vips.items()}
        for s in socks.values():  # warm-up: tunnels, certificates, upstream connections
            for _ in range(100):
                request(s)
        load_before = os.getloadavg()[0]
        pid = waypoint_pid(c)
        latency_cpu = cpu_seconds(pid)
        samples = interleaved(socks, args.requests, args.max_seconds, lambda s: request(s)[0])
        latency_cpu = cpu_seconds(pid) - latency_cpu
        for s in socks.values():
            s.close()
        n = len(samples["server-l4"])
        requests, wall, cpu = throughput(netns, vips["server-l7"], args.connections, args.seconds, pid,
                                         args.profile, args.syscalls)
        load = max(load_before, os.getloadavg()[0])
        cores = os.cpu_count() or 1
        print(f"\nload average (1 min) while measuring: {load:.1f} on {cores} cores"
              + (" - BUSY MACHINE: figures are pessimistic" if load > cores else ""))
        print(f"\nsmall HTTP/1.1 GETs (2-byte body), 1 keep-alive connection per path, {n} interleaved samples "
              f"per path, client node-0 -> server node-1, sequential; the same pods, nodes and ztunnels on "
              f"both paths, no AuthorizationPolicy")
        print(f"{'path':<36}{'p50 us':>10}{'p90 us':>10}{'p99 us':>10}{'mean us':>10}")
        for name, label in (("server-l4", "ztunnel only (L4)"), ("server-l7", "through the waypoint (L7)")):
            v = samples[name]
            print(f"{label:<36}{pct(v, 50):>10.0f}{pct(v, 90):>10.0f}{pct(v, 99):>10.0f}{statistics.mean(v):>10.0f}")
        for p in (50, 99):
            added = pct(samples["server-l7"], p) - pct(samples["server-l4"], p)
            aim = " (aim <= 500 us)" if p == 50 else ""
            print(f"added by one waypoint hop, p{p}: {added:.0f} us{aim}")
        # Less noisy than the latencies on a shared machine: the waypoint's own work per request.
        print(f"waypoint CPU per sequential request: {latency_cpu / n * 1e6:.0f} us")
        print(f"\nthroughput through the waypoint: {args.connections} keep-alive connections, closed loop, "
              f"{wall:.1f} s: {requests} requests = {requests / wall:.0f} req/s; the waypoint process used "
              f"{cpu:.2f} CPU s = {cpu / wall:.2f} cores -> {requests / cpu if cpu else float('nan'):.0f} "
              f"requests/s per waypoint core")
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        c.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
