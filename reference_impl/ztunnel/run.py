"""Wiring of one ztunnel process: config source (istiod or a static snapshot), certificates,
the proxy, and the node-namespace endpoints (admin 15000, metrics 15020, readiness 15021)."""
from __future__ import annotations

import logging
import os

from ..api.routes import duration_seconds
from ..identity import CertificateAuthority, CertificateManager, Identity
from ..xds import XdsClient
from .admin import HttpEndpoint, json_body
from .podinfo import PodNetnsResolver
from .proxy import Ztunnel
from .telemetry import Telemetry

log = logging.getLogger("ztunnel")

ADMIN_PORT, METRICS_PORT, READY_PORT = 15000, 15020, 15021
DEFAULT_DRAIN_SECONDS = 5.0
DEFAULT_SECRET_TTL = 24 * 3600   # zt:src/config.rs DEFAULT_TTL


def secret_ttl(env=os.environ) -> int:
    """The certificate lifetime this ztunnel asks istiod for, in whole seconds: SECRET_TTL, as
    ztunnel reads it (zt:src/config.rs; sent as the CSR's validity_duration), a duration such as
    "6s" or "24h" or whole seconds; 24 h when unset, and, as ztunnel does, when unreadable."""
    raw = env.get("SECRET_TTL")
    if raw is None:
        return DEFAULT_SECRET_TTL
    try:
        seconds = float(raw) if raw.strip().isdigit() else duration_seconds(raw.strip())
    except ValueError:
        seconds = 0
    if round(seconds) < 1:
        log.warning("SECRET_TTL=%r is not a duration of at least 1s; asking for %ds", raw, DEFAULT_SECRET_TTL)
        return DEFAULT_SECRET_TTL
    return int(round(seconds))


def drain_deadline(env=os.environ) -> float:
    """ztunnel's rule (zt:src/drain.rs): 5 s, or TERMINATION_GRACE_PERIOD_SECONDS-5 when above 10."""
    raw = env.get("TERMINATION_GRACE_PERIOD_SECONDS")
    try:
        grace = float(raw) if raw else None
    except ValueError:
        log.warning("TERMINATION_GRACE_PERIOD_SECONDS=%r is not a number; draining for %gs", raw, DEFAULT_DRAIN_SECONDS)
        return DEFAULT_DRAIN_SECONDS
    if grace is not None and grace > 10:
        return grace - 5
    return DEFAULT_DRAIN_SECONDS


class ZtunnelProcess:
    def __init__(self, node: str, static_config: dict | None = None, ca_dir: str | None = None,
                 admin_host: str = "127.0.0.1", env=os.environ):
        self.node = node
        self.env = env
        self.static_config = static_config
        self.ca_dir = ca_dir
        self.admin_host = admin_host
        self.xds: XdsClient | None = None
        self.endpoints: list[HttpEndpoint] = []
        self.proxy: Ztunnel | None = None

    async def _sign(self, identity: Identity, csr_pem: str):
        if self.xds is not None:
            return await self.xds.sign(identity.uri, csr_pem, ttl_seconds=secret_ttl(self.env))
        ca = CertificateAuthority.load(self.ca_dir)
        ttl = int(self.env.get("ZTUNNEL_STATIC_CERT_TTL", "86400"))
        return [ca.sign_csr(csr_pem, identity, ttl)], ca.root_pem

    async def start(self) -> None:
        certs = CertificateManager(self._sign)
        api_sock = self.env.get("AC_API_SOCK") or (
            os.path.join(self.env["AC_RUN_DIR"], "api.sock") if self.env.get("AC_RUN_DIR") else None)
        resolver = PodNetnsResolver(api_sock) if api_sock else None
        self.proxy = Ztunnel(self.node, certs, Telemetry(), resolver)
        await self._start_endpoints()
        if self.static_config is not None:
            await self.proxy.apply(self.static_config, 1)
            return
        run_dir = self.env.get("AC_RUN_DIR")
        if not run_dir:
            raise RuntimeError("AC_RUN_DIR is not set, so istiod.sock cannot be found; the kubelet sets it, "
                               "or run with --config for a static snapshot")
        self.xds = XdsClient(os.path.join(run_dir, "istiod.sock"), proxy="ztunnel", node=self.node,
                             pod=self.env.get("POD_NAME", f"ztunnel-{self.node}"),
                             namespace=self.env.get("POD_NAMESPACE", "istio-system"),
                             on_snapshot=self.proxy.apply)
        await self.xds.start()
        log.info("ztunnel on %s waiting for config from %s", self.node, self.xds.socket_path)

    async def _start_endpoints(self) -> None:
        proxy = self.proxy

        def ready():
            if proxy.ready.is_set() and not proxy.draining:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", (b"draining\n" if proxy.draining else b"waiting for the first snapshot\n")

        def metrics():
            return 200, "application/openmetrics-text;charset=utf-8;version=1.0.0", proxy.telemetry.exposition()

        specs = [
            (self.admin_host, ADMIN_PORT, {"/config_dump": lambda: json_body(proxy.config_dump()),
                                           "/healthz/ready": ready}),
            ("0.0.0.0", METRICS_PORT, {"/metrics": metrics, "/stats/prometheus": metrics}),
            ("0.0.0.0", READY_PORT, {"/healthz/ready": ready}),
        ]
        for host, port, routes in specs:
            try:
                self.endpoints.append(await HttpEndpoint(host, port, routes).start())
            except OSError as exc:
                raise RuntimeError(f"cannot listen on {host}:{port} ({exc.strerror}); another process holds it") from None

    async def shutdown(self, drain_seconds: float) -> None:
        if self.proxy is not None:
            await self.proxy.drain(drain_seconds)
        for endpoint in self.endpoints:
            endpoint.close()
        if self.xds is not None:
            await self.xds.close()
        if self.proxy is not None:
            await self.proxy.certs.close()
