"""Manifests for the workloads and policies the conformance tests use, as plain dicts.

Images are pinned, multi-arch (amd64 and arm64) and pulled only when missing
(`imagePullPolicy: IfNotPresent`), so a kind cluster with them preloaded never reaches a registry
during a run: the ones Istio's own samples pin (samples/httpbin/httpbin.yaml and
samples/curl/curl.yaml in Istio 1.30), and a stock Python image for the server that names itself
and the suite's probe pods. The seed article's manifests (fixtures/seed/) keep the article's
unpinned `kennethreitz/httpbin` and `curlimages/curl` (README, "What the seed's images cost").
"""
from __future__ import annotations

HTTPBIN_IMAGE = "docker.io/mccutchen/go-httpbin:v2.15.0"
CURL_IMAGE = "docker.io/curlimages/curl:8.16.0"
PYTHON_IMAGE = "docker.io/library/python:3.11.14-slim-bookworm"
#: the kubernetes target's packet-capture pods (conformance/targets/kube_capture.py): tcpdump, bash
CAPTURE_IMAGE = "docker.io/nicolaka/netshoot:v0.15"
PULL_POLICY = "IfNotPresent"
#: every image above, for hack/kind-ambient.sh to preload (`python -m conformance.workloads`)
IMAGES = (HTTPBIN_IMAGE, CURL_IMAGE, PYTHON_IMAGE, CAPTURE_IMAGE)
HTTP_PORT = 8000        # service port, as in the seed
HTTP_TARGET_PORT = 80   # httpbin's container port (go-httpbin is told it with PORT; its default is 8080)
ALT_PORT = 8080         # a second port on the same pod, for port-based policy
WHOAMI_PORT = 80        # whoami's service and container port
AMBIENT_LABEL = {"istio.io/dataplane-mode": "ambient"}
TRUST_DOMAIN = "cluster.local"


def principal(namespace: str, service_account: str) -> str:
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def namespace(name: str, ambient: bool, labels: dict | None = None) -> dict:
    all_labels = dict(AMBIENT_LABEL if ambient else {})
    all_labels.update(labels or {})
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": all_labels}}


def service_account(ns: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def _placement(node: str | None) -> dict:
    return {"nodeSelector": {"kubernetes.io/hostname": node}} if node else {}


def deployment(ns: str, name: str, containers: list[dict], replicas: int = 1, node: str | None = None,
               pod_labels: dict | None = None, **pod_spec) -> dict:
    """A Deployment of pods labelled app=`name` (plus `pod_labels`) running as ServiceAccount `name`."""
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": {**(pod_labels or {}), **labels}},
                                  "spec": {"serviceAccountName": name, "containers": containers,
                                           **pod_spec, **_placement(node)}}}}


def service(ns: str, name: str, ports: list[dict], headless: bool = False, selector: dict | None = None) -> dict:
    """A Service selecting app=`name` (or `selector`)."""
    labels = {"app": name}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"selector": selector or labels, "ports": ports}}
    if headless:
        svc["spec"]["clusterIP"] = "None"
    return svc


def _httpbin_container(name: str, port: int) -> dict:
    # go-httpbin reads its port from PORT (the image's CMD takes no arguments we could add)
    return {"name": name, "image": HTTPBIN_IMAGE, "imagePullPolicy": PULL_POLICY,
            "env": [{"name": "PORT", "value": str(port)}], "ports": [{"containerPort": port}]}


