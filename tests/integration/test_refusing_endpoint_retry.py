"""A service endpoint whose app no longer accepts (a pod deleted a moment ago: its app stops at
once, while the removal of its endpoint is still on its way to the clients' proxies) refuses the
HBONE CONNECT with 503 before anything of the client's was sent. That is not the service's
answer: the client's proxy must take the connection to another endpoint, and a sidecar that knows
no other endpoint yet waits (bounded) for the config that names one (the replacement, Ready a
moment before the old pod was deleted). This is the race behind the rare reset of
conformance/tests/test_sidecar_interop_migration.py under load, made deterministic here: the
refusing endpoint is a sidecar pod whose app never listens."""
from __future__ import annotations

import threading
import time

import pytest

from conformance import curl
from meshkit import call, namespace, pinned_pod, service_account, until

INJECT = {"istio-injection": "enabled"}
AMBIENT = {"istio.io/dataplane-mode": "ambient"}
REQUESTS = 12
CLIENTS = ("side", "amb")
#: one new connection per request, so that each one picks an endpoint
CLOSE = {"Connection": "close"}


def _service(name: str, selector: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "srv"},
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 8000, "targetPort": 80}]}}


def _httpbin(name: str, labels: dict) -> dict:
    return pinned_pod(name, "srv", "node-1", "web", image="docker.io/kennethreitz/httpbin", labels=labels)


@pytest.fixture(scope="module")
def mesh(cluster_factory):
    c = cluster_factory("refusing")
    c.apply([namespace("srv", INJECT), namespace("side", INJECT), namespace("amb", AMBIENT),
             service_account("web", "srv"), service_account("cli", "side"), service_account("cli", "amb")])
    c.apply([
        # "gone" runs a sidecar in front of an app that never listens on 80: its sidecar answers
        # every CONNECT with 503, as a deleted pod's does until its endpoint's removal arrives.
        _httpbin("live", {"app": "web"}), pinned_pod("gone", "srv", "node-1", "web", labels={"app": "web"}),
        pinned_pod("cli", "side", "node-0", "cli"), pinned_pod("cli", "amb", "node-0", "cli"),
        _service("web", {"app": "web"})])
    for client in CLIENTS:
        # Per client, a service whose only endpoint refuses, and its replacement, which joins the
        # service when the selector widens to their common label (a pod is not relabelled: an
        # applied Pod would lose what injection added).
        c.apply([pinned_pod(f"{client}-gone", "srv", "node-1", "web", labels={"app": f"gone-{client}", "set": client}),
                 _httpbin(f"{client}-next", {"app": f"next-{client}", "set": client}),
                 _service(f"solo-{client}", {"app": f"gone-{client}"})])
    c.wait_ready(90)
    return c


def _outcomes(c, ns: str, host: str) -> list:
    return [r.outcome for r in call(c, ns, "cli", f"http://{host}.srv:8000/get", count=REQUESTS, headers=CLOSE)]


def _refusals(c, pod: str) -> int:
    return c.logs("srv", pod, "istio-proxy").count("is not accepting connections")


@pytest.mark.parametrize("client", ["side", "amb"], ids=["sidecar-client", "ambient-client"])
def test_a_service_endpoint_that_refuses_is_skipped_for_another(mesh, client):
    before = _refusals(mesh, "gone")
    outcomes = _outcomes(mesh, client, "web")
    # Both endpoints were picked: the refusing one refused, and every request still got its 200.
    assert _refusals(mesh, "gone") > before, "no request was sent to the refusing endpoint: nothing tested"
    assert outcomes == [200] * REQUESTS, f"{client} client: {outcomes}"


@pytest.mark.parametrize("client", CLIENTS, ids=["sidecar-client", "ambient-client"])
def test_a_proxy_whose_every_endpoint_refuses_waits_for_the_config_naming_a_new_one(mesh, client):
    url, gone = f"http://solo-{client}.srv:8000/get", f"{client}-gone"
    # Positive control first: with no other endpoint, ever, the connection is refused (a reset),
    # promptly (within the bounded wait), not stalled until curl gives up.
    started = time.monotonic()
    alone = call(mesh, client, "cli", url, timeout=curl.DEFAULT_MAX_TIME)[0]
    assert alone.outcome in curl.L4_REFUSALS, f"{client} client, a service whose only endpoint refuses: {alone}"
    assert time.monotonic() - started < curl.DEFAULT_MAX_TIME, "the refusal must not stall until curl's limit"

    before = _refusals(mesh, gone)
    result: list = []
    request = threading.Thread(target=lambda: result.extend(
        call(mesh, client, "cli", url, timeout=curl.DEFAULT_MAX_TIME)))
    request.start()
    # Once the only endpoint the client's proxy knows has refused, the replacement joins the
    # service (as a rollout's new pod does, Ready a moment before the old one is deleted).
    until(lambda: _refusals(mesh, gone) > before, 10, what=f"the refusal of {gone}")
    mesh.apply([_service(f"solo-{client}", {"set": client})])
    request.join(curl.DEFAULT_MAX_TIME + 10)
    assert [r.outcome for r in result] == [200], \
        f"{client} client: the request refused before the new endpoint arrived: {result}"
