"""The store's HTTP/1.1 + JSON API on a Unix socket (docs/INTERNALS.md, "The store").

HTTP framing is h11's (the sans-I/O HTTP/1.1 library under httpx); this module only routes
requests. `/watch` is a chunked NDJSON stream that stays open until the client goes away.
"""
from __future__ import annotations

import asyncio
import json
from typing import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import h11

from reference_impl.api import ManifestError

from .errors import ClusterError
from .store import Store

MAX_BODY = 16 * 1024 * 1024


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_selector(text: str | None) -> dict | None:
    if not text:
        return None
    selector = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise HTTPError(400, f"selector {text!r}: write it as key=value[,key=value]")
        selector[key.strip()] = value.strip()
    return selector


async def read_request(conn: h11.Connection, reader: asyncio.StreamReader):
    """One HTTP/1.1 request: (h11.Request, body) or (None, b"") when the client is gone
    (shared with the Kubernetes API, kubeapi/server.py)."""
    request, chunks, size = None, [], 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data and request is None:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                raise ConnectionError("request body too large")
            chunks.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return request, b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


class APIServer:
    """Routes requests to the store and to the daemon's operations (`ops`)."""

    def __init__(self, store: Store, ops: dict[str, Callable[..., Awaitable[object] | object]]):
        self.store = store
        self.ops = ops
        self._server: asyncio.AbstractServer | None = None
        self._streams: set[asyncio.Queue] = set()

    async def start(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for queue in list(self._streams):
            queue.put_nowait(None)

    # -- connection handling --------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    return
                url = urlsplit(request.target.decode())
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                if request.method == b"GET" and url.path == "/watch":
                    await self._watch(conn, writer)
                    return
                status, payload, ctype = await self._dispatch(request.method.decode(), url.path,
                                                              query, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                writer.write(conn.send(h11.Response(status_code=status, headers=[
                    ("content-type", ctype), ("content-length", str(len(data)))])))
                writer.write(conn.send(h11.Data(data=data)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader):
        return await read_request(conn, reader)

    async def _watch(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        self._streams.add(queue)

        def listener(event: str, obj: dict) -> None:
            queue.put_nowait({"type": event, "object": obj})
        self.store.subscribe(listener)
        try:
            writer.write(conn.send(h11.Response(status_code=200, headers=[
                ("content-type", "application/x-ndjson"), ("transfer-encoding", "chunked")])))
            sync = {"type": "SYNC", "resourceVersion": self.store.resource_version,
                    "objects": self.store.list()}
            writer.write(conn.send(h11.Data(data=json.dumps(sync).encode() + b"\n")))
            await writer.drain()
            while True:
                item = await queue.get()
                if item is None:
                    break
                lines = [json.dumps(item).encode() + b"\n"]
                while not queue.empty():  # batch what piled up while we were writing
                    more = queue.get_nowait()
                    if more is None:
                        break
                    lines.append(json.dumps(more).encode() + b"\n")
                writer.write(conn.send(h11.Data(data=b"".join(lines))))
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            self.store.unsubscribe(listener)
            self._streams.discard(queue)

    # -- routes ---------------------------------------------------------------------------------
    async def _dispatch(self, method: str, path: str, query: dict, body: bytes):
        try:
            data = json.loads(body) if body else {}
            result = await self._route(method, path, query, data)
            if isinstance(result, str):
                return 200, result.encode(), "text/plain; charset=utf-8"
            return 200, result, "application/json"
        except json.JSONDecodeError as exc:
            return 400, {"error": f"request body is not JSON: {exc}"}, "application/json"
        except ManifestError as exc:
            return 422, {"error": str(exc)}, "application/json"
        except ClusterError as exc:
            return 422, {"error": str(exc)}, "application/json"
        except HTTPError as exc:
            return exc.status, {"error": str(exc)}, "application/json"

    async def _route(self, method: str, path: str, query: dict, data: dict):
        ops = self.ops
        if (method, path) == ("GET", "/healthz"):
            return {"ok": True}
        if (method, path) == ("GET", "/objects"):
            items = self.store.list(query.get("kind"), query.get("namespace"),
                                    parse_selector(query.get("selector")))
            return {"items": items, "resourceVersion": self.store.resource_version}
        if method != "POST" and path != "/logs":
            raise HTTPError(405 if path in _POST_PATHS else 404, f"no route {method} {path}")
        if path == "/logs":
            return ops["logs"](query.get("namespace", "default"), query.get("pod", ""),
                               query.get("container"), query.get("tail"))
        if path in ("/apply", "/delete"):
            objects = data.get("objects")
            if not isinstance(objects, list):
                raise HTTPError(400, f"{path}: send {{\"objects\": [...]}}")
            results = ops["apply"](objects) if path == "/apply" else ops["delete"](objects)
            return {"results": results}
        if path == "/status":
            # The status subresource: controllers (istiod) report on objects they do not own.
            status = data.get("status")
            if not isinstance(status, dict) or not data.get("kind") or not data.get("name"):
                raise HTTPError(400, "/status: send {\"kind\", \"namespace\", \"name\", \"status\": {...}}")
            if self.store.get(data["kind"], data.get("namespace") or "", data["name"]) is None:
                raise HTTPError(404, f"/status: {data['kind']} {data.get('namespace') or ''}/{data['name']} not found")
            self.store.set_status(data["kind"], data.get("namespace") or "", data["name"], status)
            return {"ok": True}
        if path == "/pods/delete":
            grace = data.get("gracePeriodSeconds")
            if grace is not None and (not isinstance(grace, int) or grace < 0):
                raise HTTPError(400, "gracePeriodSeconds must be a whole number >= 0 or null")
            ops["delete_pod"](data.get("namespace") or "default", data.get("name", ""), grace)
            return {"ok": True}
        if path == "/scale":
            replicas = data.get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise HTTPError(400, "replicas must be a whole number >= 0")
            ops["scale"](data.get("kind", "Deployment"), data.get("namespace") or "default",
                         data.get("name", ""), replicas)
            return {"ok": True}
        if path == "/shutdown":
            ops["shutdown"]()
            return {"ok": True}
        raise HTTPError(404, f"no route {method} {path}")


_POST_PATHS = {"/apply", "/delete", "/status", "/pods/delete", "/scale", "/shutdown"}
