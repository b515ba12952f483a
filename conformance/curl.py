"""One curl invocation for many requests, and the outcome of each request as seen from outside.

A Target runs the argv built here inside a client pod with a single exec; the per-request line
that curl's `-w` writes is turned into an Outcome: the HTTP status, or the way the connection
failed. This is how an L4 deny (a reset, an empty reply, a refused connect) is told apart from
an HTTP answer, and from a stall (a timeout), which is never a deny.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
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

#: the prompt refusals that make an L4 deny. A node proxy accepts the captured connection and
#: resets it once authorization fails; on a busy machine that reset can land before curl has
#: seen its own connect complete, and curl then reports a failed connect (exit 7), so `refused`
#: is a deny too. A timeout is NOT: a mesh that stalls a connection has not refused it (Istio's
#: CheckDeny accepts reset, EOF, 403 or 503, never a timeout).
L4_REFUSALS = frozenset({RESET, REFUSED})
STALL_IS_NOT_A_DENY = "timed out: a deny must be a prompt refusal (reset/EOF/403/503), not a stall"

_MARK = "ac-outcome:"  # must not start with "@": curl reads `-w @file` from a file
_WRITE_OUT = _MARK + " %{http_code} %{exitcode} %{size_download} %{time_total} %{errormsg}\n"
_LINE = re.compile("^" + re.escape(_MARK) + r" ([^\n]*)\n?", re.MULTILINE)

#: per request. A refusal comes back in well under a second even on a loaded 2-core machine and
#: an answer from httpbin within a second or two, so 3 s is the time a stall costs, no more.
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
    body: str = ""   # only when the argv was built with body=True


def curl_argv(urls: list[str], method: str = "GET", headers: dict[str, str] | None = None,
              max_time: float = DEFAULT_MAX_TIME, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
              binary: str = "curl", body: bool = False, head: bool = False,
              options: tuple[str, ...] = ()) -> list[str]:
    """Argv for ONE curl process that issues each URL in turn (`--next` resets options per URL).
    With `body`, each response body is written to stdout ahead of its outcome line; with `head`
    too, the response's status line and headers ahead of the body (`split_head` parts them);
    `options` are more curl options for every request (e.g. `--http2-prior-knowledge`)."""
    if not urls:
        raise ValueError("curl_argv needs at least one URL")
    # The body's last line may lack a newline: start the outcome line on a line of its own.
    write_out = ("\n" if body else "") + _WRITE_OUT
    argv = [binary]
    for i, url in enumerate(urls):
        if i:
            argv.append("--next")
        argv += ["-s", "-o", "-" if body else "/dev/null", "-w", write_out,
                 "--max-time", _num(max_time), "--connect-timeout", _num(min(connect_timeout, max_time)),
                 "-X", method]
        if head:
            argv += ["-D", "-"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv += list(options)
        argv.append(url)
    return argv


def _num(x: float) -> str:
    return f"{x:g}"


def parse_output(stdout: str, expected: int, body: bool = False) -> list[Response]:
    """Responses from curl's `-w` lines; requests curl never reported on count as errors."""
    responses = []
    start = 0
    for match in _LINE.finditer(stdout):
        text = stdout[start:match.start()]
        start = match.end()
        parts = match.group(1).strip().split(" ", 4)
        if len(parts) < 4:
            continue
        code, exit_code, size, seconds = parts[:4]
        message = parts[4] if len(parts) > 4 else ""
        responses.append(_response(code, int(exit_code), int(size), float(seconds), message,
                                   text.removesuffix("\n") if body else ""))
    while len(responses) < expected:
        responses.append(Response(ERROR, -1, 0, 0.0, "curl did not report on this request"))
    return responses[:expected]


def _response(code: str, exit_code: int, size: int, seconds: float, message: str, body: str) -> Response:
    if exit_code == 0 and code.isdigit() and int(code) > 0:
        return Response(int(code), 0, size, seconds, message, body)
    return Response(_EXIT_OUTCOMES.get(exit_code, ERROR), exit_code, size, seconds, message, body)


# -- whole exchanges: status, response headers and body (the MESH-HTTP tests) ---------------------

@dataclass(frozen=True)
class Exchange:
    """One request's Response with its response headers (lower-case names; repeated ones joined
    with ', ') and body; made from a Response whose argv had `head=True`."""

    response: Response
    headers: dict[str, str]
    body: str

    @property
    def outcome(self) -> Outcome:
        return self.response.outcome


def split_head(response: Response) -> Exchange:
    """The Exchange of a Response read with `head=True` (a 1xx block before the final one is skipped)."""
    text = response.body
    headers: dict[str, str] = {}
    while text.startswith("HTTP/"):
        # the exec may have read curl's output as text, turning CRLF into LF: accept both
        lines = []
        while True:
            line, newline, text = text.partition("\n")
            line = line.removesuffix("\r")
            if not line or not newline:
                break
            lines.append(line)
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                key = name.strip().lower()
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        status = (lines[0].split(" ") + [""])[1] if lines else ""
        if not (len(status) == 3 and status.startswith("1")):
            break
    return Exchange(response, headers, text)


# -- many different requests in one curl (the L7 tables) --------------------------------------
_HEADERS_MARK = "ac-headers: "


@dataclass(frozen=True)
class Request:
    """One request of a batch: its own URL, method and headers (pairs, so a name may repeat)."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Answer:
    """A batch request's Response with the response headers (lower-case name -> values)."""

    response: Response
    headers: dict

    @property
    def outcome(self) -> Outcome:
        return self.response.outcome
    @property
    def body(self) -> str:
        return self.response.body

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower()) or []
        return values[0] if values else None


def batch_argv(requests: list[Request], max_time: float = DEFAULT_MAX_TIME,
               connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, binary: str = "curl") -> list[str]:
    """Argv for ONE curl process issuing each request in turn, writing for each its body, its
    response headers (`%{header_json}`, curl >= 7.83) and its outcome line."""
    if not requests:
        raise ValueError("batch_argv needs at least one request")
    write_out = "\n" + _HEADERS_MARK + "%{header_json}\n" + _WRITE_OUT
    argv = [binary]
    for i, req in enumerate(requests):
        if i:
            argv.append("--next")
        argv += ["-s", "-o", "-", "-w", write_out, "--max-time", _num(max_time),
                 "--connect-timeout", _num(min(connect_timeout, max_time)), "-X", req.method]
        for name, value in req.headers:
            argv += ["-H", f"{name}: {value}"]
        argv.append(req.url)
    return argv


def parse_batch_output(stdout: str, expected: int) -> list[Answer]:
    answers = []
    for response in parse_output(stdout, expected, body=True):
        body, mark, header_json = response.body.rpartition("\n" + _HEADERS_MARK)
        headers: dict = {}
        if mark:
            try:
                headers = {k.lower(): list(v) for k, v in json.loads(header_json or "{}").items()}
            except (ValueError, AttributeError, TypeError):
                headers = {}
        else:
            body = response.body
        answers.append(Answer(replace(response, body=body), headers))
    return answers
