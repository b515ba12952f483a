"""Wiring of one sidecar process (pilot-agent + Envoy's roles): capture rules first, then identity
and config from istiod over the xDS stream, the three proxy listeners, and the local ports.

Readiness (15021) opens only when the capture rules, the pod's config and its certificate are all
held: the kubelet's probe is a TCP connect, and it holds the app containers until this proxy is
ready (holdApplicationUntilProxyStarts), so the app never sends a packet the proxy cannot take.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from ..identity import CertificateManager, Identity, IdentityError
from ..xds import XdsClient
from . import capture, status
from .listeners import listeners
from .proxy import Sidecar

log = logging.getLogger("sidecar")

TRUST_DOMAIN = "cluster.local"
DEFAULT_DRAIN_SECONDS = 5.0
ADMIN_PORT = 15000


class StartupError(RuntimeError):
    """The process cannot start; the message says what is missing and how to fix it."""


def drain_deadline(env: Mapping[str, str]) -> float:
    """Istio's terminationDrainDuration (5 s), or TERMINATION_DRAIN_DURATION_SECONDS."""
    try:
        return float(env.get("TERMINATION_DRAIN_DURATION_SECONDS") or DEFAULT_DRAIN_SECONDS)
    except ValueError:
        return DEFAULT_DRAIN_SECONDS


def pod_identity(env: Mapping[str, str]) -> Identity:
    namespace, account = env.get("POD_NAMESPACE"), env.get("SERVICE_ACCOUNT") or "default"
    if not namespace:
        raise StartupError("POD_NAMESPACE must be set; the kubelet sets it for every container")
    try:
        return Identity(env.get("TRUST_DOMAIN") or TRUST_DOMAIN, namespace, account)
    except IdentityError as exc:
        raise StartupError(f"cannot form the pod's identity: {exc}") from None


class SidecarProcess:
    def __init__(self, env: Mapping[str, str] = os.environ):
        self.env = env
        self.identity = pod_identity(env)
        self.pod_ip = env.get("INSTANCE_IP") or ""
        if not self.pod_ip:
            raise StartupError("INSTANCE_IP must be set (the pod's IP, where HBONE is served); the kubelet sets it")
        self.xds: XdsClient | None = None
        self.certs = CertificateManager(self._sign)
        self.proxy = Sidecar(self.identity, self.certs.ssl_context_for)
        self.capture_installed = False
        self._servers: list[asyncio.AbstractServer] = []
        self._ready_server: asyncio.AbstractServer | None = None
        self._background: asyncio.Task | None = None

    async def _sign(self, identity: Identity, csr_pem: str):
        return await self.xds.sign(identity.uri, csr_pem)

    def ready(self) -> tuple[bool, str]:
        if not self.capture_installed:
            return False, "capture rules not installed"
        config = self.proxy.config
        if config is None or config.own is None:
            return False, "waiting for this pod's config from istiod"
        if self.certs.current(self.identity) is None:
            return False, f"waiting for the certificate of {self.identity}"
        return True, f"ready (config version {config.version})"

    def _ready_route(self):
        ok, reason = self.ready()
        return status.text(200 if ok else 503, reason + "\n")

    def _listeners_route(self):
        return status.as_json({"pod": f"{self.identity.namespace}/{self.env.get('POD_NAME', '')}",
                               "identity": self.identity.uri, "mode": "sidecar",
                               "listeners": listeners(self.proxy.config, self.proxy.listeners),
                               "capture": capture.listing()})

    def _config_route(self):
        config = self.proxy.config
        return status.as_json({"identity": self.identity.uri,
                               "configVersion": config.version if config else None,
                               "workloads": len(config.workloads) if config else 0,
                               "authorizationPolicies": [f"{b.value.namespace}/{b.value.name}"
                                                         for b in (config.authorization if config else ())],
                               "openConnections": self.proxy.open_connections})

    async def start(self) -> None:
        capture.install()
        self.capture_installed = True
        run_dir = self.env.get("AC_RUN_DIR")
        if not run_dir:
            raise StartupError("AC_RUN_DIR is not set, so istiod.sock cannot be found; the kubelet sets it")
        self.xds = XdsClient(os.path.join(run_dir, "istiod.sock"), proxy="sidecar",
                             node=self.env.get("NODE_NAME", ""), pod=self.env.get("POD_NAME", ""),
                             namespace=self.identity.namespace, on_snapshot=self.proxy.apply)
        await self.xds.start()
        await self.proxy.listen(self.pod_ip)
        prometheus = lambda: (200, self.proxy.telemetry.exposition(), "text/plain; version=0.0.4")  # noqa: E731
        self._servers.append(await status.serve("0.0.0.0", capture.ENVOY_METRICS_PORT,
                                                {"/stats/prometheus": prometheus}))
        self._servers.append(await status.serve("127.0.0.1", ADMIN_PORT, {
            "/listeners": self._listeners_route, "/config_dump": self._config_route,
            "/healthz/ready": self._ready_route}))
        self._background = asyncio.ensure_future(self._become_ready())
        log.info("sidecar %s: capture installed, outbound :15001, inbound :15006, HBONE %s:15008",
                 self.identity, self.pod_ip)

    async def _become_ready(self) -> None:
        while True:
            try:
                await self.certs.get(self.identity, timeout=30)
                break
            except Exception as exc:  # keep trying: the manager backs off; readiness stays false
                log.warning("no certificate for %s yet: %s", self.identity, exc)
        while not self.ready()[0]:
            await asyncio.sleep(0.05)
        self._ready_server = await status.serve("0.0.0.0", capture.READY_PORT,
                                                {"/healthz/ready": self._ready_route})
        log.info("sidecar ready: %s", self.ready()[1])

    async def shutdown(self, drain_seconds: float = 0.0) -> None:
        if self._background is not None:
            self._background.cancel()
        if self._ready_server is not None:
            self._ready_server.close()
        if drain_seconds > 0:
            await self.proxy.drain(drain_seconds)
        await self.proxy.close()
        for server in self._servers:
            server.close()
        if self.xds is not None:
            await self.xds.close()
        await self.certs.close()
