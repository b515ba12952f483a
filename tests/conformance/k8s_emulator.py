"""A small, real HTTP server that speaks the part of the Kubernetes REST API the `kubernetes`
target uses, so that target is tested through the official client over real sockets.

What it serves: /version and API discovery (/api, /api/v1, /apis, /apis/<group>/<version>);
namespaced and cluster-scoped objects (list with labelSelector, get, create, server-side apply,
merge patch, replace, delete; deleting a namespace deletes what is in it); a Deployment controller
(pods from the template, nodeSelector on kubernetes.io/hostname, replacements for deleted pods,
/scale, status); pod exec over WebSocket with the `v4.channel.k8s.io` subprotocol, where the
"container runtime" is this machine: argv runs as a local process; the pod proxy
(`pods/<name>:<port>/proxy/<path>`), forwarded to a local address registered with `backend()`.
What it does not do: authentication, watches, resourceVersion conflicts, field selectors,
strategic-merge list semantics, generateName, finalizers.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
import socket
import struct
import subprocess
import threading
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# (group, version) -> [(plural, kind, namespaced)]
RESOURCES = {
    ("", "v1"): [("namespaces", "Namespace", False), ("nodes", "Node", False), ("pods", "Pod", True),
                 ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True),
                 ("configmaps", "ConfigMap", True)],
    ("apps", "v1"): [("deployments", "Deployment", True), ("daemonsets", "DaemonSet", True)],
    ("security.istio.io", "v1"): [("authorizationpolicies", "AuthorizationPolicy", True),
                                  ("peerauthentications", "PeerAuthentication", True),
                                  ("requestauthentications", "RequestAuthentication", True)],
    ("security.istio.io", "v1beta1"): [("authorizationpolicies", "AuthorizationPolicy", True),
                                       ("peerauthentications", "PeerAuthentication", True),
                                       ("requestauthentications", "RequestAuthentication", True)],
    ("gateway.networking.k8s.io", "v1"): [("gateways", "Gateway", True)],
    ("gateway.networking.k8s.io", "v1beta1"): [("gateways", "Gateway", True)],
}
PLURAL_TO_KIND = {(g, p): k for (g, _), rs in RESOURCES.items() for p, k, _ in rs}
NAMESPACED = {k: ns for rs in RESOURCES.values() for _, k, ns in rs}
_PATH = re.compile(r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))"
                   r"(?:/namespaces/(?P<ns>[^/]+)(?=/))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?"
                   r"(?:/(?P<sub>.+))?$")


class Cluster:
    """The emulated cluster's state. One lock: requests are few and small."""

    def __init__(self, nodes=("node-a", "node-b"), tainted=("control-plane",)):
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str], dict] = {}   # (kind, ns, name) -> object
        self.rv = itertools.count(1)
        self.ips = itertools.count(10)
        self.exec_log: list[dict] = []
        self.backends: dict[tuple[str, str, int], tuple[str, int]] = {}
        for n in nodes:
            self._put(_node(n, tainted=False))
        for n in tainted:
            self._put(_node(n, tainted=True))

    def _put(self, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self.rv))
        key = (obj["kind"], meta.get("namespace", "") if NAMESPACED[obj["kind"]] else "", meta["name"])
        self.objects[key] = obj
        return obj

    def list(self, kind, ns=None, selector=None) -> list[dict]:
        with self.lock:
            return [copy.deepcopy(o) for (k, n, _), o in sorted(self.objects.items())
                    if k == kind and (ns is None or n == ns)
                    and all((o["metadata"].get("labels") or {}).get(a) == b for a, b in (selector or {}).items())]

    def get(self, kind, ns, name) -> dict | None:
        with self.lock:
            o = self.objects.get((kind, ns or "", name))
            return copy.deepcopy(o) if o else None

    def upsert(self, obj: dict, merge: bool = False) -> tuple[dict, bool]:
        with self.lock:
            meta = obj["metadata"]
            key = (obj["kind"], meta.get("namespace", "") if NAMESPACED[obj["kind"]] else "", meta["name"])
            old = self.objects.get(key)
            if old is not None:
                new = _merge(copy.deepcopy(old), obj) if merge else copy.deepcopy(obj)
                for f in ("uid", "creationTimestamp"):
                    new["metadata"][f] = old["metadata"][f]
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + \
                    (new.get("spec") != old.get("spec"))
                if "status" not in obj and "status" in old:
                    new["status"] = old["status"]
            else:
                new = copy.deepcopy(obj)
            self._put(new)
            self._reconcile()
            return copy.deepcopy(new), old is None

    def delete(self, kind, ns, name) -> dict | None:
        with self.lock:
            gone = self.objects.pop((kind, ns or "", name), None)
            if kind == "Namespace":
                for key in [k for k in self.objects if k[1] == name]:
                    del self.objects[key]
            self._reconcile()
            return gone

    # -- the Deployment controller and scheduler ----------------------------------------------
    def _reconcile(self) -> None:
        for (kind, ns, name), dep in list(self.objects.items()):
            if kind != "Deployment":
                continue
            want = dep["spec"].get("replicas", 1)
            template = dep["spec"]["template"]
            mine = [o for (k, n, _), o in self.objects.items()
                    if k == "Pod" and n == ns and any(r.get("uid") == dep["metadata"]["uid"]
                                                      for r in o["metadata"].get("ownerReferences", []))]
            for extra in mine[want:]:
                del self.objects[("Pod", ns, extra["metadata"]["name"])]
            for _ in range(want - len(mine)):
                self._put(self._pod(ns, name, dep["metadata"]["uid"], template))
            dep["status"] = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": want,
                             "readyReplicas": want, "availableReplicas": want, "updatedReplicas": want}

    def _pod(self, ns, owner, owner_uid, template) -> dict:
        spec = copy.deepcopy(template.get("spec") or {})
        wanted = (spec.get("nodeSelector") or {}).get("kubernetes.io/hostname")
        nodes = [n["metadata"]["name"] for n in self.list("Node") if not n["spec"].get("taints")]
        ip_index = next(self.ips)
        spec["nodeName"] = wanted or nodes[ip_index % len(nodes)]
        name = f"{owner}-{uuid.uuid4().hex[:5]}"
        containers = spec.get("containers") or []
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": owner,
                                                  "uid": owner_uid, "controller": True}]},
                "spec": spec,
                "status": {"phase": "Running", "podIP": f"10.244.0.{ip_index}", "hostIP": "172.18.0.2",
                           "conditions": [{"type": "Ready", "status": "True"}],
                           "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                                                  "ready": True, "restartCount": 0, "started": True}
                                                 for c in containers]}}

    def add_pod(self, ns, name, labels, node, containers=("main",)) -> dict:
        """A pod outside any Deployment (e.g. a ztunnel of the DaemonSet)."""
        pod = self._pod(ns, "static", "", {"metadata": {"labels": labels},
                                            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                                                     "containers": [{"name": c, "image": "x"} for c in containers]}})
        pod["metadata"].update(name=name, ownerReferences=[])
        with self.lock:
            return self._put(pod)


