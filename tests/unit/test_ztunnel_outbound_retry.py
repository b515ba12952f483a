"""Outbound's retry decision: a CONNECT is sent again only when the HBONE client says it was
never processed (HboneError.unprocessed), at most UNPROCESSED_RETRIES times; an answered,
processed or TLS failure reaches the caller at once. The HBONE client is scripted here: what is
under test is the decision, not HTTP/2 (tests/integration/test_hbone.py covers the wire)."""
import asyncio
from types import SimpleNamespace

import pytest

from reference_impl.hbone import HboneError, HboneTLSError
from reference_impl.ztunnel.outbound import UNPROCESSED_RETRIES, Outbound

SOURCE = SimpleNamespace(identity="spiffe://cluster.local/ns/apps/sa/sleep", ip="10.244.0.5")
ROUTE = SimpleNamespace(target=("10.244.1.6", 15008), authority="10.244.1.6:80",
                        expected_identities=("spiffe://cluster.local/ns/apps/sa/httpbin",), fallback_targets=())
WAYPOINT_ROUTE = SimpleNamespace(target=("10.244.1.20", 15008), authority="10.96.0.40:9080",
                                 expected_identities=("spiffe://cluster.local/ns/apps/sa/waypoint",),
                                 fallback_targets=(("10.244.0.21", 15008),))


class ScriptedClient:
    """Raises the scripted errors in turn, then returns a stream."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.attempts = 0
        self.targets = []

    async def connect(self, source, target, *args, **kwargs):
        self.attempts += 1
        self.targets.append(target)
        if self.errors:
            raise self.errors.pop(0)
        return "stream"


def open_tunnel(client, route=ROUTE):
    pod = SimpleNamespace(client=client)
    return asyncio.run(Outbound(proxy=None)._open_tunnel(pod, SOURCE, route, {}))


def test_an_unprocessed_connect_is_sent_again_until_it_succeeds():
    client = ScriptedClient(*[HboneError(None, "raced a GOAWAY", unprocessed=True)] * UNPROCESSED_RETRIES)
    assert open_tunnel(client) == "stream"
    assert client.attempts == UNPROCESSED_RETRIES + 1


def test_unprocessed_retries_are_bounded():
    client = ScriptedClient(*[HboneError(None, "refused while draining", unprocessed=True)] * (UNPROCESSED_RETRIES + 1))
    with pytest.raises(HboneError, match="refused while draining"):
        open_tunnel(client)
    assert client.attempts == UNPROCESSED_RETRIES + 1


# The message of a processed failure may well mention GOAWAY: only the typed flag counts.
@pytest.mark.parametrize("error", [
    HboneError(401, "HBONE CONNECT answered 401"),
    HboneError(None, "HBONE stream reset by peer (CANCEL) after a GOAWAY (GOAWAY)"),
    HboneTLSError("TLS handshake failed"),
], ids=["answered", "processed", "tls"])
def test_a_processed_failure_is_not_retried(error):
    client = ScriptedClient(error)
    with pytest.raises(HboneError):
        open_tunnel(client)
    assert client.attempts == 1


def test_an_unreachable_waypoint_replica_gives_way_to_the_next_ready_one():
    client = ScriptedClient(HboneError(None, "TCP connect refused", unreachable=True))
    assert open_tunnel(client, WAYPOINT_ROUTE) == "stream"
    assert client.targets == [("10.244.1.20", 15008), ("10.244.0.21", 15008)]


def test_an_unreachable_destination_without_another_replica_fails_at_once():
    client = ScriptedClient(HboneError(None, "TCP connect refused", unreachable=True))
    with pytest.raises(HboneError, match="refused"):
        open_tunnel(client)
    assert client.attempts == 1
    # a replica that answers (even 401) is the answer: no other replica is asked
    client = ScriptedClient(HboneError(401, "HBONE CONNECT answered 401"))
    with pytest.raises(HboneError):
        open_tunnel(client, WAYPOINT_ROUTE)
    assert client.targets == [("10.244.1.20", 15008)]
