"""A client that speaks below curl: a WebSocket session, raw TCP, and malformed or slow HTTP/1.1,
run inside a captured client pod of the conformance suite, so its bytes take the mesh's path.

Standalone on purpose: it runs in a stock `python:3.11-slim` container (shipped as a ConfigMap)
as well as on the reference target, so it needs only the standard library.

    python3 wire_probe.py <base64 of a JSON spec>

The spec is `{"attempts": [attempt, ...]}`, run concurrently; each is `{"name", "mode", "host",
"port", "timeout", ...}` and prints ONE JSON line `{"name", "outcome", "status", "detail",
"seconds", ...}`. Modes:
- `websocket` (`path`, `messages`: list of {"text": str} | {"binary_len": int}): the upgrade
  handshake, the server's first frame (`greeting`), then each message sent and its echo checked;
  outcome `echoed` (status 101, `echoed` = count) or what failed.
- `tcp` (`data_b64`): sends the bytes, expects them back; outcome `echoed`, `reset`, `closed`,
  `timeout` or `mismatch`.
- `raw` (`data_b64`, optional `fill_headers`: [count, length] header lines of `length` bytes
  put after the request line): sends the bytes, reads until the server closes or `timeout`; `status` is
  the HTTP status of the first response line, `received` the bytes read, outcome `answered` (the
  server's FIN after its bytes), `reset`, `closed` or `timeout`; `first_byte_after` and
  `last_byte_after`: seconds from the request's last byte to the response's first and last; with
  `keep: true`, `data_b64`: everything received (at most 64 KiB).
- `slow` (`head_b64`, `interval`): sends the start of a request head, then one more header byte
  every `interval` seconds, never finishing it; outcome `cut_off` (the server answered or closed;
  `status` if it answered, `seconds` how long it took) or `timeout` (still open at `timeout`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _status(data: bytes) -> int | None:
    line = data.split(b"\r\n", 1)[0].split(b" ")
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return None


def _connect(attempt: dict) -> socket.socket:
    sock = socket.create_connection((attempt["host"], int(attempt["port"])), timeout=attempt.get("timeout", 5))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionAbortedError("closed")
        out += chunk
    return out


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked (client-to-server) final frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _ws_read(sock: socket.socket) -> tuple[int, bytes]:
    b1, b2 = _recv_exactly(sock, 2)
    length = b2 & 0x7F
    if length == 126:
        length = struct.unpack("!H", _recv_exactly(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _recv_exactly(sock, 8))[0]
    if b2 & 0x80:
        raise ValueError("the server masked its frame (RFC 6455 forbids it)")
    return b1 & 0x0F, _recv_exactly(sock, length)


def websocket(attempt: dict) -> dict:
    sock = _connect(attempt)
    key = base64.b64encode(os.urandom(16)).decode()
    host = attempt.get("host_header") or f"{attempt['host']}:{attempt['port']}"
    sock.sendall((f"GET {attempt.get('path', '/')} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            return {"outcome": "closed", "status": _status(head), "detail": head[:200].decode("latin-1")}
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    status = _status(head)
    if status != 101:
        return {"outcome": "refused", "status": status, "detail": head[:300].decode("latin-1")}
    expected = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    if expected.encode() not in head:
        return {"outcome": "bad_accept", "status": status, "detail": head[:300].decode("latin-1")}
    # bytes after the 101 already belong to the WebSocket; push them back in front of the socket
    reader = _Buffered(sock, rest)
    opcode, greeting = _ws_read(reader)
    echoed = 0
    for message in attempt.get("messages", []):
        if "text" in message:
            opcode_sent, payload = 0x1, message["text"].encode()
        else:
            opcode_sent, payload = 0x2, os.urandom(int(message["binary_len"]))
        sock.sendall(_ws_frame(opcode_sent, payload))
        opcode, echo = _ws_read(reader)
        if (opcode, echo) != (opcode_sent, payload):
            return {"outcome": "mismatch", "status": status, "echoed": echoed,
                    "detail": f"sent opcode {opcode_sent} {len(payload)} bytes, got opcode {opcode} {len(echo)} bytes"}
        echoed += 1
    sock.sendall(_ws_frame(0x8, struct.pack("!H", 1000)))
    opcode, _ = _ws_read(reader)
    sock.close()
    return {"outcome": "echoed", "status": status, "echoed": echoed, "greeting": greeting.decode("latin-1"),
            "closed_cleanly": opcode == 0x8}


class _Buffered:
    """A socket whose first bytes were already read."""

    def __init__(self, sock, pending: bytes):
        self.sock, self.pending = sock, pending

    def recv(self, n: int) -> bytes:
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
            return out
        return self.sock.recv(n)


def tcp(attempt: dict) -> dict:
    data = base64.b64decode(attempt["data_b64"])
    sock = _connect(attempt)
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            return {"outcome": "closed", "detail": f"{len(got)} of {len(data)} bytes came back"}
        got += chunk
    sock.close()
    return {"outcome": "echoed" if got == data else "mismatch", "detail": got[:80].decode("latin-1")}


def raw(attempt: dict) -> dict:
    data = base64.b64decode(attempt["data_b64"])
    count, length = attempt.get("fill_headers", (0, 0))
    if count:  # big heads are made here: a command line is too small to carry them
        line, rest = data.split(b"\r\n", 1)
        data = line + b"\r\n" + b"".join(b"x-fill-%d: %s\r\n" % (i, b"a" * length) for i in range(count)) + rest
    sock = _connect(attempt)
    sock.sendall(data)
    sent = time.monotonic()
    time.sleep(float(attempt.get("read_after", 0)))  # a client slow to read: the answer waits in buffers
    got = bytearray()
    first = last = None
    try:
        while chunk := sock.recv(65536):
            last = time.monotonic()
            first = first or last
            got += chunk
    except socket.timeout:
        return {"outcome": "timeout" if not got else "answered", "status": _status(got),
                "detail": got[:200].decode("latin-1")}
    timing = {"first_byte_after": round(first - sent, 3), "last_byte_after": round(last - sent, 3)} if got else {}
    return {"outcome": "answered" if got else "closed", "status": _status(got), "detail": got[:200].decode("latin-1"),
            "received": len(got), **timing,
            **({"data_b64": base64.b64encode(bytes(got[:65536])).decode()} if attempt.get("keep") else {})}


def slow(attempt: dict) -> dict:
    sock = _connect(attempt)
    sock.settimeout(float(attempt.get("interval", 0.5)))
    sock.sendall(base64.b64decode(attempt["head_b64"]))
    deadline = time.monotonic() + float(attempt.get("timeout", 10))
    got = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return {"outcome": "cut_off", "status": _status(got), "detail": got[:200].decode("latin-1")}
            got += chunk
        except socket.timeout:
            sock.sendall(b"x")
    return {"outcome": "timeout", "status": _status(got), "detail": "the server kept the slow request open"}


MODES = {"websocket": websocket, "tcp": tcp, "raw": raw, "slow": slow}


def run(attempt: dict) -> dict:
    started = time.monotonic()
    try:
        result = MODES[attempt["mode"]](attempt)
    except socket.timeout:
        result = {"outcome": "timeout"}
    except ConnectionRefusedError as exc:
        result = {"outcome": "connect_refused", "detail": str(exc)}
    except ConnectionResetError as exc:
        result = {"outcome": "reset", "detail": str(exc)}
    except (ConnectionAbortedError, BrokenPipeError) as exc:
        result = {"outcome": "closed", "detail": str(exc)}
    except (OSError, ValueError) as exc:
        result = {"outcome": "error", "detail": repr(exc)}
    return {"name": attempt.get("name", attempt["mode"]), "status": None, "detail": "",
            **result, "seconds": round(time.monotonic() - started, 3)}


def main() -> None:
    spec = json.loads(base64.b64decode(sys.argv[1]))
    results: list[dict | None] = [None] * len(spec["attempts"])

    def one(i: int, attempt: dict) -> None:
        results[i] = run(attempt)

    threads = [threading.Thread(target=one, args=(i, a)) for i, a in enumerate(spec["attempts"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
