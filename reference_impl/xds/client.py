"""The proxy side of the config stream: keeps the last-known config across control-plane outages.

    client = XdsClient(socket_path, proxy="ztunnel", node="node-0", pod=..., namespace=...,
                       on_snapshot=apply_config)
    await client.start()
    version = await client.wait_version()          # the first snapshot
    chain, root = await client.sign(identity_uri, csr_pem)
    ...
    await client.close()

`on_snapshot(config, version)` may be sync or async; if it raises, the version is NACKed and
`client.config` stays on the previous snapshot. When the connection drops the client keeps
`config` and reconnects with exponential backoff capped at `max_backoff` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import socket
import time
from typing import Callable

from . import protocol
from .protocol import Hello, ProtocolError

log = logging.getLogger("xds.client")


class XdsUnavailable(ConnectionError):
    """The control plane could not be reached within the time asked for."""


class CsrRejected(Exception):
    """istiod refused to sign: the message is istiod's sentence (identity and node)."""


#: The cap is how long a proxy may stay on its old config after istiod is back (at 1.5 s the
#: ztunnels came back 0.3-1.3 s after istiod listened, most of the time a change made while it
#: was down took to land). A retry while istiod is away is one failed connect() on a Unix socket
#: path, so a short cap costs next to nothing; a refused hello is retried sooner anyway (the
#: backoff starts over on every connect).
MAX_BACKOFF = 0.25


class XdsClient:
    def __init__(self, socket_path: str, *, proxy: str, node: str, pod: str, namespace: str,
                 on_snapshot: Callable | None = None, initial_backoff: float = 0.05,
                 max_backoff: float = MAX_BACKOFF):
        self.socket_path = socket_path
        self.proxy, self.node, self.pod, self.namespace = proxy, node, pod, namespace
        self.on_snapshot = on_snapshot
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.config: dict | None = None
        self.version = 0
        self.received_at: float | None = None
        self.connects = 0
        self.connected = asyncio.Event()
        self._changed = asyncio.Condition()
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task | None = None
        self._closing = False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"xds-client-{self.pod}")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._writer is not None:
            self._writer.close()

    async def wait_version(self, newer_than: int | None = None, timeout: float | None = None) -> int:
        """Wait for a snapshot: the first one (newer_than None) or one newer than `newer_than`."""
        floor = 0 if newer_than is None else newer_than

        def ready():
            return self.config is not None and self.version > floor

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        return self.version

    async def sign(self, identity, csr_pem: str, timeout: float = 10.0,
                   ttl_seconds: int | None = None) -> tuple[list[str], str]:
        """Ask istiod's CA for a certificate; (chain PEMs leaf first, root PEM).

        `identity` is a SPIFFE URI or anything whose str() is one (identity.Identity)."""
        reply = await self.request(protocol.csr("", str(identity), csr_pem, ttl_seconds), timeout)
        if reply["type"] == "error":
            raise CsrRejected(reply.get("message") or "istiod refused the CSR")
        return reply["chain"], reply["root"]

    async def request(self, message: dict, timeout: float = 10.0) -> dict:
        """Send a request carrying an `id` and wait for the reply with that id."""
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except asyncio.TimeoutError:
            raise XdsUnavailable(f"istiod at {self.socket_path} not reachable within {timeout:g}s") from None
        request_id = f"{self.pod}-{next(self._ids)}"
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await _send(self._writer, {**message, "id": request_id})
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise XdsUnavailable(f"istiod did not answer {message['type']} within {timeout:g}s") from None
        except ConnectionError:
            raise XdsUnavailable("connection to istiod lost") from None
        finally:
            self._pending.pop(request_id, None)

    async def _run(self) -> None:
        backoff = self.initial_backoff
        while not self._closing:
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path,
                                                                    limit=protocol.STREAM_LIMIT)
            except (FileNotFoundError, ConnectionRefusedError, OSError) as exc:
                log.debug("istiod not reachable (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.initial_backoff
            try:
                await self._serve(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                log.info("stream to istiod lost: %s", exc)
            except Exception:
                # Whatever broke this stream, the proxy must connect again: this task ending would
                # leave it on its last config with no stream for good.
                log.exception("stream to istiod failed")
            finally:
                self.connected.clear()
                self._writer = None
                writer.close()
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(XdsUnavailable("connection to istiod lost"))
            if not self._closing:
                log.info("keeping config version %d while istiod is away", self.version)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = Hello(self.proxy, self.node, self.pod, self.namespace, version=self.version)
        await _send(writer, hello.to_message())
        self._writer = writer
        self.connects += 1
        self.connected.set()
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                message = protocol.decode(line)
            except ProtocolError as exc:
                log.warning("ignoring a bad line from istiod: %s", exc)
                continue
            if message["type"] == "snapshot":
                await self._apply(message, writer)
            else:
                future = self._pending.get(message.get("id"))
                if future is not None and not future.done():
                    future.set_result(message)
                elif message["type"] == "error":
                    log.warning("istiod error: %s", message.get("message"))

    async def _apply(self, message: dict, writer: asyncio.StreamWriter) -> None:
        version, config = message.get("version"), message.get("config")
        if not isinstance(version, int) or not isinstance(config, dict):
            log.warning("ignoring a snapshot without integer version and object config")
            return
        if self.on_snapshot is not None:
            try:
                result = self.on_snapshot(config, version)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.exception("snapshot version %d rejected; keeping version %d", version, self.version)
                await _send(writer, protocol.nack(version, f"{type(exc).__name__}: {exc}"))
                return
        async with self._changed:
            self.config, self.version, self.received_at = config, version, time.time()
            self._changed.notify_all()
        await _send(writer, protocol.ack(version))


async def _send(writer: asyncio.StreamWriter, message: dict) -> None:
    """Write one message; a stream that is gone is a ConnectionError. uvloop raises RuntimeError
    on a write to a transport it already closed (istiod reset the stream, e.g. killed with our last
    ack unread, while a snapshot was being applied); the stdlib loop raises ConnectionError."""
    try:
        writer.write(protocol.encode(message))
        await writer.drain()
    except RuntimeError as exc:
        if not writer.transport.is_closing():
            raise
        raise ConnectionResetError(f"stream to istiod already closed ({exc})") from None


def debug_query(socket_path: str, what: str, timeout: float = 5.0, **params) -> dict:
    """One blocking debug request to istiod (for the CLI): returns the result or raises.

    Raises XdsUnavailable if istiod cannot be reached and LookupError with istiod's sentence if it
    answered with an error.
    """
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(socket_path)
    except OSError as exc:
        raise XdsUnavailable(f"istiod is not reachable at {socket_path} ({exc.strerror or exc}); "
                             f"is the istiod pod running?") from None
    with sock:
        sock.sendall(protocol.encode(protocol.debug_request("cli", what, **params)))
        buffer = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buffer:
            if time.monotonic() > deadline:
                raise XdsUnavailable(f"istiod did not answer the debug request within {timeout:g}s")
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                raise XdsUnavailable(f"istiod did not answer the debug request within {timeout:g}s") from None
            if not chunk:
                raise XdsUnavailable("istiod closed the connection without answering")
            buffer += chunk
    reply = protocol.decode(buffer.split(b"\n", 1)[0])
    if reply["type"] == "error":
        raise LookupError(reply.get("message"))
    return reply["result"]
