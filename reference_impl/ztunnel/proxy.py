"""The node proxy: one in-pod proxy (15001 / 15006 / 15008) per captured pod of this node,
driven by the snapshots of the control plane. This file is the pods' lifecycle (capture,
release, certificates), the drain and the config dump; the traffic is handled by direction:
outbound.py (15001), inbound_passthrough.py (15006, plaintext), inbound.py (15008, HBONE), and
connection_manager.py tracks what is live and revokes what a policy change no longer allows.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..hbone import HboneClient, HboneServer
from ..identity import CertificateManager, Identity
from ..netns import write_sysctls
from ..process.changes import ConfigChanges
from . import capture, sockets
from .connection_manager import ConnectionManager
from .inbound import Inbound
from .inbound_passthrough import InboundPassthrough
from .listeners import Listener
from .outbound import Outbound
from .state import State, Workload
from .telemetry import Telemetry

log = logging.getLogger("ztunnel")

NetnsResolver = Callable[[Workload], Awaitable[str | None]]
# Backoff between attempts to capture a pod whose capture failed.
CAPTURE_RETRY_INITIAL_S, CAPTURE_RETRY_MAX_S = 0.2, 5.0


@dataclass
class PodProxy:
    workload: Workload
    netns: str
    listeners: list[Listener] = field(default_factory=list)
    hbone_server: HboneServer | None = None
    hbone_listener: object | None = None
    client: HboneClient | None = None


class Ztunnel:
    def __init__(self, node: str, certs: CertificateManager, telemetry: Telemetry | None = None,
                 netns_resolver: NetnsResolver | None = None, manage_rules: bool = True,
                 original_source: bool | None = None):
        self.node = node
        self.certs = certs
        self.telemetry = telemetry or Telemetry()
        self.netns_resolver = netns_resolver
        self.manage_rules = manage_rules
        # Binding to the client's IP needs the reply routing that capture.install sets up.
        self.original_source = manage_rules if original_source is None else original_source
        self.state = State({}, node)
        self.version = 0
        self.pods: dict[str, PodProxy] = {}
        self.connections = ConnectionManager(self.telemetry)
        self.outbound = Outbound(self)
        self.inbound_passthrough = InboundPassthrough(self)
        self.inbound = Inbound(self)
        self.ready = asyncio.Event()
        self.changes = ConfigChanges()   # wakes connections waiting for a newer config
        self.draining = False
        self._apply_lock = asyncio.Lock()
        self._first_apply = True
        self._capture_retry: asyncio.Task | None = None

    # ------------------------------------------------------------------ snapshots
    async def apply(self, config: dict, version: int) -> None:
        state = State(config, self.node)  # raises ConfigError → the xDS client NACKs
        async with self._apply_lock:
            self.state, self.version = state, version
            self.changes.applied()
            pending = await self._reconcile()
            self.connections.revoke(self.state)
            self._refresh_identities()
            self._first_apply = False
        if pending:
            self._retry_captures()
        self.ready.set()

    async def _reconcile(self) -> list[Workload]:
        """Capture this node's pods the snapshot names and release the others; returns the pods
        whose capture failed. One pod's failure never stops the others' reconcile: the snapshot
        is valid and is acknowledged, and a failed capture is retried (_retry_captures)."""
        if self.draining:
            return []
        desired = {w.uid: w for w in self.state.captured_local()}
        for uid in [u for u in self.pods if u not in desired]:
            await self._release(self.pods.pop(uid))
        failed = []
        for uid, workload in desired.items():
            pod = self.pods.get(uid)
            if pod is not None and not _same_pod(pod, workload):
                # The same name, another pod (deleted and created again, e.g. while istiod was
                # away): the proxy held for the old one listens in a namespace that is gone.
                await self._release(self.pods.pop(uid))
                pod = None
            if pod is not None:
                pod.workload = workload
                continue
            try:
                await self._start_pod(workload)
            except Exception as exc:
                log.error("cannot capture pod %s/%s: %s", workload.namespace, workload.name, exc)
                failed.append(workload)
        if self._first_apply and self.manage_rules:
            # Rules left behind by an earlier ztunnel for pods that are no longer captured.
            for w in self.state.local_workloads():
                if w.uid in desired or w.raw.get("hostNetwork"):
                    continue
                netns = await self._netns_of(w)
                if netns:
                    try:
                        await capture.remove_async(netns)
                    except capture.CaptureError as exc:
                        log.debug("%s", exc)
        return failed

    async def _release(self, pod: PodProxy) -> None:
        try:
            await self._stop_pod(pod, remove_rules=True)
        except Exception:
            log.exception("releasing pod %s/%s failed", pod.workload.namespace, pod.workload.name)

    def _retry_captures(self) -> None:
        """Keep reconciling, with backoff, until every pod of the snapshot is captured: a capture
        that failed (the pod's namespace not there yet, a command that timed out) would otherwise
        wait for the next snapshot, and none may come (istio-cni retries a failed pod add too)."""
        if self._capture_retry is None or self._capture_retry.done():
            self._capture_retry = asyncio.get_running_loop().create_task(self._capture_retry_loop())

    async def _capture_retry_loop(self) -> None:
        delay = CAPTURE_RETRY_INITIAL_S
        while not self.draining:
            await asyncio.sleep(delay)
            async with self._apply_lock:
                pending = await self._reconcile()
            if not pending:
                return
            delay = min(delay * 2, CAPTURE_RETRY_MAX_S)
            log.info("capture of %s failed again; retrying in %.1fs",
                     ", ".join(f"{w.namespace}/{w.name}" for w in pending), delay)

    async def _netns_of(self, workload: Workload) -> str | None:
        if workload.netns:
            return workload.netns
        if self.netns_resolver is not None:
            return await self.netns_resolver(workload)
        return None

    async def _start_pod(self, workload: Workload) -> None:
        netns = await self._netns_of(workload)
        if not netns:
            raise RuntimeError("its network namespace is unknown (no netns in the snapshot or on the pod)")
        pod = PodProxy(workload, netns)
        uid = workload.uid
        # Registered before the first listener opens: during a restart the kernel hands this
        # proxy connections as soon as the socket joins the SO_REUSEPORT group.
        self.pods[uid] = pod
        try:
            # When the old proxy closes a listener during a restart, hand its not-yet-accepted
            # connections to the replacement's SO_REUSEPORT socket instead of resetting them.
            write_sysctls(netns, {"net.ipv4.tcp_migrate_req": "1"})
        except OSError as exc:
            log.debug("tcp_migrate_req not set in %s: %s", netns, exc)
        try:
            pod.client = HboneClient(self.certs.ssl_context_for,
                                     sock_factory=lambda dest: sockets.connect_marked(netns, dest))
            pod.listeners.append(Listener(netns, capture.OUTBOUND_PORT,
                                          lambda c, p: self.outbound.serve(uid, c, p), name=f"{workload.name}:15001").start())
            pod.listeners.append(Listener(netns, capture.INBOUND_PLAINTEXT_PORT,
                                          lambda c, p: self.inbound_passthrough.serve(uid, c, p), name=f"{workload.name}:15006").start())
            pod.hbone_server = HboneServer(lambda req: self.inbound.serve(uid, req), self.certs.ssl_context_for)
            pod.hbone_listener = await pod.hbone_server.listen(
                identity=Identity.parse(workload.identity),
                sock=sockets.listener(netns, capture.INBOUND_HBONE_PORT))
            if self.manage_rules:
                await capture.install_async(netns)
        except BaseException:
            if self.pods.get(uid) is pod:
                del self.pods[uid]
            await self._stop_pod(pod, remove_rules=False)
            raise
        # Fetch the certificate now so the first connection does not wait for the CA.
        asyncio.get_running_loop().create_task(self._prefetch(workload.identity))
        log.info("captured pod %s/%s (%s) in netns %s", workload.namespace, workload.name, workload.ip, netns)

    async def _prefetch(self, identity: str) -> None:
        try:
            await self.certs.get(Identity.parse(identity), timeout=30)
        except Exception as exc:
            log.warning("certificate for %s not available yet: %s", identity, exc)

    async def _stop_pod(self, pod: PodProxy, remove_rules: bool) -> None:
        for listener in pod.listeners:
            listener.stop_accepting()
        if pod.hbone_listener is not None:
            await pod.hbone_listener.close(drain=True)
        if pod.client is not None:
            await pod.client.close()
        if remove_rules and self.manage_rules:
            try:
                await capture.remove_async(pod.netns)
            except capture.CaptureError as exc:
                log.info("%s (the pod is probably gone)", exc)
        log.info("released pod %s/%s", pod.workload.namespace, pod.workload.name)

    def _refresh_identities(self) -> None:
        wanted = {Identity.parse(p.workload.identity) for p in self.pods.values()}
        for identity in self.certs.identities():
            if identity not in wanted:
                self.certs.forget(identity)

    def workload(self, uid: str) -> Workload | None:
        """The captured pod ``uid`` as the snapshot has it now, or as it was captured."""
        pod = self.pods.get(uid)
        return self.state.by_uid.get(uid) or (pod.workload if pod else None)

    # ------------------------------------------------------------------ drain
    def _opening(self) -> bool:
        return any(listener.tasks for pod in self.pods.values() for listener in pod.listeners)

    async def drain(self, deadline_s: float) -> None:
        """Hand listeners over to a replacement, let live connections finish until the deadline, then reset them."""
        self.draining = True
        end = time.monotonic() + deadline_s
        # Keep accepting until a replacement ztunnel has bound the same ports (SO_REUSEPORT), so a
        # restart loses no new connection; without a replacement, until the deadline.
        while self.pods and time.monotonic() < end and not self._replacement_listening():
            await asyncio.sleep(0.05)
        for pod in self.pods.values():
            for listener in pod.listeners:
                listener.stop_accepting()
            if pod.hbone_listener is not None:
                await pod.hbone_listener.close(drain=True)
        # A connection still opening its tunnel is not tracked yet; its handler task is.
        while (self.connections or self._opening()) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if self.connections:
            log.info("drain deadline (%.1fs) passed: resetting %d connections", deadline_s, len(self.connections))
        self.connections.reset_all("drain deadline passed")
        await asyncio.sleep(0)
        for pod in self.pods.values():
            if pod.client is not None:
                await pod.client.close()

    def _replacement_listening(self) -> bool:
        """Every listener of every pod has a twin (the replacement's) in its SO_REUSEPORT group."""
        ports = (capture.OUTBOUND_PORT, capture.INBOUND_PLAINTEXT_PORT, capture.INBOUND_HBONE_PORT)
        for pod in self.pods.values():
            try:
                counts = sockets.listeners_on(pod.netns, ports)
            except OSError:
                continue  # the pod is gone: nothing to hand over
            if any(n < 2 for n in counts.values()):
                return False
        return True

    def config_dump(self) -> dict:
        dump = self.state.dump()
        dump["version"] = self.version
        dump["node"] = self.node
        dump["capturedPods"] = [{"uid": p.workload.uid, "name": p.workload.name, "namespace": p.workload.namespace,
                                 "ip": p.workload.ip, "netns": p.netns} for p in self.pods.values()]
        certs = []
        for identity in self.certs.identities():
            cert = self.certs.current(identity)
            entry = {"identity": str(identity), "state": "Available" if cert else "Initializing"}
            if cert is not None:
                entry.update({"notBefore": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cert.not_before)),
                              "notAfter": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cert.not_after)),
                              "certChain": cert.chain_pem, "root": cert.root_pem})
            certs.append(entry)
        dump["certificates"] = certs
        dump["connections"] = len(self.connections)
        return dump


def _same_pod(pod: PodProxy, workload: Workload) -> bool:
    """Whether the captured pod is the one the snapshot names now (a workload's uid is its
    namespace and name, so a pod created again under the same name has the same uid)."""
    held = pod.workload
    if held.pod_uid and workload.pod_uid:
        return held.pod_uid == workload.pod_uid
    return (workload.netns or pod.netns) == pod.netns and held.ip == workload.ip
