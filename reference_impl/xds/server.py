"""The istiod side of the config stream: one long-lived NDJSON connection per proxy.

The server knows nothing of Kubernetes objects. The control plane injects:
- `config_for(stream) -> dict`: the whole config that proxy should hold now (a new object
  whenever its content changes: encodings are cached by object identity);
- `signer(stream, identity, csr_pem, ttl_seconds or None) -> (chain, root)`: raises CsrRefused
  with a sentence;
- `debug(stream_or_None, request) -> JSON-able`: answers `{"type": "debug"}` requests.
It pushes a new versioned snapshot to a proxy only when that proxy's config changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from . import protocol
from .protocol import Hello, ProtocolError

log = logging.getLogger("xds.server")


class CsrRefused(Exception):
    """The CA will not sign this CSR for this proxy; the message says why (identity and node)."""


@dataclass
class ProxyStream:
    """One connected proxy as the server sees it."""

    hello: Hello
    peer_pid: int | None
    connected_at: float = field(default_factory=time.time)
    sent_version: int = 0
    sent_config_json: str | None = None
    sent_at: float | None = None
    acked_version: int = 0
    acked_at: float | None = None
    nacked: dict | None = None
    writer: asyncio.StreamWriter | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.hello.proxy}/{self.hello.namespace}/{self.hello.pod}"

    def status(self, include_config: bool = False) -> dict:
        out = {"proxy": self.hello.proxy, "node": self.hello.node, "pod": self.hello.pod,
               "namespace": self.hello.namespace, "peerPid": self.peer_pid,
               "connectedAt": self.connected_at, "sentVersion": self.sent_version,
               "sentAt": self.sent_at, "ackedVersion": self.acked_version, "ackedAt": self.acked_at,
               "nack": self.nacked}
        if include_config:
            out["config"] = json.loads(self.sent_config_json) if self.sent_config_json else None
        return out


def peer_pid(writer: asyncio.StreamWriter) -> int | None:
    """The pid of the process on the other end of a Unix socket (SO_PEERCRED), if known."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, _uid, _gid = struct.unpack("3i", creds)
    return pid or None


class _HelloRefused(Exception):
    pass


