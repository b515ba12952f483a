"""The Kubernetes REST API of the reference cluster: HTTPS on loopback, client-certificate
authentication, a front over the cluster's store (docs/INTERNALS.md, "The Kubernetes API").

HTTP framing is h11's and WebSocket framing wsproto's, as in the store's own API (apiserver.py);
this module routes requests to the store: discovery, get/list/watch, create/update/patch/delete
(with optimistic concurrency on resourceVersion), server-side apply, the status and scale
subresources, pod logs and exec. Every write goes through the store's `apply` (validation,
admission, all-or-nothing), so the store stays the single source of truth and never holds a
half-written object.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import yaml

from reference_impl import api
from reference_impl.api import ManifestError
from reference_impl.cluster import controllers, naming, volumes
from reference_impl.cluster.apiserver import HTTPError, read_request
from reference_impl.cluster.errors import ClusterError
from reference_impl.cluster.store import Store, now_iso
from reference_impl.netns import netns_path, socket_in

from . import defaults, discovery, managed, openapi, patch, protobuf, tables
from .events import EventRecorder
from .exec import ExecSession, accept_token, choose_protocol
from .history import History
from .pki import ApiPKI
from .resources import Resource, ResourceTable
from .selectors import field_matcher, label_matcher
from .status import (ApiError, already_exists, conflict, gone, invalid, not_found, status,
                     success, unauthorized)
from .tokens import ServiceAccountTokens

log = logging.getLogger("ambient-conformance.kubeapi")
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
JSON = "application/json"
# kube-apiserver takes request heads up to Go's 1 MiB (http.DefaultMaxHeaderBytes); h11's default
# of 16 KiB cut off an exec whose `command=` query carries many URLs (one curl, many requests).
MAX_REQUEST_HEAD = 1 << 20


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "").lower() in ("true", "1")

    def json_body(self):
        if not self.body:
            return {}
        ctype = self.headers.get("content-type", "")
        if "protobuf" in ctype:
            return protobuf.decode(self.body)
        if "cbor" in ctype:
            raise ApiError(415, "the body of the request was in an unknown format - accepted "
                                "media types include: application/json, application/yaml")
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ApiError(400, f"the request body is not JSON: {exc}") from None


@dataclass
class Target:
    """What a resource path names: /api/v1/namespaces/NS/pods/NAME/SUB."""
    resource: Resource
    version: str
    namespace: str | None
    name: str | None
    sub: str | None


class Stream(Exception):
    """Raised by a route to take over the connection (watch, follow, exec)."""

    def __init__(self, handler):
        self.handler = handler


class KubeAPIServer:
    def __init__(self, cluster: str, store: Store, ops: dict, pki: ApiPKI):
        self.cluster = cluster
        self.store = store
        self.ops = ops
        self.pki = pki
        self.client_ca = pki.client_ca()
        self.table = ResourceTable.build()
        self.history = History(store)
        self.events = EventRecorder(store, self.history)
        self.tokens = ServiceAccountTokens(pki.directory, store.get)
        self.started = now_iso()
        self.address = ""
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, host=host, port=port,
                                                  ssl=self.pki.server_context(), backlog=256)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{port}"
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.history.close()
        self.events.close()
        for task in list(self._tasks):
            task.cancel()

    # -- connections ----------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        ssl_object = writer.get_extra_info("ssl_object")
        authenticated = self.client_ca.authenticate(
            ssl_object.getpeercert(binary_form=True) if ssl_object else None) is not None
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    return
                try:
                    if not authenticated:
                        raise unauthorized()
                    code, payload, ctype = self._route(request)
                except Stream as stream:
                    await stream.handler(conn, reader, writer)
                    return
                except ApiError as exc:
                    code, payload, ctype = exc.code, exc.status, JSON
                except Exception as exc:  # a bug here must not take the daemon down
                    log.exception("kubeapi: %s %s", request.method, request.path)
                    code, payload, ctype = 500, status(500, f"internal error: {exc}"), JSON
                data = payload if isinstance(payload, bytes) else \
                    json.dumps(payload, separators=(",", ":")).encode()
                writer.write(conn.send(h11.Response(status_code=code, headers=[
                    ("content-type", ctype), ("content-length", str(len(data))),
                    ("cache-control", "no-cache, private")])))
                writer.write(conn.send(h11.Data(data=data)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    async def _read_request(self, conn: h11.Connection, reader) -> Request | None:
        request, body = await read_request(conn, reader)
        if request is None:
            return None
        url = urlsplit(request.target.decode())
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        return Request(request.method.decode(), url.path, parse_qs(url.query), headers, body)

    # -- routing --------------------------------------------------------------------------------
    def _route(self, req: Request):
        parts = [unquote(p) for p in req.path.split("/") if p]
        if req.path in ("/healthz", "/livez", "/readyz"):
            return 200, b"ok", "text/plain"
        if req.path == "/version":
            return 200, discovery.SERVER_VERSION, JSON
        if parts[:1] == ["openapi"]:
            return openapi.route(self.table, parts[1:], req.query)
        if parts == ["api"]:
            return 200, discovery.api_versions(self.address), JSON
        if parts == ["apis"]:
            return 200, discovery.api_group_list(self.table), JSON
        if len(parts) == 2 and parts[0] == "apis":
            group = discovery.api_group(self.table, parts[1])
            if group is None:
                raise ApiError(404, "the server could not find the requested resource")
            return 200, group, JSON
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        if not rest:
            doc = discovery.api_resource_list(self.table, group, version)
            if doc is None:
                raise ApiError(404, "the server could not find the requested resource")
            return 200, doc, JSON
        if len(rest) >= 5 and rest[0] == "namespaces" and rest[2] == "pods" and \
                rest[4] == "proxy" and group == "":
            raise Stream(lambda c, rd, w: self._proxy(req, rest[1], rest[3],
                                                      "/" + "/".join(rest[5:]), c, rd, w))
        target = self._target(group, version, rest)
        return self._handle(req, target)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        resource = self.table.find(group, version, rest[0])
        if resource is None or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        if namespace is not None and not resource.namespaced:
            raise ApiError(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in resource.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        return Target(resource, version, namespace, name, sub)

    def _handle(self, req: Request, t: Target):
        r, method = t.resource, req.method
        if t.sub == "exec":
            if method not in ("GET", "POST"):
                raise ApiError(405, f"exec: method {method} not allowed")
            raise Stream(lambda c, rd, w: self._exec(req, t, c, rd, w))
        if t.sub == "log":
            return self._logs(req, t)
        if t.sub == "scale":
            return self._scale(req, t)
        if t.sub == "token" or r.kind == "TokenReview":
            return self._tokens(req, t)
        if t.name is None:
            if method == "GET":
                if req.flag("watch"):
                    raise Stream(lambda c, rd, w: self._watch(req, t, c, rd, w))
                return self._list(req, t)
            if method == "POST":
                return self._create(req, t)
            raise ApiError(405, f"{method} on {r.group_resource} is not supported; name an object")
        if not r.writable and method != "GET":
            raise ApiError(405, f"{r.group_resource} are written by the cluster itself; "
                                f"{method} is not allowed")
        if method == "GET":
            obj = self._out(t, self._get(t))
            if tables.wants_table(req.headers.get("accept", "")):  # `kubectl get KIND NAME`
                return 200, tables.table(r, [obj], obj["metadata"].get("resourceVersion", ""),
                                         req.arg("includeObject", "Metadata")), JSON
            return 200, obj, JSON
        if method == "PUT":
            return self._update(req, t)
        if method == "PATCH":
            return self._patch(req, t)
        if method == "DELETE":
            return self._delete(req, t)
        raise ApiError(405, f"method {method} not allowed")

    # -- reading --------------------------------------------------------------------------------
    def _objects(self, r: Resource, namespace: str | None) -> list[dict]:
        if r.kind == "Event":
            return self.events.list(namespace)
        if r.kind == "CustomResourceDefinition":
            return [discovery.crd_object(c, self.started) for c in self.table.crds()]
        if r.kind == "ReplicaSet":
            return controllers.replicasets(self.store, namespace)
        return self.store.list(r.kind, namespace)

    def _get(self, t: Target) -> dict:
        r = t.resource
        if r.stored:
            obj = self.store.get(r.kind, t.namespace or "", t.name)
        else:
            obj = next((o for o in self._objects(r, t.namespace)
                        if o["metadata"]["name"] == t.name), None)
        if obj is None:
            raise not_found(r.group_resource, t.name, r.kind)
        return obj

    def _out(self, t: Target, obj: dict) -> dict:
        obj = defaults.served(obj)
        if obj.get("apiVersion") == t.resource.api_version(t.version):
            return obj
        return dict(obj, apiVersion=t.resource.api_version(t.version))

    def _list(self, req: Request, t: Target):
        r = t.resource
        labels, fields = label_matcher(req.arg("labelSelector")), field_matcher(req.arg("fieldSelector"))
        rv = self.store.resource_version
        items = [o for o in self._objects(r, t.namespace)
                 if labels((o.get("metadata") or {}).get("labels")) and fields(o)]
        if tables.wants_table(req.headers.get("accept", "")):
            return 200, tables.table(r, items, rv, req.arg("includeObject", "Metadata")), JSON
        return 200, {"kind": f"{r.kind}List", "apiVersion": r.api_version(t.version),
                     "metadata": {"resourceVersion": rv},
                     "items": [self._out(t, o) for o in items]}, JSON

    # -- watch ----------------------------------------------------------------------------------
    async def _watch(self, req: Request, t: Target, conn, reader, writer) -> None:
        r = t.resource
        labels, fields = label_matcher(req.arg("labelSelector")), field_matcher(req.arg("fieldSelector"))
        as_table = tables.wants_table(req.headers.get("accept", ""))
        include = req.arg("includeObject", "Metadata")
        timeout = req.arg("timeoutSeconds")
        deadline = time.monotonic() + (int(timeout) if timeout and timeout.isdigit() else 1800)
        since = req.arg("resourceVersion") or "0"

        def wanted(obj: dict) -> bool:
            meta = obj.get("metadata") or {}
            return obj.get("kind") == r.kind and \
                (t.namespace is None or meta.get("namespace") == t.namespace) and \
                labels(meta.get("labels")) and fields(obj)

        def frame(kind: str, obj: dict) -> bytes:
            if as_table:
                obj = tables.table(r, [obj], obj["metadata"].get("resourceVersion", ""), include)
            else:
                obj = self._out(t, obj)
            return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"

        # WatchList (client-go 1.33+, `sendInitialEvents=true`): the current objects, then a
        # BOOKMARK marking the end of the initial events.
        initial_events = req.arg("sendInitialEvents") == "true"
        queue = self.history.subscribe()  # no await until `initial` is read: nothing is lost
        try:
            if initial_events or since == "0" or not since.isdigit():
                initial = [("ADDED", o) for o in self._objects(r, t.namespace) if wanted(o)]
            elif self.history.too_old(int(since)):
                initial = None
            else:
                initial = [(kind, o) for _, kind, o in self.history.since(int(since)) if wanted(o)]
            writer.write(conn.send(h11.Response(status_code=200, headers=[
                ("content-type", JSON), ("transfer-encoding", "chunked"),
                ("cache-control", "no-cache, private")])))
            if initial is None:
                expired = gone(f"too old resource version: {since} ({self.history.compacted})")
                writer.write(conn.send(h11.Data(data=json.dumps(
                    {"type": "ERROR", "object": expired.status}).encode() + b"\n")))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                return
            data = b"".join(frame(k, o) for k, o in initial)
            if initial_events:
                bookmark = {"kind": r.kind, "apiVersion": r.api_version(t.version),
                            "metadata": {"resourceVersion": self.store.resource_version,
                                         "annotations": {"k8s.io/initial-events-end": "true"}}}
                data += json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n"
            if data:
                writer.write(conn.send(h11.Data(data=data)))
            await writer.drain()
            closed = asyncio.ensure_future(reader.read(1))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closed}, timeout=remaining,
                                             return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    getter.cancel()
                    return
                if getter not in done:
                    getter.cancel()
                    break
                entries = [getter.result()]
                while not queue.empty():
                    entries.append(queue.get_nowait())
                if None in entries:
                    break
                data = b"".join(frame(k, o) for _, k, o in entries if wanted(o))
                if data:
                    writer.write(conn.send(h11.Data(data=data)))
                    await writer.drain()
            closed.cancel()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            self.history.unsubscribe(queue)

    # -- writing --------------------------------------------------------------------------------
    def _check_namespace(self, t: Target, obj: dict) -> None:
        meta = obj.setdefault("metadata", {})
        if not t.resource.namespaced:
            meta.pop("namespace", None)
            return
        if t.namespace is None:
            raise ApiError(400, f"{t.resource.group_resource} are namespaced: use "
                                f"/namespaces/NAMESPACE/{t.resource.plural}")
        if meta.get("namespace") not in (None, "", t.namespace):
            raise ApiError(400, "the namespace of the provided object does not match the "
                                "namespace sent on the request")
        meta["namespace"] = t.namespace
        if self.store.get("Namespace", "", t.namespace) is None:
            raise not_found("namespaces", t.namespace, "namespaces")

    def _body_object(self, req: Request, t: Target, data) -> dict:
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be one object")
        kind = data.get("kind") or t.resource.kind
        if kind != t.resource.kind:
            raise ApiError(400, f"the kind of the object ({kind}) does not match the resource "
                                f"{t.resource.group_resource} ({t.resource.kind})")
        data["kind"] = kind
        data["apiVersion"] = data.get("apiVersion") or t.resource.api_version(t.version)
        meta = data.get("metadata")
        if isinstance(meta, dict):  # kubectl sends `creationTimestamp: null`
            data["metadata"] = {k: v for k, v in meta.items() if v is not None}
        return data

    def _write(self, t: Target, obj: dict, dry_run: bool) -> dict:
        """Validate and store `obj` through the store (never half-written); 422 naming the field."""
        r = t.resource
        obj.pop("status", None)
        for key in [k for k, v in obj.items() if v is None]:
            obj.pop(key)
        name = obj["metadata"].get("name", "")
        try:
            if dry_run:
                return api.validate(obj)
            self.ops["apply"]([obj])
        except ManifestError as exc:
            raise invalid(r.kind, r.group, name, [_cause(exc, obj)]) from None
        except ClusterError as exc:
            raise invalid(r.kind, r.group, name, [{"reason": "FieldValueInvalid",
                                                   "message": str(exc), "field": ""}]) from None
        return self.store.get(r.kind, t.namespace or "", name)

    def _create(self, req: Request, t: Target):
        r = t.resource
        if not r.writable:
            raise ApiError(405, f"{r.group_resource} are written by the cluster itself")
        obj = self._body_object(req, t, req.json_body())
        self._check_namespace(t, obj)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(20):
                candidate = meta["generateName"] + "".join(secrets.choice(_ALPHABET)
                                                           for _ in range(5))
                if self.store.get(r.kind, t.namespace or "", candidate) is None:
                    meta["name"] = candidate
                    break
        if not meta.get("name"):
            raise invalid(r.kind, r.group, "", [{"reason": "FieldValueRequired",
                                                 "message": "Required value: name or generateName "
                                                            "is required",
                                                 "field": "metadata.name"}])
        if self.store.get(r.kind, t.namespace or "", meta["name"]) is not None:
            raise already_exists(r.group_resource, meta["name"])
        for field in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(field, None)
        stored = self._write(t, obj, req.arg("dryRun") == "All")
        return 201, self._out(t, stored), JSON

    def _update(self, req: Request, t: Target):
        r = t.resource
        current = self._get(t)
        obj = self._body_object(req, t, req.json_body())
        if t.sub == "status":
            return self._set_status(t, current, obj.get("status"), obj)
        self._check_namespace(t, obj)
        meta = obj["metadata"]
        if meta.get("name") not in (None, t.name):
            raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match the "
                                f"name on the URL ({t.name})")
        meta["name"] = t.name
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(r.group_resource, t.name)
        return 200, self._out(t, self._write(t, obj, req.arg("dryRun") == "All")), JSON

    def _set_status(self, t: Target, current: dict, new_status, body: dict):
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(t.resource.group_resource, t.name)
        if not isinstance(new_status, dict):
            raise invalid(t.resource.kind, t.resource.group, t.name, [{
                "reason": "FieldValueInvalid", "field": "status",
                "message": f"Invalid value: {json.dumps(new_status)}: status must be an object"}])
        self.store.set_status(t.resource.kind, t.namespace or "", t.name, new_status)
        return 200, self._out(t, self._get(t)), JSON

    def _patch(self, req: Request, t: Target):
        r = t.resource
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            return self._server_side_apply(req, t)
        current = self._get(t)
        body = req.json_body()
        if ctype == "application/strategic-merge-patch+json":
            if r.crd:
                raise ApiError(415, "strategic merge patch is not supported for custom resources;"
                                    " use a JSON merge patch (--type merge)")
            new = patch.strategic_merge(current, body)
        elif ctype == "application/merge-patch+json":
            new = patch.json_merge(current, body)
        elif ctype == "application/json-patch+json":
            new = patch.json_patch(current, body)
        else:
            raise ApiError(415, f"the patch content type {ctype!r} is not supported; use "
                                "strategic-merge-patch+json, merge-patch+json, json-patch+json "
                                "or apply-patch+yaml")
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion") \
            if isinstance(body, dict) else None
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(r.group_resource, t.name)
        if t.sub == "status":
            return self._set_status(t, current, new.get("status"), {})
        new = self._body_object(req, t, new)
        new["metadata"]["name"], new["metadata"]["namespace"] = t.name, t.namespace
        if not r.namespaced:
            new["metadata"].pop("namespace", None)
        return 200, self._out(t, self._write(t, new, req.arg("dryRun") == "All")), JSON

    def _server_side_apply(self, req: Request, t: Target):
        """Server-side apply: the applied configuration is merged into the live object (lists
        by their merge keys), or creates it. Field ownership (managedFields, managed.py): the
        manager's entry lists the fields it applied; a field another manager applied with
        another value is a 409 conflict unless `force=true`."""
        r = t.resource
        try:
            applied = yaml.safe_load(req.body or b"{}")
        except yaml.YAMLError as exc:
            raise ApiError(400, f"the applied configuration is not YAML or JSON: {exc}") from None
        applied = self._body_object(req, t, applied)
        if (applied.get("metadata") or {}).get("name") not in (None, t.name):
            raise ApiError(400, "the name of the applied configuration does not match the URL")
        applied.setdefault("metadata", {})["name"] = t.name
        if t.sub == "status":
            current = self._get(t)
            merged = patch.strategic_merge(current.get("status") or {},
                                           applied.get("status") or {})
            return self._set_status(t, current, merged, {})
        self._check_namespace(t, applied)
        manager = req.arg("fieldManager") or "unknown"
        entry = {"manager": manager, "operation": "Apply", "apiVersion": applied["apiVersion"],
                 "time": now_iso(), "fieldsType": "FieldsV1",
                 "fieldsV1": managed.fields_v1(applied)}
        current = self.store.get(r.kind, t.namespace or "", t.name)
        if current is None:
            applied["metadata"]["managedFields"] = [entry]
            stored = self._write(t, applied, req.arg("dryRun") == "All")
            return 201, self._out(t, stored), JSON
        merge = patch.json_merge if r.crd else patch.strategic_merge
        new = merge(current, applied)
        managed.remove_fields(new, managed.released(current["metadata"].get("managedFields") or [],
                                                     manager, entry))
        new["metadata"]["managedFields"] = managed.apply_entries(
            current["metadata"].get("managedFields") or [], manager, entry, applied, current,
            req.flag("force"), r.group_resource, t.name)
        new["apiVersion"] = applied["apiVersion"]
        return 200, self._out(t, self._write(t, new, req.arg("dryRun") == "All")), JSON

    def _delete(self, req: Request, t: Target):
        r = t.resource
        current = self._get(t)
        options = req.json_body() if req.body else {}
        grace = req.arg("gracePeriodSeconds")
        grace = int(grace) if grace not in (None, "") else options.get("gracePeriodSeconds")
        precondition = (options.get("preconditions") or {}).get("resourceVersion")
        if precondition and precondition != current["metadata"]["resourceVersion"]:
            raise conflict(r.group_resource, t.name)
        uid = (options.get("preconditions") or {}).get("uid")
        if uid and uid != current["metadata"].get("uid"):
            raise conflict(r.group_resource, t.name)
        if req.arg("dryRun") == "All":
            return 200, self._out(t, current), JSON
        if r.kind == "Pod":
            self.ops["delete_pod"](t.namespace, t.name, grace)
            gone_or_marked = self.store.get("Pod", t.namespace, t.name) or current
            return 200, self._out(t, gone_or_marked), JSON
        self.ops["delete"]([{"apiVersion": current["apiVersion"], "kind": r.kind,
                             "metadata": {"name": t.name, "namespace": t.namespace}}])
        return 200, success({"name": t.name, "group": r.group, "kind": r.plural,
                             "uid": current["metadata"].get("uid")}), JSON

    # -- subresources ---------------------------------------------------------------------------
    def _scale(self, req: Request, t: Target):
        current = self._get(t)
        spec, st = current.get("spec") or {}, current.get("status") or {}
        labels = ((spec.get("selector") or {}).get("matchLabels") or {})
        scale = {"kind": "Scale", "apiVersion": "autoscaling/v1",
                 "metadata": {"name": t.name, "namespace": t.namespace,
                              "uid": current["metadata"].get("uid"),
                              "resourceVersion": current["metadata"]["resourceVersion"],
                              "creationTimestamp": current["metadata"].get("creationTimestamp")},
                 "spec": {"replicas": spec.get("replicas", 1)},
                 "status": {"replicas": st.get("replicas", 0),
                            "selector": ",".join(f"{k}={v}" for k, v in labels.items())}}
        if req.method == "GET":
            return 200, scale, JSON
        body = req.json_body()
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        if req.method == "PUT":
            new = body
        elif req.method == "PATCH" and ctype == "application/json-patch+json":
            new = patch.json_patch(scale, body)
        elif req.method == "PATCH":
            new = patch.json_merge(scale, body)
        else:
            raise ApiError(405, f"method {req.method} not allowed on scale")
        wanted_rv = ((new or {}).get("metadata") or {}).get("resourceVersion")
        if req.method == "PUT" and wanted_rv and wanted_rv != scale["metadata"]["resourceVersion"]:
            raise conflict(t.resource.group_resource, t.name)
        replicas = ((new or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", "autoscaling", t.name, [{
                "reason": "FieldValueInvalid", "field": "spec.replicas",
                "message": f"Invalid value: {json.dumps(replicas)}: must be greater than or "
                           "equal to 0"}])
        self.ops["scale"]("Deployment", t.namespace, t.name, replicas)
        scale["spec"]["replicas"] = replicas
        scale["metadata"]["resourceVersion"] = self._get(t)["metadata"]["resourceVersion"]
        return 200, scale, JSON

    def _tokens(self, req: Request, t: Target):
        """TokenRequest and TokenReview (tokens.py): create-only, nothing is stored."""
        if req.method != "POST":
            raise ApiError(405, f"{t.resource.group_resource if t.sub is None else 'serviceaccounts/token'}: "
                                f"only create (POST) is served, not {req.method}")
        body = req.json_body()
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be one object")
        if t.sub == "token":
            return 201, self.tokens.request(t.namespace, t.name, body), JSON
        if t.name is not None:
            raise ApiError(405, "tokenreviews: POST to the collection, not to a name")
        return 201, self.tokens.review(body), JSON

    def _container(self, pod: dict, wanted: str | None) -> str:
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        if wanted is None:
            if len(names) != 1:
                raise ApiError(400, f"a container name must be specified for pod "
                                    f"{pod['metadata']['name']}, choose one of: "
                                    f"[{' '.join(names)}]")
            return names[0]
        if wanted not in names:
            raise ApiError(400, f"container {wanted} is not valid for pod "
                                f"{pod['metadata']['name']}")
        return wanted

    def _log_path(self, t: Target, container: str) -> str:
        return os.path.join(naming.logs_dir(self.cluster),
                            f"{t.namespace}_{t.name}_{container}.log")

    def _logs(self, req: Request, t: Target):
        pod = self._get(t)
        container = self._container(pod, req.arg("container"))
        tail = req.arg("tailLines")
        if tail is not None and (not tail.isdigit() or tail == "0"):
            tail = None if not tail.isdigit() else "0"
        if not req.flag("follow"):
            try:
                text = "" if tail == "0" else self.ops["logs"](t.namespace, t.name, container, tail)
            except HTTPError as exc:
                raise ApiError(exc.status, str(exc)) from None
            return 200, text.encode(), "text/plain"
        raise Stream(lambda c, rd, w: self._follow(t, pod, container, tail, c, rd, w))

    async def _follow(self, t: Target, pod: dict, container: str, tail, conn, reader,
                      writer) -> None:
        uid = pod["metadata"]["uid"]
        path = self._log_path(t, container)
        writer.write(conn.send(h11.Response(status_code=200, headers=[
            ("content-type", "text/plain"), ("transfer-encoding", "chunked")])))
        closed = asyncio.ensure_future(reader.read(1))
        try:
            text = "" if tail == "0" else self.ops["logs"](t.namespace, t.name, container, tail)
            if text:
                writer.write(conn.send(h11.Data(data=text.encode())))
            await writer.drain()
            offset = os.path.getsize(path) if os.path.exists(path) else 0
            while not closed.done():
                live = self.store.get("Pod", t.namespace, t.name)
                if os.path.exists(path) and os.path.getsize(path) > offset:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        data = f.read()
                    offset += len(data)
                    writer.write(conn.send(h11.Data(data=data)))
                    await writer.drain()
                elif live is None or live["metadata"]["uid"] != uid:
                    break
                await asyncio.wait({closed}, timeout=0.1)
            if not closed.done():
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
        finally:
            closed.cancel()

    async def _proxy(self, req: Request, namespace: str, target: str, path: str, conn, reader,
                     writer) -> None:
        """`pods/NAME:PORT/proxy/PATH` (GET): an HTTP request to the pod from inside its own
        network namespace, its answer relayed (how clients read a ztunnel's /metrics)."""
        name, _, port = target.partition(":")
        status_code, body, ctype = 200, b"", "text/plain"
        try:
            if req.method != "GET":
                raise ApiError(405, "pods/proxy: only GET is served")
            pod = self.store.get("Pod", namespace, name)
            if pod is None:
                raise not_found("pods", name, "pods")
            netns = (pod["metadata"].get("annotations") or {}).get("ambient-conformance.io/netns")
            ip = (pod.get("status") or {}).get("podIP")
            if not netns or not ip or not port.isdigit():
                raise ApiError(503, f"pod {namespace}/{name} is not running or no port was given "
                                    "(use NAME:PORT)")
            status_code, ctype, body = await _http_get_in(netns, ip, int(port), path)
        except ApiError as error:
            status_code, body, ctype = error.code, json.dumps(error.status).encode(), JSON
        except (OSError, asyncio.TimeoutError) as exc:
            error = ApiError(503, f"error trying to reach service: {exc}")
            status_code, body, ctype = 503, json.dumps(error.status).encode(), JSON
        writer.write(conn.send(h11.Response(status_code=status_code, headers=[
            ("content-type", ctype), ("content-length", str(len(body))), ("connection", "close")])))
        writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _exec(self, req: Request, t: Target, conn, reader, writer) -> None:
        def refuse(error: ApiError) -> None:
            data = json.dumps(error.status).encode()
            writer.write(conn.send(h11.Response(status_code=error.code, headers=[
                ("content-type", JSON), ("content-length", str(len(data))),
                ("connection", "close")])))
            writer.write(conn.send(h11.Data(data=data)))
            writer.write(conn.send(h11.EndOfMessage()))
        try:
            pod = self._get(t)
            container = self._container(pod, req.arg("container"))
            argv = req.query.get("command") or []
            if not argv:
                raise ApiError(400, "you must specify at least 1 command")
            if req.headers.get("upgrade", "").lower() != "websocket":
                raise ApiError(400, "exec needs a WebSocket upgrade (v5.channel.k8s.io or "
                                    "v4.channel.k8s.io); SPDY is not served")
            protocol = choose_protocol(req.headers.get("sec-websocket-protocol", ""))
            if protocol is None:
                raise ApiError(400, "no supported exec subprotocol offered; use "
                                    "v5.channel.k8s.io or v4.channel.k8s.io")
            netns = (pod["metadata"].get("annotations") or {}).get("ambient-conformance.io/netns")
            if not netns:
                node = (pod.get("spec") or {}).get("nodeName")
                why = "runs on a virtual node (simulated, no process)" if \
                    naming.is_virtual_node(node) else "is not running yet"
                raise ApiError(400, f"pod {t.namespace}/{t.name} {why}; cannot exec into it")
        except ApiError as error:
            refuse(error)
            await writer.drain()
            return
        writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=[
            ("upgrade", "websocket"), ("connection", "Upgrade"),
            ("sec-websocket-accept", accept_token(req.headers.get("sec-websocket-key", ""))),
            ("sec-websocket-protocol", protocol)])))
        await writer.drain()
        leftover = conn.trailing_data[0]
        session = ExecSession(reader, writer, protocol, leftover)
        prefix = volumes.exec_prefix(pod, container, netns)
        await session.run(argv, prefix, req.flag("stdin"), req.flag("tty"))


