"""Protocols and bad input at a waypoint (AMBIENT-L7): HTTP/2 with prior knowledge, WebSocket,
TCP on a waypoint-bound service's TCP and undeclared ports, and requests a proxy must refuse
without stalling anyone else.

One world for the module (manifests/l7-protocols.yaml): a waypoint of the current Istio form, the
suite's echo server (conformance/probes/echo_server.py, standard library only) behind a Service
bound to it with an HTTP, a `tcp-` and an undeclared port, and two policies: an L7-only DENY of
`/denied*` and an L4 DENY of the `rogue` client. The clients are captured pods: curl (HTTP/1.1 and
`--http2-prior-knowledge`) and two of the suite's probe pods (conformance/probes/wire_probe.py)
for WebSocket, raw TCP and malformed HTTP, one of them the rogue.

"Through the waypoint" is observed from outside: the echo server returns the request headers it
received, and an L7 proxy that re-originates a request adds `x-request-id` and `x-forwarded-proto`
(Envoy always does), which neither curl nor ztunnel adds.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest

from conformance import convergence, workloads as w
from conformance.convergence import eventually
from conformance.manifests import load
from conformance.scenario import Scenario
from conformance.targets.base import Pod

HERE = Path(__file__).resolve().parent
PROBES = HERE.parent / "probes"
WORLD = HERE / "manifests" / "l7-protocols.yaml"
HTTP_PORT, TCP_PORT, RAW_PORT = 8000, 9000, 9100
H2C = ("--http2-prior-knowledge",)
DENIED_BODY = "RBAC: access denied"
PROXY_HEADERS = ("x-request-id", "x-forwarded-proto")
NOT_HTTP = b"\x00\x01\x02 not HTTP at all \xfe\xff\r\n\r\n"
HTTP_TO_DENIED = b"GET /denied HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"


def echo_server(ns: str, node: str | None) -> list[dict]:
    """The echo server in a stock Python image: WebSocket/HTTP on 8080, TCP echo on 9000."""
    source = (PROBES / "echo_server.py").read_text()
    container = {"name": "echo", "image": w.PYTHON_IMAGE, "imagePullPolicy": w.PULL_POLICY,
                 "command": ["python3", "-c", source, "--http", "8080", "--tcp", "9000"],
                 "ports": [{"containerPort": 8080}, {"containerPort": 9000}]}
    return [w.service_account(ns, "echo"),
            w.deployment(ns, "echo", [container], node=node, terminationGracePeriodSeconds=0)]


@dataclass
class ProtocolWorld:
    sc: Scenario
    server_ns: str
    client_ns: str
    curl: Pod
    prober: Pod
    rogue: Pod

    @property
    def host(self) -> str:
        return f"echo.{self.server_ns}"

    def url(self, path: str, port: int = HTTP_PORT) -> str:
        return f"http://{self.host}:{port}{path}"

    def probe(self, attempts: list[dict], pod: Pod | None = None, timeout: float = 60) -> list[dict]:
        """Run wire_probe.py attempts (concurrently) from `pod` (default: the prober)."""
        for a in attempts:
            a.setdefault("host", self.host)
            a.setdefault("port", HTTP_PORT)
        spec = base64.b64encode(json.dumps({"attempts": attempts}).encode()).decode()
        result = self.sc.run_probe(pod or self.prober, "wire_probe.py", [spec], timeout=timeout)
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert len(lines) == len(attempts), f"wire_probe.py reported {len(lines)} of {len(attempts)}: " \
                                            f"{result.stdout[-500:]} {result.stderr[-500:]}"
        return lines

    def echoed_headers(self, path: str = "/get", options: tuple[str, ...] = ()) -> tuple[object, dict]:
        response, = self.sc.responses(self.curl, self.url(path), body=True, curl_options=options)
        if response.outcome != 200:
            return response.outcome, {}
        return 200, json.loads(response.body)["headers"]


@pytest.fixture(scope="module")
def world(target):
    sc = Scenario(target, "l7-protocols")
    try:
        server_node, client_node = sc.spread_nodes()
        srv, cli = sc.namespace("l7p-srv"), sc.namespace("l7p-cli")
        objects = load(WORLD.read_text().replace("CLIENT_NS", cli))
        for obj in objects:
            obj["metadata"]["namespace"] = srv
        probes = {"wire_probe.py": (PROBES / "wire_probe.py").read_text()}
        sc.apply(echo_server(srv, server_node) + objects + w.client(cli, "client", node=client_node)
                 + sc.probe_manifests(cli, "prober", client_node, probes)
                 + sc.probe_manifests(cli, "rogue", client_node, probes))
        sc.ready(srv, cli)
        world = ProtocolWorld(sc, srv, cli, sc.pod(cli, "client"), sc.pod(cli, "prober"), sc.pod(cli, "rogue"))
        # The waypoint and both policies are in effect once /denied is 403 and /get carries the
        # waypoint's headers.
        sc.converge(world.curl, world.url("/denied"), lambda o: o == 403,
                    "the waypoint's L7 DENY of /denied: expected 403")
        eventually(lambda: [world.echoed_headers()],
                   lambda r: r[0] == 200 and all(h in r[1] for h in PROXY_HEADERS), n_consecutive=1,
                   what="requests to the echo service carry the waypoint's x-request-id / x-forwarded-proto",
                   timeout=convergence.POLICY_CONVERGENCE_SECONDS)
        yield world
    finally:
        sc.cleanup()


@pytest.mark.features("WaypointHTTP2PriorKnowledge")
def test_h2c_prior_knowledge_through_the_waypoint_gets_l7_policy(world):
    """HTTP/2 with prior knowledge MUST be served through the waypoint (the app sees the waypoint's
    headers) and MUST get the same L7 policy as HTTP/1.1: a denied path is 403 `RBAC: access denied`."""
    status, headers = world.echoed_headers("/get", H2C)
    assert status == 200, f"h2c GET /get through the waypoint: expected 200, got {status}"
    assert all(h in headers for h in PROXY_HEADERS), f"the h2c request did not pass the waypoint: {headers}"
    denied, = world.sc.responses(world.curl, world.url("/denied"), body=True, curl_options=H2C)
    assert (denied.outcome, denied.body.strip()) == (403, DENIED_BODY), \
        f"h2c GET /denied: expected 403 {DENIED_BODY!r}, got {denied.outcome} {denied.body[:100]!r}"
    h1, = world.sc.responses(world.curl, world.url("/denied-too"), body=True)
    assert h1.outcome == 403, f"the same DENY over HTTP/1.1: expected 403, got {h1.outcome}"


@pytest.mark.features("WaypointWebSocketUpgrade")
def test_websocket_upgrade_passes_through_the_waypoint(world):
    """A WebSocket upgrade MUST pass the waypoint: 101, the server's frame first, then an echo of
    each message (text and 100 KiB binary); an upgrade to a denied path MUST be 403, no upgrade."""
    messages = [{"text": "one"}, {"binary_len": 100 * 1024}, {"text": "three"}]
    session, denied = world.probe([
        {"name": "session", "mode": "websocket", "path": "/ws", "messages": messages, "timeout": 10},
        {"name": "denied", "mode": "websocket", "path": "/denied/ws", "messages": [{"text": "x"}], "timeout": 10}])
    assert session["outcome"] == "echoed" and session["echoed"] == len(messages), session
    assert session["greeting"] == "hello", f"the server's first frame did not come through: {session}"
    assert (denied["outcome"], denied["status"]) == ("refused", 403), denied


@pytest.mark.features("WaypointTCPPassthrough")
def test_tcp_port_is_proxied_as_tcp_with_l4_policy_only(world):
    """Bytes on a port declared TCP MUST be relayed unchanged (even ones that look like HTTP to a
    denied path, which the L7-only DENY refuses on the HTTP port), and the L4 DENY of the rogue
    client MUST still refuse its connection while the prober's passes."""
    data = base64.b64encode(NOT_HTTP).decode()
    looks_http = base64.b64encode(HTTP_TO_DENIED).decode()
    binary, http_bytes, on_http_port = world.probe([
        {"name": "binary", "mode": "tcp", "port": TCP_PORT, "data_b64": data, "timeout": 5},
        {"name": "http-bytes", "mode": "tcp", "port": TCP_PORT, "data_b64": looks_http, "timeout": 5},
        {"name": "http-port", "mode": "raw", "port": HTTP_PORT, "data_b64": looks_http, "timeout": 5}])
    assert binary["outcome"] == "echoed", f"non-HTTP bytes on the TCP port: {binary}"
    assert http_bytes["outcome"] == "echoed", f"on a TCP port HTTP-looking bytes are bytes: {http_bytes}"
    assert on_http_port["status"] == 403, f"the L7 DENY is live on the HTTP port: {on_http_port}"
    rogue, = world.probe([{"name": "rogue", "mode": "tcp", "port": TCP_PORT, "data_b64": data, "timeout": 5}],
                         pod=world.rogue)
    assert rogue["outcome"] in ("reset", "closed", "connect_refused"), \
        f"the L4 DENY of the rogue client must refuse its TCP connection promptly: {rogue}"


