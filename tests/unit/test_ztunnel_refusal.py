"""A Refusal on the wire: a plain TCP connection is reset (the peer sees RST, not a clean close),
an HBONE CONNECT is answered with the refusal's status and its wording for the peer; both leave
one access-log line with the refusal's outcome and reason, and neither counts as an opened
connection."""
import logging
import socket

import pytest

from reference_impl.ztunnel.refusal import Refusal, answer
from reference_impl.ztunnel.telemetry import Connection, Telemetry


@pytest.fixture
def tcp_pair():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname(), timeout=5)
    accepted, _ = server.accept()
    server.close()
    yield client, accepted
    client.close()
    accepted.close()


def opened(telemetry: Telemetry) -> float:
    return sum(s.value for m in telemetry.opened.collect() for s in m.samples if s.name.endswith("_total"))


def test_a_refused_tcp_connection_is_reset_and_logged_once(tcp_pair, caplog):
    client, accepted = tcp_pair
    telemetry = Telemetry()
    conn = Connection("destination", "10.0.0.1:40000", "10.0.0.2:80")
    with caplog.at_level(logging.INFO, logger="ztunnel.access"):
        assert answer(Refusal("denied", "plaintext refused: PeerAuthentication STRICT"), conn, telemetry,
                      accepted) is None
    with pytest.raises(ConnectionResetError):
        client.recv(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "ztunnel.access"]
    assert len(lines) == 1
    assert 'outcome="denied"' in lines[0] and 'reason="plaintext refused: PeerAuthentication STRICT"' in lines[0]
    assert opened(telemetry) == 0


def test_a_refused_hbone_connect_gets_the_status_and_the_peer_wording(caplog):
    telemetry = Telemetry()
    conn = Connection("destination", "10.0.0.1:40000", "10.0.0.2:15001", mtls=True)
    refusal = Refusal("denied", "port 15001 is a proxy port", status=400,
                      told="port 15001 is one of the proxy's own ports")
    with caplog.at_level(logging.INFO, logger="ztunnel.access"):
        outcome = answer(refusal, conn, telemetry)
    assert (outcome.status, outcome.reason, outcome.upstream) == (400, "port 15001 is one of the proxy's own ports", None)
    lines = [r.getMessage() for r in caplog.records if r.name == "ztunnel.access"]
    assert len(lines) == 1 and 'reason="port 15001 is a proxy port"' in lines[0]
    assert opened(telemetry) == 0


def test_without_a_peer_wording_the_peer_is_told_the_reason():
    outcome = answer(Refusal("denied", "no ALLOW policy matched", status=401), Connection("destination", "a", "b"),
                     Telemetry())
    assert (outcome.status, outcome.reason) == (401, "no ALLOW policy matched")
