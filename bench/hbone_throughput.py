"""HBONE on loopback: bulk MB/s through one tunnel, and small request/response latency vs direct TCP.

The HBONE server and the upstream apps (a byte sink and an echo) run in a child process so
client and server each get a core, as two ztunnels would. Latency samples alternate between the
tunnel and direct TCP to the same echo, so both see the same machine noise.

    .venv/bin/python bench/hbone_throughput.py [--mbytes 512] [--samples 2000] [--size 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # hbone_testing: the loopback PKI and echo app

from reference_impl.hbone import HboneClient, HboneServer  # noqa: E402
from hbone_testing import LocalPKI, start_echo, tcp_connector  # noqa: E402
from reference_impl.identity import CertificateAuthority, Identity  # noqa: E402

HOST = "127.0.0.7"
CLIENT_ID = Identity.for_workload("th-bench", "client")
SERVER_ID = Identity.for_workload("th-bench", "server")
CHUNK = 256 * 1024


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Counts bytes until EOF, then answers the count (8 bytes) and closes."""
    total = 0
    while data := await reader.read(CHUNK):
        total += len(data)
    writer.write(total.to_bytes(8, "big"))
    await writer.drain()
    writer.close()


async def serve(ca_dir: str) -> None:
    pki = LocalPKI(CertificateAuthority.load(ca_dir))
    sink = await asyncio.start_server(_sink, HOST, 0, limit=CHUNK)
    echo, echo_port = await start_echo(HOST)
    server = HboneServer(tcp_connector(), pki.context)
    listener = await server.listen((HOST, 0), SERVER_ID)
    print(json.dumps({"hbone": listener.address[1], "sink": sink.sockets[0].getsockname()[1],
                      "echo": echo_port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes
    sys.stdout.flush()
    os._exit(0)  # a benchmark child: skip tearing down connections one by one


async def bulk(client: HboneClient, hbone_port: int, sink_port: int, nbytes: int) -> float:
    stream = await client.connect(CLIENT_ID, (HOST, hbone_port), [SERVER_ID], (HOST, sink_port))
    chunk = b"\0" * CHUNK
    started = time.perf_counter()
    sent = 0
    while sent < nbytes:
        stream.write(chunk)
        sent += len(chunk)
        await stream.drain()
    stream.write_eof()
    answer = b""
    while len(answer) < 8:
        data = await stream.read()
        if not data:
            break
        answer += data
    elapsed = time.perf_counter() - started
    received = int.from_bytes(answer[:8], "big")
    if received != sent:
        raise RuntimeError(f"sink counted {received} bytes, {sent} were sent")
    return sent / elapsed / 1e6


async def round_trip(reader, writer, payload: bytes) -> float:
    started = time.perf_counter()
    writer.write(payload)
    got = 0
    while got < len(payload):
        data = await reader.read(65536)
        if not data:
            raise RuntimeError("echo closed mid-sample")
        got += len(data)
    return (time.perf_counter() - started) * 1e6



def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def main(args) -> None:
    ca = CertificateAuthority.create()
    with tempfile.TemporaryDirectory(prefix="th-bench-") as ca_dir:
        ca.save(ca_dir)
        child = subprocess.Popen([sys.executable, *os.environ.get("TH_BENCH_CHILD_PREFIX", "").split(),
                                  __file__, "--serve", ca_dir], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            ports = json.loads(child.stdout.readline())
            client = HboneClient(LocalPKI(ca).context)
            print(f"HBONE loopback benchmark (client and server in separate processes, host {HOST})")
            rates = [await bulk(client, ports["hbone"], ports["sink"], args.mbytes * 1024 * 1024)
                     for _ in range(args.bulk_runs)]
            print(f"bulk, one tunnel, {args.mbytes} MiB x {args.bulk_runs}: "
                  f"best {max(rates):.0f} MB/s, median {statistics.median(rates):.0f} MB/s")

            stream = await client.connect(CLIENT_ID, (HOST, ports["hbone"]), [SERVER_ID], (HOST, ports["echo"]))
            direct_reader, direct_writer = await asyncio.open_connection(HOST, ports["echo"])
            payload = os.urandom(args.size)
            tunnel, direct = [], []
            deadline = time.monotonic() + args.max_seconds
            for _ in range(20):  # warm-up, not recorded
                await round_trip(stream, stream, payload)
                await round_trip(direct_reader, direct_writer, payload)
            for i in range(args.samples):
                if time.monotonic() > deadline:
                    break
                if i % 2:
                    direct.append(await round_trip(direct_reader, direct_writer, payload))
                    tunnel.append(await round_trip(stream, stream, payload))
                else:
                    tunnel.append(await round_trip(stream, stream, payload))
                    direct.append(await round_trip(direct_reader, direct_writer, payload))
            print(f"request/response, {args.size} B payload, 1 connection each, {len(tunnel)} interleaved "
                  f"samples each, sequential (one in flight):")
            for name, values in (("direct TCP", direct), ("HBONE tunnel", tunnel)):
                print(f"  {name:<13} p50 {pct(values, 50):8.1f} us   p99 {pct(values, 99):8.1f} us")
            print(f"  added by HBONE p50 {pct(tunnel, 50) - pct(direct, 50):8.1f} us   "
                  f"p99 {pct(tunnel, 99) - pct(direct, 99):8.1f} us")
            stream.close()
            direct_writer.close()
            await client.close()
        finally:
            child.stdin.close()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mbytes", type=int, default=512, help="MiB per bulk run (default 512)")
    parser.add_argument("--bulk-runs", type=int, default=3, help="bulk runs (default 3)")
    parser.add_argument("--samples", type=int, default=2000, help="latency samples per path (default 2000)")
    parser.add_argument("--size", type=int, default=1024, help="request/response payload bytes (default 1024)")
    parser.add_argument("--max-seconds", type=float, default=60, help="stop sampling after this long")
    parser.add_argument("--serve", metavar="CA_DIR", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse_args()
    if options.serve:
        asyncio.run(serve(options.serve))
    else:
        asyncio.run(main(options))
