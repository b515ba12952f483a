"""The waypoint's front end over in-memory streams: which protocol a port speaks (Istio's rules),
sniffing, the bad-input bounds of HTTP/1.1, HTTP/2 with prior knowledge through the same
pipeline, and the L4-only decision on TCP passthrough. The upstream is the echo app of
test_waypoint_http, so each test sees what the waypoint forwarded."""

import asyncio
import json

import h2.config
import h2.connection
import h2.events
import pytest

from reference_impl.identity import Identity
from reference_impl.l7 import limits
from reference_impl.l7.front import HTTP1, HTTP2, classify
from reference_impl.l7.http2 import Http2Connection
from reference_impl.l7.pipeline import Tunnel
from reference_impl.l7.protocols import HTTP, TCP, UNKNOWN, port_protocol, sniff
from reference_impl.l7.routing import Router, resolve
from reference_impl.l7.tcp import authorize_tcp
from reference_impl.waypoint.config import WaypointConfig
from tests.support.waypoint_seed import SLEEP_IDENTITY_URI, memory_pipe, seed_snapshot, seed_token
from tests.unit.test_waypoint_http import TIMEOUT, Harness, echo_app

SLEEP = Identity.parse(SLEEP_IDENTITY_URI)
ROGUE = Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/rogue")


# ---- which protocol a Service port speaks ----
@pytest.mark.parametrize("port, name, app_protocol, expected", [
    (8000, "http", None, HTTP), (8000, "http-api", None, HTTP), (8000, "HTTP2", None, HTTP),
    (9000, "grpc", None, HTTP), (9000, "grpc-web", None, HTTP), (9000, "grpc-web-x", None, HTTP),
    (9000, "tcp", None, TCP), (9000, "tcp-echo", None, TCP), (9000, "mysql-main", None, TCP),
    (9000, "redis", None, TCP), (9000, "tls", None, TCP), (9000, "https", None, TCP),
    (9000, "", None, UNKNOWN), (9000, "echo", None, UNKNOWN), (9000, "httpx", None, UNKNOWN),
    (9000, "tcp", "http", HTTP),                    # appProtocol wins over the name
    (8000, "http", "tcp", TCP),
    (9000, "", "kubernetes.io/h2c", HTTP), (9000, "", "kubernetes.io/ws", HTTP),
    (9000, "", "kubernetes.io/wss", TCP),
    (3306, "", None, TCP), (27017, "", None, TCP), (53, "", None, TCP),   # server-first well-known ports
    (3306, "http", None, HTTP),
])
def test_port_protocol_follows_istio(port, name, app_protocol, expected):
    assert port_protocol(port, name, app_protocol) == expected


@pytest.mark.parametrize("data, expected", [
    (b"GET / HTTP/1.1\r\n", HTTP), (b"OPTIONS * HTTP/1.0\r\n", HTTP), (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP),
    (b"GET /x", None), (b"PRI * HT", None), (b"\x16\x03\x01\x02\x00", TCP), (b"hello world\n", TCP),
    (b"SSH-2.0-OpenSSH\r\n", TCP), (b"GET / HTTP/9.9\r\n", TCP), (b" GET", TCP),
    (b"A" * (8 * 1024), TCP),
])
def test_sniff(data, expected):
    assert sniff(data) == expected


def test_classify_never_parses_a_tcp_port_and_tells_h2_from_http1():
    async def main():
        async def of(data: bytes, declared: str, eof: bool = True):
            reader = asyncio.StreamReader()
            reader.feed_data(data)
            if eof:
                reader.feed_eof()
            return await asyncio.wait_for(classify(reader, declared), TIMEOUT)

        assert await of(b"GET / HTTP/1.1\r\n\r\n", TCP) == (b"", TCP)
        assert (await of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP))[1] == HTTP2
        assert (await of(b"POST / HTTP/1.1\r\n", HTTP))[1] == HTTP1
        assert (await of(b"GARBAGE\r\n\r\n", HTTP))[1] == HTTP1, "a declared HTTP port gets h11's 400"
        assert (await of(b"\x00\x01binary\n", UNKNOWN))[1] == TCP
        assert (await of(b"GET /ip HTTP/1.1\r\n", UNKNOWN))[1] == HTTP1
        assert (await of(b"GET /i", UNKNOWN))[1] is None, "EOF before the request line told: nothing to serve"

    asyncio.run(main())


def test_classify_cuts_off_a_client_that_stalls_in_its_request_line(monkeypatch):
    monkeypatch.setattr(limits, "REQUEST_HEADERS_TIMEOUT", 0.2)

    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(b"GET /slow")
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(classify(reader, UNKNOWN), TIMEOUT) == (b"GET /slow", None)
        assert asyncio.get_running_loop().time() - started < 2

    asyncio.run(main())


# ---- HTTP/1.1 bad input ----
async def raw_exchange(h: Harness, data: bytes) -> bytes:
    h.client.write(data)
    out = b""
    while chunk := await asyncio.wait_for(h.client.read(65536), TIMEOUT):
        out += chunk
    await asyncio.wait_for(h.served, TIMEOUT)
    return out