@pytest.mark.features("WaypointUndeclaredPortSniffing")
def test_undeclared_port_is_sniffed(world):
    """On a port with no declared protocol, binary MUST be relayed as TCP and an HTTP request MUST
    get L7 policy (403 for a denied path)."""
    binary, http = world.probe([
        {"name": "binary", "mode": "tcp", "port": RAW_PORT, "data_b64": base64.b64encode(NOT_HTTP).decode(),
         "timeout": 5},
        {"name": "http", "mode": "raw", "port": RAW_PORT, "data_b64": base64.b64encode(HTTP_TO_DENIED).decode(),
         "timeout": 5}])
    assert binary["outcome"] == "echoed", binary
    assert http["status"] == 403, f"HTTP on the undeclared port must meet the L7 DENY: {http}"


@pytest.mark.features("WaypointConnectionCloseEndsCleanly")
def test_a_response_before_connection_close_arrives_whole(world):
    """A client's `Connection: close` MUST end the connection after the whole response, with a FIN:
    a 4 MiB body (more than every buffer on the way holds, so a reset in place of the FIN would cut
    it short), and the 403 of a denied path the same way."""
    size = 4 << 20
    request = f"GET /bytes/{size} HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n".encode()
    whole, denied = world.probe([
        {"name": "whole", "mode": "raw", "data_b64": base64.b64encode(request).decode(), "timeout": 30},
        {"name": "denied", "mode": "raw", "data_b64": base64.b64encode(HTTP_TO_DENIED).decode(), "timeout": 10}])
    assert (whole["outcome"], whole["status"]) == ("answered", 200), \
        f"GET /bytes/{size} with Connection: close must end with the server's FIN after the body: {whole}"
    assert whole["received"] > size, f"the {size}-byte body arrived short ({whole['received']} bytes with the head)"
    assert (denied["outcome"], denied["status"]) == ("answered", 403), \
        f"the denied path's 403 with Connection: close must end with a FIN too: {denied}"


