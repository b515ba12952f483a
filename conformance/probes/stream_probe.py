"""The conformance suite's stream client, for long TCP streams through the mesh to
conformance/probes/stream_server.py (an echo that answers the half-close with a trailer).

Standalone (standard library only): it runs in the suite's probe pods.

    python3 stream_probe.py BASE64-JSON

The argument is `{"host", "port", "mode", "timeout", ...}`:

- `"mode": "transfer"`, `"bytes": N`, `"read_delay": S`: send N pseudo-random bytes and then shut
  down the write side, while another thread reads the echo, starting only after S seconds (a
  late reader: the echo piles up in the mesh meanwhile), until EOF.
- `"mode": "stall"`, `"cap": N`, `"stall_seconds": S`: send without reading, until S seconds pass
  without a byte accepted or N bytes are (a reader that does not read: how much does the mesh take
  in for it?); then shut down the write side and read the echo until EOF.

Prints one JSON line: `sent` and `sent_sha256`, `accepted_before_stall` (stall mode), `echoed` and
`echoed_sha256` (the first `sent` bytes read back), `trailer` (the server's account of what it
received, or null), `eof`, `seconds`, and `error` (null, or why the exchange ended early).
"""
from __future__ import annotations

import base64
import hashlib
import json
import random
import select
import socket
import sys
import threading
import time

CHUNK = 1 << 20


class Reader:
    """Reads the echo of `expected()` bytes and then the trailer line, until EOF."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.digest = hashlib.sha256()
        self.echoed = 0
        self.rest = b""
        self.eof = False
        self.error: str | None = None

    def run(self, expected, deadline: float) -> None:
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.1, deadline - time.monotonic()))
                data = self.sock.recv(CHUNK)
                if not data:
                    self.eof = True
                    return
                room = expected() - self.echoed
                if room > 0:
                    self.digest.update(data[:room])
                    self.echoed += min(room, len(data))
                self.rest += data[max(room, 0):]
            self.error = "no EOF before the deadline"
        except socket.timeout:
            self.error = "no EOF before the deadline"
        except OSError as exc:
            self.error = f"read failed: {exc!r}"

    def trailer(self) -> dict | None:
        try:
            return json.loads(self.rest.decode())
        except ValueError:
            return None


def transfer(sock: socket.socket, spec: dict, deadline: float) -> dict:
    total, rng, sent_digest = spec["bytes"], random.Random(spec.get("seed", 1)), hashlib.sha256()
    reader = Reader(sock)
    thread = threading.Thread(target=lambda: (time.sleep(spec.get("read_delay", 0)),
                                              reader.run(lambda: total, deadline)))
    thread.start()
    sent, error = 0, None
    try:
        while sent < total:
            chunk = rng.randbytes(min(CHUNK, total - sent))
            sent_digest.update(chunk)
            sock.sendall(chunk)
            sent += len(chunk)
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        error = f"write failed after {sent} bytes: {exc!r}"
    thread.join(max(0.1, deadline - time.monotonic() + 1))
    return report(sent, sent_digest, reader, error)


def stall(sock: socket.socket, spec: dict, deadline: float) -> dict:
    cap, quiet, rng, sent_digest = spec["cap"], spec["stall_seconds"], random.Random(spec.get("seed", 1)), hashlib.sha256()
    sock.setblocking(False)
    sent, pending, last_progress, error = 0, b"", time.monotonic(), None
    try:
        while sent < cap and time.monotonic() - last_progress < quiet and time.monotonic() < deadline:
            if not pending:
                pending = rng.randbytes(min(CHUNK, cap - sent))
                sent_digest.update(pending)
            _, writable, _ = select.select([], [sock], [], 0.2)
            if writable:
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    continue
                pending, sent, last_progress = pending[n:], sent + n, time.monotonic()
    except OSError as exc:
        error = f"write failed after {sent} bytes: {exc!r}"
    accepted = sent
    sock.setblocking(True)
    reader = Reader(sock)
    if error is None:
        total = sent + len(pending)   # the rest of the last chunk goes too, so the digest covers it
        thread = threading.Thread(target=reader.run, args=(lambda: total, deadline))
        thread.start()
        try:
            sock.sendall(pending)
            sent = total
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            error = f"write failed after {sent} bytes: {exc!r}"
        thread.join(max(0.1, deadline - time.monotonic() + 1))
    return dict(report(sent, sent_digest, reader, error), accepted_before_stall=accepted)


def report(sent: int, sent_digest, reader: Reader, error: str | None) -> dict:
    return {"sent": sent, "sent_sha256": sent_digest.hexdigest(), "echoed": reader.echoed,
            "echoed_sha256": reader.digest.hexdigest(), "trailer": reader.trailer(), "eof": reader.eof,
            "error": error or reader.error}


def main() -> None:
    spec = json.loads(base64.b64decode(sys.argv[1]))
    started = time.monotonic()
    deadline = started + spec.get("timeout", 60)
    try:
        sock = socket.create_connection((spec["host"], spec["port"]), timeout=10)
    except OSError as exc:
        print(json.dumps({"error": f"connect failed: {exc!r}", "seconds": time.monotonic() - started}))
        return
    with sock:
        result = (transfer if spec["mode"] == "transfer" else stall)(sock, spec, deadline)
    print(json.dumps(dict(result, seconds=round(time.monotonic() - started, 2))))


if __name__ == "__main__":
    main()
