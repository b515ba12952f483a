"""Wiring of one waypoint process: identity and certificates via istiod (or a local CA), config
via the xDS stream (or a static snapshot), the HBONE listener on 15008 and the status port."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from ..identity import CertificateAuthority, CertificateManager, Identity, IdentityError
from ..xds import XdsClient
from .health import READY_PORT, serve_status
from .proxy import HBONE_PORT, Waypoint

log = logging.getLogger("waypoint")

TRUST_DOMAIN = "cluster.local"
DEFAULT_DRAIN_SECONDS = 5.0


def drain_deadline(env: Mapping[str, str]) -> float:
    """As ztunnel and Envoy's drain: 5 s, or TERMINATION_GRACE_PERIOD_SECONDS-5 when above 10."""
    try:
        grace = float(env.get("TERMINATION_GRACE_PERIOD_SECONDS") or 0)
    except ValueError:
        return DEFAULT_DRAIN_SECONDS
    return grace - 5 if grace > 10 else DEFAULT_DRAIN_SECONDS


class StartupError(RuntimeError):
    """The process cannot start; the message says what is missing and how to fix it."""


def waypoint_identity(env: Mapping[str, str]) -> Identity:
    namespace = env.get("POD_NAMESPACE") or env.get("WAYPOINT_NAMESPACE")
    account = env.get("SERVICE_ACCOUNT") or env.get("WAYPOINT_NAME")
    if not namespace or not account:
        raise StartupError("POD_NAMESPACE and SERVICE_ACCOUNT (or WAYPOINT_NAMESPACE and WAYPOINT_NAME) "
                           "must be set; the kubelet sets them for the waypoint Deployment's pods")
    try:
        return Identity(env.get("TRUST_DOMAIN") or TRUST_DOMAIN, namespace, account)
    except IdentityError as exc:
        raise StartupError(f"cannot form the waypoint's identity: {exc}") from None


class WaypointProcess:
    def __init__(self, env: Mapping[str, str] = os.environ, static_config: dict | None = None,
                 ca_dir: str | None = None, hbone_port: int = HBONE_PORT, status_port: int = READY_PORT,
                 upstream_hbone_port: int = HBONE_PORT):
        self.env = env
        self.static_config = static_config
        self.ca_dir = ca_dir
        self.hbone_port = hbone_port
        self.status_port = status_port
        self.identity = waypoint_identity(env)
        self.xds: XdsClient | None = None
        self.certs = CertificateManager(self._sign)
        self.waypoint = Waypoint(self.identity, self.certs.ssl_context_for, hbone_port=upstream_hbone_port)
        self._status_server: asyncio.AbstractServer | None = None
        self._prefetch: asyncio.Task | None = None

    async def _sign(self, identity: Identity, csr_pem: str):
        if self.xds is not None:
            return await self.xds.sign(identity.uri, csr_pem)
        ca = CertificateAuthority.load(self.ca_dir)
        return [ca.sign_csr(csr_pem, identity)], ca.root_pem

    def _ready(self) -> tuple[bool, str]:
        if self.waypoint.config is None:
            return False, "waiting for the first config snapshot from istiod"
        if self.certs.current(self.identity) is None:
            return False, f"waiting for the certificate of {self.identity}"
        return True, f"ready (config version {self.waypoint.config.version})"

    def _stats(self) -> dict:
        config = self.waypoint.config
        return {"identity": self.identity.uri,
                "configVersion": config.version if config else None,
                "responses": {str(k): v for k, v in sorted(self.waypoint.statuses.items())},
                "hboneConnectionsAccepted": self.waypoint.server.connections_accepted,
                "upstreamConnectionsOpened": self.waypoint.client.connections_opened}

    async def start(self) -> None:
        listen_ip = self.env.get("INSTANCE_IP") or "0.0.0.0"
        self._status_server = await serve_status("0.0.0.0", self.status_port, self._ready, self._stats)
        await self.waypoint.listen((listen_ip, self.hbone_port))
        if self.static_config is not None:
            self.waypoint.apply(self.static_config, 1)
        else:
            run_dir = self.env.get("AC_RUN_DIR")
            if not run_dir:
                raise StartupError("AC_RUN_DIR is not set, so istiod.sock cannot be found; the kubelet "
                                   "sets it, or run with --config FILE --ca-dir DIR")
            self.xds = XdsClient(os.path.join(run_dir, "istiod.sock"), proxy="waypoint",
                                 node=self.env.get("NODE_NAME", ""), pod=self.env.get("POD_NAME", ""),
                                 namespace=self.identity.namespace, on_snapshot=self.waypoint.apply)
            await self.xds.start()
        # Fetch the certificate now, not on the first CONNECT (it also makes /healthz/ready true).
        self._prefetch = asyncio.ensure_future(self._fetch_certificate())
        log.info("waypoint %s listening for HBONE on %s:%d, status on :%d", self.identity, listen_ip,
                 self.hbone_port, self.status_port)

    async def _fetch_certificate(self) -> None:
        while True:
            try:
                await self.certs.get(self.identity, timeout=30)
                return
            except Exception as exc:  # keep trying: the manager backs off; readiness stays false
                log.warning("no certificate for %s yet: %s", self.identity, exc)

    async def shutdown(self, drain_seconds: float = 0.0) -> None:
        if self._prefetch is not None:
            self._prefetch.cancel()
        if drain_seconds > 0:
            await self.waypoint.drain(drain_seconds)
        await self.waypoint.close()
        if self._status_server is not None:
            self._status_server.close()
        if self.xds is not None:
            await self.xds.close()
        await self.certs.close()