def test_header_block_over_60_kib_is_431_and_under_it_passes():
    async def main():
        h = Harness(seed_snapshot(policies=False))
        near = [(f"x-fill-{i}", "a" * 7000) for i in range(8)]              # ~56 KiB
        status, _, body = await h.request("/get", headers=near)
        assert status == 200 and len(json.loads(body)["headers"]["x-fill-7"]) == 7000
        await h.close()

        h = Harness(seed_snapshot(policies=False))
        over = "".join(f"x-fill-{i}: {'a' * 7000}\r\n" for i in range(9))   # ~63 KiB
        out = await raw_exchange(h, f"GET /get HTTP/1.1\r\nhost: x\r\n{over}\r\n".encode())
        assert out.startswith(b"HTTP/1.1 431 "), out[:80]
        assert h.opened == 0

        h = Harness(seed_snapshot(policies=False))   # the same head in pieces, never finished
        h.client.write(f"GET /get HTTP/1.1\r\nhost: x\r\n{over[:30_000]}".encode())
        await asyncio.sleep(0.05)
        out = await raw_exchange(h, over[30_000:].encode())
        assert out.startswith(b"HTTP/1.1 431 "), out[:80]

    asyncio.run(main())


@pytest.mark.parametrize("framing", [
    b"content-length: 5\r\ntransfer-encoding: chunked\r\n",
    b"transfer-encoding: chunked\r\ncontent-length: 5\r\n",
    b"content-length: 5\r\ncontent-length: 6\r\n",
])
def test_conflicting_body_framing_is_400_and_never_forwarded(framing):
    async def main():
        h = Harness(seed_snapshot(policies=False))
        out = await raw_exchange(h, b"POST /post HTTP/1.1\r\nhost: x\r\n" + framing + b"\r\n5\r\nhello\r\n0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 "), out[:80]
        assert out.count(b"HTTP/1.1") == 1 and h.opened == 0

    asyncio.run(main())


def test_headers_slower_than_the_bound_get_408_and_the_connection_closes(monkeypatch):
    monkeypatch.setattr(limits, "REQUEST_HEADERS_TIMEOUT", 0.3)

    async def main():
        h = Harness(seed_snapshot(policies=False))
        loop = asyncio.get_running_loop()
        started = loop.time()
        h.client.write(b"GET /get HTTP/1.1\r\nhost: x\r\n")
        # A byte now and then keeps a slowloris alive unless the bound is on the whole head.
        with pytest.raises(BrokenPipeError):
            for _ in range(50):
                await asyncio.sleep(0.05)
                h.client.write(b"x")
        assert 0.3 <= loop.time() - started < 2
        out = b""
        while chunk := await asyncio.wait_for(h.client.read(65536), TIMEOUT):
            out += chunk
        assert out.startswith(b"HTTP/1.1 408 "), out[:80]
        await asyncio.wait_for(h.served, TIMEOUT)
        assert h.opened == 0

    asyncio.run(main())


def test_an_idle_keep_alive_connection_is_not_cut_by_the_headers_bound(monkeypatch):
    monkeypatch.setattr(limits, "REQUEST_HEADERS_TIMEOUT", 0.2)

    async def main():
        h = Harness(seed_snapshot(policies=False))
        assert (await h.request("/get"))[0] == 200
        await asyncio.sleep(0.5)
        assert not h.served.done()
        assert (await h.request("/get"))[0] == 200
        await h.close()

    asyncio.run(main())


