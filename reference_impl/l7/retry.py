"""Forwarding a request an HTTP route decided (l7/httproute.py): the fault delay, the request
timeout, retries, the rewritten target and the response header modifier.

Envoy's router semantics, as Istio configures it:
- `timeout` (HTTPRoute `timeouts.request`, VirtualService `timeout`) bounds the whole exchange,
  retries included, from the end of the request to the end of the response; when it fires before
  the response began the client gets `504 upstream request timeout`, after that the stream is reset.
- a retry happens only for a response status the route lists (`retry.codes`, VirtualService
  `retryOn`) or a failed connect, at most `attempts` times, after a jittered exponential backoff
  (Envoy: random in [0, (2^n - 1) x base], capped at 10 x base), to another endpoint when the
  backend has one (Istio's previous-hosts predicate). Any other status is relayed at once.
- a retried request needs its body again, so it is buffered (up to RETRY_BUFFER bytes, Envoy's
  default; a larger body is sent once, without retries).
"""

from __future__ import annotations

import asyncio
import random

import h11

from .http import (UPSTREAM_CONNECT_FAILURE, UPSTREAM_RESET, AccessRecord, HttpConnection, UpstreamUnavailable,
                   _Abort, _headers, _next_event, _strip_hop_by_hop, _text, _UpstreamClosed)
from .pipeline import Verdict

RETRY_BUFFER = 1024 * 1024
TIMEOUT_BODY = b"upstream request timeout"
MAX_BACKOFF_FACTOR = 10


class _Retry(Exception):
    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def backoff(base: float, retry_number: int, rng: random.Random = random) -> float:
    return min(rng.uniform(0, (2 ** retry_number - 1) * base), MAX_BACKOFF_FACTOR * base)


async def exchange(conn: HttpConnection, request: h11.Request, verdict: Verdict,
                   record: AccessRecord) -> tuple[int, str]:
    """Serve one routed request on `conn`; returns (status sent downstream, failure or '')."""
    action = verdict.route
    if action.delay:
        await asyncio.sleep(action.delay)   # fault injection: the request waits before anything else
    if not verdict.forwards:
        await conn._local_reply(verdict.status, verdict.body, verdict.reply_headers)
        await conn._discard_request_body()
        return verdict.status, ""
    body, complete = await _buffer_body(conn)
    retry = action.retry
    attempts = 1 + (retry.attempts if retry and complete else 0)
    codes = frozenset(retry.codes) if retry else frozenset()
    state = {"sent": False}
    upstream = verdict.upstream

    async def attempts_loop() -> tuple[int, str]:
        nonlocal upstream
        tried = []
        for n in range(attempts):
            last = n == attempts - 1
            if n:
                await asyncio.sleep(backoff(retry.backoff_seconds, n))
                upstream = _another(action, tried) or upstream
            tried.append(upstream.workload.uid)
            record.upstream = f"{upstream.workload.namespace}/{upstream.workload.name}@" \
                              f"{upstream.address[0]}:{upstream.address[1]}"
            try:
                attempt = _attempt(conn, request, verdict, upstream, body, complete,
                                   frozenset() if last else codes, not last, state)
                per_try = retry.per_try_timeout_seconds if retry else None
                return await (asyncio.wait_for(attempt, per_try) if per_try else attempt)
            except _Retry as again:
                record.reason = f"{record.reason}; retry {n + 1}: {again.why}"
            except asyncio.TimeoutError:
                if state["sent"] or last:
                    raise
                record.reason = f"{record.reason}; retry {n + 1}: per-try timeout"
        raise AssertionError("unreachable: the last attempt never retries")

    try:
        if action.timeout:
            return await asyncio.wait_for(attempts_loop(), action.timeout)
        return await attempts_loop()
    except asyncio.TimeoutError:
        _drop_all(conn, upstream)
        if state["sent"]:
            raise _Abort("route timeout after the response began") from None
        await conn._local_reply(504, TIMEOUT_BODY)
        await conn._discard_request_body()
        return 504, "upstream request timeout"
    except UpstreamUnavailable as exc:
        await conn._local_reply(503, UPSTREAM_CONNECT_FAILURE)
        await conn._discard_request_body()
        return 503, str(exc)


