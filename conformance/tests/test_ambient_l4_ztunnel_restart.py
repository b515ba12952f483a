"""AMBIENT-L4: a node proxy restarted gracefully drains its connections and hands new ones to its
replacement (Istio's TestZtunnelRestart; ztunnel's drain, zt:src/drain.rs)."""
from __future__ import annotations

import time
from collections import Counter

import pytest

from conformance import curl
from conformance import workloads as w

#: the held stream's length: within ztunnel's smallest drain deadline (5 s from SIGTERM), which
#: a graceful delete gives it, and long enough to be open while the replacement takes over
DRIP_SECONDS = 3
#: the delete's grace period: longer than the stream, as a rollout's (Istio's chart: 30 s)
GRACE_SECONDS = 30
#: new requests made after the old node proxy is gone, all through the replacement
CALLS_AFTER_HANDOVER = 6
#: a graceful restart must be over (old pod gone, replacement Ready) within this
RESTART_SECONDS = 30
FRESH_CONNECTION = {"Connection": "close"}


def _new_requests_across(sc, client, url, old):
    """Outcomes of fresh connections made from the graceful delete of `old` until
    CALLS_AFTER_HANDOVER of them were made after `old` was gone."""
    outcomes, after, deadline = [], 0, time.monotonic() + RESTART_SECONDS
    while after < CALLS_AFTER_HANDOVER:
        gone = sc.node_proxy_gone(old)
        batch = sc.outcomes(client, url, count=2, headers=FRESH_CONNECTION)
        outcomes += batch
        after += len(batch) if gone else 0
        assert time.monotonic() < deadline, \
            f"the node proxy {old.name} still existed {RESTART_SECONDS}s after its graceful delete"
    return outcomes


@pytest.mark.features("ZtunnelGracefulRestart")
def test_graceful_node_proxy_restart_drains_and_a_crash_cuts(scenario):
    """Deleting the client node's node proxy with a grace period longer than a stream MUST let
    that stream finish intact, fail no new request made meanwhile, and leave a Ready
    replacement; killing it (grace period 0) cuts the same stream, so the test tells them apart."""
    sc = scenario
    server_node, client_node = sc.spread_nodes()
    srv, cli = sc.namespace("srv"), sc.namespace("cli")
    sc.deploy(w.httpbin(srv, node=server_node) + w.client(cli, "client", node=client_node), srv, cli)
    server, client = sc.pod(srv, "httpbin"), sc.pod(cli, "client")
    url = w.service_url("httpbin", srv)
    drip = w.service_url("httpbin", srv, path=f"/drip?duration={DRIP_SECONDS}&numbytes={DRIP_SECONDS}&delay=0")
    sc.expect_allowed(client, url, "before the restart")

    held = sc.hold(client, drip, DRIP_SECONDS + 10, w.principal(cli, "client"), server.node)
    old = sc.restart_node_proxy(client.node, grace_period=GRACE_SECONDS)
    deleted = time.monotonic()
    outcomes = _new_requests_across(sc, client, url, old)
    replacement = sc.replacement_node_proxy(client.node, old, timeout=RESTART_SECONDS)
    stream = held.result(timeout=DRIP_SECONDS + 15)
    assert stream.outcome == 200 and stream.bytes_received == DRIP_SECONDS, \
        f"the stream open across the graceful restart of {old.name} was cut: {stream}"
    assert held.ended > deleted, "the stream ended before the restart, so it shows no drain"
    failed = [i for i, o in enumerate(outcomes) if o != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} new requests (numbers {failed[:10]}...) failed " \
                       f"during the graceful restart of {old.name}: {dict(Counter(outcomes))}"

    held = sc.hold(client, drip, DRIP_SECONDS + 10, w.principal(cli, "client"), server.node)
    crashed = sc.crash_node_proxy(client.node)
    stream = held.result(timeout=DRIP_SECONDS + 15)
    assert stream.outcome in curl.L4_REFUSALS and stream.bytes_received < DRIP_SECONDS, \
        f"the control failed: killing {crashed.name} (grace period 0) did not cut the stream: {stream}"
    sc.replacement_node_proxy(client.node, crashed, timeout=RESTART_SECONDS)
    sc.expect_allowed(client, url, "after the crash, through the replacement node proxy")