@pytest.mark.features("WaypointConnectionCloseWaitsForSlowReader")
def test_a_slow_reader_still_gets_the_whole_response_before_connection_close(world):
    """A client that asks for `Connection: close` and starts reading only after 1.5 s MUST still get the
    whole 4 MiB response, then a FIN. Meanwhile the response fills the client's HBONE window and every
    buffer on the way, and the server's side of the tunnel ends while the client's has not: a waypoint
    that gives up then on the bytes still queued (a reset, or a close with its write buffer unflushed
    after a grace time) cuts the response short. The same client reading at once gets it whole (the
    positive control: what differs is only the pause)."""
    size = 4 << 20
    request = base64.b64encode(f"GET /bytes/{size} HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"
                               .encode()).decode()
    prompt, slow = world.probe([
        {"name": "prompt", "mode": "raw", "data_b64": request, "timeout": 30},
        {"name": "slow", "mode": "raw", "data_b64": request, "timeout": 30, "read_after": 1.5}])
    assert (prompt["outcome"], prompt["status"]) == ("answered", 200) and prompt["received"] > size, \
        f"the prompt reader must get the whole {size}-byte body and a FIN: {prompt}"
    assert (slow["outcome"], slow["status"]) == ("answered", 200), \
        f"a reader that waits 1.5 s before reading must still get the response and then a FIN, not a reset: {slow}"
    assert slow["received"] == prompt["received"], \
        f"the slow reader got {slow['received']} bytes, the prompt one {prompt['received']}"


