"""Bulk throughput through one HBONE tunnel, across nodes (client ztunnel -> server ztunnel).

Starts a 2-node local cluster with a client pod on node-0 and a server pod on node-1 in an ambient
namespace; one connection from inside the client pod's namespace streams --bulk-mb MiB through the
tunnel into a sink in the server pod, which answers with the byte count.
Hop latency is measured by bench/hbone_throughput.py (per hop, beside Envoy, which also runs
this bulk through the ztunnel path with --cluster) and `ambient-conformance load` (whole paths).

    sudo .venv/bin/python bench/tunnel_bulk.py [--bulk-mb 256]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SINK_PORT = 8081


def serve() -> None:
    """The pod side: a byte sink that answers with how many bytes it got (stdlib only)."""
    import threading

    def sink(conn):
        total = 0
        while data := conn.recv(1 << 20):
            total += len(data)
        conn.sendall(str(total).encode())
        conn.close()

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", SINK_PORT))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=sink, args=(c,), daemon=True).start()


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bulk-mb", type=int, default=256)
    ap.add_argument("--cluster", default=f"tzb{os.getpid() % 1000}")
    args = ap.parse_args(argv)
    if args.serve:
        serve()
        return 0
    from reference_impl.cluster import client as cluster
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-mesh",
                                                                    "labels": {"istio.io/dataplane-mode": "ambient"}}},
            pod("client", "bench-mesh", "node-0"), pod("server", "bench-mesh", "node-1")]
    print(f"starting cluster {args.cluster} (2 nodes)...", flush=True)
    c = cluster.up(args.cluster, nodes=2, manifests=objs, timeout=120)
    server = None
    try:
        server = subprocess.Popen(["ip", "netns", "exec", c.pod_netns("bench-mesh", "server"), sys.executable,
                                   __file__, "--serve"])
        ip = c.get("Pod", "bench-mesh", "server")["status"]["podIP"]
        netns = c.pod_netns("bench-mesh", "client")
        end = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "ztunnel"],
                             capture_output=True).returncode != 0:
            if time.monotonic() > end:
                raise SystemExit("the mesh client pod was never captured")
            time.sleep(0.1)
        # the sink listens before the tunnel is used: through ztunnel a connect always succeeds
        # locally, and one to a port nobody listens on yet would only be reset later
        connect_from(c.pod_netns("bench-mesh", "server"), ("127.0.0.1", SINK_PORT)).close()
        load = os.getloadavg()[0]
        bulk = connect_from(netns, (ip, SINK_PORT))
        block = b"x" * (1 << 20)
        t = time.perf_counter()
        for _ in range(args.bulk_mb):
            bulk.sendall(block)
        bulk.shutdown(socket.SHUT_WR)
        bulk.settimeout(60)
        received = int(bulk.recv(64) or b"0")
        elapsed = time.perf_counter() - t
        print(f"load average (1 min): {max(load, os.getloadavg()[0]):.1f} on {os.cpu_count()} cores")
        print(f"bulk through one tunnel: {received / 2**20:.0f} MiB in {elapsed:.2f} s = "
              f"{received / 2**20 / elapsed:.0f} MiB/s (aim > 100 MB/s)")
        if received != args.bulk_mb << 20:
            print(f"WARNING: sink received {received} bytes, sent {args.bulk_mb << 20}")
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        c.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
