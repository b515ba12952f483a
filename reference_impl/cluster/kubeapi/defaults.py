"""Fields the real API server or kubelet always set and that strict clients require (the
official Python client's models refuse a ContainerStatus without `imageID`, a DaemonSet status
without `numberMisscheduled`): filled in on the way out, never written back to the store."""
from __future__ import annotations


def _container_statuses(status: dict) -> dict:
    statuses = status.get("containerStatuses")
    if not statuses or all("imageID" in s for s in statuses):
        return status
    fixed = []
    for s in statuses:
        s = dict(s)
        s.setdefault("image", "")
        s.setdefault("imageID", "")
        if s.get("pid") and "containerID" not in s:
            s["containerID"] = f"ambient-conformance://{s['pid']}"
        fixed.append(s)
    return dict(status, containerStatuses=fixed)


def served(obj: dict) -> dict:
    kind = obj.get("kind")
    status = obj.get("status")
    if kind == "Pod" and isinstance(status, dict):
        new = _container_statuses(status)
        if new is not status:
            return dict(obj, status=new)
    elif kind == "DaemonSet" and isinstance(status, dict) and "numberMisscheduled" not in status:
        return dict(obj, status=dict(status, numberMisscheduled=0))
    elif kind == "Deployment" and isinstance(status, dict):
        conditions = status.get("conditions") or []
        if any("reason" not in c for c in conditions):
            return dict(obj, status=dict(status, conditions=[
                dict({"reason": "MinimumReplicasAvailable" if c.get("status") == "True"
                      else "MinimumReplicasUnavailable"}, **c) for c in conditions]))
    return obj
