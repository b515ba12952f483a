"""The waypoint's protocols end to end on loopback, no cluster: real HBONE in and out, a real h2
client (h2c prior knowledge), a real WebSocket client (wsproto) against the suite's echo server,
raw TCP, and bad input from many clients at once while a good client keeps being served."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import wsproto
import wsproto.events

from reference_impl.identity import Identity
from reference_impl.l7 import limits
from test_waypoint_loopback import TIMEOUT, Mesh, free_port, httpbin_port, seed  # noqa: F401 (fixture)
from tests.support.waypoint_seed import seed_token

REPO = Path(__file__).resolve().parents[2]
ECHO_SERVER = REPO / "conformance" / "probes" / "echo_server.py"
ROGUE = Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/rogue")
SERVICE_HOST = "httpbin-ambient.ambient-apps:8000"
HTTP_PORT, TCP_PORT, UNNAMED_PORT = 8000, 9000, 9100


@pytest.fixture(scope="module")
def echo_ports():
    ports = {"http": free_port(), "tcp": free_port()}
    proc = subprocess.Popen([sys.executable, str(ECHO_SERVER), "--http", str(ports["http"]), "--tcp", str(ports["tcp"])])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                import socket
                socket.create_connection(("127.0.0.1", ports["tcp"]), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the echo server did not start"
                time.sleep(0.05)
        yield ports
    finally:
        proc.terminate()
        proc.wait(10)


def policy(name: str, spec: dict) -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "ambient-apps"},
            "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "httpbin-ambient"}], **spec},
            "appliesToWorkloads": None, "appliesToServices": None}


def echo_snapshot(ports: dict, policies=()) -> dict:
    """One service, three ports to the echo server: `http` (HTTP), `tcp-echo` (TCP), unnamed."""
    snapshot = seed(ports["http"], policies=False)
    service = snapshot["allServices"][0]
    service["ports"] = {str(HTTP_PORT): ports["http"], str(TCP_PORT): ports["tcp"], str(UNNAMED_PORT): ports["tcp"]}
    service["portNames"] = {str(HTTP_PORT): "http", str(TCP_PORT): "tcp-echo", str(UNNAMED_PORT): ""}
    for endpoint in service["endpoints"].values():
        endpoint["port"] = dict(service["ports"])
    snapshot["authorizationPolicies"] = list(policies)
    return snapshot


async def exchange_tcp(mesh: Mesh, port: int, data: bytes, identity=None) -> bytes:
    """Send `data` over a tunnel to the service's `port`, half-close, read all that comes back."""
    stream = await mesh.client.connect(identity or mesh_identity(), mesh.waypoint_address,
                                       [mesh.waypoint.identity], f"10.96.0.50:{port}",
                                       {"forwarded": 'for="10.244.0.9:40000"'})
    stream.write(data)
    stream.write_eof()
    out = b""
    while chunk := await asyncio.wait_for(stream.read(65536), TIMEOUT):
        out += chunk
    return out


async def refused(exchange) -> bool:
    """The tunnel was closed or reset with nothing echoed: an L4 deny."""
    try:
        return await exchange == b""
    except ConnectionError:
        return True


def mesh_identity() -> Identity:
    return Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient")


