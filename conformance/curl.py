"""One curl invocation for many requests, and the outcome of each request as seen from outside.

A Target runs the argv built here inside a client pod with a single exec; the per-request line
that curl's `-w` writes is turned into an Outcome: the HTTP status, or the way the connection
failed. This is how an L4 deny (reset / EOF / timeout) is told apart from an HTTP answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Outcome = Union[int, str]
RESET, TIMEOUT, REFUSED, DNS, ERROR = "reset", "timeout", "refused", "dns", "error"

# curl exit codes (see `man curl`, EXIT CODES) and what they mean for a mesh client.
_EXIT_OUTCOMES = {
    6: DNS,        # could not resolve host
    7: REFUSED,    # failed to connect
    28: TIMEOUT,   # operation timed out
    52: RESET,     # empty reply: the peer closed before answering (EOF)
    56: RESET,     # failure receiving data: connection reset
    55: RESET,     # failure sending data
    18: RESET,     # partial file: the connection closed in the middle of a body
    35: RESET,     # TLS handshake failed (the peer went away during it)
}

_MARK = "ac-outcome:"  # must not start with "@": curl reads `-w @file` from a file
_WRITE_OUT = _MARK + " %{http_code} %{exitcode} %{size_download} %{time_total} %{errormsg}\\n"

DEFAULT_MAX_TIME = 3.0
DEFAULT_CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True)
class Response:
    """What one request produced: its outcome and enough detail to reason about a live stream."""

    outcome: Outcome
    exit_code: int
    bytes_received: int
    seconds: float
    message: str = ""


def curl_argv(urls: list[str], method: str = "GET", headers: dict[str, str] | None = None,
              max_time: float = DEFAULT_MAX_TIME, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
              binary: str = "curl") -> list[str]:
    """Argv for ONE curl process that issues each URL in turn (`--next` resets options per URL)."""
    if not urls:
        raise ValueError("curl_argv needs at least one URL")
    argv = [binary]
    for i, url in enumerate(urls):
        if i:
            argv.append("--next")
        argv += ["-s", "-o", "/dev/null", "-w", _WRITE_OUT.replace("\\n", "\n"),
                 "--max-time", _num(max_time), "--connect-timeout", _num(min(connect_timeout, max_time)),
                 "-X", method]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
    return argv


def _num(x: float) -> str:
    return f"{x:g}"


def parse_output(stdout: str, expected: int) -> list[Response]:
    """Responses from curl's `-w` lines; requests curl never reported on count as errors."""
    responses = []
    for line in stdout.splitlines():
        if not line.startswith(_MARK):
            continue
        parts = line[len(_MARK):].strip().split(" ", 4)
        if len(parts) < 4:
            continue
        code, exit_code, size, seconds = parts[:4]
        message = parts[4] if len(parts) > 4 else ""
        responses.append(_response(code, int(exit_code), int(size), float(seconds), message))
    while len(responses) < expected:
        responses.append(Response(ERROR, -1, 0, 0.0, "curl did not report on this request"))
    return responses[:expected]


def _response(code: str, exit_code: int, size: int, seconds: float, message: str) -> Response:
    if exit_code == 0 and code.isdigit() and int(code) > 0:
        return Response(int(code), 0, size, seconds, message)
    return Response(_EXIT_OUTCOMES.get(exit_code, ERROR), exit_code, size, seconds, message)
