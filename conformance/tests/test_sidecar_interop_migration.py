"""SIDECAR-INTEROP: moving a namespace from sidecar to ambient under traffic, as Istio's
tests/integration/ambient/sidecar_migration_test.go does (relabel, then roll the workloads)."""
from __future__ import annotations

import threading
import time

import pytest

from conformance import convergence
from conformance import workloads as w
from conformance.tests.sidecarworld import INJECTION, PROXY, sidecar_namespace

PERIOD_SECONDS = 0.5


class Traffic:
    """One request every PERIOD_SECONDS from each client, in threads, until stopped."""

    def __init__(self, sc, clients, url: str):
        self.sc, self.url = sc, url
        self.outcomes: dict[str, list] = {c.name: [] for c in clients}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in clients]
        for t in self._threads:
            t.start()

    def _run(self, client) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.outcomes[client.name] += self.sc.outcomes(client, self.url, count=1)
            self._stop.wait(max(0.0, PERIOD_SECONDS - (time.monotonic() - started)))

    def stop(self) -> dict[str, list]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.outcomes


@pytest.mark.features("SidecarMigration")
def test_moving_a_server_from_sidecar_to_ambient_loses_no_request(scenario):
    """While the server's namespace is relabelled from `istio-injection=enabled` to ambient and its
    Deployment rolled, requests every 500 ms from a sidecar client and from an ambient client MUST
    all succeed (success rate 1.0), and afterwards the server MUST run without a proxy."""
    sc = scenario
    srv, side, amb = sidecar_namespace(sc, "msrv"), sidecar_namespace(sc, "mside"), sc.namespace("mamb")
    server = w.httpbin(srv, replicas=1)
    sc.deploy(server + w.client(side, "side-cli") + w.client(amb, "amb-cli"), srv, side, amb)
    assert PROXY in sc.pod(srv, "httpbin").containers
    clients = [sc.pod(side, "side-cli"), sc.pod(amb, "amb-cli")]
    url = w.service_url("httpbin", srv)
    for client in clients:
        sc.expect_allowed(client, url, f"{client.name} before the migration")

    traffic = Traffic(sc, clients, url)
    try:
        sc.label_namespace(srv, {key: None for key in INJECTION} | w.AMBIENT_LABEL)
        rolled = [dict(o) for o in server]
        deployment = rolled[-1]
        template = deployment["spec"]["template"]
        template["metadata"] = {**template["metadata"],
                                "annotations": {"kubectl.kubernetes.io/restartedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ")}}
        sc.apply([deployment])

        def migrated():
            pods = sc.pods(srv, {"app": "httpbin"})
            return [len(pods) == 1 and PROXY not in pods[0].containers and pods[0].ready]
        convergence.eventually(migrated, bool, "the server rolled out without a sidecar",
                               timeout=convergence.READY_SECONDS)
        # Each client must also have called the migrated server: two more requests each.
        at_migration = {name: len(seen) for name, seen in traffic.outcomes.items()}
        convergence.eventually(
            lambda: [all(len(traffic.outcomes[n]) >= k + 2 for n, k in at_migration.items())], bool,
            "two requests from each client to the migrated server", n_consecutive=1, timeout=20)
    finally:
        outcomes = traffic.stop()
    for name, seen in outcomes.items():
        failures = [o for o in seen if o != 200]
        assert seen and not failures, f"{name}: {len(failures)} of {len(seen)} requests failed during the " \
                                      f"migration: {failures[:5]}"
