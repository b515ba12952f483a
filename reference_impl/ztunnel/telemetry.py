"""Per-connection telemetry: Istio's TCP metrics (names and labels as ztunnel reports them)
and one access-log line per connection."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

access_log = logging.getLogger("ztunnel.access")

LABELS = (
    "reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app",
    "source_canonical_service", "source_canonical_revision",
    "destination_workload", "destination_workload_namespace", "destination_principal",
    "destination_app", "destination_canonical_service", "destination_canonical_revision",
    "destination_service", "destination_service_namespace", "destination_service_name",
    "request_protocol", "response_flags", "connection_security_policy",
)


@dataclass
class Connection:
    """What one proxied connection is, as seen by one reporter (source or destination side)."""
    reporter: str                      # "source" (outbound) | "destination" (inbound)
    src: str                           # ip:port
    dst: str                           # ip:port the app asked for (or the pod addressed)
    src_workload: dict | None = None
    dst_workload: dict | None = None
    src_principal: str = ""
    dst_principal: str = ""
    dst_service: dict | None = None
    hbone_target: str = ""             # next hop of the tunnel, empty for plain TCP
    mtls: bool = False
    started: float = field(default_factory=time.monotonic)
    sent: int = 0                      # towards the destination
    received: int = 0                  # back from the destination
    outcome: str = "open"
    reason: str = ""

    def labels(self) -> dict[str, str]:
        sw, dw, svc = self.src_workload or {}, self.dst_workload or {}, self.dst_service or {}
        return {
            "reporter": self.reporter,
            "source_workload": sw.get("workloadName") or sw.get("name") or "unknown",
            "source_workload_namespace": sw.get("namespace") or "unknown",
            "source_principal": self.src_principal or "unknown",
            "source_app": sw.get("canonicalName") or "unknown",
            "source_canonical_service": sw.get("canonicalName") or "unknown",
            "source_canonical_revision": sw.get("canonicalRevision") or "unknown",
            "destination_workload": dw.get("workloadName") or dw.get("name") or "unknown",
            "destination_workload_namespace": dw.get("namespace") or "unknown",
            "destination_principal": self.dst_principal or "unknown",
            "destination_app": dw.get("canonicalName") or "unknown",
            "destination_canonical_service": dw.get("canonicalName") or "unknown",
            "destination_canonical_revision": dw.get("canonicalRevision") or "unknown",
            "destination_service": svc.get("hostname") or "unknown",
            "destination_service_namespace": svc.get("namespace") or "unknown",
            "destination_service_name": svc.get("name") or "unknown",
            "request_protocol": "tcp",
            "response_flags": "-" if self.outcome in ("open", "ok") else self.outcome.upper().replace(" ", "_"),
            "connection_security_policy": "mutual_tls" if self.mtls else "unknown",
        }


class Telemetry:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.opened = Counter("istio_tcp_connections_opened", "TCP connections opened",
                              LABELS, registry=self.registry)
        self.closed = Counter("istio_tcp_connections_closed", "TCP connections closed",
                              LABELS, registry=self.registry)
        self.sent = Counter("istio_tcp_sent_bytes", "Bytes sent to the destination",
                            LABELS, registry=self.registry)
        self.received = Counter("istio_tcp_received_bytes", "Bytes received from the destination",
                                LABELS, registry=self.registry)
        self.active = Gauge("ztunnel_active_connections", "Connections being proxied now",
                            registry=self.registry)

    def opened_conn(self, conn: Connection) -> None:
        self.opened.labels(**conn.labels()).inc()
        self.active.inc()

    def closed_conn(self, conn: Connection, counted_open: bool = True) -> None:
        labels = conn.labels()
        if counted_open:
            self.closed.labels(**labels).inc()
            self.active.dec()
        if conn.sent:
            self.sent.labels(**labels).inc(conn.sent)
        if conn.received:
            self.received.labels(**labels).inc(conn.received)
        self.log(conn)

    def log(self, conn: Connection) -> None:
        sw, dw, svc = conn.src_workload or {}, conn.dst_workload or {}, conn.dst_service or {}
        duration_ms = (time.monotonic() - conn.started) * 1000
        fields = [
            ("direction", "outbound" if conn.reporter == "source" else "inbound"),
            ("src.addr", conn.src), ("src.workload", sw.get("name", "")),
            ("src.namespace", sw.get("namespace", "")), ("src.identity", conn.src_principal),
            ("dst.addr", conn.dst), ("dst.hbone_addr", conn.hbone_target),
            ("dst.service", svc.get("hostname", "")), ("dst.workload", dw.get("name", "")),
            ("dst.namespace", dw.get("namespace", "")), ("dst.identity", conn.dst_principal),
            ("bytes_sent", conn.sent), ("bytes_recv", conn.received),
            ("duration", f"{duration_ms:.1f}ms"), ("outcome", conn.outcome), ("reason", conn.reason),
        ]
        access_log.info("connection complete %s",
                        " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in fields if v != ""))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
