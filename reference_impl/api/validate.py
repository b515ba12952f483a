"""Validation of one Kubernetes-shaped object: the rules the API server and Istio's webhook apply.

`validate` returns a normalized deep copy or raises ManifestError for the first problem.
Normalization is deliberately small (what the API server itself does before storing):
namespaced objects get `metadata.namespace: default` when it is missing, and cluster-scoped
objects lose a `metadata.namespace` (Kubernetes ignores it); field defaults (replicas 1,
targetPort = port, ...) are left to the readers. The Istio security kinds are checked by their
own parsers in `security`, the same ones the policy engine compiles from.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re

from . import fields as F
from . import routes, security
from .checker import Checker, describe
from .kinds import KINDS, known_kinds
from .selectors import OPERATORS, is_label_selector, selector_matches

PROTOCOLS = ("TCP", "UDP", "SCTP")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
GATEWAY_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP", "HBONE")


def validate(obj: dict, source: str = "<api>", index: int | str = 1, node=None) -> dict:
    """A normalized deep copy of `obj`, or ManifestError for the first problem found."""
    document = index if isinstance(index, str) else f"document {index}"
    check = Checker(source, document, node)
    if not isinstance(obj, dict):
        check.fail((), f"expected a mapping (a Kubernetes object), got {describe(obj)}",
                   "each YAML document must be one object with apiVersion, kind and metadata")
    obj = copy.deepcopy(obj)
    kind = check.get(obj, "kind", (), str, required=True,
                     hint=f"add kind: one of {', '.join(known_kinds())}")
    info = KINDS.get(kind)
    check.kind = kind
    # Name the object in messages as early as possible, even when its kind is unknown.
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if isinstance(meta.get("name"), str):
        check.name = meta["name"]
    namespace = meta.get("namespace")
    if (info is None or info.namespaced) and isinstance(namespace, str):
        check.namespace = namespace
    elif info is not None and info.namespaced and namespace is None:
        check.namespace = "default"
    if info is None:
        check.fail(("kind",), f"unknown kind {kind!r}", f"use one of {', '.join(known_kinds())}")
    meta = check.get(obj, "metadata", (), dict, required=True,
                     hint="add metadata with at least a name")

    api_version = check.get(obj, "apiVersion", (), str, required=True,
                            hint=f"add apiVersion: {info.preferred_version}")
    if api_version not in info.api_versions:
        check.fail(("apiVersion",), f"{api_version!r} is not served for {kind}",
                   f"use {' or '.join(info.api_versions)}")

    check.known(obj, (), F.TOP + F.TOP_EXTRA.get(kind, ()))
    _validate_metadata(check, meta, info)
    spec = check.get(obj, "spec", (), dict)
    _VALIDATORS[kind](check, obj, spec)
    return obj


# -- metadata ---------------------------------------------------------------------------------

def _validate_metadata(check: Checker, meta: dict, info) -> None:
    path = ("metadata",)
    check.known(meta, path, F.METADATA)
    name = check.get(meta, "name", path, str, required=True, hint="give the object a name")
    {"label": check.dns_label, "label1035": check.dns_1035_label,
     "subdomain": check.dns_subdomain}[info.name_rule](name, (*path, "name"))
    if info.namespaced:
        namespace = check.get(meta, "namespace", path, str)
        if namespace is None:
            meta["namespace"] = "default"
        else:
            check.dns_label(namespace, (*path, "namespace"))
    else:
        meta.pop("namespace", None)
    labels = check.string_map(meta, "labels", path)
    for key, value in labels.items():
        check.label_key(key, (*path, "labels", key))
        check.label_value(value, (*path, "labels", key))
    annotations = check.string_map(meta, "annotations", path)
    for key in annotations:
        check.label_key(key, (*path, "annotations", key))


def _require_spec(check: Checker, spec, what: str) -> dict:
    if spec is None:
        check.fail(("spec",), "required field is missing", f"add a spec with {what}")
    return spec


# -- selectors --------------------------------------------------------------------------------

def _label_selector(check: Checker, mapping: dict, key: str, path, *, required: bool) -> dict | None:
    """A Kubernetes LabelSelector (Deployment, DaemonSet)."""
    selector = check.get(mapping, key, path, dict, required=required,
                         hint="add selector.matchLabels with the pod template's labels")
    if selector is None:
        return None
    field = (*path, key)
    if selector and not is_label_selector(selector):
        extra = sorted(set(selector) - {"matchLabels", "matchExpressions"})
        check.fail(field, f"unexpected field(s) {', '.join(map(str, extra))}",
                   "put labels under matchLabels (selector: {matchLabels: {app: x}})")
    for k, v in check.string_map(selector, "matchLabels", field).items():
        check.label_key(k, (*field, "matchLabels", k))
        check.label_value(v, (*field, "matchLabels", k))
    for epath, expr in check.items(selector, "matchExpressions", field):
        check.known(expr, epath, F.LABEL_SELECTOR_REQUIREMENT)
        check.get(expr, "key", epath, str, required=True, hint="name the label key")
        op = check.enum(expr, "operator", epath, OPERATORS, required=True)
        values = check.strings(expr, "values", epath)
        if op in ("In", "NotIn") and not values:
            check.fail((*epath, "values"), f"operator {op} needs at least one value",
                       "list the label values to match")
        if op in ("Exists", "DoesNotExist") and values:
            check.fail((*epath, "values"), f"operator {op} takes no values", "remove values")
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        check.fail(field, "an empty selector selects every pod and is not allowed here",
                   "add matchLabels with the pod template's labels")
    return selector


# -- core kinds -------------------------------------------------------------------------------

def _no_spec_rules(check: Checker, obj: dict, spec) -> None:
    pass


def _node(check: Checker, obj: dict, spec) -> None:
    if spec is None:
        return
    check.known(spec, ("spec",), F.NODE_SPEC)
    cidr = check.get(spec, "podCIDR", ("spec",), str)
    if cidr is not None:
        if "/" not in cidr:
            check.fail(("spec", "podCIDR"), f"{cidr!r} is not a CIDR range",
                       "write a range such as 10.244.0.0/24")
        check.ip_or_cidr(cidr, ("spec", "podCIDR"))


def _service(check: Checker, obj: dict, spec) -> None:
    spec = _require_spec(check, spec, "ports and a selector")
    path = ("spec",)
    check.known(spec, path, F.SERVICE_SPEC)
    service_type = check.enum(spec, "type", path, SERVICE_TYPES, default="ClusterIP")
    cluster_ip = check.get(spec, "clusterIP", path, str,
                           hint="write None (headless) or leave it out to get an address")
    if cluster_ip not in (None, "", "None"):
        check.ip_or_cidr(cluster_ip, (*path, "clusterIP"))
        if "/" in cluster_ip:
            check.fail((*path, "clusterIP"), f"{cluster_ip!r} is a range, not an address",
                       "write one address, None for headless, or leave it out")
    selector = spec.get("selector")
    if isinstance(selector, dict) and "matchLabels" in selector:
        check.fail((*path, "selector"), "a Service selector is a plain label map",
                   "write selector: {app: name} without matchLabels")
    for k, v in check.string_map(spec, "selector", path).items():
        check.label_key(k, (*path, "selector", k))
        check.label_value(v, (*path, "selector", k))
    ports = check.items(spec, "ports", path)
    if not ports and cluster_ip != "None" and service_type != "ExternalName":
        check.fail((*path, "ports"), "a Service needs at least one port",
                   "add ports: [{name: http, port: 80}] (or clusterIP: None for a headless "
                   "service without ports)")
    seen_names, seen_ports = {}, {}
    for ppath, port in ports:
        check.known(port, ppath, F.SERVICE_PORT)
        number = check.port(port, "port", ppath, required=True)
        protocol = check.enum(port, "protocol", ppath, PROTOCOLS, default="TCP")
        name = check.get(port, "name", ppath, str)
        if name is not None:
            check.dns_label(name, (*ppath, "name"))
            if name in seen_names:
                check.fail((*ppath, "name"), f"duplicate port name {name!r}",
                           "give each port its own name")
            seen_names[name] = True
        elif len(ports) > 1:
            check.fail((*ppath, "name"), "required when a Service has more than one port",
                       "name every port (e.g. name: http)")
        if (number, protocol) in seen_ports:
            check.fail((*ppath, "port"), f"duplicate port {number}/{protocol}",
                       "list each port once")
        seen_ports[(number, protocol)] = True
        target = port.get("targetPort")
        if target is not None:
            if isinstance(target, str):
                check.port_name(target, (*ppath, "targetPort"))
            elif isinstance(target, int) and not isinstance(target, bool):
                check.port(port, "targetPort", ppath)
            else:
                check.fail((*ppath, "targetPort"),
                           f"expected a port number or a port name, got {describe(target)}",
                           "write the container port number (80) or its name (http)")
        check.get(port, "appProtocol", ppath, str)


def _pod_spec(check: Checker, spec: dict, path) -> None:
    check.known(spec, path, F.POD_SPEC)
    containers = check.items(spec, "containers", path, required=True, non_empty=True,
                             hint="add at least one container with a name and an image")
    names = set()
    for cpath, container in containers:
        check.known(container, cpath, F.CONTAINER)
        name = check.get(container, "name", cpath, str, required=True,
                         hint="name the container (e.g. name: app)")
        check.dns_label(name, (*cpath, "name"))
        if name in names:
            check.fail((*cpath, "name"), f"duplicate container name {name!r}",
                       "give each container its own name")
        names.add(name)
        image = check.get(container, "image", cpath, str, required=True,
                          hint="add the container image")
        if not image.strip():
            check.fail((*cpath, "image"), "image is empty", "add the container image")
        check.strings(container, "command", cpath, hint='write the command as a list of strings, '
                                                         'e.g. ["/bin/sleep", "3650d"]')
        check.strings(container, "args", cpath, hint="write args as a list of strings")
        check.enum(container, "imagePullPolicy", cpath, PULL_POLICIES)
        port_names = set()
        for ppath, port in check.items(container, "ports", cpath):
            check.known(port, ppath, F.CONTAINER_PORT)
            check.port(port, "containerPort", ppath, required=True)
            check.enum(port, "protocol", ppath, PROTOCOLS)
            pname = check.get(port, "name", ppath, str)
            if pname is not None:
                check.port_name(pname, (*ppath, "name"))
                if pname in port_names:
                    check.fail((*ppath, "name"), f"duplicate port name {pname!r}",
                               "give each container port its own name")
                port_names.add(pname)
        for epath, env in check.items(container, "env", cpath):
            check.known(env, epath, F.ENV_VAR)
            check.get(env, "name", epath, str, required=True, hint="name the variable")
            check.get(env, "value", epath, str,
                      hint=f'quote the value: value: "{env.get("value")}"')
    _volumes(check, spec, path, [c for _, c in containers])
    sa = check.get(spec, "serviceAccountName", path, str)
    if sa is not None:
        check.dns_subdomain(sa, (*path, "serviceAccountName"))
    check.get(spec, "nodeName", path, str)
    check.string_map(spec, "nodeSelector", path)
    check.get(spec, "hostNetwork", path, bool)
    grace = check.get(spec, "terminationGracePeriodSeconds", path, int)
    if grace is not None and grace < 0:
        check.fail((*path, "terminationGracePeriodSeconds"), f"{grace} is negative",
                   "use 0 or more seconds")
    check.enum(spec, "restartPolicy", path, RESTART_POLICIES)


# -- volumes and ConfigMaps (issue 14: the Kubernetes API) ------------------------------------

_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _unique(check: Checker, seen: set, name: str, field, what: str) -> None:
    if name in seen:
        check.fail(field, f"duplicate {what} name {name!r}", f"give each {what} its own name")
    seen.add(name)


def _volumes(check: Checker, spec: dict, path, containers: list[dict]) -> None:
    """Each volume named once; each container's volumeMounts name one of them, at an absolute
    mountPath (Kubernetes: `spec.containers[0].volumeMounts[0].name: Not found`)."""
    names = set()
    for vpath, volume in check.items(spec, "volumes", path):
        name = check.get(volume, "name", vpath, str, required=True, hint="name the volume")
        check.dns_label(name, (*vpath, "name"))
        _unique(check, names, name, (*vpath, "name"), "volume")
        config_map = check.get(volume, "configMap", vpath, dict)
        if config_map is not None:
            cpath = (*vpath, "configMap")
            check.get(config_map, "name", cpath, str, required=True,
                      hint="name the ConfigMap to mount")
            for ipath, item in check.items(config_map, "items", cpath):
                check.get(item, "key", ipath, str, required=True, hint="name the ConfigMap key")
                file = check.get(item, "path", ipath, str, required=True,
                                 hint="give the file name to write the key to")
                if file.startswith("/") or ".." in file.split("/"):
                    check.fail((*ipath, "path"), f"{file!r} must be a relative path without '..'",
                               "write a file name such as config.yaml")
    for index, container in enumerate(containers):
        for mpath, mount in check.items(container, "volumeMounts", (*path, "containers", index)):
            name = check.get(mount, "name", mpath, str, required=True,
                             hint="name the volume to mount")
            if name not in names:
                check.fail((*mpath, "name"), f"Not found: {name!r}",
                           "add a volume of that name under the pod's volumes")
            where = check.get(mount, "mountPath", mpath, str, required=True,
                              hint="give the absolute path to mount the volume at")
            if not where.startswith("/"):
                check.fail((*mpath, "mountPath"), f"{where!r} is not an absolute path",
                           "write the mount path from / (e.g. /etc/config)")


def _config_key(check: Checker, field: str, key: str) -> None:
    if len(key) > 253 or not _CONFIG_KEY.match(key):
        check.fail((field, key), f"{key!r} is not a valid config key",
                   "use letters, digits, '-', '_' and '.'")


def _config_map(check: Checker, obj: dict, spec) -> None:
    if spec is not None:
        check.fail(("spec",), "a ConfigMap has no spec", "put the keys under data")
    seen = set()
    for field in ("data", "binaryData"):
        values = check.string_map(obj, field, ())
        for key in values:
            _config_key(check, field, key)
            if key in seen:
                check.fail((field, key), f"duplicate of key {key!r} in data",
                           "give each key once, in data or in binaryData")
            seen.add(key)
    check.get(obj, "immutable", (), bool)


# -- Secrets (issue 14 item 5: istiod keeps its CA in one) ------------------------------------

SECRET_MAX_BYTES = 1024 * 1024
# The keys each built-in Secret type must carry (k8s.io/kubernetes pkg/apis/core/validation),
# as (any of these keys, the hint); a type of one's own (istio.io/ca-root) has none.
_SECRET_TYPE_KEYS = {
    "kubernetes.io/tls": (("tls.crt",), "add tls.crt and tls.key"),
    "kubernetes.io/dockercfg": ((".dockercfg",), "add .dockercfg"),
    "kubernetes.io/dockerconfigjson": ((".dockerconfigjson",), "add .dockerconfigjson"),
    "kubernetes.io/basic-auth": (("username", "password"), "add username or password"),
    "kubernetes.io/ssh-auth": (("ssh-privatekey",), "add ssh-privatekey"),
}


def _secret(check: Checker, obj: dict, spec) -> None:
    """The API server's conversion then validation: `stringData` is written into `data`
    (base64, winning over a `data` key of the same name) and is never stored; `type` defaults
    to Opaque; `data` values must be base64."""
    if spec is not None:
        check.fail(("spec",), "a Secret has no spec", "put the keys under data or stringData")
    data = dict(check.string_map(obj, "data", ()))
    decoded = {}
    for key, value in data.items():
        _config_key(check, "data", key)
        try:
            decoded[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            check.fail(("data", key), "the value is not base64",
                       "encode it (base64 -w0) or give it as plain text under stringData")
    for key, value in check.string_map(obj, "stringData", ()).items():
        _config_key(check, "stringData", key)
        decoded[key] = value.encode()
        data[key] = base64.b64encode(decoded[key]).decode()
    obj.pop("stringData", None)
    if data or "data" in obj:
        obj["data"] = data
    if sum(len(k) + len(v) for k, v in decoded.items()) > SECRET_MAX_BYTES:
        check.fail(("data",), f"Too long: must have at most {SECRET_MAX_BYTES} bytes",
                   "keep a Secret under 1 MiB; split it into several")
    kind = check.get(obj, "type", (), str) or "Opaque"
    obj["type"] = kind
    wanted = _SECRET_TYPE_KEYS.get(kind)
    if wanted is not None and not any(k in decoded for k in wanted[0]):
        check.fail(("data", wanted[0][0]), f"Required value: a {kind} Secret needs it", wanted[1])
    if kind == "kubernetes.io/tls" and "tls.key" not in decoded:
        check.fail(("data", "tls.key"), "Required value: a kubernetes.io/tls Secret needs it",
                   "add tls.key beside tls.crt")
    check.get(obj, "immutable", (), bool)


def _gateway_class(check: Checker, obj: dict, spec) -> None:
    spec = _require_spec(check, spec, "controllerName")
    path = ("spec",)
    check.known(spec, path, ("controllerName", "description", "parametersRef"))
    controller = check.get(spec, "controllerName", path, str, required=True,
                           hint="add controllerName (istio.io/mesh-controller for waypoints)")
    if "/" not in controller:
        check.fail((*path, "controllerName"), f"{controller!r} is not a domain-prefixed path",
                   "write it as DOMAIN/PATH, e.g. istio.io/mesh-controller")
    check.get(spec, "description", path, str)
    check.get(spec, "parametersRef", path, dict)


def _pod(check: Checker, obj: dict, spec) -> None:
    spec = _require_spec(check, spec, "containers")
    _pod_spec(check, spec, ("spec",))


def _template(check: Checker, spec: dict) -> dict:
    path = ("spec",)
    template = check.get(spec, "template", path, dict, required=True,
                         hint="add a pod template with metadata.labels and spec.containers")
    tpath = (*path, "template")
    check.known(template, tpath, F.POD_TEMPLATE)
    tmeta = check.get(template, "metadata", tpath, dict) or {}
    for k, v in check.string_map(tmeta, "labels", (*tpath, "metadata")).items():
        check.label_key(k, (*tpath, "metadata", "labels", k))
        check.label_value(v, (*tpath, "metadata", "labels", k))
    check.string_map(tmeta, "annotations", (*tpath, "metadata"))
    tspec = check.get(template, "spec", tpath, dict, required=True,
                      hint="add the pod spec with containers")
    _pod_spec(check, tspec, (*tpath, "spec"))
    return tmeta.get("labels") or {}


def _workload_controller(check: Checker, obj: dict, spec, *, replicas: bool) -> None:
    spec = _require_spec(check, spec, "a selector and a pod template")
    path = ("spec",)
    check.known(spec, path, F.DEPLOYMENT_SPEC if replicas else F.DAEMONSET_SPEC)
    if replicas:
        count = check.get(spec, "replicas", path, int, hint="write a number such as replicas: 2")
        if count is not None and count < 0:
            check.fail((*path, "replicas"), f"{count} is negative", "use 0 or more replicas")
    selector = _label_selector(check, spec, "selector", path, required=True)
    labels = _template(check, spec)
    if not selector_matches(selector, labels):
        check.fail((*path, "selector"), "does not match the pod template's labels "
                   f"({', '.join(f'{k}={v}' for k, v in labels.items()) or 'none'})",
                   "make spec.selector.matchLabels a subset of spec.template.metadata.labels")


def _deployment(check: Checker, obj: dict, spec) -> None:
    _workload_controller(check, obj, spec, replicas=True)


def _daemonset(check: Checker, obj: dict, spec) -> None:
    _workload_controller(check, obj, spec, replicas=False)


# -- Gateway API ------------------------------------------------------------------------------

def _gateway_protocol(check: Checker, value: str, field) -> None:
    # Gateway API also allows domain-prefixed implementation protocols (example.com/proto).
    if value in GATEWAY_PROTOCOLS or ("/" in value and value.split("/")[-1].isalnum()):
        return
    check.fail(field, f"unknown protocol {value!r}",
               f"use one of {', '.join(GATEWAY_PROTOCOLS)} (HBONE for a waypoint)")


def _gateway(check: Checker, obj: dict, spec) -> None:
    spec = _require_spec(check, spec, "gatewayClassName and listeners")
    path = ("spec",)
    check.known(spec, path, F.GATEWAY_SPEC)
    cls = check.get(spec, "gatewayClassName", path, str, required=True,
                    hint="add gatewayClassName (istio-waypoint for a waypoint)")
    check.dns_subdomain(cls, (*path, "gatewayClassName"))
    listeners = check.items(spec, "listeners", path, required=True, non_empty=True,
                            hint="add listeners (a waypoint has {name: mesh, port: 15008, "
                                 "protocol: HBONE})")
    names = set()
    for lpath, listener in listeners:
        check.known(listener, lpath, F.LISTENER)
        name = check.get(listener, "name", lpath, str, required=True, hint="name the listener")
        check.dns_subdomain(name, (*lpath, "name"))
        _unique(check, names, name, (*lpath, "name"), "listener")
        check.port(listener, "port", lpath, required=True)
        protocol = check.get(listener, "protocol", lpath, str, required=True,
                             hint=f"use one of {', '.join(GATEWAY_PROTOCOLS)}")
        _gateway_protocol(check, protocol, (*lpath, "protocol"))
        check.get(listener, "hostname", lpath, str)
        check.get(listener, "allowedRoutes", lpath, dict)
        check.get(listener, "tls", lpath, dict)
    for apath, address in check.items(spec, "addresses", path):
        check.get(address, "value", apath, str, required=True, hint="give the address value")
    infra = check.get(spec, "infrastructure", path, dict)
    if infra is not None:
        check.string_map(infra, "labels", (*path, "infrastructure"))
        check.string_map(infra, "annotations", (*path, "infrastructure"))


# -- Istio security: the kinds' own parsers (security.py) are the one validation ------------

def _security(check: Checker, obj: dict, spec) -> None:
    meta = obj["metadata"]
    security.PARSERS[obj["kind"]](check, obj, meta["namespace"], meta["name"])


_VALIDATORS = {
    "Namespace": _no_spec_rules,
    "ServiceAccount": _no_spec_rules,
    "Node": _node,
    "Service": _service,
    "Pod": _pod,
    "Deployment": _deployment,
    "DaemonSet": _daemonset,
    "Gateway": _gateway,
    "HTTPRoute": routes.httproute,
    "AuthorizationPolicy": _security,
    "RequestAuthentication": _security,
    "PeerAuthentication": _security,
    "VirtualService": routes.virtualservice,
    "ConfigMap": _config_map,
    "GatewayClass": _gateway_class,
    "Secret": _secret,
}
assert set(_VALIDATORS) == set(KINDS)
