"""Server-side printing: the `Table` (meta.k8s.io/v1) answers `kubectl get` asks for, with the
columns the real API server prints per kind (pkg/printers/internalversion) and the
additionalPrinterColumns of the Istio and Gateway API CRDs."""
from __future__ import annotations

import calendar
import time

from .resources import Resource


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def age(obj: dict, field: str | None = None) -> str:
    stamp = _parse_time(field or (obj.get("metadata") or {}).get("creationTimestamp"))
    return "<unknown>" if stamp is None else human_duration(time.time() - stamp)


def pod_status_reason(pod: dict) -> str:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
    if meta.get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod(pod: dict) -> list:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    return [pod["metadata"]["name"], f"{ready}/{len(spec.get('containers') or [])}",
            pod_status_reason(pod), restarts, age(pod), status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>", "<none>", "<none>"]


def _selector_text(selector: dict | None) -> str:
    labels = (selector or {}).get("matchLabels", selector if selector and
                                  "matchLabels" not in selector and "matchExpressions" not in
                                  selector else {}) or {}
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "<none>"


def _containers(template_spec: dict) -> tuple[str, str]:
    containers = template_spec.get("containers") or []
    return (",".join(c.get("name", "") for c in containers),
            ",".join(str(c.get("image", "")) for c in containers))


def _deployment(d: dict) -> list:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [d["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age(d),
            names, images, _selector_text(spec.get("selector"))]


def _replicaset(r: dict) -> list:
    spec, status = r.get("spec") or {}, r.get("status") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [r["metadata"]["name"], spec.get("replicas", 0), status.get("replicas", 0),
            status.get("readyReplicas", 0), age(r), names, images,
            _selector_text(spec.get("selector"))]


def _daemonset(d: dict) -> list:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    node_selector = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [d["metadata"]["name"], status.get("desiredNumberScheduled", 0),
            status.get("currentNumberScheduled", 0), status.get("numberReady", 0),
            status.get("currentNumberScheduled", 0), status.get("numberAvailable", 0),
            ",".join(f"{k}={v}" for k, v in node_selector.items()) or "<none>", age(d),
            names, images, _selector_text(spec.get("selector"))]


def _service(s: dict) -> list:
    spec = s.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    return [s["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>",
            "<none>", ports or "<none>", age(s), _selector_text(spec.get("selector"))]


def _node(n: dict) -> list:
    status = n.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    ip = next((a["address"] for a in status.get("addresses") or []
               if a.get("type") == "InternalIP"), "<none>")
    return [n["metadata"]["name"], "Ready" if ready else "NotReady", "<none>", age(n),
            "v1.32.0-ambient-conformance", ip, "<none>", "reference cluster", "", "netns"]


def _gateway(g: dict) -> list:
    status = g.get("status") or {}
    address = next((a.get("value") for a in status.get("addresses") or []), "")
    programmed = next((c.get("status") for c in status.get("conditions") or []
                       if c.get("type") == "Programmed"), "Unknown")
    return [g["metadata"]["name"], (g.get("spec") or {}).get("gatewayClassName", ""), address,
            programmed, age(g)]


def _event(e: dict) -> list:
    involved = e.get("involvedObject") or {}
    return [age(e, e.get("lastTimestamp")), e.get("type", "Normal"), e.get("reason", ""),
            f"{(involved.get('kind') or '').lower()}/{involved.get('name', '')}",
            e.get("message", "")]


def _col(name: str, type_: str = "string", priority: int = 0, fmt: str = "") -> dict:
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": priority}


_NAME = _col("Name", fmt="name")
_AGE = _col("Age", "string")
COLUMNS = {
    "Pod": ([_NAME, _col("Ready"), _col("Status"), _col("Restarts", "string"), _AGE,
             _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
             _col("Readiness Gates", priority=1)], _pod),
    "Deployment": ([_NAME, _col("Ready"), _col("Up-to-date", "integer"),
                    _col("Available", "integer"), _AGE, _col("Containers", priority=1),
                    _col("Images", priority=1), _col("Selector", priority=1)], _deployment),
    "DaemonSet": ([_NAME, _col("Desired", "integer"), _col("Current", "integer"),
                   _col("Ready", "integer"), _col("Up-to-date", "integer"),
                   _col("Available", "integer"), _col("Node Selector"), _AGE,
                   _col("Containers", priority=1), _col("Images", priority=1),
                   _col("Selector", priority=1)], _daemonset),
    "Service": ([_NAME, _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"),
                 _AGE, _col("Selector", priority=1)], _service),
    "Namespace": ([_NAME, _col("Status"), _AGE],
                  lambda n: [n["metadata"]["name"], "Terminating" if (n.get("metadata") or {})
                             .get("deletionTimestamp") else "Active", age(n)]),
    "Node": ([_NAME, _col("Status"), _col("Roles"), _AGE, _col("Version"),
              _col("Internal-IP", priority=1), _col("External-IP", priority=1),
              _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
              _col("Container-Runtime", priority=1)], _node),
    "ServiceAccount": ([_NAME, _col("Secrets", "integer"), _AGE],
                       lambda s: [s["metadata"]["name"], len(s.get("secrets") or []), age(s)]),
    "Event": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"),
               _col("Message")], _event),
    "Gateway": ([_NAME, _col("Class"), _col("Address"), _col("Programmed"), _AGE], _gateway),
    "HTTPRoute": ([_NAME, _col("Hostnames"), _AGE],
                  lambda r: [r["metadata"]["name"],
                             ",".join((r.get("spec") or {}).get("hostnames") or []), age(r)]),
    "AuthorizationPolicy": ([_NAME, _col("Action"), _AGE],
                            lambda p: [p["metadata"]["name"],
                                       (p.get("spec") or {}).get("action", "ALLOW"), age(p)]),
    "PeerAuthentication": ([_NAME, _col("Mode"), _AGE],
                           lambda p: [p["metadata"]["name"],
                                      ((p.get("spec") or {}).get("mtls") or {}).get("mode", ""),
                                      age(p)]),
    # -- issue 14: ConfigMaps, ReplicaSets and Gateway classes, as `kubectl get cm|rs|gc` shows --
    "ReplicaSet": ([_NAME, _col("Desired", "integer"), _col("Current", "integer"),
                    _col("Ready", "integer"), _AGE, _col("Containers", priority=1),
                    _col("Images", priority=1), _col("Selector", priority=1)], _replicaset),
    "ConfigMap": ([_NAME, _col("Data", "integer"), _AGE],
                  lambda c: [c["metadata"]["name"],
                             len(c.get("data") or {}) + len(c.get("binaryData") or {}), age(c)]),
    # -- issue 14 item 5: Secrets, as `kubectl get secret` shows them (never their values) --
    "Secret": ([_NAME, _col("Type"), _col("Data", "integer"), _AGE],
               lambda s: [s["metadata"]["name"], s.get("type", "Opaque"), len(s.get("data") or {}),
                          age(s)]),
    "GatewayClass": ([_NAME, _col("Controller"), _col("Accepted"), _AGE],
                     lambda g: [g["metadata"]["name"],
                                (g.get("spec") or {}).get("controllerName", ""),
                                next((c.get("status") for c in (g.get("status") or {})
                                      .get("conditions") or [] if c.get("type") == "Accepted"),
                                     "Unknown"), age(g)]),
    "CustomResourceDefinition": ([_NAME, _col("Created At", "date")],
                                 lambda c: [c["metadata"]["name"],
                                            c["metadata"]["creationTimestamp"]]),
}


def _partial(obj: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {}}


def table(resource: Resource, objects: list[dict], resource_version: str,
          include_object: str = "Metadata") -> dict:
    columns, row = COLUMNS.get(resource.kind, ([_NAME, _AGE],
                                               lambda o: [o["metadata"]["name"], age(o)]))
    rows = []
    for obj in objects:
        entry = {"cells": row(obj)}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            entry["object"] = _partial(obj)
        rows.append(entry)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}


def wants_table(accept: str) -> bool:
    return "as=Table" in (accept or "")