# ---- HTTP/2 with prior knowledge ----
class H2Harness:
    """A real h2 client against Http2Connection, upstreams from the echo app."""

    def __init__(self, snapshot, app=echo_app):
        self.config = WaypointConfig.from_snapshot(snapshot, 1)
        self.app = app
        self.records, self.tasks, self.opened = [], [], 0
        self.client, server_end = memory_pipe()
        tunnel = Tunnel(SLEEP, "10.244.0.9", resolve(self.config, ("10.96.0.50", 8000)))
        self.connection = Http2Connection(server_end, server_end, tunnel, lambda: self.config, Router(),
                                          self.open_upstream, self.records.append)
        self.served = asyncio.ensure_future(self.connection.serve())
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.client.write(self.h2.data_to_send())
        self.responses: dict[int, dict] = {}

    async def open_upstream(self, upstream, tunnel):
        self.opened += 1
        ours, theirs = memory_pipe()
        self.tasks.append(asyncio.ensure_future(self.app(theirs)))
        return ours, ours

    def send(self, path, headers=(), body=b"", method="GET") -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, [(":method", method), (":path", path), (":scheme", "http"),
                                         (":authority", "httpbin-ambient.ambient-apps:8000"), *headers],
                             end_stream=not body)
        if body:
            self.h2.send_data(stream_id, body, end_stream=True)
        self.client.write(self.h2.data_to_send())
        self.responses[stream_id] = {"status": None, "headers": {}, "body": b"", "done": False}
        return stream_id

    async def wait(self, *stream_ids):
        async def pump():
            while not all(self.responses[s]["done"] for s in stream_ids):
                data = await self.client.read(65536)
                if not data:
                    raise ConnectionError("waypoint closed the HTTP/2 connection")
                for event in self.h2.receive_data(data):
                    r = self.responses.get(getattr(event, "stream_id", 0))
                    if isinstance(event, h2.events.ResponseReceived):
                        r["headers"] = dict(event.headers)
                        r["status"] = int(r["headers"][":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        r["body"] += event.data
                        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        r["done"] = True
                self.client.write(self.h2.data_to_send())
        await asyncio.wait_for(pump(), TIMEOUT)
        return [self.responses[s] for s in stream_ids]

    close = Harness.close   # the same client end, served task and upstream tasks


def test_http2_streams_get_the_same_policy_as_http1_and_run_concurrently():
    async def main():
        h = H2Harness(seed_snapshot())
        allowed = h.send("/ip?x=1", [("authorization", f"Bearer {seed_token()}")])
        no_token = h.send("/ip")
        wrong_path = h.send("/headers", [("authorization", f"Bearer {seed_token()}")])
        posted = h.send("/ip", [("authorization", f"Bearer {seed_token()}")], body=b"h2 body", method="POST")
        ok, denied, denied_path, post = await h.wait(allowed, no_token, wrong_path, posted)
        assert (denied["status"], denied["body"]) == (403, b"RBAC: access denied")
        assert (denied_path["status"], denied_path["body"]) == (403, b"RBAC: access denied")
        assert ok["status"] == 200
        seen = json.loads(ok["body"])
        assert seen["target"] == "/ip?x=1" and seen["headers"]["host"] == "httpbin-ambient.ambient-apps:8000"
        assert "authorization" not in seen["headers"] and seen["headers"]["x-request-id"]
        assert post["status"] == 200 and json.loads(post["body"])["body"] == "h2 body"
        await h.close()
        assert sorted(r.status for r in h.records) == [200, 200, 403, 403]

    asyncio.run(main())


def test_http2_header_list_over_the_bound_is_431_for_that_stream_only():
    async def main():
        h = H2Harness(seed_snapshot(policies=False))
        big = h.send("/get", [(f"x-fill-{i}", "a" * 7000) for i in range(9)])
        small = h.send("/get")
        too_big, fine = await h.wait(big, small)
        assert too_big["status"] == 431 and fine["status"] == 200
        await h.close()

    asyncio.run(main())


# ---- TCP passthrough: L4 policy only ----
def _config(policy_specs: list[dict]) -> WaypointConfig:
    snapshot = seed_snapshot(policies=False)
    snapshot["authorizationPolicies"] = [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": f"p{i}", "namespace": "ambient-apps"},
         "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "httpbin-ambient"}], **spec},
         "appliesToWorkloads": None, "appliesToServices": None}
        for i, spec in enumerate(policy_specs)]
    return WaypointConfig.from_snapshot(snapshot, 1)


def _tcp_allowed(config, peer) -> bool:
    tunnel = Tunnel(peer, "10.244.0.9", resolve(config, ("10.96.0.50", 8000)))
    return authorize_tcp(config, tunnel, Router().pick(config, tunnel.destination)).allowed


def test_tcp_gets_l4_policy_only():
    deny_rogue = {"action": "DENY", "rules": [{"from": [{"source": {"principals": [ROGUE.uri[len("spiffe://"):]]}}]}]}
    deny_path = {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}
    deny_path_on_port = {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"], "ports": ["8000"]}}]}]}
    allow_path = {"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}]}
    assert _tcp_allowed(_config([]), SLEEP)
    assert not _tcp_allowed(_config([deny_rogue]), ROGUE) and _tcp_allowed(_config([deny_rogue]), SLEEP)
    assert _tcp_allowed(_config([deny_path]), SLEEP), "a DENY rule with only HTTP fields does nothing to TCP"
    assert not _tcp_allowed(_config([deny_path_on_port]), SLEEP), "its L4 part (the port) is kept"
    assert not _tcp_allowed(_config([allow_path]), SLEEP), "an ALLOW rule with HTTP fields admits no TCP"


def test_http2_requests_follow_http_routes_delay_timeout_and_response_headers():
    from tests.unit.test_http_routes_forwarding import snapshot_with_routes, status_app

    async def main():
        h = H2Harness(snapshot_with_routes())
        loop = asyncio.get_running_loop()
        started = loop.time()
        delayed, = await h.wait(h.send("/delayed"))
        assert delayed["status"] == 200 and loop.time() - started >= 0.3, "the route's fault delay"
        plain, = await h.wait(h.send("/plain"))
        assert plain["status"] == 200 and plain["headers"].get("x-set") == "yes", plain["headers"]
        await h.close()

        h = H2Harness(snapshot_with_routes(), app=lambda end: status_app(end, []))
        started = loop.time()
        bounded, = await h.wait(h.send("/bounded?sleep=2"))
        assert (bounded["status"], bounded["body"]) == (504, b"upstream request timeout")
        assert loop.time() - started < 1.5, "the route's 0.2 s timeout"
        await h.close()

    asyncio.run(main())