def _another_live_process(old_pid: int | None, new_pid: int | None) -> bool:
    if old_pid is None or new_pid is None or old_pid == new_pid:
        return False
    try:
        os.kill(old_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ConfigFor = Callable[[ProxyStream], dict]
Signer = Callable[[ProxyStream, str, str, "int | None"], tuple[list[str], str]]
Debug = Callable[["ProxyStream | None", dict], object]


class XdsServer:
    def __init__(self, socket_path: str, config_for: ConfigFor, signer: Signer | None = None,
                 debug: Debug | None = None):
        self.socket_path = socket_path
        self.config_for = config_for
        self.signer = signer
        self.debug = debug
        self.streams: dict[str, ProxyStream] = {}
        # One counter for all proxies, starting at this istiod's start in milliseconds (Istio's
        # versions are timestamps too), so a restarted istiod's versions exceed what the one before
        # sent even when a proxy's hello under-reports what it holds (a snapshot it was still
        # applying when the old istiod died); a hello carrying a higher version lifts it as well.
        self._version = time.time_ns() // 1_000_000
        self._server: asyncio.AbstractServer | None = None
        self._push_lock = asyncio.Lock()
        self._encoded: dict[int, tuple[dict, str]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path,
                                                       limit=protocol.STREAM_LIMIT)
        os.chmod(self.socket_path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for stream in list(self.streams.values()):
                if stream.writer is not None:
                    stream.writer.close()
            for task in list(self._tasks):
                task.cancel()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    async def push(self) -> None:
        """Recompute every connected proxy's config and send it where it changed."""
        async with self._push_lock:
            for stream in list(self.streams.values()):
                await self._send_if_changed(stream)

    def _encode(self, config: dict) -> str:
        # Every ztunnel gets the same config object: encode it once, not once per proxy (a
        # 1,000-workload snapshot costs tens of milliseconds to encode). Keyed by identity, so
        # config_for must hand out a new object whenever the content changes.
        cached = self._encoded.get(id(config))
        if cached is not None and cached[0] is config:
            return cached[1]
        encoded = json.dumps(config, sort_keys=True, separators=(",", ":"))
        if len(self._encoded) > 64:
            self._encoded.clear()
        self._encoded[id(config)] = (config, encoded)
        return encoded

    async def _send_if_changed(self, stream: ProxyStream) -> None:
        if stream.writer is None or stream.writer.is_closing():
            return
        try:
            config = self.config_for(stream)  # None: nothing to send yet
        except Exception:
            # A derivation bug must not tear down the stream: the proxy keeps its last config.
            log.exception("could not derive config for %s; it keeps version %d", stream.key,
                          stream.sent_version)
            return
        if config is None:
            return  # not ready (e.g. istiod has not read the store yet): never send an empty mesh
        config_json = self._encode(config)
        if config_json == stream.sent_config_json:
            return
        self._version += 1
        version = self._version
        line = ('{"config":%s,"type":"snapshot","version":%d}\n' % (config_json, version)).encode()
        # Recorded before the write: the proxy's ack can be read (by this stream's own reader)
        # while the drain below is still waiting, and must find the version it acknowledges.
        stream.sent_version, stream.sent_config_json, stream.sent_at = version, config_json, time.time()
        try:
            stream.writer.write(line)
            await stream.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            log.info("%s went away while sending version %d: %s", stream.key, version, exc)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream: ProxyStream | None = None
        pid = peer_pid(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
                    log.info("stream %s read failed: %s", stream.key if stream else "?", exc)
                    break
                if not line:
                    break
                try:
                    message = protocol.decode(line)
                    stream = await self._dispatch(message, stream, pid, writer)
                except _HelloRefused as exc:
                    log.warning("refused a hello: %s", exc)
                    stream = None
                    break
                except ProtocolError as exc:
                    log.warning("bad message from %s: %s", stream.key if stream else f"pid {pid}", exc)
                    await self._reply(writer, protocol.error(None, f"protocol error: {exc}"))
        finally:
            if stream is not None and self.streams.get(stream.key) is stream:
                del self.streams[stream.key]
                log.info("%s disconnected (last sent %d, acked %d)", stream.key,
                         stream.sent_version, stream.acked_version)
            writer.close()

    async def _dispatch(self, message: dict, stream: ProxyStream | None, pid: int | None,
                        writer: asyncio.StreamWriter) -> ProxyStream | None:
        kind = message["type"]
        if kind == "hello":
            hello = Hello.from_message(message)
            stream = ProxyStream(hello=hello, peer_pid=pid, writer=writer)
            old = self.streams.get(stream.key)
            if old is not None and old.writer is not None and not old.writer.is_closing():
                if _another_live_process(old.peer_pid, pid):
                    # A second process naming the same pod must not knock the live proxy off
                    # (it would lose its config stream); the proxy's own reconnects reuse its pid.
                    await self._reply(writer, protocol.error(
                        None, f"{stream.key} already has a live stream from pid {old.peer_pid}; "
                              f"refusing another from pid {pid}"))
                    raise _HelloRefused(f"{stream.key}: second hello from pid {pid} while pid "
                                        f"{old.peer_pid} is connected")
                old.writer.close()
            self._version = max(self._version, hello.version)
            self.streams[stream.key] = stream
            log.info("%s connected from node %s (pid %s, holds version %d)", stream.key,
                     hello.node, pid, hello.version)
            if hello.proxy != "debug":
                async with self._push_lock:
                    await self._send_if_changed(stream)
            return stream
        if kind == "debug":
            await self._answer_debug(message, stream, writer)
            return stream
        if stream is None:
            raise ProtocolError(f"a {kind!r} message must follow a hello")
        if kind == "ack":
            version = message.get("version")
            if isinstance(version, int) and version <= stream.sent_version:
                stream.acked_version = max(stream.acked_version, version)
                stream.acked_at = time.time()
                stream.nacked = None
        elif kind == "nack":
            stream.nacked = {"version": message.get("version"), "error": message.get("error")}
            log.warning("%s rejected version %s: %s", stream.key, message.get("version"),
                        message.get("error"))
        elif kind == "csr":
            task = asyncio.create_task(self._answer_csr(message, stream, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            raise ProtocolError(f"unknown message type {kind!r}")
        return stream

    async def _answer_csr(self, message: dict, stream: ProxyStream, writer) -> None:
        request_id = message.get("id")
        identity, csr_pem = message.get("identity"), message.get("csr")
        ttl = message.get("ttlSeconds")
        if self.signer is None:
            await self._reply(writer, protocol.error(request_id, "this server has no CA"))
            return
        if not isinstance(identity, str) or not isinstance(csr_pem, str):
            await self._reply(writer, protocol.error(request_id, "csr needs string 'identity' and 'csr'"))
            return
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            await self._reply(writer, protocol.error(request_id, f"csr ttlSeconds must be a whole number >= 1, got {ttl!r}"))
            return
        try:
            chain, root = await asyncio.get_running_loop().run_in_executor(
                None, self.signer, stream, identity, csr_pem, ttl)
        except CsrRefused as exc:
            log.warning("refused CSR from %s: %s", stream.key, exc)
            await self._reply(writer, protocol.error(request_id, str(exc)))
            return
        except Exception as exc:  # the CA's own errors (bad CSR PEM, wrong SAN) are sentences too
            log.warning("CSR from %s for %s failed: %s", stream.key, identity, exc)
            await self._reply(writer, protocol.error(request_id, f"signing {identity} failed: {exc}"))
            return
        await self._reply(writer, protocol.cert(request_id, chain, root))

    async def _answer_debug(self, message: dict, stream: ProxyStream | None, writer) -> None:
        request_id = message.get("id")
        if message.get("what") == "proxies":
            result = {"version": self._version,
                      "proxies": [s.status() for s in self.streams.values()]}
        elif self.debug is not None:
            try:
                result = self.debug(stream, message)
                if isinstance(result, Awaitable):
                    result = await result
            except LookupError as exc:
                await self._reply(writer, protocol.error(request_id, str(exc.args[0] if exc.args else exc)))
                return
        else:
            await self._reply(writer, protocol.error(request_id, f"unknown debug request {message.get('what')!r}"))
            return
        await self._reply(writer, protocol.debug_reply(request_id, result))

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, message: dict) -> None:
        try:
            writer.write(protocol.encode(message))
            await writer.drain()
        except (ConnectionError, RuntimeError):
            pass
