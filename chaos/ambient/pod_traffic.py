"""The traffic generator that runs INSIDE a client pod (stdlib only: it is sent as `python3 -c`).

Argument: one JSON object {"mode": "requests"|"hold", "host", "port", "path", "count", "interval",
"timeout", "seconds", "expect"}. Output: one JSON object on stdout.

- requests: `count` GETs, one every `interval` seconds, each on a fresh connection (a new request
  is a new connection, as a new client would make), bounded by `count` AND by `seconds`. Each
  record is [start (epoch s), latency (s), outcome]: the HTTP status as an int when the body holds
  `expect` (or no `expect`), else a word: "body" (an answer without the expected text),
  "timeout", "refused", "reset", "error".
- hold: one GET whose answer trickles (httpbin /drip); records when it started, when each chunk
  and the end came, and how it ended ("eof": the server closed it, or the error word).
"""
import json
import socket
import sys
import time


def classify(exc):
    if isinstance(exc, socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    return "error"


def one_request(spec):
    host, port, timeout = spec["host"], spec["port"], spec["timeout"]
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(f"GET {spec['path']} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
                  "User-Agent: ambient-chaos\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1."):
        return "reset" if not data else "error"
    status = int(data.split(b" ", 2)[1])
    expect = spec.get("expect")
    if expect and expect.encode().lower() not in data.lower():
        return "body"
    return status


def requests(spec):
    records, interval = [], float(spec["interval"])
    end = time.time() + float(spec["seconds"])
    start = time.time()
    for i in range(int(spec["count"])):
        due = start + i * interval
        now = time.time()
        if due > now:
            time.sleep(due - now)
        t0 = time.time()
        if t0 >= end:
            break
        try:
            outcome = one_request(spec)
        except OSError as exc:
            outcome = classify(exc)
        records.append([round(t0, 4), round(time.time() - t0, 5), outcome])
    return {"records": records}


def hold(spec):
    host, port, timeout = spec["host"], spec["port"], spec["timeout"]
    t0, chunks, outcome = time.time(), [], "eof"
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {spec['path']} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            while time.time() - t0 < float(spec["seconds"]):
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append([round(time.time(), 4), len(chunk)])
    except OSError as exc:
        outcome = classify(exc)
    return {"started": round(t0, 4), "ended": round(time.time(), 4), "chunks": chunks, "outcome": outcome}


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(hold(spec) if spec.get("mode") == "hold" else requests(spec)))
