"""Events (core/v1) for what the cluster does to pods and Deployments, as the scheduler, kubelet
and Deployment controller of a real cluster record them, so `kubectl describe pod` and
`kubectl get events` show them. They are derived from the store's changes and kept by the API
(bounded), not written into the store: the store stays the single source of truth of objects."""
from __future__ import annotations

import collections
import uuid

from reference_impl.cluster.store import Store, now_iso

from .history import History

KEEP = 2000


class EventRecorder:
    def __init__(self, store: Store, history: History):
        self.store = store
        self.history = history
        self.events: collections.deque = collections.deque(maxlen=KEEP)
        store.subscribe(self._on_change)
        self._seen: dict[tuple, dict] = {}

    def close(self) -> None:
        self.store.unsubscribe(self._on_change)

    def list(self, namespace: str | None) -> list[dict]:
        return [e for e in self.events if namespace is None
                or e["metadata"]["namespace"] == namespace]

    def _emit(self, obj: dict, reason: str, message: str, component: str,
              type_: str = "Normal") -> None:
        meta = obj["metadata"]
        rv = int(self.store.resource_version)
        stamp = now_iso()
        name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": name, "namespace": meta.get("namespace") or "default",
                              "uid": str(uuid.uuid4()), "resourceVersion": str(rv),
                              "creationTimestamp": stamp},
                 "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                                    "name": meta["name"], "namespace": meta.get("namespace"),
                                    "uid": meta.get("uid")},
                 "reason": reason, "message": message, "type": type_,
                 "source": {"component": component}, "reportingComponent": component,
                 "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}
        self.events.append(event)
        self.history.record(rv, "ADDED", event)

    def _on_change(self, event: str, obj: dict) -> None:
        kind = obj.get("kind")
        if kind == "Pod":
            self._pod(event, obj)
        elif kind == "Deployment":
            self._deployment(event, obj)

    def _pod(self, event: str, pod: dict) -> None:
        key = ("Pod", pod["metadata"].get("namespace"), pod["metadata"]["name"])
        before = self._seen.get(key) or {}
        if event == "DELETED":
            self._seen.pop(key, None)
            return
        self._seen[key] = pod
        spec, meta = pod.get("spec") or {}, pod["metadata"]
        node = spec.get("nodeName")
        if node and not (before.get("spec") or {}).get("nodeName"):
            self._emit(pod, "Scheduled", f"Successfully assigned {meta.get('namespace')}/"
                                         f"{meta['name']} to {node}", "default-scheduler")
        old = {c.get("name"): c for c in (before.get("status") or {}).get("containerStatuses") or []}
        images = {c.get("name"): c.get("image") for c in spec.get("containers") or []}
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            name, prev = cs.get("name"), old.get(cs.get("name")) or {}
            started = ((cs.get("state") or {}).get("running") or {}).get("startedAt")
            was = ((prev.get("state") or {}).get("running") or {}).get("startedAt")
            if started and started != was or \
                    (cs.get("restartCount", 0) > prev.get("restartCount", 0) and started):
                self._emit(pod, "Pulled", f'Container image "{images.get(name)}" already present '
                                          "on machine", "kubelet")
                self._emit(pod, "Created", f"Created container: {name}", "kubelet")
                self._emit(pod, "Started", f"Started container {name}", "kubelet")
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in ("CrashLoopBackOff", "ErrImagePull") and \
                    waiting != ((prev.get("state") or {}).get("waiting") or {}):
                self._emit(pod, "BackOff" if waiting["reason"] == "CrashLoopBackOff" else "Failed",
                           waiting.get("message") or f"Back-off restarting failed container "
                                                     f"{name}", "kubelet", "Warning")
        if meta.get("deletionTimestamp") and not (before.get("metadata") or {}).get(
                "deletionTimestamp"):
            for name in images:
                self._emit(pod, "Killing", f"Stopping container {name}", "kubelet")

    def _deployment(self, event: str, d: dict) -> None:
        key = ("Deployment", d["metadata"].get("namespace"), d["metadata"]["name"])
        before = self._seen.get(key)
        if event == "DELETED":
            self._seen.pop(key, None)
            return
        self._seen[key] = d
        want = (d.get("spec") or {}).get("replicas", 1)
        had = None if before is None else (before.get("spec") or {}).get("replicas", 1)
        if had != want:
            direction = "up" if had is None or want > had else "down"
            self._emit(d, "ScalingReplicaSet", f"Scaled {direction} replica set "
                                               f"{d['metadata']['name']} to {want}",
                       "deployment-controller")
