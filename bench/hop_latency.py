"""Added latency of the ztunnel path and bulk throughput through one HBONE tunnel.

Starts a 2-node local cluster with two client/server pod pairs pinned the same way (client on
node-0, server on node-1): one pair in an ambient namespace (client ztunnel -> HBONE -> server
ztunnel), one in a plain namespace (direct). A small HTTP/1.1 keep-alive server runs in each
server pod; this process opens one keep-alive connection per path from inside the client pods'
namespaces and alternates single requests between the paths (interleaved samples), then prints
p50/p99 per path and the difference per hop (two ztunnels = two hops).
Bulk: one connection streams --bulk-mb MiB through the tunnel into a sink in the server pod.

    sudo .venv/bin/python bench/hop_latency.py [--requests 2000] [--bulk-mb 256]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

HTTP_PORT, SINK_PORT = 8080, 8081
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def serve() -> None:
    """The pod side: an HTTP/1.1 keep-alive responder and a byte sink (threads, stdlib only)."""
    import threading

    def http(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return conn.close()
            buf += data
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                conn.sendall(RESPONSE)

    def sink(conn):
        total = 0
        while data := conn.recv(1 << 20):
            total += len(data)
        conn.sendall(str(total).encode())
        conn.close()

    def listen(port, handler):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        while True:
            c, _ = s.accept()
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    threading.Thread(target=listen, args=(SINK_PORT, sink), daemon=True).start()
    listen(HTTP_PORT, http)


def pod(name, ns, node):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": "main", "image": "curlimages/curl", "command": ["/bin/sleep", "3650d"]}]}}


def connect_from(netns, addr, deadline_s=20.0):
    from reference_impl.netns import socket_in
    end = time.monotonic() + deadline_s
    while True:
        s = socket_in(netns)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(10)
        try:
            s.connect(addr)
            return s
        except OSError:
            s.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def request(sock) -> float:
    t = time.perf_counter()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: hop-latency\r\nAccept: */*\r\n\r\n")
    got = b""
    while len(got) < len(RESPONSE):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed the connection")
        got += chunk
    return (time.perf_counter() - t) * 1e6


def interleaved(socks: dict, requests: int, max_seconds: float, one=None) -> dict[str, list[float]]:
    """Microseconds of `requests` single requests per path, alternating the paths' order each round
    (so drift on the machine lands on every path alike); `one(sock)` -> microseconds."""
    one = one or request
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=2000, help="requests per path (interleaved)")
    ap.add_argument("--bulk-mb", type=int, default=256)
    ap.add_argument("--max-seconds", type=float, default=120, help="stop sampling after this long")
    ap.add_argument("--cluster", default=f"tzb{os.getpid() % 1000}")
    args = ap.parse_args(argv)
    if args.serve:
        serve()
        return 0
    from reference_impl.cluster import client as cluster
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-mesh",
                                                                    "labels": {"istio.io/dataplane-mode": "ambient"}}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-direct"}}]
    for ns in ("bench-mesh", "bench-direct"):
        objs += [pod("client", ns, "node-0"), pod("server", ns, "node-1")]
    print(f"starting cluster {args.cluster} (2 nodes)...", flush=True)
    c = cluster.up(args.cluster, nodes=2, manifests=objs, timeout=120)
    servers = []
    try:
        paths = {}
        for ns in ("bench-direct", "bench-mesh"):
            server_netns = c.pod_netns(ns, "server")
            servers.append(subprocess.Popen(["ip", "netns", "exec", server_netns, sys.executable, __file__, "--serve"]))
            ip = c.get("Pod", ns, "server")["status"]["podIP"]
            paths[ns] = (c.pod_netns(ns, "client"), ip)
        mesh_netns = paths["bench-mesh"][0]
        end = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", mesh_netns, "nft", "list", "table", "inet", "ztunnel"],
                             capture_output=True).returncode != 0:
            if time.monotonic() > end:
                raise SystemExit("the mesh client pod was never captured")
            time.sleep(0.1)
        socks = {ns: connect_from(netns, (ip, HTTP_PORT)) for ns, (netns, ip) in paths.items()}
        for s in socks.values():  # warm-up: tunnel set-up, certificates, caches
            for _ in range(50):
                request(s)
        load_before = os.getloadavg()[0]
        samples = interleaved(socks, args.requests, args.max_seconds)
        n = len(samples["bench-direct"])
        load = max(load_before, os.getloadavg()[0])
        cores = os.cpu_count() or 1
        # Other work on the machine shows up as latency in both paths and widens the gap.
        print(f"\nload average (1 min) while sampling: {load:.1f} on {cores} cores"
              + (" - BUSY MACHINE: figures are pessimistic" if load > cores else ""))
        print(f"\nsmall HTTP/1.1 requests, 1 keep-alive connection per path, {n} interleaved samples per path, "
              f"client node-0 -> server node-1, sequential (no concurrency)")
        print(f"{'path':<28}{'p50 us':>10}{'p90 us':>10}{'p99 us':>10}{'mean us':>10}")
        for ns, label in (("bench-direct", "direct"), ("bench-mesh", "ztunnel L4 (2 hops, HBONE)")):
            v = samples[ns]
            print(f"{label:<28}{pct(v, 50):>10.0f}{pct(v, 90):>10.0f}{pct(v, 99):>10.0f}{statistics.mean(v):>10.0f}")
        for p in (50, 99):
            added = pct(samples["bench-mesh"], p) - pct(samples["bench-direct"], p)
            aim = " (aim < 300 us per hop)" if p == 50 else ""
            print(f"added p{p}: {added:.0f} us for two hops = {added / 2:.0f} us per hop{aim}")

        netns, ip = paths["bench-mesh"]
        bulk = connect_from(netns, (ip, SINK_PORT))
        block = b"x" * (1 << 20)
        t = time.perf_counter()
        for _ in range(args.bulk_mb):
            bulk.sendall(block)
        bulk.shutdown(socket.SHUT_WR)
        bulk.settimeout(60)
        received = int(bulk.recv(64) or b"0")
        elapsed = time.perf_counter() - t
        print(f"bulk through one tunnel: {received / 2**20:.0f} MiB in {elapsed:.2f} s = "
              f"{received / 2**20 / elapsed:.0f} MiB/s (aim > 100 MB/s)")
        if received != args.bulk_mb << 20:
            print(f"WARNING: sink received {received} bytes, sent {args.bulk_mb << 20}")
    finally:
        for s in servers:
            s.kill()
            s.wait(5)
        c.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