async def _http_get_in(netns: str, ip: str, port: int, path: str) -> tuple[int, str, bytes]:
    loop = asyncio.get_running_loop()
    sock = socket_in(netns_path(netns), socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout=5)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
    finally:
        sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1]) if len(lines[0].split()) > 1 else 502
    ctype = next((line.split(":", 1)[1].strip() for line in lines[1:]
                  if line.lower().startswith("content-type:")), "text/plain")
    return code, ctype, body


def _field_value(obj: dict, field: str):
    value = obj
    for name, index in _FIELD_PART.findall(field or ""):
        try:
            value = value[int(index)] if index else value[name]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return value


def _cause(exc: ManifestError, obj: dict) -> dict:
    """One StatusCause from the validator's error: its field, and kubectl's wording."""
    text = str(exc)
    field = exc.field or ""
    problem = text.split(f"{field}: ", 1)[1] if field and f"{field}: " in text else \
        text.split("): ", 1)[-1]
    if problem.startswith("required field is missing"):
        return {"reason": "FieldValueRequired", "field": field,
                "message": "Required value" + problem[len("required field is missing"):]}
    value = _field_value(obj, field)
    shown = json.dumps(value) if not isinstance(value, str) else f'"{value}"'
    if value is None and field:
        return {"reason": "FieldValueInvalid", "field": field, "message": problem}
    return {"reason": "FieldValueInvalid", "field": field,
            "message": f"Invalid value: {shown}: {problem}" if field else problem}
