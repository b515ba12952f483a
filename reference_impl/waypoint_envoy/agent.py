"""The Envoy waypoint's agent (Istio's pilot-agent, small): it gets the waypoint snapshot and the
waypoint's certificate from istiod, translates the snapshot (translate), and hands both to a real
Envoy child through Envoy's file-based dynamic resources:

- `<run>/config/cds.json` and `lds.json`: written to a temporary name and renamed over the old
  file (Envoy watches the directory and reloads on the rename), clusters before listeners;
- `<run>/sds/default.json` and `ROOTCA.json`: the certificate and the mesh root, rewritten the
  same way at every rotation.

A snapshot the translation rejects raises, so the XdsClient NACKs it and Envoy keeps the last
one. The agent serves the status port (15021, `/healthz/ready` true once Envoy answers its admin
`/ready`, a snapshot was delivered and the certificate written) and leaves Envoy's admin
interface on 127.0.0.1:15000 (`describe` / `proxy-config` read its config_dump).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import urllib.request
from collections.abc import Mapping

from ..identity import CertificateManager
from ..waypoint.health import READY_PORT, serve_status
from ..waypoint.run import StartupError, waypoint_identity
from ..xds import XdsClient
from . import translate as tr

log = logging.getLogger("waypoint.envoy")

ADMIN_PORT = 15000


def write_atomically(path: str, doc: dict) -> None:
    """Write JSON to a temporary file beside `path` and rename it over `path` (Envoy's file
    watcher acts on the move; a reader never sees half a file)."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


