"""The istiod process: watch the store, derive, stream snapshots, sign CSRs, provision waypoints
and write their status (Gateway conditions and addresses, Services' istio.io/WaypointBound).

Run as the `istiod` pod (`python -m reference_impl.controlplane`); everything it holds is either
derived from the store or, for the CA root, kept in AC_RUN_DIR/ca/, so it can be killed at any
time and a new instance resyncs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from reference_impl.identity import CertificateAuthority, DEFAULT_WORKLOAD_TTL
from reference_impl.identity.certificate import CertificateError
from reference_impl.xds import CsrRefused, ProxyStream, XdsServer

from . import debug
from .ca_policy import authorize_csr
from .derive import Mesh, derive_mesh, waypoint_config, ztunnel_config
from .index import GATEWAY_NAME_LABEL, MeshIndex, labels_of
from .jwks import JwksResolver, jwks_uris
from .provision import plan_waypoint_objects
from .sidecars import sidecar_config
from .store_watch import StoreError, StoreWatch, list_objects_sync
from .waypoint_status import status_updates

log = logging.getLogger("controlplane.istiod")


class Istiod:
    def __init__(self, run_dir: str, api_sock: str, *, debounce: float = 0.005,
                 cert_ttl_seconds: int = DEFAULT_WORKLOAD_TTL, provision_waypoints: bool = True,
                 grpc_ca_address: str | None = None, pod_ip: str | None = None):
        self.run_dir = run_dir
        self.api_sock = api_sock
        self.debounce = debounce
        self.cert_ttl_seconds = cert_ttl_seconds
        self.provision_waypoints = provision_waypoints
        self.ca = CertificateAuthority.load_or_create(os.path.join(run_dir, "ca"))
        self.store = StoreWatch(api_sock, self._mark_dirty)
        self.server = XdsServer(os.path.join(run_dir, "istiod.sock"), self._config_for,
                                signer=self._sign, debug=self._debug)
        self.mesh: Mesh | None = None
        self.derived_at: float | None = None
        self.derive_seconds: float | None = None
        self._ztunnel_config: dict | None = None
        self._waypoint_configs: dict[tuple[str, str], dict] = {}
        self._dirty = asyncio.Event()
        self.jwks = JwksResolver(self._mark_dirty)
        self._tasks: list[asyncio.Task] = []
        # Istio's gRPC CA on 15012 (ca_grpc.py), beside the config stream's; None: not served
        self.grpc_ca_address, self.pod_ip = grpc_ca_address, pod_ip
        self.grpc_ca = None
        self.grpc_ca_port: int | None = None
        self._grpc_ca_started: asyncio.Task | None = None

    async def start(self) -> None:
        await self.server.start()
        self._tasks = [asyncio.create_task(self.store.run(), name="store-watch"),
                       asyncio.create_task(self._derive_loop(), name="derive")]
        if self.grpc_ca_address:
            # beside, not before, the config stream: loading grpcio takes a second on a busy machine
            self._grpc_ca_started = asyncio.create_task(self._start_grpc_ca(), name="grpc-ca")
        log.info("istiod serving %s, CA root in %s", self.server.socket_path,
                 os.path.join(self.run_dir, "ca"))

    async def _start_grpc_ca(self) -> None:
        # grpcio and protobuf load off the event loop: the config stream is already serving
        await asyncio.get_running_loop().run_in_executor(None, __import__, "reference_impl.controlplane.ca_grpc")
        from .ca_grpc import GrpcCA
        self.grpc_ca = GrpcCA(
            self.ca, self.run_dir,
            index=lambda: self.mesh.index if self.mesh is not None else MeshIndex.build(()),
            fresh_index=lambda: MeshIndex.build(list_objects_sync(self.api_sock, "Pod")),
            max_ttl=lambda: self.cert_ttl_seconds)
        try:
            self.grpc_ca_port = await self.grpc_ca.start(self.grpc_ca_address, self.pod_ip)
        except Exception as exc:  # grpcio's RuntimeError: the address cannot be bound
            log.error("the gRPC CA cannot listen on %s (%s: %s); only the config stream's CA serves",
                      self.grpc_ca_address, type(exc).__name__, exc)
            self.grpc_ca = None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._grpc_ca_started is not None:
            await asyncio.gather(self._grpc_ca_started, return_exceptions=True)
        if self.grpc_ca is not None:
            await self.grpc_ca.stop()
        await self.server.close()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.close()

    def _mark_dirty(self) -> None:
        self._dirty.set()

    async def _derive_loop(self) -> None:
        while True:
            await self._dirty.wait()
            # Let a burst of watch events (a scaled Deployment, an applied file) land first.
            await asyncio.sleep(self.debounce)
            self._dirty.clear()
            started = time.perf_counter()
            try:
                self.mesh = derive_mesh(list(self.store.objects.values()), [self.ca.root_pem])
            except Exception:
                log.exception("deriving the mesh failed; proxies keep their current config")
                continue
            self._ztunnel_config = None
            self._waypoint_configs = {}
            self.derived_at = time.time()
            self.derive_seconds = time.perf_counter() - started
            await self.server.push()
            if self.provision_waypoints:
                await self._reconcile_waypoints(self.mesh.index)
                await self._write_status(self.mesh)

    async def _reconcile_waypoints(self, index: MeshIndex) -> None:
        to_apply, to_delete = plan_waypoint_objects(index)
        try:
            if to_apply:
                await self.store.post("/apply", {"objects": to_apply})
                log.info("provisioned waypoint objects: %s",
                         ", ".join(f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']}"
                                   for o in to_apply))
            if to_delete:
                await self.store.post("/delete", {"objects": to_delete})
                log.info("removed waypoint objects of deleted Gateways: %s",
                         ", ".join(f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']}"
                                   for o in to_delete))
        except (StoreError, OSError) as exc:
            log.error("waypoint provisioning failed: %s", exc)
        except Exception:
            log.exception("waypoint provisioning failed")

    async def _write_status(self, mesh: Mesh) -> None:
        """Gateway and Service status (waypoint_status); a write comes back through the watch,
        and the next derive finds nothing left to write."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for kind, namespace, name, status in status_updates(mesh, now):
            try:
                await self.store.post("/status", {"kind": kind, "namespace": namespace, "name": name,
                                                  "status": status})
            except StoreError as exc:
                log.debug("status of %s %s/%s not written: %s", kind, namespace, name, exc)
            except Exception as exc:  # the store went away (httpx / OS errors): the next derive retries
                log.error("writing status of %s %s/%s failed: %s", kind, namespace, name, exc)
                return

    # -- what each proxy gets -------------------------------------------------------------------
    def _config_for(self, stream: ProxyStream) -> dict | None:
        if self.mesh is None:
            return None  # not synced with the store yet: proxies keep what they have
        if stream.hello.proxy == "ztunnel":
            if self._ztunnel_config is None:
                self._ztunnel_config = ztunnel_config(self.mesh)
            return self._ztunnel_config
        if stream.hello.proxy == "waypoint":
            key = self._gateway_of(stream)
            if key not in self._waypoint_configs:
                config = waypoint_config(self.mesh, *key)
                config["jwksByUri"] = self.jwks.resolve(jwks_uris(config["requestAuthentications"]))
                self._waypoint_configs[key] = config
            return self._waypoint_configs[key]
        if stream.hello.proxy == "sidecar":
            config = sidecar_config(self.mesh, stream.hello.namespace, stream.hello.pod)
            config["jwksByUri"] = self.jwks.resolve(jwks_uris(config["requestAuthentications"]))
            return config
        return None

    def _gateway_of(self, stream: ProxyStream) -> tuple[str, str]:
        pod = self.mesh.index.get("Pod", stream.hello.namespace, stream.hello.pod)
        name = labels_of(pod or {}).get(GATEWAY_NAME_LABEL) or os.environ.get("WAYPOINT_NAME", "")
        return stream.hello.namespace, name

    # -- CA ---------------------------------------------------------------------------------------
    def _sign(self, stream: ProxyStream, identity_uri: str, csr_pem: str,
              ttl_seconds: int | None) -> tuple[list[str], str]:
        index = self.mesh.index if self.mesh is not None else MeshIndex.build(())
        try:
            identity = authorize_csr(index, stream, identity_uri)
        except CsrRefused:
            # The watch may lag a pod created a moment ago: decide again on the store's own view.
            fresh = MeshIndex.build(list_objects_sync(self.api_sock, "Pod"))
            identity = authorize_csr(fresh, stream, identity_uri)
        ttl = min(ttl_seconds or self.cert_ttl_seconds, self.cert_ttl_seconds)
        try:
            leaf = self.ca.sign_csr(csr_pem, identity, ttl)
        except CertificateError as exc:
            raise CsrRefused(str(exc)) from None
        log.info("signed %s for %s on node %s (ttl %ds)", identity_uri, stream.key, stream.hello.node, ttl)
        return [leaf], self.ca.root_pem

    # -- debug ------------------------------------------------------------------------------------
    def _debug(self, stream: ProxyStream | None, request: dict):
        return debug.answer(self, request)
