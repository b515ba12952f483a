"""The workload certificate TTL of an Istio ambient mesh on a Kubernetes cluster, set through the
env of its control plane and its node proxies (docs/ISTIO-NOTES.md, "Workload certificate TTL").

Istio's ztunnel asks istiod for the lifetime in its own `SECRET_TTL` (default 24h); istiod grants
what is asked up to `MAX_WORKLOAD_CERT_TTL` and uses `DEFAULT_WORKLOAD_CERT_TTL` only for a request
that names none. So both are patched: istiod's Deployment and the ztunnel DaemonSet, each by a
strategic merge patch of its containers' env by name (nothing else of the objects is touched),
each rollout waited for before the next. What a container had before is kept and put back by
`set(None)` (an env entry the suite added is removed).
"""
from __future__ import annotations

from dataclasses import dataclass

from conformance.targets.base import TargetError, wait_until

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
#: how long one rollout may take (istiod, then every node's ztunnel, one after the other)
ROLLOUT_SECONDS = 300


@dataclass(frozen=True)
class Workload:
    kind: str       # Deployment or DaemonSet
    name: str
    env: str        # the variable that carries the lifetime, as a Go duration


ISTIOD = Workload("Deployment", "istiod", "DEFAULT_WORKLOAD_CERT_TTL")
ZTUNNEL = Workload("DaemonSet", "ztunnel", "SECRET_TTL")


def env_value(container, name: str) -> str | None:
    return next((e.value for e in container.env or () if e.name == name), None)


class CertificateTTL:
    def __init__(self, apps, core, namespace: str, workloads=(ISTIOD, ZTUNNEL)):
        self.apps, self.core, self.namespace = apps, core, namespace
        self.workloads = workloads
        #: (kind, name, container) -> the value before the suite changed it (None: unset)
        self.saved: dict[tuple[str, str, str], str | None] = {}

    def set(self, seconds: int | None) -> None:
        for w in self.workloads:
            self._set_one(w, None if seconds is None else f"{int(seconds)}s")

    # -- one workload ------------------------------------------------------------------------
    def _read(self, w: Workload):
        from kubernetes.client.exceptions import ApiException
        read = self.apps.read_namespaced_deployment if w.kind == "Deployment" else self.apps.read_namespaced_daemon_set
        try:
            return read(w.name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                raise TargetError(f"there is no {w.kind} {self.namespace}/{w.name} to set the workload certificate "
                                  f"TTL on ({w.env}); is Istio ambient installed?") from None
            raise TargetError(f"read {w.kind} {self.namespace}/{w.name}: {_reason(e)}") from None

    def _set_one(self, w: Workload, value: str | None) -> None:
        from kubernetes.client.exceptions import ApiException
        obj = self._read(w)
        wanted, items = {}, []
        for c in obj.spec.template.spec.containers:
            key = (w.kind, w.name, c.name)
            now = env_value(c, w.env)
            if value is not None:
                self.saved.setdefault(key, now)
                want = value
            else:
                want = self.saved.pop(key, None)
            wanted[c.name] = want
            if now != want:
                entry = {"name": w.env, "value": want} if want is not None else {"name": w.env, "$patch": "delete"}
                items.append({"name": c.name, "env": [entry]})
        if items:
            patch = (self.apps.patch_namespaced_deployment if w.kind == "Deployment"
                     else self.apps.patch_namespaced_daemon_set)
            try:
                patch(w.name, self.namespace, {"spec": {"template": {"spec": {"containers": items}}}},
                      _content_type=STRATEGIC_MERGE)
            except ApiException as e:
                raise TargetError(f"patch {w.env} of {w.kind} {self.namespace}/{w.name}: {_reason(e)}") from None
        last: list[str] = []
        try:
            wait_until(lambda: self._rolled_out(w, wanted, last), ROLLOUT_SECONDS, 1.0,
                       f"{w.kind} {self.namespace}/{w.name} to roll out with {w.env}={value or '(its own)'}")
        except TargetError as e:
            raise TargetError(f"{e}; {last[0] if last else ''}") from None

    def _rolled_out(self, w: Workload, wanted: dict[str, str | None], why: list[str]) -> bool:
        """The controller has seen the change, every replica is updated and Ready, and no pod
        that is not being deleted runs another value."""
        obj = self._read(w)
        status, generation = obj.status, obj.metadata.generation or 0
        if status is None or (status.observed_generation or 0) < generation:
            why[:] = [f"the {w.kind} controller has not observed generation {generation} yet"]
            return False
        if w.kind == "Deployment":
            want = obj.spec.replicas if obj.spec.replicas is not None else 1
            counts = (status.updated_replicas, status.ready_replicas, status.available_replicas)
        else:
            want = status.desired_number_scheduled or 0
            counts = (status.updated_number_scheduled, status.number_ready, status.number_available)
        if any((n or 0) < want for n in counts):
            why[:] = [f"updated/ready/available {'/'.join(str(n or 0) for n in counts)} of {want}"]
            return False
        selector = ",".join(f"{k}={v}" for k, v in (obj.spec.selector.match_labels or {}).items())
        pods = [p for p in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
                if not p.metadata.deletion_timestamp]
        stale = [p.metadata.name for p in pods
                 if any(env_value(c, w.env) != wanted.get(c.name) for c in p.spec.containers)]
        unready = [p.metadata.name for p in pods if not any(
            c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
        if stale or unready or len(pods) != want:
            why[:] = [f"{len(pods)} pods of {want}, still on the old {w.env}: {stale or 'none'}, not Ready: "
                      f"{unready or 'none'}"]
            return False
        return True


def _reason(e) -> str:
    from conformance.targets.kubernetes import _reason as reason
    return reason(e)