class EnvoyAgent:
    def __init__(self, envoy_binary: str, env: Mapping[str, str] = os.environ, *,
                 status_port: int = READY_PORT, hbone_port: int = tr.HBONE_PORT,
                 upstream_hbone_port: int = tr.HBONE_PORT, admin_port: int = ADMIN_PORT,
                 run_dir: str | None = None, log_level: str = "warning"):
        self.env = env
        self.binary = envoy_binary
        self.identity = waypoint_identity(env)
        self.status_port = status_port
        self.hbone_port = hbone_port
        self.upstream_hbone_port = upstream_hbone_port
        self.admin_port = admin_port
        self.log_level = log_level
        self._own_dir = run_dir is None   # a directory of our own is removed at shutdown
        self.dir = run_dir or tempfile.mkdtemp(prefix="envoy-waypoint-")
        self.config_dir = os.path.join(self.dir, "config")
        self.secret_dir = os.path.join(self.dir, "sds")
        os.makedirs(self.config_dir, exist_ok=True)
        os.makedirs(self.secret_dir, exist_ok=True)
        self.xds: XdsClient | None = None
        self.certs = CertificateManager(self._sign)
        self.process: asyncio.subprocess.Process | None = None
        self.version: int | None = None
        self.unsupported: list[tuple[str, str]] = []
        self.cert_written = False
        self._tasks: list[asyncio.Task] = []
        self._status = None

    async def _sign(self, identity, csr_pem: str):
        return await self.xds.sign(identity.uri, csr_pem)

    # ---- config ----
    def apply(self, snapshot: dict, version: int) -> None:
        """The XdsClient's on_snapshot: translate (raising NACKs it), then deliver CDS then LDS."""
        resources = tr.translate(snapshot, version, self.secret_dir,
                                 upstream_hbone_port=self.upstream_hbone_port, hbone_port=self.hbone_port)
        write_atomically(os.path.join(self.config_dir, "cds.json"),
                         {"version_info": str(version), "resources": resources.clusters})
        write_atomically(os.path.join(self.config_dir, "lds.json"),
                         {"version_info": str(version), "resources": resources.listeners})
        for what, why in resources.unsupported:
            if (what, why) not in self.unsupported:
                log.warning("not expressed in Envoy config (%s): %s", what, why)
        self.unsupported = resources.unsupported
        self.version = version
        log.info("config version %d delivered to Envoy: %d listener(s), %d cluster(s)", version,
                 len(resources.listeners), len(resources.clusters))

    async def _certificates(self) -> None:
        """Write the certificate, then rewrite it at every renewal (SDS by file)."""
        cert = None
        while True:
            try:
                cert = await (self.certs.get(self.identity, timeout=30) if cert is None else
                              self.certs.wait_for_renewal(self.identity, cert, timeout=3600))
            except Exception as exc:  # the manager backs off; readiness stays false meanwhile
                log.warning("no certificate for %s yet: %s", self.identity, exc)
                continue
            for name, doc in tr.secrets(cert.chain_pem, cert.key_pem, cert.root_pem).items():
                write_atomically(os.path.join(self.secret_dir, f"{name}.json"), doc)
            self.cert_written = True
            log.info("certificate for %s written for Envoy (valid until %s)", self.identity, cert.not_after)

    # ---- status ----
    def _envoy_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    @staticmethod
    def _hbone_listening() -> bool:
        # LIVE can come before the file-delivered listener is bound: a Ready waypoint that
        # refused its first tunnels would cost the ztunnels' new connections
        try:
            socket.create_connection(("127.0.0.1", tr.HBONE_PORT), timeout=1).close()
            return True
        except OSError:
            return False

    def _ready(self) -> tuple[bool, str]:
        if self.process is None or self.process.returncode is not None:
            return False, "Envoy is not running"
        if self.version is None:
            return False, "waiting for the first config snapshot from istiod"
        if not self.cert_written:
            return False, f"waiting for the certificate of {self.identity}"
        if not self._envoy_ready():
            return False, "Envoy's admin /ready is not LIVE yet"
        if not self._hbone_listening():
            return False, f"Envoy's HBONE listener on {tr.HBONE_PORT} does not accept connections yet"
        return True, f"ready (Envoy, config version {self.version})"

    def _stats(self) -> dict:
        return {"implementation": "envoy", "identity": self.identity.uri, "configVersion": self.version,
                "envoyPid": self.process.pid if self.process else None,
                "unsupported": [{"feature": w, "reason": r} for w, r in self.unsupported]}

    # ---- lifecycle ----
    async def start(self) -> None:
        run_dir = self.env.get("AC_RUN_DIR")
        if not run_dir:
            raise StartupError("AC_RUN_DIR is not set, so istiod.sock cannot be found; the kubelet sets it")
        # Empty resource files first: Envoy starts with them and reloads on every rename.
        write_atomically(os.path.join(self.config_dir, "cds.json"), {"resources": []})
        write_atomically(os.path.join(self.config_dir, "lds.json"), {"resources": []})
        bootstrap = tr.bootstrap(f"waypoint~{self.env.get('INSTANCE_IP', '')}~{self.env.get('POD_NAME', '')}."
                                 f"{self.identity.namespace}", self.identity.service_account,
                                 self.config_dir, self.admin_port)
        path = os.path.join(self.dir, "bootstrap.json")
        write_atomically(path, bootstrap)
        self._status = await serve_status("0.0.0.0", self.status_port, self._ready, self._stats)
        self.process = await asyncio.create_subprocess_exec(
            self.binary, "-c", path, "--concurrency", "1", "--disable-hot-restart", "-l", self.log_level,
            "--drain-time-s", "1", "--drain-strategy", "immediate", "--use-dynamic-base-id")
        log.info("Envoy started (pid %d), admin on 127.0.0.1:%d", self.process.pid, self.admin_port)
        self.xds = XdsClient(os.path.join(run_dir, "istiod.sock"), proxy="waypoint",
                             node=self.env.get("NODE_NAME", ""), pod=self.env.get("POD_NAME", ""),
                             namespace=self.identity.namespace, on_snapshot=self.apply)
        await self.xds.start()
        self._tasks.append(asyncio.ensure_future(self._certificates()))

    async def wait(self, stop: asyncio.Event) -> int:
        """Until SIGTERM (0) or Envoy exits on its own (its exit code: the kubelet restarts the pod)."""
        exited = asyncio.ensure_future(self.process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if exited.done():
            log.error("Envoy exited with %s", self.process.returncode)
            return self.process.returncode or 1
        exited.cancel()
        return 0

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
        if self._status is not None:
            self._status.close()
        if self.xds is not None:
            await self.xds.close()
        await self.certs.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
