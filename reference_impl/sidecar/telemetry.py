"""The sidecar's metrics, with Istio's names and labels (istio_requests_total,
istio_tcp_connections_opened_total; reporter, source_principal, destination_principal,
connection_security_policy, response_code), served on 15090 /stats/prometheus like Envoy's.

connection_security_policy is `mutual_tls` for what arrived over HBONE (the peer's SPIFFE
identity is then the source_principal) and `none` for plaintext, so a test can tell from the
destination's own numbers whether a call came through the mesh and as whom.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

_LABELS = ("reporter", "source_principal", "destination_principal", "connection_security_policy")


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("istio_requests", "HTTP requests the sidecar handled",
                                _LABELS + ("response_code",), registry=self.registry)
        self.tcp_opened = Counter("istio_tcp_connections_opened", "TCP connections the sidecar handled",
                                  _LABELS, registry=self.registry)
        self.tcp_refused = Counter("istio_tcp_connections_refused", "connections the sidecar refused",
                                   _LABELS + ("reason",), registry=self.registry)

    @staticmethod
    def _labels(reporter: str, source: str | None, destination: str | None, mtls: bool) -> dict:
        return {"reporter": reporter, "source_principal": source or "unknown",
                "destination_principal": destination or "unknown",
                "connection_security_policy": "mutual_tls" if mtls else "none"}

    def request(self, reporter, source, destination, mtls, status: int) -> None:
        self.requests.labels(**self._labels(reporter, source, destination, mtls), response_code=str(status)).inc()

    def connection(self, reporter, source, destination, mtls) -> None:
        self.tcp_opened.labels(**self._labels(reporter, source, destination, mtls)).inc()

    def refused(self, reporter, source, destination, mtls, reason: str) -> None:
        self.tcp_refused.labels(**self._labels(reporter, source, destination, mtls), reason=reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
