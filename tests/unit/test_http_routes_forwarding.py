"""Forwarding a routed request (l7/retry.py) over in-memory streams: retries of the listed codes
only, attempts bounded, the request body resent, the timeout's 504, the fault delay, response
header modifiers, and the keep-alive connection surviving each of them."""

import asyncio
import json

import h11

from reference_impl.xds.resources import (RouteBackend, RouteEntry, RouteFault, RouteHeaderModifier, RouteMatch,
                                          RouteNameValue, RouteRetry, RouteRule, ServiceRoutes)
from tests.support.waypoint_seed import NAMESPACE, memory_pipe, seed_snapshot
from tests.unit.test_waypoint_http import Harness

SERVICE = f"{NAMESPACE}/httpbin-ambient.{NAMESPACE}.svc.cluster.local"


def snapshot_with_routes():
    backend = [RouteBackend(service=SERVICE, port=8000)]
    rules = [
        RouteRule(source="retried", backends=backend, retry=RouteRetry(attempts=2, codes=[500], backoff_seconds=0.001)),
        RouteRule(source="bounded", backends=backend, timeout_seconds=0.2),
        RouteRule(source="delayed", backends=backend, fault=RouteFault(delay_seconds=0.3, delay_percent=100)),
        RouteRule(source="plain", backends=backend, response_headers=RouteHeaderModifier(
            set=[RouteNameValue(name="x-set", value="yes")], remove=["x-app"])),
    ]
    matches = [RouteEntry(rule=i, match=RouteMatch(path=f"/{r.source}")) for i, r in enumerate(rules)]
    snap = seed_snapshot(policies=False)
    snap["routes"] = [ServiceRoutes(service=SERVICE, rules=rules, matches=matches, ports=None).to_dict()]
    return snap


async def status_app(end, seen: list):
    """Answers `/x?fail=N&code=C` with C for the first N requests it sees, then 200; `/x?sleep=S` late.
    Each answer is JSON {n: requests seen, body: the request body}."""
    conn = h11.Connection(h11.SERVER)
    while True:
        request, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await end.read(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return
        seen.append(body)
        query = dict(p.split("=") for p in request.target.decode().partition("?")[2].split("&") if "=" in p)
        if "sleep" in query:
            await asyncio.sleep(float(query["sleep"]))
        status = int(query.get("code", 500)) if len(seen) <= int(query.get("fail", 0)) else 200
        payload = json.dumps({"n": len(seen), "body": body.decode()}).encode()
        end.write(conn.send(h11.Response(status_code=status, headers=[
            ("content-length", str(len(payload))), ("x-app", "1")])))
        end.write(conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        conn.start_next_cycle()


class RoutedHarness(Harness):
    def __init__(self):
        super().__init__(snapshot_with_routes())
        self.seen = []

    async def open_upstream(self, upstream, tunnel):
        self.opened += 1
        ours, theirs = memory_pipe()
        self.tasks.append(asyncio.ensure_future(status_app(theirs, self.seen)))
        return ours, ours


def run(test):
    async def main():
        h = RoutedHarness()
        try:
            await test(h)
        finally:
            await h.close()
    asyncio.run(main())


def test_listed_code_is_retried_with_the_body_resent():
    async def test(h):
        status, _, body = await h.request("/retried?fail=2&code=500", method="POST", body=b"payload")
        assert status == 200 and json.loads(body)["n"] == 3
        assert h.seen == [b"payload"] * 3, "every attempt carries the request body"
    run(test)


def test_attempts_are_bounded_and_the_last_answer_relayed():
    async def test(h):
        status, _, body = await h.request("/retried?fail=9&code=500")
        assert status == 500 and json.loads(body)["n"] == 3
    run(test)


def test_a_code_not_listed_is_relayed_at_once():
    async def test(h):
        status, _, body = await h.request("/retried?fail=1&code=503")
        assert status == 503 and json.loads(body)["n"] == 1
        status, _, _ = await h.request("/plain?fail=1&code=500")   # a rule without retry: already past its failure
        assert status == 200
    run(test)


def test_timeout_answers_504_and_the_connection_goes_on():
    async def test(h):
        started = asyncio.get_running_loop().time()
        status, _, body = await h.request("/bounded?sleep=2")
        assert (status, body) == (504, b"upstream request timeout")
        assert asyncio.get_running_loop().time() - started < 1.5
        status, _, _ = await h.request("/bounded")
        assert status == 200
    run(test)


def test_fault_delay_holds_the_request():
    async def test(h):
        started = asyncio.get_running_loop().time()
        status, _, _ = await h.request("/delayed")
        assert status == 200 and asyncio.get_running_loop().time() - started >= 0.3
    run(test)


def test_response_headers_modified_and_unmatched_path_is_404():
    async def test(h):
        status, headers, _ = await h.request("/plain")
        assert status == 200 and headers.get("x-set") == "yes" and "x-app" not in headers
        status, _, _ = await h.request("/elsewhere")
        assert status == 404
    run(test)


def test_expect_100_continue_is_answered_by_the_proxy():
    async def test(h):
        h.client.write(h.h11.send(h11.Request(method="POST", target="/retried", headers=[
            ("host", "httpbin-ambient"), ("content-length", "4"), ("expect", "100-continue")])))
        informational = None
        while informational is None:
            event = h.h11.next_event()
            if event is h11.NEED_DATA:
                h.h11.receive_data(await asyncio.wait_for(h.client.read(65536), 2))
            else:
                informational = event
        assert isinstance(informational, h11.InformationalResponse) and informational.status_code == 100
        h.client.write(h.h11.send(h11.Data(data=b"body")) + h.h11.send(h11.EndOfMessage()))
        status, _, body = await asyncio.wait_for(h._response(), 2)
        assert status == 200 and json.loads(body)["body"] == "body"
    run(test)
