"""Python's own cost per chunk on the ztunnel's spliced HBONE data path, each direction, in-process.

The real classes (hbone/session.py's H2Session, hbone/stream.py's HboneStream, hbone/splice.py's
StreamSplice) on the real event loop, with the two transports replaced by recorders that count
writes: what is left is the Python a proxy runs per chunk between its read and its write, without
the TLS, the syscalls and the wake-ups that bench/hbone_throughput.py measures with them.

  receive   an HTTP/2 DATA frame of --size bytes for a stream spliced to a TCP socket:
            H2Session.data_received -> the DATA reader -> the stream -> the socket's transport.write
            (and the window bookkeeping, a WINDOW_UPDATE when half a window is consumed)
  send      a TCP read of --size bytes: StreamSplice.data_received -> HboneStream.send -> one DATA frame
            on the TLS transport

A round trip through one proxy is one of each. Best of --repeat runs of --chunks chunks.

    .venv/bin/python bench/hbone_python_cost.py [--size 1024] [--chunks 200000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

from reference_impl.hbone import eventloop  # noqa: E402
from reference_impl.hbone.session import _DATA_HEADER, H2Session  # noqa: E402
from reference_impl.hbone.splice import StreamSplice  # noqa: E402
from reference_impl.hbone.stream import HboneStream  # noqa: E402
from load import interpreter  # noqa: E402


class _Recorder:
    """A transport that keeps nothing: it counts writes (so a lost write would show)."""

    def __init__(self):
        self.writes = 0
        self.bytes = bytearray()   # only while connecting: the server's SETTINGS for the client
        self.keep = True

    def write(self, data):
        self.writes += 1
        if self.keep:
            self.bytes += data

    def writelines(self, chunks):
        self.writes += 1

    def is_closing(self):
        return False

    def can_write_eof(self):
        return True

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0  # every write went out whole, as on an idle socket

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class _Server(H2Session):
    client_side = False

    def on_event(self, event):
        if isinstance(event, h2.events.RequestReceived):
            self.register(HboneStream(self, event.stream_id))


def _spliced_stream():
    """A server session with one CONNECT stream spliced to a recording TCP transport."""
    tls = _Recorder()
    session = _Server()
    session.start_h2(tls)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.receive_data(bytes(tls.bytes))
    client.send_headers(1, [(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    session.data_received(client.data_to_send())
    session.conn.send_headers(1, [(":status", "200")])
    session.flush()
    tls.keep = False
    stream = session.streams[1]
    a, b = socket.socketpair()
    splice = StreamSplice(a)
    splice.stream, splice.transport, stream._sink = stream, _Recorder(), splice
    return session, stream, splice, tls, (a, b)


def _best(fn, chunks: int, repeat: int, reopen) -> float:
    best = float("inf")
    for _ in range(repeat):
        reopen()
        started = time.perf_counter()
        for _ in range(chunks):
            fn()
        best = min(best, (time.perf_counter() - started) / chunks)
    return best * 1e6


async def main(args) -> None:
    session, stream, splice, tls, sockets = _spliced_stream()
    payload = os.urandom(args.size)
    frame = _DATA_HEADER.pack(args.size >> 8, args.size & 0xFF, 0, 0, 1) + payload
    h2_stream = session.conn.streams[1]

    def reopen():   # the send windows, as a peer's WINDOW_UPDATEs would keep them
        h2_stream.outbound_flow_control_window = session.conn.outbound_flow_control_window = 1 << 30

    receive = _best(lambda: session.data_received(frame), args.chunks, args.repeat, reopen)
    tcp_writes = splice.transport.writes
    send = _best(lambda: splice.data_received(payload), args.chunks, args.repeat, reopen)
    expected = args.chunks * args.repeat
    if tcp_writes != expected or tls.writes < expected:
        raise SystemExit(f"the recorders saw {tcp_writes} TCP and {tls.writes} TLS writes for {expected} chunks "
                         "each way: the data path did not write every chunk")
    for s in sockets:
        s.close()
    print(f"Python per {args.size} B chunk on the spliced HBONE path (best of {args.repeat} x {args.chunks:,}, "
          f"event loop {os.environ.get('TH_BENCH_LOOP', 'uvloop')}, "
          f"{interpreter.describe()}, load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores):")
    print(f"  receive  DATA frame -> TCP write     {receive:6.2f} µs")
    print(f"  send     TCP read -> DATA frame      {send:6.2f} µs")
    print(f"  one round trip through one proxy     {receive + send:6.2f} µs")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="chunk bytes (default 1024)")
    parser.add_argument("--chunks", type=int, default=200_000, help="chunks per run (200000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs, best kept (5)")
    args = parser.parse_args(argv)
    if not (1 <= args.size <= 16_384 and 1 <= args.chunks <= 2_000_000 and 1 <= args.repeat <= 20):
        parser.error("1 ≤ --size ≤ 16384 (one frame, one read), 1 ≤ --chunks ≤ 2000000, 1 ≤ --repeat ≤ 20")
    return args


if __name__ == "__main__":
    options = parse_args()
    eventloop.run(main(options), os.environ.get("TH_BENCH_LOOP", "uvloop"), "TH_BENCH_LOOP")