def httpbin(ns: str, name: str = "httpbin", replicas: int = 1, node: str | None = None,
            alt_port: bool = False, headless: bool = False) -> list[dict]:
    """ServiceAccount, Service (port 8000 -> 80, plus 8080 with alt_port) and Deployment.

    go-httpbin answers as httpbin does, with two differences a test reading bodies must allow
    for: header values are lists (`echoed_headers`) and `origin` is the peer's ip:port."""
    containers = [_httpbin_container("httpbin", HTTP_TARGET_PORT)]
    ports = [{"name": "http", "port": HTTP_PORT, "targetPort": HTTP_TARGET_PORT}]
    if alt_port:
        containers.append(_httpbin_container("httpbin-alt", ALT_PORT))
        ports.append({"name": "http-alt", "port": ALT_PORT, "targetPort": ALT_PORT})
    if headless:
        # A headless service is addressed by pod IP, so clients use the container port itself.
        ports = [{"name": "http", "port": HTTP_TARGET_PORT, "targetPort": HTTP_TARGET_PORT}]
    return [service_account(ns, name), service(ns, name, ports, headless),
            deployment(ns, name, containers, replicas, node)]


def client(ns: str, name: str, node: str | None = None) -> list[dict]:
    """A curl client with its own ServiceAccount (and therefore its own identity)."""
    curl = {"name": "curl", "image": CURL_IMAGE, "imagePullPolicy": PULL_POLICY, "command": ["/bin/sleep", "3650d"]}
    return [service_account(ns, name), deployment(ns, name, [curl], node=node, terminationGracePeriodSeconds=0)]


def whoami_deployment(ns: str, name: str, replicas: int = 1, node: str | None = None, port: int = WHOAMI_PORT,
                      port_name: str | None = None, pod_labels: dict | None = None,
                      ready_port: int | None = None) -> list[dict]:
    """ServiceAccount and Deployment of the server that names itself (below), listening on `port`
    (its container port, named `port_name` if given); `ready_port` gives it a TCP readinessProbe on
    that port instead, so a port nothing listens on keeps the pod running but never Ready."""
    script = ('d=$(mktemp -d) && printf %s "$POD_NAME" > "$d/name" && cd "$d" && '
              f'exec python3 -m http.server {port}')
    container = {"name": "whoami", "image": PYTHON_IMAGE, "imagePullPolicy": PULL_POLICY,
                 "command": ["sh", "-c", script],
                 "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "ports": [{"containerPort": port, **({"name": port_name} if port_name else {})}]}
    if ready_port is not None:
        container["readinessProbe"] = {"tcpSocket": {"port": ready_port}, "periodSeconds": 1}
    return [service_account(ns, name),
            deployment(ns, name, [container], replicas, node, pod_labels)]


def whoami(ns: str, name: str = "whoami", replicas: int = 1, node: str | None = None,
           headless: bool = False) -> list[dict]:
    """A server that names itself: a stock Python image serving its own pod name at /name
    (Python's http.server), so a test sees which endpoint answered."""
    [account, dep] = whoami_deployment(ns, name, replicas, node)
    return [account, service(ns, name, [{"name": "http", "port": WHOAMI_PORT, "targetPort": WHOAMI_PORT}], headless),
            dep]


def authorization_policy(ns: str, name: str, spec: dict, selector_app: str | None = None) -> dict:
    spec = dict(spec)
    if selector_app:
        spec["selector"] = {"matchLabels": {"app": selector_app}}
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def peer_authentication(ns: str, name: str, mode: str) -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns}, "spec": {"mtls": {"mode": mode}}}


def service_url(name: str, ns: str, port: int = HTTP_PORT, path: str = "/get") -> str:
    return f"http://{name}.{ns}:{port}{path}"


def echoed_headers(body: dict) -> dict[str, str]:
    """The request headers an httpbin echo (`/headers`, `/get`, `/anything`) reports, lower-case
    names to one string each: httpbin gives a string, go-httpbin a list of strings."""
    return {str(k).lower(): ",".join(v) if isinstance(v, list) else v
            for k, v in (body.get("headers") or {}).items()}


def echoed_origin(body: dict) -> str:
    """The client address of httpbin's `/ip`: go-httpbin reports the peer as ip:port."""
    origin = str(body.get("origin", ""))
    host, sep, port = origin.rpartition(":")
    if sep and port.isdigit() and (host.count(":") == 0 or host.startswith("[")):
        return host.strip("[]")
    return origin


if __name__ == "__main__":
    print("\n".join(IMAGES))