def http1_responses(data: bytes) -> list[tuple[int, bytes]]:
    """The HTTP/1.1 responses in `data`, in order: (status, body), parsed by h11 one at a time (its
    client side reads a response only after a request of its own, so each gets a stand-in)."""
    out = []
    while data:
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "probe")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(data)
        status, body = None, b""
        while (event := conn.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        else:
            raise AssertionError(f"a response cut short: {data[:200]!r}")
        out.append((status, body))
        data = conn.trailing_data[0]
    return out


@pytest.mark.features("WaypointHTTP1Framing")
def test_a_chunked_body_and_pipelined_requests_arrive_whole_and_in_order(world):
    """A chunked request body MUST reach the app whole (its length and digest as sent), and a second
    request pipelined behind it on the same connection MUST be answered after it, in order."""
    body_chunks = (b"hello ", b"chunked ", b"world")
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body_chunks) + b"0\r\n\r\n"
    pipelined = (b"POST /anything/chunked HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
                 + b"GET /anything/second HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
    result, = world.probe([{"name": "pipelined", "mode": "raw", "timeout": 20, "keep": True,
                            "data_b64": base64.b64encode(pipelined).decode()}])
    assert result["outcome"] == "answered", f"the pipelined requests were not answered and closed: {result}"
    answers = http1_responses(base64.b64decode(result["data_b64"]))
    assert [status for status, _ in answers] == [200, 200], f"two 200s, in order: {answers}"
    first, second = (json.loads(body) for _, body in answers)
    whole = b"".join(body_chunks)
    assert first["request"].startswith("POST /anything/chunked") and all(h in first["headers"] for h in PROXY_HEADERS), \
        f"the first answer must be the POST's, through the waypoint: {first}"
    assert (first["body_length"], first["body_sha256"]) == (len(whole), hashlib.sha256(whole).hexdigest()), \
        f"the chunked body must reach the app whole: {first}"
    assert second["request"].startswith("GET /anything/second"), f"the second answer must be the GET's: {second}"


@pytest.mark.features("WaypointRemovesHopByHopHeaders")
def test_hop_by_hop_headers_end_at_the_waypoint(world):
    """A header the client's `Connection` header names, and `Keep-Alive` and `Proxy-Connection`, are
    hop-by-hop (RFC 9110 section 7.6.1): the waypoint MUST NOT forward them to the app, while an
    end-to-end header sent beside them MUST arrive (and so must a header the waypoint adds, the sign
    that the request went through it)."""
    options = ("-H", "Connection: keep-alive, x-hop-secret", "-H", "x-hop-secret: for-the-next-hop-only",
               "-H", "Keep-Alive: timeout=5", "-H", "Proxy-Connection: keep-alive", "-H", "x-end-to-end: kept")
    status, headers = world.echoed_headers("/get", options)
    assert status == 200, f"GET /get with hop-by-hop headers: {status}"
    assert headers.get("x-end-to-end") == "kept" and all(h in headers for h in PROXY_HEADERS), \
        f"the end-to-end header and the waypoint's own must reach the app: {headers}"
    forwarded = sorted({"x-hop-secret", "keep-alive", "proxy-connection"} & set(headers))
    assert not forwarded, f"hop-by-hop headers reached the app through the waypoint: {forwarded} ({headers})"


@pytest.mark.features("WaypointStreamsResponses")
def test_a_response_reaches_the_client_while_the_server_still_writes_it(world):
    """A response whose head and first KiB the server sends at once, then its second KiB 2.5 s later,
    MUST reach the client in two parts: the first at least a second before the second. The end MUST
    come after the server's pause (the control: the server did pause, so the first part's lead is
    the waypoint's doing). A waypoint that holds a message until it ends delivers both at once."""
    pause = 2.5
    request = base64.b64encode(f"GET /pause/{int(pause * 1000)} HTTP/1.1\r\nHost: echo\r\n"
                               "Connection: close\r\n\r\n".encode()).decode()
    streamed, = world.probe([{"name": "paused", "mode": "raw", "data_b64": request, "timeout": 30}])
    assert (streamed["outcome"], streamed["status"]) == ("answered", 200) and streamed["received"] > 2048, \
        f"GET /pause must be answered 200 with its whole 2 KiB body: {streamed}"
    assert streamed["last_byte_after"] >= pause - 0.2, \
        f"the body's second KiB came before the server's {pause} s pause ended: {streamed}"
    lead = streamed["last_byte_after"] - streamed["first_byte_after"]
    assert lead >= 1.0, (f"the head and first KiB reached the client only {lead:.3f} s before the rest, which the "
                         f"server sent {pause} s after them: the waypoint held the response ({streamed})")


def _head(path: str, extra: str = "", body: bytes = b"") -> str:
    raw = f"POST {path} HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n{extra}\r\n".encode() + body
    return base64.b64encode(raw).decode()


class GoodClient:
    """curl from the client pod, again and again, until stopped: every outcome it saw."""

    def __init__(self, world: ProtocolWorld):
        self.world, self.outcomes, self.stop = world, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.outcomes += self.world.sc.outcomes(self.world.curl, self.world.url("/get"), count=3)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.mark.features("WaypointRejectsMalformedHTTP")
def test_oversized_headers_and_conflicting_framing_are_refused(world):
    """A header block over 60 KiB (9 lines of 7,000 bytes) MUST be 431 (5 such lines served), Content-Length with
    Transfer-Encoding MUST be 400, and a good client MUST keep getting 200 meanwhile."""
    attack = ([{"name": "oversized", "mode": "raw", "data_b64": _head("/post"), "fill_headers": [9, 7000],
                "timeout": 10}] * 5
              + [{"name": "conflicting", "mode": "raw", "timeout": 10,
                  "data_b64": _head("/post", "content-length: 5\r\ntransfer-encoding: chunked\r\n", b"0\r\n\r\n")}] * 5
              + [{"name": "large-ok", "mode": "raw", "data_b64": _head("/post"), "fill_headers": [5, 7000],
                  "timeout": 10},
                 {"name": "framed-ok", "mode": "raw", "data_b64": _head("/post", "content-length: 5\r\n", b"hello"),
                  "timeout": 10}])
    with GoodClient(world) as good:
        results = world.probe([dict(a) for a in attack])
    by_name: dict[str, list] = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r["status"])
    assert by_name["oversized"] == [431] * 5, by_name
    assert by_name["conflicting"] == [400] * 5, by_name
    assert by_name["large-ok"] == [200] and by_name["framed-ok"] == [200], \
        f"the positive controls (35 KiB of headers, a Content-Length body) must be served: {by_name}"
    assert good.outcomes and all(o == 200 for o in good.outcomes), \
        f"a good client must keep getting 200 during the attack: {good.outcomes}"


@pytest.mark.features("WaypointSlowHeadersCutOff")
def test_slow_headers_are_cut_off_without_stalling_others(world):
    """Twenty clients that send their headers a byte every half second MUST be cut off within
    15 s, and a good client MUST keep getting 200 meanwhile."""
    head = base64.b64encode(b"GET /get HTTP/1.1\r\nHost: echo\r\n").decode()
    with GoodClient(world) as good:
        slow = world.probe([{"name": f"slow-{i}", "mode": "slow", "head_b64": head, "interval": 0.5, "timeout": 15}
                            for i in range(20)], timeout=40)
    assert all(r["outcome"] in ("cut_off", "reset") for r in slow), \
        f"every slow client must be cut off within 15 s: {[(r['outcome'], r['seconds']) for r in slow]}"
    assert len(good.outcomes) >= 3 and all(o == 200 for o in good.outcomes), \
        f"a good client must keep getting 200 during the attack: {good.outcomes}"