def _another(action, tried: list[str]):
    """Another endpoint of the backend than those tried, if it has one."""
    if action.repick is None:
        return None
    first = None
    for _ in range(8):
        candidate = action.repick()
        if candidate is None:
            return None
        first = first or candidate
        if candidate.workload.uid not in tried:
            return candidate
    return first


def _drop_all(conn: HttpConnection, upstream) -> None:
    key = (upstream.workload.uid, *upstream.address)
    existing = conn.upstreams.get(key)
    if existing is not None:
        conn._drop_upstream(existing)


async def _buffer_body(conn: HttpConnection) -> tuple[list[bytes], bool]:
    """The request body's chunks read so far, and whether that is all of it (within RETRY_BUFFER)."""
    chunks, size = [], 0
    if conn.down.they_are_waiting_for_100_continue:
        # As Envoy does by default (proxy_100_continue off): answer the client's Expect itself.
        await conn._send_down(h11.InformationalResponse(status_code=100, headers=[]))
    while conn.down.their_state is h11.SEND_BODY and size <= RETRY_BUFFER:
        event = await _next_event(conn.down, conn.reader)
        if isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
            size += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise _Abort("client closed before the request body was complete")
    return chunks, conn.down.their_state is not h11.SEND_BODY


async def _attempt(conn: HttpConnection, request: h11.Request, verdict: Verdict, upstream, body: list[bytes],
                   complete: bool, retry_codes: frozenset[int], may_retry: bool, state: dict) -> tuple[int, str]:
    action = verdict.route
    try:
        up = await conn._upstream_for(upstream)
    except UpstreamUnavailable as exc:
        if may_retry:
            raise _Retry(f"connect failed: {exc}") from None
        raise
    try:
        await up.send(h11.Request(method=request.method, target=action.target.encode("latin-1"),
                                  headers=_headers(verdict.forward_headers)))
        for chunk in body:
            await up.send(h11.Data(data=chunk))
        if complete:
            await up.send(h11.EndOfMessage())
        else:  # too large to buffer: stream the rest (this request is not retried)
            while True:
                event = await _next_event(conn.down, conn.reader)
                if isinstance(event, h11.Data):
                    await up.send(h11.Data(data=event.data))
                elif isinstance(event, h11.EndOfMessage):
                    await up.send(h11.EndOfMessage())
                    break
                else:
                    raise _Abort("client closed before the request body was complete")
        status = 0
        while True:
            event = await up.next_event()
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                if status in retry_codes:
                    await _drain(up)
                    if not up.reusable():
                        conn._drop_upstream(up)
                    raise _Retry(f"upstream answered {status}")
                pairs = [(_text(n), _text(v)) for n, v in _strip_hop_by_hop(event)]
                pairs = action.modify_response(pairs)
                if conn.draining():
                    pairs.append(("connection", "close"))
                state["sent"] = True
                await conn._send_down(h11.Response(status_code=status, reason=event.reason,
                                                   headers=_headers(pairs)))
            elif isinstance(event, h11.Data):
                await conn._send_down(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await conn._send_down(h11.EndOfMessage())
                if not up.reusable():
                    conn._drop_upstream(up)
                return status, ""
            else:
                raise _UpstreamClosed("upstream closed before the response was complete")
    except (ConnectionError, OSError, h11.ProtocolError) as exc:
        conn._drop_upstream(up)
        if state["sent"]:
            raise _Abort(f"upstream failed mid-response: {exc!r}") from None
        await conn._local_reply(503, UPSTREAM_RESET)
        return 503, f"upstream failed before the response: {exc!r}"


async def _drain(up) -> None:
    while True:
        event = await up.next_event()
        if isinstance(event, h11.EndOfMessage):
            return
        if not isinstance(event, (h11.Data, h11.Response, h11.InformationalResponse)):
            raise _UpstreamClosed("upstream closed during a response that is retried")
