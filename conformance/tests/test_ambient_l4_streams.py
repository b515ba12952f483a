"""AMBIENT-L4: long TCP streams through the mesh: flow control, half-close and back-pressure.

A mesh carries a captured pod's TCP connection as a stream of its own protocol (HBONE: one HTTP/2
stream per connection, in a pooled HTTP/2 connection between node proxies), so it must keep what
TCP promises: every byte, in order, however far the stream outgrows HTTP/2's flow-control windows
(ztunnel's are 4 MiB a stream and 16 MiB a connection, HTTP/2's default 64 KiB); a FIN carried as
a half-close, the way back staying open; and a reader that does not read holding its sender
back, instead of the proxies buffering for it without limit.

One world for the module: the suite's stream server (conformance/probes/stream_server.py, an echo
that answers the client's half-close with a trailer holding the SHA-256 of all it received) on one
node, and the suite's stream client (conformance/probes/stream_probe.py) in a captured probe pod on
another node, so every stream crosses both node proxies; an uncaptured probe pod takes the
plaintext way into the mesh for the half-close.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance import workloads as w
from conformance.scenario import Scenario
from conformance.targets.base import Pod

PROBES = Path(__file__).resolve().parents[1] / "probes"
PORT = 9000
MiB = 1 << 20
#: eight times ztunnel's connection window (16 MiB): a window returned only in part runs dry
LONG_STREAM = 128 * MiB
SMALL_STREAM = 64 * 1024
#: the late reader: the echo of the first seconds piles up at the client's node proxy meanwhile
READ_DELAY_SECONDS = 3
#: what a reader that stops reading may leave buffered between it and its sender, both ways of
#: the echo: socket buffers (a few MiB each), a stream window and a proxy buffer at each hop
BUFFERED_BOUND = 96 * MiB
STALL_CAP = 256 * MiB
STALL_SECONDS = 3


def stream_server(ns: str, node: str | None) -> list[dict]:
    """The stream server in a stock Python image, behind a Service whose port is TCP by name."""
    container = {"name": "stream", "image": w.PYTHON_IMAGE, "imagePullPolicy": w.PULL_POLICY,
                 "command": ["python3", "-c", (PROBES / "stream_server.py").read_text(), "--port", str(PORT)],
                 "ports": [{"containerPort": PORT}]}
    return [w.service_account(ns, "stream"),
            w.service(ns, "stream", [{"name": "tcp-stream", "port": PORT, "targetPort": PORT}]),
            w.deployment(ns, "stream", [container], node=node, terminationGracePeriodSeconds=0)]


@dataclass
class StreamWorld:
    sc: Scenario
    server_ns: str
    captured: Pod
    uncaptured: Pod

    def stream(self, pod: Pod, timeout: float, **spec) -> dict:
        """One stream_probe.py exchange with the stream service from `pod`: its JSON report."""
        spec = dict(spec, host=f"stream.{self.server_ns}", port=PORT, timeout=timeout)
        arg = base64.b64encode(json.dumps(spec).encode()).decode()
        result = self.sc.run_probe(pod, "stream_probe.py", [arg], timeout=timeout + 30)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert lines, f"stream_probe.py printed no report: {result.stdout[-500:]} {result.stderr[-500:]}"
        return json.loads(lines[-1])


@pytest.fixture(scope="module")
def streams(target):
    sc = Scenario(target, "l4-streams")
    try:
        server_node, client_node = sc.spread_nodes()
        srv, cli, outside = sc.namespace("str-srv"), sc.namespace("str-cli"), sc.namespace("str-out", ambient=False)
        probes = {"stream_probe.py": (PROBES / "stream_probe.py").read_text()}
        sc.apply(stream_server(srv, server_node) + sc.probe_manifests(cli, "streamer", client_node, probes)
                 + sc.probe_manifests(outside, "outsider", client_node, probes))
        sc.ready(srv, cli, outside)
        yield StreamWorld(sc, srv, sc.pod(cli, "streamer"), sc.pod(outside, "outsider"))
    finally:
        sc.cleanup()


def intact(report: dict, what: str) -> None:
    """The echo and the server's trailer both match what was sent, and the stream ended in EOF."""
    assert report.get("error") is None, f"{what}: the exchange failed: {report}"
    assert report["echoed"] == report["sent"] and report["echoed_sha256"] == report["sent_sha256"], (
        f"{what}: the echo came back altered: sent {report['sent']} bytes, got {report['echoed']} "
        f"(sha256 {report['echoed_sha256'][:12]}…, sent {report['sent_sha256'][:12]}…)")
    assert report["trailer"] == {"bytes": report["sent"], "sha256": report["sent_sha256"]}, (
        f"{what}: the server's account of the upload differs from what was sent: {report['trailer']} "
        f"vs {report['sent']} bytes, sha256 {report['sent_sha256'][:12]}…")
    assert report["eof"], f"{what}: the server's close never arrived: {report}"


