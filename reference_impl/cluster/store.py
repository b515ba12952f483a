"""The object store (the API-server role): Kubernetes-shaped dicts, one resourceVersion counter.

Stored objects are never changed in place: every update stores a new dict. Listeners (the
controllers, the kubelet, `/watch` streams) may therefore keep references to what they were
given. Listeners are called synchronously on the event loop's thread.
"""
from __future__ import annotations

import copy
import ipaddress
import time
import uuid
from typing import Callable, Iterable

from reference_impl import api
from reference_impl.api import ManifestError

Key = tuple[str, str, str]  # (kind, namespace or "", name)
Listener = Callable[[str, dict], None]

NETNS_ANNOTATION = "ambient-conformance.io/netns"
SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/16")
RESERVED_IPS = {"10.96.0.0", "10.96.0.1"}
# Fields the store or the kubelet own; comparing the rest tells "configured" from "unchanged".
_OWNERS_UNCHANGED = object()  # an apply that carries no managedFields leaves them to the server
_SERVER_META = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds", "managedFields")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def key_of(obj: dict) -> Key:
    return api.object_key(obj)


def _user_view(obj: dict) -> dict:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_META}
    view = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    view["metadata"] = meta
    return view


class Store:
    def __init__(self, admission: Iterable[Callable[[dict], None]] = ()):
        self._objects: dict[Key, dict] = {}
        # (kind, namespace) -> {key: object}: the controllers list one kind (often in one
        # namespace) many times per tick, which must not cost a scan of every object.
        self._groups: dict[tuple[str, str], dict[Key, dict]] = {}
        self._rv = 0
        self._listeners: list[Listener] = []
        self._admission = list(admission)
        # Mutating admission (the sidecar injector): runs on every object the store creates,
        # whether the user applied it or a controller made it (a Deployment's pods).
        self._mutating: list[Callable[[dict], None]] = []

    def add_mutating(self, hook: Callable[[dict], None]) -> None:
        self._mutating.append(hook)

    # -- reading ---------------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._objects.get((kind, namespace or "", name))

    def list(self, kind: str | None = None, namespace: str | None = None,
             selector: dict | None = None) -> list[dict]:
        if kind and namespace:
            groups = [self._groups.get((kind, namespace)) or {}]
        else:
            groups = [g for (k, ns), g in self._groups.items()
                      if (not kind or k == kind) and (not namespace or ns == namespace)]
        out = [(key, obj) for group in groups for key, obj in group.items()
               if selector is None or api.selector_matches(
                   selector, (obj.get("metadata") or {}).get("labels"))]
        out.sort(key=lambda item: item[0])
        return [obj for _, obj in out]

    # -- writing ---------------------------------------------------------------------------
    def _emit(self, event: str, obj: dict) -> None:
        for listener in list(self._listeners):
            listener(event, obj)

    def _commit(self, obj: dict, event: str) -> dict:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = key_of(obj)
        self._objects[key] = obj
        self._groups.setdefault(key[:2], {})[key] = obj
        self._emit(event, obj)
        return obj

    def create(self, obj: dict) -> dict:
        """Store a new object written by the cluster itself (controllers); no validation."""
        obj = copy.deepcopy(obj)
        for mutate in self._mutating:
            mutate(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        meta.setdefault("generation", 1)
        if obj.get("kind") == "Service":
            self._assign_cluster_ip(obj, None)
        elif obj.get("kind") == "Pod":
            # as the API server's pod strategy (PrepareForCreate): a new pod is Pending until a
            # kubelet says otherwise; clients read status.phase at once (the official client's
            # status is None without it)
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        return self._commit(obj, "ADDED")

    def replace(self, obj: dict) -> dict:
        """Store a new version of an existing object (the caller built a modified copy)."""
        if key_of(obj) not in self._objects:
            raise KeyError(key_of(obj))
        return self._commit(obj, "MODIFIED")

    def update(self, kind: str, namespace: str, name: str,
               change: Callable[[dict], None]) -> dict | None:
        """Apply `change` to a copy of the object and store it if anything changed."""
        current = self.get(kind, namespace, name)
        if current is None:
            return None
        new = copy.deepcopy(current)
        change(new)
        if new == current:
            return current
        return self.replace(new)

    def set_status(self, kind: str, namespace: str, name: str, status: dict) -> None:
        current = self.get(kind, namespace, name)
        if current is not None and current.get("status") != status:
            new = dict(current)
            new["metadata"] = dict(current["metadata"])
            new["status"] = status
            self.replace(new)

    def remove(self, kind: str, namespace: str, name: str) -> dict | None:
        obj = self._objects.pop((kind, namespace or "", name), None)
        if obj is not None:
            group = self._groups.get((kind, namespace or ""), {})
            group.pop((kind, namespace or "", name), None)
            if not group:
                self._groups.pop((kind, namespace or ""), None)
            self._rv += 1
            gone = dict(obj)
            gone["metadata"] = dict(obj["metadata"], resourceVersion=str(self._rv))
            self._emit("DELETED", gone)
        return obj

    # -- the user's apply / delete ------------------------------------------------------------
    def apply(self, objects: list[dict], source: str = "<api>") -> list[dict]:
        """Validate every object, then store them all; ManifestError and nothing stored if any is bad."""
        checked = [api.validate(obj, source, i + 1) for i, obj in enumerate(objects)]
        namespaces = {key_of(o)[2] for o in checked if o["kind"] == "Namespace"}
        for i, obj in enumerate(checked):
            kind, namespace, name = key_of(obj)
            if api.kind_info(kind).namespaced and namespace not in namespaces \
                    and self.get("Namespace", "", namespace) is None:
                raise ManifestError(f"{source}: document {i + 1} ({kind} {namespace}/{name}): "
                                    f"metadata.namespace: namespace {namespace!r} does not exist; "
                                    "create the Namespace first (or in the same apply)")
            for check in self._admission:
                check(obj)
        results = []
        for obj in checked:
            kind, namespace, name = key_of(obj)
            current = self._objects.get((kind, namespace, name))
            if current is None:
                self.create(obj)
                action = "created"
            elif _user_view(self._merged(current, obj)) == _user_view(current) and \
                    obj["metadata"].get("managedFields", _OWNERS_UNCHANGED) in \
                    (_OWNERS_UNCHANGED, current["metadata"].get("managedFields")):
                action = "unchanged"  # a new field manager's entry alone is a change (kubeapi)
            else:
                self.replace(self._merged(current, obj))
                action = "configured"
            result = {"kind": kind, "namespace": namespace, "name": name, "action": action}
            # As an API server's `Warning:` headers: accepted, but the user should hear about it.
            warnings = api.legacy_warnings(obj)
            if warnings:
                result["warnings"] = warnings
            results.append(result)
        return results

    def _merged(self, current: dict, incoming: dict) -> dict:
        new = copy.deepcopy(incoming)
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "resourceVersion"):
            meta[field] = current["metadata"].get(field)
        if "status" in current:
            new["status"] = current["status"]
        if new.get("spec") != current.get("spec"):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        else:
            meta["generation"] = current["metadata"].get("generation", 1)
        if new["kind"] == "Service":
            self._assign_cluster_ip(new, current)
        return new

    def _assign_cluster_ip(self, obj: dict, current: dict | None) -> None:
        spec = obj.setdefault("spec", {})
        wanted = spec.get("clusterIP")
        if wanted == "None":  # headless
            return
        previous = (current or {}).get("spec", {}).get("clusterIP")
        if not wanted and previous and previous != "None":
            spec["clusterIP"] = current["spec"]["clusterIP"]
            return
        used = {(o.get("spec") or {}).get("clusterIP") for k, o in self._objects.items()
                if k[0] == "Service" and k != key_of(obj)}
        if wanted:
            if wanted in used:
                raise ManifestError(f"<api>: Service {key_of(obj)[1]}/{key_of(obj)[2]}: "
                                    f"spec.clusterIP: {wanted} is already in use; remove the field "
                                    "to get a free address")
            return
        for host in SERVICE_RANGE.hosts():
            address = str(host)
            if address not in used and address not in RESERVED_IPS:
                spec["clusterIP"] = address
                return
        raise ManifestError("<api>: no free ClusterIP left in 10.96.0.0/16; delete some Services")

    def delete(self, objects: list[dict]) -> list[dict]:
        """Remove objects by kind/namespace/name. Pods are only marked (the kubelet removes them)."""
        results = []
        for obj in objects:
            kind, namespace, name = key_of(obj)
            action = "deleted" if self.get(kind, namespace, name) else "not found"
            if action == "deleted":
                if kind == "Pod":
                    self.mark_pod_deleted(namespace, name, None)
                elif kind == "Namespace":
                    self._delete_namespace(name)
                else:
                    self.remove(kind, namespace, name)
            results.append({"kind": kind, "namespace": namespace, "name": name, "action": action})
        return results

    def _delete_namespace(self, namespace: str) -> None:
        for obj in [o for k, o in self._objects.items() if k[1] == namespace]:
            kind, ns, name = key_of(obj)
            if kind == "Pod":
                self.mark_pod_deleted(ns, name, None)
            else:
                self.remove(kind, ns, name)
        self.remove("Namespace", "", namespace)

    def mark_pod_deleted(self, namespace: str, name: str, grace_period: int | None) -> bool:
        """Start a graceful delete (`kubectl delete pod`); a shorter grace period may override."""
        pod = self.get("Pod", namespace, name)
        if pod is None:
            return False
        if grace_period is None:
            grace_period = int((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        current = pod["metadata"].get("deletionGracePeriodSeconds")
        if current is not None and current <= grace_period:
            return True

        def mark(p: dict) -> None:
            p["metadata"].setdefault("deletionTimestamp", now_iso())
            p["metadata"]["deletionGracePeriodSeconds"] = grace_period
        self.update("Pod", namespace, name, mark)
        return True
