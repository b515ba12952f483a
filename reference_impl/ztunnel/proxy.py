"""The node proxy: one in-pod proxy (15001 / 15006 / 15008) per captured pod of this node,
driven by the snapshots of the control plane.

Outbound (15001): resolve the original destination with the snapshot (section 4) and either
tunnel it over HBONE with the source workload's certificate or pass it through as plain TCP.
Inbound HBONE (15008): the destination workload's certificate, authority check, L4 authorization,
then a marked connection to the app. Inbound plaintext (15006): PeerAuthentication and L4
authorization with no identity. Every upstream socket is created inside the pod namespace with
SO_MARK 0x539, so it bypasses capture; outbound ones carry the pod's IP, and the ones to the app
carry the original client's IP (IP_TRANSPARENT, ISTIO-SEMANTICS section 2).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..hbone import (ConnectRequest, HboneClient, HboneError, HboneServer, HboneTLSError, Outcome, format_forwarded,
                     parse_forwarded, pipe as hbone_pipe, workload_baggage)
from ..identity import CertificateManager, Identity
from ..netns import write_sysctls
from . import capture, sockets
from .capture import PROXY_PORTS
from .listeners import Listener
from .pipe import Splice
from .state import Route, State, Workload
from .telemetry import Connection, Telemetry

log = logging.getLogger("ztunnel")

NetnsResolver = Callable[[Workload], Awaitable[str | None]]
UPSTREAM_CONNECT_TIMEOUT = 10.0
UNPROCESSED_RETRIES = 2


@dataclass
class Live:
    """A connection being proxied, so a policy change or the drain deadline can reset it."""
    conn: Connection
    reset: Callable[[], None]
    pod_uid: str
    inbound_check: Callable[[State], bool] | None = None   # True while still allowed


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
        self.live: dict[int, Live] = {}
        self.ready = asyncio.Event()
        self.draining = False
        self._apply_lock = asyncio.Lock()
        self._first_apply = True

    # ------------------------------------------------------------------ snapshots
    async def apply(self, config: dict, version: int) -> None:
        state = State(config, self.node)  # raises ConfigError → the xDS client NACKs
        async with self._apply_lock:
            self.state, self.version = state, version
            await self._reconcile()
            self._reevaluate_live()
            self._refresh_identities()
            self._first_apply = False
        self.ready.set()

    async def _reconcile(self) -> None:
        if self.draining:
            return
        desired = {w.uid: w for w in self.state.captured_local()}
        for uid in [u for u in self.pods if u not in desired]:
            await self._stop_pod(self.pods.pop(uid), remove_rules=True)
        for uid, workload in desired.items():
            pod = self.pods.get(uid)
            if pod is not None:
                pod.workload = workload
                continue
            try:
                await self._start_pod(workload)
            except Exception as exc:
                log.error("cannot capture pod %s/%s: %s", workload.namespace, workload.name, exc)
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
                                     sock_factory=lambda dest: sockets.connect_marked(netns, dest, UPSTREAM_CONNECT_TIMEOUT))
            pod.listeners.append(Listener(netns, capture.OUTBOUND_PORT,
                                          lambda c, p: self._outbound(uid, c, p), name=f"{workload.name}:15001").start())
            pod.listeners.append(Listener(netns, capture.INBOUND_PLAINTEXT_PORT,
                                          lambda c, p: self._inbound_plaintext(uid, c, p), name=f"{workload.name}:15006").start())
            pod.hbone_server = HboneServer(lambda req: self._inbound_hbone(uid, req), self.certs.ssl_context_for)
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

    def _reevaluate_live(self) -> None:
        for key, live in list(self.live.items()):
            if live.inbound_check is not None and not live.inbound_check(self.state):
                live.conn.outcome, live.conn.reason = "denied", "policy changed: connection no longer allowed"
                log.info("resetting live connection %s -> %s: now denied", live.conn.src, live.conn.dst)
                live.reset()

    # ------------------------------------------------------------------ bookkeeping
    def _track(self, live: Live) -> int:
        key = id(live)
        self.live[key] = live
        self.telemetry.opened_conn(live.conn)
        return key

    def _untrack(self, key: int) -> None:
        live = self.live.pop(key, None)
        if live is not None:
            if live.conn.outcome == "open":
                live.conn.outcome = "ok"
            self.telemetry.closed_conn(live.conn)

    def _refuse(self, conn: Connection, outcome: str, reason: str) -> None:
        conn.outcome, conn.reason = outcome, reason
        self.telemetry.log(conn)

    def _workload(self, uid: str) -> Workload | None:
        pod = self.pods.get(uid)
        return self.state.by_uid.get(uid) or (pod.workload if pod else None)

    # ------------------------------------------------------------------ outbound
    async def _outbound(self, uid: str, sock, peer) -> None:
        dst_ip, dst_port = sockets.original_dst(sock)
        source = self._workload(uid)
        pod = self.pods.get(uid)
        conn = Connection("source", f"{peer[0]}:{peer[1]}", f"{dst_ip}:{dst_port}",
                          src_workload=source.raw if source else None,
                          src_principal=source.identity if source else "")
        if source is None or pod is None:
            sockets.reset(sock)
            return self._refuse(conn, "error", "source pod is no longer captured")
        route = self.state.route_outbound(source, dst_ip, dst_port)
        conn.dst_workload = route.dst_workload.raw if route.dst_workload else None
        conn.dst_service = route.dst_service.info() if route.dst_service else None
        if route.kind == "fail":
            sockets.reset(sock)
            return self._refuse(conn, "error", route.reason)
        if route.kind == "passthrough":
            try:
                upstream = await sockets.connect_marked(pod.netns, route.target, UPSTREAM_CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                sockets.reset(sock)
                return self._refuse(conn, "connect_failed", f"connect to {route.target} failed: {exc!r}")
            await self._splice(sock, upstream, conn, uid)
            return
        await self._outbound_hbone(pod, source, route, sock, peer, conn)

    async def _outbound_hbone(self, pod: PodProxy, source: Workload, route: Route, sock, peer, conn) -> None:
        conn.hbone_target = f"{route.target[0]}:{route.target[1]}"
        conn.dst_principal = route.expected_identities[0] if len(route.expected_identities) == 1 else ""
        conn.mtls = True
        host = route.dst_service.hostname if route.dst_service else None
        headers = {
            "baggage": workload_baggage(source.namespace, source.raw.get("workloadName") or source.name,
                                        source.raw.get("canonicalName") or "", source.raw.get("canonicalRevision") or ""),
            "forwarded": format_forwarded(peer[0], peer[1], host),
        }
        try:
            stream = await self._open_tunnel(pod, source, route, headers)
        except HboneError as exc:
            sockets.reset(sock)
            outcome = "denied" if exc.status == 401 else "error"
            return self._refuse(conn, outcome, f"HBONE to {conn.hbone_target} ({route.authority}): {exc}")
        except Exception as exc:
            sockets.reset(sock)
            return self._refuse(conn, "error", f"HBONE to {conn.hbone_target} failed: {exc!r}")
        reader, writer = await asyncio.open_connection(sock=sock)
        task = asyncio.current_task()
        key = self._track(Live(conn, lambda: task.cancel(), pod.workload.uid))
        try:
            conn.sent, conn.received = await hbone_pipe(reader, writer, stream, stream)
        except asyncio.CancelledError:
            if conn.outcome == "open":
                conn.outcome, conn.reason = "reset", "reset by ztunnel"
        except (ConnectionError, OSError) as exc:
            conn.outcome, conn.reason = "reset", repr(exc)
        finally:
            conn.sent = conn.sent or stream.bytes_sent
            conn.received = conn.received or stream.bytes_received
            self._untrack(key)

    async def _open_tunnel(self, pod: PodProxy, source: Workload, route: Route, headers: dict):
        """CONNECT on a pooled connection; a CONNECT the server provably did not process (it
        raced a GOAWAY, or was refused while the server drains) is sent again on a fresh one.
        Nothing of the client's has been sent yet, so this is invisible to it - and it is what
        makes a ztunnel restart lose no new connection (ISTIO-SEMANTICS section 12)."""
        for attempt in range(1, UNPROCESSED_RETRIES + 2):
            try:
                return await pod.client.connect(
                    Identity.parse(source.identity), route.target,
                    [Identity.parse(i) for i in route.expected_identities], route.authority, headers,
                    source_ip=source.ip)
            except HboneTLSError:
                raise
            except HboneError as exc:
                if exc.status is not None or attempt > UNPROCESSED_RETRIES or not _unprocessed(exc):
                    raise
                log.debug("CONNECT to %s not processed (%s): retrying on a new connection", route.target, exc)
        raise AssertionError("unreachable")

    async def _splice(self, a, b, conn: Connection, uid: str, check=None) -> None:
        s = Splice()
        key = self._track(Live(conn, s.reset, uid, check))
        try:
            await s.start(a, b)
            exc = await s.done
            if exc is not None and conn.outcome == "open":
                conn.outcome, conn.reason = "reset", repr(exc)
        except asyncio.CancelledError:
            s.reset()
            raise
        finally:
            conn.sent, conn.received = s.counts.up, s.counts.down
            self._untrack(key)

    async def _connect_app(self, pod: PodProxy, source_ip: str, addr: tuple[str, int]):
        """The connection to the app, from the original client's IP when it is a usable one."""
        if self.original_source and _is_ipv4(source_ip):
            return await sockets.connect_as(pod.netns, source_ip, addr, UPSTREAM_CONNECT_TIMEOUT)
        return await sockets.connect_marked(pod.netns, addr, UPSTREAM_CONNECT_TIMEOUT)

    # ------------------------------------------------------------------ inbound plaintext
    async def _inbound_plaintext(self, uid: str, sock, peer) -> None:
        dst_ip, dst_port = sockets.original_dst(sock)
        dest = self._workload(uid)
        pod = self.pods.get(uid)
        conn = Connection("destination", f"{peer[0]}:{peer[1]}", f"{dst_ip}:{dst_port}",
                          dst_workload=dest.raw if dest else None, dst_principal=dest.identity if dest else "")
        src = self.state.by_ip.get(peer[0])
        conn.src_workload = src.raw if src else None
        service = self.state.inbound_service(dest, dst_port) if dest else None
        conn.dst_service = service.info() if service else None
        if dest is None or pod is None or dst_ip not in dest.ips:
            sockets.reset(sock)
            return self._refuse(conn, "error", f"{dst_ip} is not a captured pod of this node")
        if dst_port in PROXY_PORTS:
            sockets.reset(sock)
            return self._refuse(conn, "denied", f"port {dst_port} is a proxy port")
        if not self.state.plaintext_allowed(dest, dst_port):
            sockets.reset(sock)
            return self._refuse(conn, "denied", "plaintext refused: PeerAuthentication STRICT")
        decision = self.state.authorize(dest, peer[0], dst_ip, dst_port, None)
        if not decision.allowed:
            sockets.reset(sock)
            return self._refuse(conn, "denied", decision.reason)
        try:
            upstream = await self._connect_app(pod, peer[0], (dst_ip, dst_port))
        except (OSError, asyncio.TimeoutError) as exc:
            sockets.reset(sock)
            return self._refuse(conn, "connect_failed", f"app at {dst_ip}:{dst_port}: {exc!r}")

        def still_allowed(state: State) -> bool:
            w = state.by_uid.get(uid)
            return (w is not None and state.plaintext_allowed(w, dst_port)
                    and state.authorize(w, peer[0], dst_ip, dst_port, None).allowed)
        await self._splice(sock, upstream, conn, uid, still_allowed)

    # ------------------------------------------------------------------ inbound HBONE
    async def _inbound_hbone(self, uid: str, req: ConnectRequest) -> Outcome:
        ip, port = req.authority
        dest = self._workload(uid)
        pod = self.pods.get(uid)
        principal = str(req.peer_identity)
        # The source is the tunnel's TCP peer, as in ztunnel's inbound.rs: a source ztunnel dials
        # from inside the client pod's namespace, so the peer IS the client pod. `forwarded for=`
        # is the client's word and never trusted (it would let any mesh identity claim an
        # address that an ipBlocks rule admits); only its `host=` feeds telemetry.
        forwarded = parse_forwarded(req.forwarded)
        source_ip = req.peer_address[0]
        conn = Connection("destination", f"{source_ip}:{req.peer_address[1]}",
                          f"{ip}:{port}", dst_workload=dest.raw if dest else None,
                          src_principal=principal, dst_principal=dest.identity if dest else "", mtls=True)
        src = self.state.by_ip.get(source_ip)
        conn.src_workload = src.raw if src else None
        service = self.state.inbound_service(dest, port, forwarded.get("host")) if dest else None
        conn.dst_service = service.info() if service else None
        if dest is None or pod is None:
            self._refuse(conn, "error", "pod is no longer captured")
            return Outcome.refused(503, "destination pod is no longer captured by this ztunnel")
        if ip not in dest.ips:
            self._refuse(conn, "denied", f"authority {ip} is not pod {dest.namespace}/{dest.name}")
            return Outcome.refused(400, f"authority IP {ip} is not this pod ({dest.ip})")
        if port in PROXY_PORTS:
            self._refuse(conn, "denied", f"port {port} is a proxy port")
            return Outcome.refused(400, f"port {port} is one of the proxy's own ports")
        decision = self.state.authorize(dest, source_ip, ip, port, principal)
        if not decision.allowed:
            self._refuse(conn, "denied", decision.reason)
            return Outcome.refused(401, decision.reason)
        try:
            upstream = await self._connect_app(pod, source_ip, (ip, port))
        except (OSError, asyncio.TimeoutError) as exc:
            self._refuse(conn, "connect_failed", f"app at {ip}:{port}: {exc!r}")
            return Outcome.refused(503, f"upstream {ip}:{port} connect failed: {exc!r}")
        reader, writer = await asyncio.open_connection(sock=upstream)
        tracked = _TrackedUpstream(reader, writer, conn)

        def still_allowed(state: State) -> bool:
            w = state.by_uid.get(uid)
            return w is not None and state.authorize(w, source_ip, ip, port, principal).allowed
        key = self._track(Live(conn, tracked.reset, uid, still_allowed))
        tracked.on_done = lambda: self._untrack(key)
        return Outcome.connected(tracked, tracked)

    # ------------------------------------------------------------------ drain
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
        while self.live and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if self.live:
            log.info("drain deadline (%.1fs) passed: resetting %d connections", deadline_s, len(self.live))
        for live in list(self.live.values()):
            live.conn.outcome, live.conn.reason = "reset", "drain deadline passed"
            live.reset()
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
        dump["connections"] = len(self.live)
        return dump


