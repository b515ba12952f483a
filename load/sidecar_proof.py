"""Proof that the sidecar path went through both sidecars, from the sidecars' own metrics (read
through the Target, as the SIDECAR-INTEROP tests read them): the server's istio-proxy counts the
requests it received over mutual TLS from the client's identity, the client's counts the
connections it opened over HBONE to the server's identity.

Without it, a broken injection (a namespace without `istio-injection=enabled`, a proxy that
leaves some process's traffic uncaptured) would still answer 200 and the run would measure a
direct path under the sidecar's name.
"""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from conformance.targets.base import TargetError
from load import scenario


@dataclass(frozen=True)
class Counts:
    server_requests: float      # istio_requests_total, reporter=destination, mutual_tls, from the client
    client_connections: float   # istio_tcp_connections_opened_total, reporter=source, mutual_tls, to the server

    def since(self, before: "Counts") -> "Counts":
        return Counts(self.server_requests - before.server_requests,
                      self.client_connections - before.client_connections)


def _principal(value: str) -> str:
    return value.removeprefix("spiffe://")


def _sum(text: str, name: str, reporter: str, label: str, principal: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and s.labels.get("reporter") == reporter
               and s.labels.get("connection_security_policy") == "mutual_tls"
               and _principal(s.labels.get(label, "")) == _principal(principal))


def require_injected(pods: list) -> None:
    """Each pod of the path runs an istio-proxy container, or setup stops saying why."""
    for pod in pods:
        if scenario.SIDECAR_CONTAINER not in pod.containers:
            raise TargetError(
                f"path sidecar: pod {pod.namespace}/{pod.name} has no {scenario.SIDECAR_CONTAINER} container "
                f"(containers: {', '.join(pod.containers) or 'none'}); label namespace {pod.namespace} "
                f"istio-injection=enabled and recreate its pods, or check the target's sidecar injection")


def counts(target, client, server) -> Counts:
    client_id = scenario.spiffe(client.namespace, client.labels.get("app", "client"))
    server_id = scenario.spiffe(server.namespace, server.labels.get("app", "server"))
    return Counts(
        _sum(target.sidecar_metrics(server), "istio_requests_total", "destination", "source_principal", client_id),
        _sum(target.sidecar_metrics(client), "istio_tcp_connections_opened_total", "source",
             "destination_principal", server_id))


def shortfall(delta: Counts, requests: int, connections: int) -> list[str]:
    """What the sidecars did not see of `requests` requests on at least `connections` connections."""
    problems = []
    if delta.server_requests < requests:
        problems.append(f"the server's {scenario.SIDECAR_CONTAINER} counted {delta.server_requests:g} mutual-TLS "
                        f"requests from the client's identity, not {requests}")
    if delta.client_connections < connections:
        problems.append(f"the client's {scenario.SIDECAR_CONTAINER} carried {delta.client_connections:g} "
                        f"connections over HBONE to the server's identity, not {connections}")
    return problems


def require_through(delta: Counts, requests: int, connections: int, what: str) -> None:
    """`what` sent `requests` requests on `connections` connections: the sidecars saw them all."""
    problems = shortfall(delta, requests, connections)
    if problems:
        raise TargetError(f"path sidecar: {what} did not go through both sidecars: {'; '.join(problems)} "
                          f"(is the client's traffic captured to 15001 and the server's injection on?)")