# ---- HTTP/2 ----
async def h2_get(stream, requests: list[tuple[str, str | None]]) -> list[tuple[int, bytes]]:
    """Concurrent GETs on one h2c (prior knowledge) connection: [(status, body)] in order."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    ids = []
    for path, token in requests:
        sid = conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", SERVICE_HOST)]
        if token:
            headers.append(("authorization", f"Bearer {token}"))
        conn.send_headers(sid, headers, end_stream=True)
        ids.append(sid)
    stream.write(conn.data_to_send())
    results = {sid: [None, b"", False] for sid in ids}
    while not all(r[2] for r in results.values()):
        data = await asyncio.wait_for(stream.read(65536), TIMEOUT)
        assert data, "the waypoint closed the HTTP/2 connection"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                results[event.stream_id][0] = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.DataReceived):
                results[event.stream_id][1] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                results[event.stream_id][2] = True
        stream.write(conn.data_to_send())
    return [(results[sid][0], results[sid][1]) for sid in ids]


def test_h2c_prior_knowledge_through_the_waypoint_gets_l7_policy(httpbin_port):
    async def main():
        mesh = await Mesh(httpbin_port).start(seed(httpbin_port))
        try:
            (ok_status, ok_body), (no_token, body), (wrong_path, _) = await h2_get(
                await mesh.tunnel(), [("/ip", seed_token()), ("/ip", None), ("/headers", seed_token())])
            assert ok_status == 200 and "origin" in json.loads(ok_body)
            assert (no_token, body) == (403, b"RBAC: access denied")
            assert wrong_path == 403
            assert sorted(r.status for r in mesh.waypoint.records) == [200, 403, 403]
        finally:
            await mesh.close()

    asyncio.run(main())


# ---- WebSocket ----
async def websocket_session(stream, path: str, messages: list) -> tuple[int, list]:
    """(handshake status, frames received) for one wsproto client session over the tunnel."""
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    stream.write(ws.send(wsproto.events.Request(host=SERVICE_HOST, target=path)))
    received, status, pending, partial = [], None, list(messages), None

    async def feed():
        data = await asyncio.wait_for(stream.read(65536), TIMEOUT)
        ws.receive_data(data or None)
        return bool(data)

    while True:
        if not await feed():
            return status, received
        for event in ws.events():
            if isinstance(event, wsproto.events.AcceptConnection):
                status = 101
            elif isinstance(event, wsproto.events.RejectConnection):
                return event.status_code, received
            elif isinstance(event, (wsproto.events.TextMessage, wsproto.events.BytesMessage)):
                partial = partial + event.data if partial is not None else event.data
                if not event.message_finished:   # wsproto hands a large message over in pieces
                    continue
                received.append(partial)
                partial = None
                if pending:   # the greeting first, then one echo per message sent
                    message = pending.pop(0)
                    event_type = wsproto.events.TextMessage if isinstance(message, str) else wsproto.events.BytesMessage
                    stream.write(ws.send(event_type(data=message)))
                elif len(received) == len(messages) + 1:
                    stream.write(ws.send(wsproto.events.CloseConnection(code=1000)))
            elif isinstance(event, wsproto.events.CloseConnection):
                return status, received


def test_websocket_upgrade_passes_through_with_frames_both_ways(echo_ports):
    async def main():
        allow_ws = policy("allow-ws", {"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/ws"]}}]}]})
        mesh = await Mesh(echo_ports["http"]).start(echo_snapshot(echo_ports, [allow_ws]))
        try:
            big = bytes(range(256)) * 400   # 100 KiB: a 64-bit frame length
            status, frames = await websocket_session(await mesh.tunnel(), "/ws", ["ping 1", big, "ping 2"])
            assert status == 101
            assert frames == ["hello", "ping 1", big, "ping 2"], "server-first greeting, then every echo"
            status, frames = await websocket_session(await mesh.tunnel(), "/other", ["x"])
            assert status == 403 and frames == [], "the upgrade request gets L7 policy like any request"
        finally:
            await mesh.close()

    asyncio.run(main())


def test_websocket_upgrade_passes_through_an_http_route_that_rewrites_its_path(echo_ports):
    """A service with an HTTPRoute: the upgrade follows the route (here a rewrite of /socket to the
    echo server's /ws) and then carries frames both ways; the route's retries and timeout do not
    apply to the upgraded stream."""
    from reference_impl.xds.resources import (RouteBackend, RouteEntry, RouteMatch, RoutePathModifier,
                                              RouteRewrite, RouteRule, ServiceRoutes)

    async def main():
        snapshot = echo_snapshot(echo_ports)
        service = snapshot["allServices"][0]
        key = f"{service['namespace']}/{service['hostname']}"
        rule = RouteRule(source="HTTPRoute ambient-apps/ws rules[0]", backends=[RouteBackend(service=key, port=HTTP_PORT)],
                         rewrite=RouteRewrite(path=RoutePathModifier(type="ReplaceFullPath", value="/ws")),
                         timeout_seconds=0.5)
        snapshot["routes"] = [ServiceRoutes(service=key, rules=[rule], ports=None,
                                            matches=[RouteEntry(rule=0, match=RouteMatch(path="/socket"))]).to_dict()]
        mesh = await Mesh(echo_ports["http"]).start(snapshot)
        try:
            status, frames = await websocket_session(await mesh.tunnel(), "/socket", ["ping 1", "ping 2"])
            assert status == 101, "the routed upgrade reached the echo server's /ws through the rewrite"
            assert frames == ["hello", "ping 1", "ping 2"]
            status, frames = await websocket_session(await mesh.tunnel(), "/other", ["x"])
            assert status != 101 and frames == [], "without the route's rewrite /other is no WebSocket endpoint"
        finally:
            await mesh.close()

    asyncio.run(main())


# ---- TCP ----
NOT_HTTP = b"\x00\x01\x02 binary, not HTTP \xff\r\n\r\n"
HTTP_LOOKING = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_tcp_port_is_proxied_as_tcp_with_l4_policy_only(echo_ports):
    async def main():
        deny_admin = policy("deny-admin", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]})
        mesh = await Mesh(echo_ports["http"]).start(echo_snapshot(echo_ports, [deny_admin]))
        try:
            assert await exchange_tcp(mesh, TCP_PORT, NOT_HTTP) == NOT_HTTP
            # On the TCP port even HTTP-looking bytes are bytes: echoed, never parsed, never denied by
            # the L7 rule; on the HTTP port the same rule is live (the positive control).
            assert await exchange_tcp(mesh, TCP_PORT, HTTP_LOOKING) == HTTP_LOOKING
            assert (await exchange_tcp(mesh, HTTP_PORT, HTTP_LOOKING)).startswith(b"HTTP/1.1 403 ")
            # The unnamed port is sniffed: binary is TCP, HTTP is HTTP (and gets the L7 rule).
            assert await exchange_tcp(mesh, UNNAMED_PORT, NOT_HTTP) == NOT_HTTP
            assert (await exchange_tcp(mesh, UNNAMED_PORT, HTTP_LOOKING)).startswith(b"HTTP/1.1 403 ")

            deny_rogue = policy("deny-rogue", {"action": "DENY", "rules": [
                {"from": [{"source": {"principals": ["cluster.local/ns/ambient-apps/sa/rogue"]}}]}]})
            mesh.waypoint.apply(echo_snapshot(echo_ports, [deny_admin, deny_rogue]), 2)
            assert await refused(exchange_tcp(mesh, TCP_PORT, NOT_HTTP, identity=ROGUE)), "an L4 deny still denies"
            assert await exchange_tcp(mesh, TCP_PORT, NOT_HTTP) == NOT_HTTP, "other principals still pass"
            tcp_records = [r for r in mesh.waypoint.records if r.method == "TCP"]
            assert [r.status for r in tcp_records][-2:] == [403, 200]
        finally:
            await mesh.close()

    asyncio.run(main())


# ---- bad input, many clients at once ----
async def raw_tunnel(mesh: Mesh, data: bytes, trickle: float | None = None) -> tuple[bytes, float]:
    """(all the waypoint sent back, seconds until it closed); with `trickle`, one more header byte
    is sent every `trickle` seconds after `data` until the waypoint closes."""
    started = time.monotonic()
    stream = await mesh.tunnel()
    stream.write(data)
    out = b""

    async def keep_trickling():
        while True:
            await asyncio.sleep(trickle)
            stream.write(b"x")

    trickler = asyncio.ensure_future(keep_trickling()) if trickle else None
    try:
        while chunk := await asyncio.wait_for(stream.read(65536), 3 * TIMEOUT):
            out += chunk
    except ConnectionError:
        pass
    finally:
        if trickler:
            trickler.cancel()
    return out, time.monotonic() - started


def test_bad_input_is_refused_while_a_good_client_keeps_getting_200(httpbin_port, monkeypatch):
    # A good request stalled behind the attackers would wait until they are cut off (the bound);
    # one served beside them takes a small fraction of it, even on a loaded machine.
    bound = 3.0
    monkeypatch.setattr(limits, "REQUEST_HEADERS_TIMEOUT", bound)

    async def main():
        mesh = await Mesh(httpbin_port).start(seed(httpbin_port, policies=False))
        try:
            oversized = b"GET /get HTTP/1.1\r\nhost: x\r\n" + b"".join(
                b"x-fill-%d: %s\r\n" % (i, b"a" * 7000) for i in range(9)) + b"\r\n"
            smuggled = b"POST /post HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
            attacks = ([raw_tunnel(mesh, b"GET /get HTTP/1.1\r\nhost: x\r\n", trickle=0.2) for _ in range(20)]
                       + [raw_tunnel(mesh, oversized) for _ in range(5)]
                       + [raw_tunnel(mesh, smuggled) for _ in range(5)])
            attack = asyncio.ensure_future(asyncio.gather(*attacks))
            good = []
            while not attack.done():
                started = time.monotonic()
                status, _, _ = await mesh.get("/get")
                good.append((status, time.monotonic() - started))
            results = attack.result()
            assert len(good) >= 5 and all(status == 200 for status, _ in good), good
            assert max(seconds for _, seconds in good) < bound / 2, f"the good client was stalled: {good}"
            slow, big, conflicting = results[:20], results[20:25], results[25:]
            late_or_wrong = [(out[:40], round(seconds, 3)) for out, seconds in slow
                             if not (out.startswith(b"HTTP/1.1 408 ") and bound <= seconds < bound + 2)]
            assert not late_or_wrong, f"slow clients not cut off with a 408 in {bound}-{bound + 2} s: {late_or_wrong}"
            assert all(out.startswith(b"HTTP/1.1 431 ") for out, _ in big), big[:1]
            assert all(out.startswith(b"HTTP/1.1 400 ") for out, _ in conflicting), conflicting[:1]
            assert (await mesh.get("/get"))[0] == 200
        finally:
            await mesh.close()

    asyncio.run(main())