def _node(name, tainted) -> dict:
    spec = {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]} if tainted else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": spec, "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}}


def _merge(base, patch):
    """JSON merge patch (RFC 7386): null deletes, objects merge, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(base, dict):
        base = {}
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = _merge(base.get(k), v)
    return base


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: Cluster

    def log_message(self, *args):  # keep test output clean
        pass

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self, code, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code, reason, message):
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                          "reason": reason, "message": message})

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        if "yaml" in (self.headers.get("Content-Type") or ""):
            return yaml.safe_load(raw)
        return json.loads(raw)

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def do_PATCH(self):
        self._route("PATCH")

    def do_DELETE(self):
        self._route("DELETE")

    # -- routing -------------------------------------------------------------------------------
    def _route(self, method):
        try:
            self._dispatch(method)
        except Exception as e:  # an emulator bug must show as an answer, not a dropped socket
            self._status(500, "InternalError", f"emulator: {type(e).__name__}: {e}")

    def _dispatch(self, method):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = unquote(url.path).rstrip("/")
        if method == "GET" and path in ("/version", "/api", "/apis") or \
                method == "GET" and (path == "/api/v1" or re.fullmatch(r"/apis/[^/]+/[^/]+", path)):
            return self._discovery(path)
        m = _PATH.match(path)
        if not m:
            return self._status(404, "NotFound", f"the emulator does not serve {path}")
        group = m["g"] or ""
        version = m["cv"] or m["v"]
        kind = PLURAL_TO_KIND.get((group, m["plural"]))
        if kind is None:
            return self._status(404, "NotFound", f"the server could not find the requested resource {m['plural']}")
        name, sub, ns = m["name"], m["sub"], m["ns"]
        if kind == "Pod" and sub:
            return self._pod_subresource(method, ns, name, sub, query)
        if kind == "Deployment" and sub == "scale":
            return self._scale(method, ns, name)
        c = self.cluster
        api_version = f"{group}/{version}" if group else version
        if method == "GET" and not name:
            selector = dict(p.split("=", 1) for p in (query.get("labelSelector", [""])[0].split(",")) if "=" in p)
            items = c.list(kind, ns, selector)
            return self._send(200, {"kind": f"{kind}List", "apiVersion": api_version,
                                    "metadata": {"resourceVersion": "1"}, "items": items})
        if method == "GET":
            obj = c.get(kind, ns, name)
            return self._send(200, obj) if obj else self._status(404, "NotFound", f'{m["plural"]} "{name}" not found')
        if method == "DELETE":
            gone = c.delete(kind, ns, name)
            return self._send(200, gone) if gone else self._status(404, "NotFound", f'{m["plural"]} "{name}" not found')
        body = self._body() or {}
        if ns and NAMESPACED[kind]:
            body.setdefault("metadata", {})["namespace"] = ns
            if kind != "Namespace" and not c.get("Namespace", "", ns):
                return self._status(404, "NotFound", f'namespaces "{ns}" not found')
        body.setdefault("kind", kind)
        body.setdefault("apiVersion", api_version)
        if name:
            body.setdefault("metadata", {})["name"] = name
        if method == "POST":
            if c.get(kind, ns, body["metadata"]["name"]):
                return self._status(409, "AlreadyExists", f'{m["plural"]} "{body["metadata"]["name"]}" already exists')
            obj, _ = c.upsert(body)
            return self._send(201, obj)
        content_type = self.headers.get("Content-Type") or ""
        if method == "PATCH" and "apply-patch" not in content_type:
            if not c.get(kind, ns, name):
                return self._status(404, "NotFound", f'{m["plural"]} "{name}" not found')
            obj, _ = c.upsert(body, merge=True)
            return self._send(200, obj)
        obj, created = c.upsert(body)   # PUT or server-side apply: the manifest is the whole truth
        return self._send(201 if created else 200, obj)

    def _discovery(self, path):
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-emulator",
                                    "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = {}
            for g, v in RESOURCES:
                if g:
                    groups.setdefault(g, []).append(v)
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}} for g, vs in groups.items()]})
        parts = path.strip("/").split("/")
        g, v = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
        if (g, v) not in RESOURCES:
            return self._status(404, "NotFound", f"no group version {g}/{v}")
        resources = [{"name": p, "singularName": k.lower(), "namespaced": n, "kind": k,
                      "verbs": ["create", "delete", "get", "list", "patch", "update"]} for p, k, n in RESOURCES[(g, v)]]
        if g == "":
            resources += [{"name": "pods/exec", "namespaced": True, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                          {"name": "pods/proxy", "namespaced": True, "kind": "PodProxyOptions", "verbs": ["get"]}]
        if g == "apps":
            resources.append({"name": "deployments/scale", "namespaced": True, "kind": "Scale",
                              "group": "autoscaling", "version": "v1", "verbs": ["get", "patch", "update"]})
        return self._send(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                "groupVersion": f"{g}/{v}" if g else v, "resources": resources})

    def _scale(self, method, ns, name):
        dep = self.cluster.get("Deployment", ns, name)
        if dep is None:
            return self._status(404, "NotFound", f'deployments.apps "{name}" not found')
        if method == "PATCH":
            replicas = (self._body() or {}).get("spec", {}).get("replicas")
            dep["spec"]["replicas"] = replicas
            dep, _ = self.cluster.upsert(dep)
        replicas = dep["spec"].get("replicas", 1)
        return self._send(200, {"apiVersion": "autoscaling/v1", "kind": "Scale",
                                "metadata": {"name": name, "namespace": ns},
                                "spec": {"replicas": replicas}, "status": {"replicas": replicas}})

    # -- pods: exec and proxy --------------------------------------------------------------------
    def _pod_subresource(self, method, ns, name, sub, query):
        if sub == "exec":
            return self._exec(ns, name, query)
        if sub.startswith("proxy"):
            pod, _, port = name.partition(":")
            target = self.cluster.backends.get((ns, pod, int(port or 80)))
            if target is None:
                return self._status(503, "ServiceUnavailable", f"no endpoint for pod {ns}/{name}")
            rest = sub[len("proxy"):] or "/"
            with urllib.request.urlopen(f"http://{target[0]}:{target[1]}{rest}", timeout=5) as r:
                return self._send(r.status, r.read(), r.headers.get("Content-Type", "text/plain"))
        return self._status(404, "NotFound", f"pods/{sub} is not emulated")

    def _exec(self, ns, name, query):
        pod = self.cluster.get("Pod", ns, name)
        if pod is None:
            return self._status(404, "NotFound", f'pods "{name}" not found')
        if (self.headers.get("Upgrade") or "").lower() != "websocket":
            return self._status(400, "BadRequest", "exec needs a WebSocket upgrade")
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        if "v4.channel.k8s.io" not in offered:
            return self._status(400, "BadRequest", f"subprotocols {offered}: only v4.channel.k8s.io is emulated")
        argv = query.get("command", [])
        container = query.get("container", [None])[0]
        self.cluster.exec_log.append({"namespace": ns, "pod": name, "container": container, "argv": argv})
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest())
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        self.wfile.flush()
        try:
            done = subprocess.run(argv, capture_output=True, timeout=120)
            code, out, err = done.returncode, done.stdout, done.stderr
        except FileNotFoundError:
            code, out, err = 127, b"", f"exec: {argv[0]!r}: not found\n".encode()
        if out:
            _ws_send(self.wfile, b"\x01" + out)
        if err:
            _ws_send(self.wfile, b"\x02" + err)
        status = {"metadata": {}, "status": "Success"} if code == 0 else {
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        _ws_send(self.wfile, b"\x03" + json.dumps(status).encode())
        _ws_send(self.wfile, struct.pack("!H", 1000), opcode=0x8)
        self.close_connection = True


def _ws_send(wfile, payload: bytes, opcode: int = 0x2) -> None:
    """One unmasked server frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    wfile.write(header + payload)
    wfile.flush()


class Emulator:
    """Start with `with Emulator() as emu:`; `emu.kubeconfig(path)` writes a kubeconfig for it."""

    def __init__(self, **cluster_kwargs):
        self.cluster = Cluster(**cluster_kwargs)
        handler = type("BoundHandler", (Handler,), {"cluster": self.cluster})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "Emulator":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def backend(self, namespace: str, pod: str, port: int, address: tuple[str, int]) -> None:
        self.cluster.backends[(namespace, pod, port)] = address

    def kubeconfig(self, path, context: str = "emulator") -> str:
        config = {"apiVersion": "v1", "kind": "Config", "current-context": context,
                  "clusters": [{"name": "emu", "cluster": {"server": self.url}}],
                  "users": [{"name": "emu", "user": {"token": "not-checked"}}],
                  "contexts": [{"name": context, "context": {"cluster": "emu", "user": "emu"}}]}
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
