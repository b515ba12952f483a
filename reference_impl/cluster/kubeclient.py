"""The CLI's `cluster get/apply/delete/exec/logs/scale` verbs as a client of the cluster's
Kubernetes API: HTTPS with the kubeconfig's client certificate, as kubectl or the kubernetes
target reach it (not the store's Unix socket). Plain REST with httpx and exec over WebSocket
(`v4.channel.k8s.io`, websocket-client): the official client's discovery of every group would
cost seconds per command, and the paths are known (the API's own resource table).

Manifests are read and checked here first (file:document:field errors, as before), then each
object is server-side applied; Namespaces go first so objects in them can follow in one apply.
"""
from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import tempfile
import time
from urllib.parse import urlencode, urlsplit

import httpx
import yaml

from reference_impl import api
from reference_impl.cluster.errors import ClusterError

FIELD_MANAGER = "ambient-conformance"
STDOUT, STDERR, ERROR = 1, 2, 3


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["message"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason_phrase}"


class KubeClient:
    def __init__(self, name: str):
        from reference_impl.cluster.kubeapi import kubeconfig_path
        from reference_impl.cluster.kubeapi.resources import ResourceTable
        self.name = name
        self.table = ResourceTable.build()
        path = kubeconfig_path(name)
        if not os.path.exists(path):
            raise ClusterError(f"no cluster named {name!r} is running; start one with "
                               f"`ambient-conformance cluster up --name {name}`")
        with open(path) as f:
            config = yaml.safe_load(f)
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        self.server = cluster["server"]
        # ssl and websocket-client take files: the kubeconfig's data in 0600 files of our own
        self._dir = tempfile.TemporaryDirectory(prefix="ac-kubeclient-")
        self._files = {}
        for key, field in (("ca", "certificate-authority-data"), ("cert", "client-certificate-data"),
                           ("key", "client-key-data")):
            file = os.path.join(self._dir.name, key)
            source = cluster if key == "ca" else user
            with open(os.open(file, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(base64.b64decode(source[field]))
            self._files[key] = file
        context = ssl.create_default_context(cafile=self._files["ca"])
        context.load_cert_chain(self._files["cert"], self._files["key"])
        self._http = httpx.Client(base_url=self.server, verify=context, timeout=60)
        try:
            self._http.get("/version", timeout=5)
        except httpx.HTTPError as exc:
            self.close()
            raise ClusterError(f"no cluster named {name!r} is running (its Kubernetes API at "
                               f"{self.server} does not answer: {type(exc).__name__}); start one "
                               f"with `ambient-conformance cluster up --name {name}`") from None

    def close(self) -> None:
        self._http.close()
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _path(self, api_version: str, kind: str, namespace: str | None,
              name: str | None = None, sub: str | None = None) -> str:
        group, _, version = api_version.rpartition("/")
        resource = self.table.for_kind(kind)
        parts = [f"/apis/{group}/{version}" if group else f"/api/{version}"]
        if resource.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(resource.plural)
        parts += [p for p in (name, sub) if p]
        return "/".join(parts)

    def _call(self, method: str, path: str, what: str, ok=(200, 201), **kw) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ClusterError(f"{what}: the Kubernetes API at {self.server} failed: {exc}") from None
        if response.status_code not in ok:
            raise ClusterError(f"{what}: {_message(response)}")
        return response

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        path = self._path(api.kind_info(kind).preferred_version, kind, namespace)
        return self._call("GET", path, f"list {kind}").json()["items"]

    def _objects(self, paths: list[str]) -> list[dict]:
        objects = api.load_files(paths)
        return sorted(objects, key=lambda o: o["kind"] != "Namespace")

    def apply(self, paths: list[str]) -> list[dict]:
        results = []
        for obj in self._objects(paths):
            meta = obj["metadata"]
            namespace = meta.get("namespace")
            path = self._path(obj["apiVersion"], obj["kind"], namespace, meta["name"])
            what = f"{obj['kind']} {namespace + '/' if namespace else ''}{meta['name']}"
            before = self._call("GET", path, what, ok=(200, 404))
            after = self._call("PATCH", path, what, content=json.dumps(obj),
                               params={"fieldManager": FIELD_MANAGER, "force": "true"},
                               headers={"content-type": "application/apply-patch+yaml"}).json()
            result = {"kind": obj["kind"], "namespace": namespace or "", "name": meta["name"],
                      "action": "created" if before.status_code == 404 else "unchanged" if
                      after["metadata"]["resourceVersion"] ==
                      before.json()["metadata"]["resourceVersion"] else "configured"}
            warnings = api.legacy_warnings(obj)
            if warnings:
                result["warnings"] = warnings
            results.append(result)
        return results

    def delete(self, paths: list[str]) -> list[dict]:
        results = []
        for obj in reversed(self._objects(paths)):
            meta = obj["metadata"]
            namespace = meta.get("namespace")
            path = self._path(obj["apiVersion"], obj["kind"], namespace, meta["name"])
            response = self._call("DELETE", path, f"delete {obj['kind']} {meta['name']}",
                                  ok=(200, 202, 404))
            results.append({"kind": obj["kind"], "namespace": namespace or "", "name": meta["name"],
                            "action": "not found" if response.status_code == 404 else "deleted"})
        return list(reversed(results))

    def delete_pod(self, namespace: str, name: str, grace_period: int | None = None) -> None:
        params = {} if grace_period is None else {"gracePeriodSeconds": str(grace_period)}
        self._call("DELETE", self._path("v1", "Pod", namespace, name), f"pod {namespace}/{name}",
                   params=params)

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        self._call("PATCH", self._path("apps/v1", "Deployment", namespace, deployment, "scale"),
                   f"deployment {namespace}/{deployment}",
                   content=json.dumps({"spec": {"replicas": replicas}}),
                   headers={"content-type": "application/merge-patch+json"})

    def logs(self, namespace: str, pod: str, container: str | None = None,
             tail: int | None = None) -> str:
        params = {k: str(v) for k, v in (("container", container), ("tailLines", tail))
                  if v is not None}
        return self._call("GET", self._path("v1", "Pod", namespace, pod, "log"),
                          f"pod {namespace}/{pod}", params=params).text

    def exec(self, namespace: str, pod: str, argv: list[str], container: str | None = None,
             timeout: float = 300) -> int:
        """Run `argv` in the pod, its output streamed to ours as it comes; its exit code."""
        import websocket
        what = f"exec in pod {namespace}/{pod}"
        if container is None:  # as kubectl: the pod's default container, else its first
            spec = self._call("GET", self._path("v1", "Pod", namespace, pod), what).json()
            container = (spec["metadata"].get("annotations") or {}).get(
                "kubectl.kubernetes.io/default-container") or spec["spec"]["containers"][0]["name"]
        query = urlencode([("command", a) for a in argv] + [
            ("container", container), ("stdout", "true"), ("stderr", "true")])
        url = "wss://" + urlsplit(self.server).netloc + \
            self._path("v1", "Pod", namespace, pod, "exec") + "?" + query
        try:
            ws = websocket.create_connection(
                url, subprotocols=["v4.channel.k8s.io"], timeout=timeout,
                sslopt={"ca_certs": self._files["ca"], "certfile": self._files["cert"],
                        "keyfile": self._files["key"]})
        except websocket.WebSocketBadStatusException as exc:
            try:
                message = json.loads(exc.resp_body)["message"]
            except (TypeError, ValueError, KeyError):
                message = str(exc)
            raise ClusterError(f"{what}: {message}") from None
        except (OSError, websocket.WebSocketException) as exc:
            raise ClusterError(f"{what}: {exc}") from None
        code = 1
        try:
            while True:
                try:
                    frame = ws.recv()
                except websocket.WebSocketConnectionClosedException:
                    break
                except websocket.WebSocketTimeoutException:
                    raise ClusterError(f"{what} took longer than {timeout:g}s: "
                                       f"{' '.join(argv)[:200]}") from None
                if not frame:
                    continue
                data = frame if isinstance(frame, bytes) else frame.encode()
                channel, payload = data[0], data[1:]
                if channel in (STDOUT, STDERR):
                    stream = sys.stdout if channel == STDOUT else sys.stderr
                    stream.buffer.write(payload)
                    stream.flush()
                elif channel == ERROR and payload:
                    status = json.loads(payload)
                    code = 0 if status.get("status") == "Success" else next(
                        (int(c["message"]) for c in (status.get("details") or {}).get("causes") or []
                         if c.get("reason") == "ExitCode"), 1)
        finally:
            ws.close()
        return code