# How the HBONE client words a CONNECT that never reached the server's application: above the
# last stream id of a GOAWAY, refused with REFUSED_STREAM, or never sent.
_UNPROCESSED_MARKERS = ("(GOAWAY)", "REFUSED_STREAM", "closed before the CONNECT", "cannot open a stream")


def _unprocessed(exc: HboneError) -> bool:
    return any(marker in str(exc) for marker in _UNPROCESSED_MARKERS)


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


class _TrackedUpstream:
    """The app-side reader/writer handed to the HBONE server, counting bytes and resettable
    (a policy change or drain turns into an error the server's pipe propagates as resets)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection):
        self.reader, self.writer, self.conn = reader, writer, conn
        self.transport = writer.transport
        self._reset = False
        self._done = False
        self.on_done: Callable[[], None] | None = None

    async def read(self, n: int = -1) -> bytes:
        data = await self.reader.read(n)
        if self._reset:
            raise ConnectionResetError("reset by ztunnel")
        self.conn.received += len(data)
        return data

    def write(self, data: bytes) -> None:
        if self._reset:
            raise ConnectionResetError("reset by ztunnel")
        self.conn.sent += len(data)
        self.writer.write(data)

    async def drain(self) -> None:
        if self._reset:
            raise ConnectionResetError("reset by ztunnel")
        await self.writer.drain()

    def can_write_eof(self) -> bool:
        return self.writer.can_write_eof()

    def write_eof(self) -> None:
        self.writer.write_eof()

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()
        self._finish()

    def reset(self) -> None:
        self._reset = True
        sockets.reset(self.writer.transport)
        self.reader.feed_eof() if not self.reader.at_eof() else None
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self.on_done is not None:
                self.on_done()