@pytest.mark.features("TCPStreamsBeyondFlowControlWindows")
def test_a_stream_longer_than_every_flow_control_window_arrives_intact(streams):
    """A captured pod's TCP stream MUST carry, intact and in order, far more than HTTP/2's windows
    allow in flight (128 MiB each way, with a reader that starts 3 s late): a short exchange first
    (within every window), then the long one, each compared by SHA-256 at both ends."""
    intact(streams.stream(streams.captured, timeout=30, mode="transfer", bytes=SMALL_STREAM), "a 64 KiB echo")
    intact(streams.stream(streams.captured, timeout=90, mode="transfer", bytes=LONG_STREAM,
                          read_delay=READ_DELAY_SECONDS),
           f"a {LONG_STREAM // MiB} MiB echo with a late reader")


@pytest.mark.features("TCPHalfClose")
@pytest.mark.parametrize("client", ["captured", "uncaptured"])
def test_a_client_that_shuts_its_write_side_still_gets_the_whole_answer(streams, client):
    """A client's FIN MUST reach the server as a half-close, with the way back still open: after
    the client shuts down its write side (as `nc -N` does), the server, which answers only once it
    has seen the EOF, MUST still be heard (the rest of the echo, then its trailer), and its own
    close MUST arrive as EOF. From a captured client (HBONE between the node proxies) and from an
    uncaptured one (plaintext into the server's node proxy)."""
    report = streams.stream(getattr(streams, client), timeout=30, mode="transfer", bytes=MiB)
    assert report.get("error") is None and report["echoed"] == report["sent"], (
        f"the echo of 1 MiB sent before the half-close did not come back whole: {report}")
    assert report["trailer"] is not None, (
        f"the answer the server sends after seeing the client's EOF never arrived: the FIN was not "
        f"passed on as a half-close (or closed the way back): {report}")
    intact(report, "a 1 MiB upload, then a half-close")


@pytest.mark.features("TCPBackPressure")
def test_a_reader_that_stops_reading_holds_its_sender_back(streams):
    """A reader that stops reading MUST hold its sender back: a client that writes to the echo
    without reading MUST see its writes blocked after a bounded amount (what the sockets, stream
    windows and proxy buffers on the way hold, here at most 96 MiB), not have the mesh take in
    everything it sends (256 MiB); and once it reads again, every byte MUST arrive intact."""
    report = streams.stream(streams.captured, timeout=90, mode="stall", cap=STALL_CAP,
                            stall_seconds=STALL_SECONDS)
    accepted = report.get("accepted_before_stall", 0)
    assert accepted, f"the client could not send at all: {report}"
    assert accepted < BUFFERED_BOUND, (
        f"the mesh took in {accepted // MiB} MiB for a reader that did not read (at most "
        f"{BUFFERED_BOUND // MiB} MiB expected): a proxy buffers without bound instead of holding the sender")
    intact(report, f"the {report['sent'] // MiB} MiB sent before and after the stall")
