"""The waypoint's HTTP/1.1 handling over in-memory streams: keep-alive, 401/403/200, token
stripping, bodies, upstream reuse and failures. The upstream is a small h11 app that echoes what
it received, so each test sees exactly what the waypoint forwarded."""

import asyncio
import json

import h11
import pytest

from reference_impl.identity import Identity
from reference_impl.waypoint.config import WaypointConfig
from reference_impl.l7.http import (NO_CONFIG_BODY, UPSTREAM_CONNECT_FAILURE, HttpConnection,
                                                UpstreamUnavailable)
from reference_impl.l7.pipeline import Tunnel
from reference_impl.l7.routing import Router, resolve
from tests.support.waypoint_seed import SLEEP_IDENTITY_URI, memory_pipe, seed_snapshot, seed_token
from tests.unit.test_waypoint_pipeline import tampered

TIMEOUT = 5


async def until(predicate, timeout=TIMEOUT):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def echo_app(end, *, keep_alive=True, cut_after_headers=None):
    """Answers each request with JSON {method, target, headers, body}; takes heads of any size."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    while True:
        request, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await end.read(65536))
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                end.close()
                return
        payload = json.dumps({"method": request.method.decode(), "target": request.target.decode(),
                              "headers": {k.decode(): v.decode() for k, v in request.headers},
                              "body": body.decode()}).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
        if not keep_alive:
            headers.append(("connection", "close"))
        end.write(conn.send(h11.Response(status_code=200, headers=headers)))
        if cut_after_headers is not None:  # an Event: reset once the client has seen the headers
            end.write(payload[:5])
            await cut_after_headers.wait()
            end.reset()
            return
        end.write(conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        if conn.our_state is h11.MUST_CLOSE:
            end.close()
            return
        conn.start_next_cycle()


class Harness:
    def __init__(self, snapshot=None, **app_options):
        self.config = WaypointConfig.from_snapshot(snapshot or seed_snapshot(), 1) if snapshot is not False else None
        self.app_options = app_options
        self.opened = 0
        self.fail_upstream = False
        self.records = []
        self.tasks = []
        client_end, server_end = memory_pipe()
        self.client = client_end
        config = self.config or WaypointConfig.from_snapshot(seed_snapshot(), 1)
        tunnel = Tunnel(Identity.parse(SLEEP_IDENTITY_URI), "10.244.0.9", resolve(config, ("10.96.0.50", 8000)))
        self.draining = False
        self.connection = HttpConnection(server_end, server_end, tunnel, lambda: self.config, Router(),
                                         self.open_upstream, self.records.append, lambda: self.draining)
        self.served = asyncio.ensure_future(self.connection.serve())
        self.h11 = h11.Connection(h11.CLIENT)

    async def open_upstream(self, upstream, tunnel):
        if self.fail_upstream:
            raise UpstreamUnavailable("HBONE CONNECT answered 401")
        self.opened += 1
        ours, theirs = memory_pipe()
        self.tasks.append(asyncio.ensure_future(echo_app(theirs, **self.app_options)))
        return ours, ours

    async def request(self, path, token=None, method="GET", body=b"", headers=()):
        hdrs = [("host", "httpbin-ambient.ambient-apps:8000"), *headers]
        if token:
            hdrs.append(("authorization", f"Bearer {token}"))
        if body:
            hdrs.append(("content-length", str(len(body))))
        out = self.h11.send(h11.Request(method=method, target=path, headers=hdrs))
        if body:
            out += self.h11.send(h11.Data(data=body))
        out += self.h11.send(h11.EndOfMessage())
        self.client.write(out)
        return await asyncio.wait_for(self._response(), TIMEOUT)

    async def _response(self):
        status, headers, data = None, None, b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.client.read(65536))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                    self.h11.start_next_cycle()
                return status, headers, data
            else:
                raise ConnectionError(f"waypoint closed the connection: {event!r}")

    async def close(self):
        self.client.close()
        await asyncio.wait_for(self.served, TIMEOUT)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def test_article_outcomes_on_one_keep_alive_connection():
    async def main():
        h = Harness()
        status, _, body = await h.request("/headers", seed_token())
        assert (status, body) == (403, b"RBAC: access denied")
        status, _, body = await h.request("/ip")
        assert (status, body) == (403, b"RBAC: access denied")
        status, headers, body = await h.request("/ip", tampered(seed_token()))
        assert (status, body) == (401, b"Jwt verification fails")
        assert "www-authenticate" in headers
        for _ in range(2):
            status, _, body = await h.request("/ip?x=1", seed_token())
            assert status == 200
            seen = json.loads(body)
            assert seen["target"] == "/ip?x=1"
            assert "authorization" not in seen["headers"], "the JWT must be removed before forwarding"
            assert seen["headers"]["host"] == "httpbin-ambient.ambient-apps:8000"
        assert h.opened == 1, "a keep-alive upstream is reused for the same endpoint"
        await h.close()
        await until(lambda: len(h.records) == 5)
        assert [r.status for r in h.records] == [403, 403, 401, 200, 200]
        assert h.records[0].principal == SLEEP_IDENTITY_URI and h.records[0].path == "/headers"

    asyncio.run(main())


def test_request_body_is_relayed_and_refused_bodies_do_not_break_the_connection():
    async def main():
        h = Harness()
        status, _, _ = await h.request("/headers", seed_token(), method="POST", body=b"x" * 100_000)
        assert status == 403
        status, _, body = await h.request("/ip", seed_token(), method="POST", body=b"hello")
        assert status == 200 and json.loads(body)["body"] == "hello"
        await h.close()

    asyncio.run(main())


def test_upstream_that_closes_is_not_reused():
    async def main():
        h = Harness(seed_snapshot(policies=False), keep_alive=False)
        for _ in range(3):
            assert (await h.request("/get"))[0] == 200
        assert h.opened == 3
        await h.close()

    asyncio.run(main())


def test_no_config_yet_is_503():
    async def main():
        h = Harness(False)
        status, _, body = await h.request("/ip", seed_token())
        assert (status, body) == (503, NO_CONFIG_BODY)
        await h.close()

    asyncio.run(main())


def test_unreachable_upstream_is_503_and_connection_survives():
    async def main():
        h = Harness(seed_snapshot(policies=False))
        h.fail_upstream = True
        status, _, body = await h.request("/get")
        assert (status, body) == (503, UPSTREAM_CONNECT_FAILURE)
        await until(lambda: h.records)
        assert "HBONE CONNECT answered 401" in h.records[-1].reason
        h.fail_upstream = False
        assert (await h.request("/get"))[0] == 200
        await h.close()

    asyncio.run(main())


def test_upstream_reset_mid_response_resets_the_client():
    async def main():
        headers_seen = asyncio.Event()
        h = Harness(seed_snapshot(policies=False), cut_after_headers=headers_seen)
        h.client.write(h.h11.send(h11.Request(method="GET", target="/get", headers=[("host", "x")]))
                       + h.h11.send(h11.EndOfMessage()))
        events = []
        with pytest.raises(ConnectionError):
            while True:
                event = h.h11.next_event()
                if event is h11.NEED_DATA:
                    h.h11.receive_data(await asyncio.wait_for(h.client.read(65536), TIMEOUT))
                    continue
                events.append(event)
                if isinstance(event, h11.Response):
                    headers_seen.set()
        assert isinstance(events[0], h11.Response) and events[0].status_code == 200
        assert not any(isinstance(e, h11.EndOfMessage) for e in events)
        await asyncio.wait_for(h.served, TIMEOUT)
        assert h.connection.writer.was_reset

    asyncio.run(main())


def test_malformed_request_gets_400():
    async def main():
        h = Harness()
        h.client.write(b"GARBAGE\r\n\r\n")
        data = b""
        while chunk := await asyncio.wait_for(h.client.read(65536), TIMEOUT):
            data += chunk
        assert data.startswith(b"HTTP/1.1 400 ")
        await asyncio.wait_for(h.served, TIMEOUT)

    asyncio.run(main())


def test_draining_closes_after_the_current_response_and_closes_idle_connections():
    async def main():
        h = Harness(seed_snapshot(policies=False))
        assert (await h.request("/get"))[0] == 200
        assert not h.served.done()
        assert h.connection.close_if_idle(), "an idle keep-alive connection is closed on drain"
        await asyncio.wait_for(h.served, TIMEOUT)

        h = Harness(seed_snapshot(policies=False))
        h.draining = True
        status, headers, _ = await h.request("/get")
        assert status == 200 and headers.get("connection") == "close"
        await asyncio.wait_for(h.served, TIMEOUT)
        status, headers, _ = await Harness(seed_snapshot(), ).request("/ip")
        assert status == 403 and "connection" not in headers

    asyncio.run(main())
