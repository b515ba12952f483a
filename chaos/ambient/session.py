"""One `chaos run` = one session: the Target built from the experiment's configuration, the run's
output directory and its event log (fault start/end, what the report marks on the timeline).

Configuration keys (each experiment declares them, from the environment with defaults):
  ambient_target      reference (default) | kubernetes
  ambient_cluster     reference: the running cluster to use; empty = start one for this run
  ambient_kubeconfig  kubernetes: the kubeconfig (empty = the client's default)
  ambient_out         where runs are written (default out/chaos)
  ambient_run         the run's name (default: a UTC timestamp); `ambient-conformance chaos` sets
                      one for the whole set
  ambient_experiment  the experiment's short name (its directory in the run)
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaoslib.exceptions import ActivityFailed, InterruptExecution

from conformance.targets import target_class
from conformance.targets.base import NotSupported, Target, TargetError


@dataclass
class Session:
    target: Target
    kind: str
    out: Path
    experiment: str
    configuration: dict
    #: the cluster this session started (and stops at the end), if any
    started_cluster: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, name: str, **details) -> float:
        """Record that `name` happened now (e.g. fault-start); returns the time (epoch s)."""
        now = time.time()
        with self.lock:
            events = self.events()
            events.append({"event": name, "t": round(now, 4), **details})
            (self.out / "events.json").write_text(json.dumps(events, indent=1))
        return now

    def events(self) -> list[dict]:
        path = self.out / "events.json"
        return json.loads(path.read_text()) if path.exists() else []

    def first(self, name: str) -> float | None:
        return next((e["t"] for e in self.events() if e["event"] == name), None)


_current: Session | None = None


def _value(configuration: dict | None, key: str, default: str = "") -> str:
    value = (configuration or {}).get(key)
    return default if value in (None, "") else str(value)


def open_session(configuration: dict | None, start_cluster: bool = True) -> Session:
    """Build the session from `configuration`: attach to (or start) the target's cluster."""
    global _current
    kind = _value(configuration, "ambient_target", "reference")
    experiment = _value(configuration, "ambient_experiment", "experiment")
    run = _value(configuration, "ambient_run", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    out = Path(_value(configuration, "ambient_out", "out/chaos")) / run / experiment
    out.mkdir(parents=True, exist_ok=True)
    for pattern in ("events.json", "traffic-*.json", "held-*.json", "capture-*.pcap", "checks.json",
                    "certs-served.json", "plaintext-baseline.json"):
        for stale in out.glob(pattern):
            stale.unlink()
    try:
        cls = target_class(kind)
    except ValueError as e:
        raise InterruptExecution(f"configuration ambient_target: {e}") from None
    started = False
    try:
        if kind == "reference":
            cluster = _value(configuration, "ambient_cluster")
            if cluster:
                target = cls.attach(cluster)
            elif not start_cluster:
                raise InterruptExecution("configuration ambient_cluster is empty; name a running reference "
                                         "cluster (AMBIENT_CLUSTER) or let the experiment's control start one")
            else:
                target = cls.for_run("chaos")
                target.start()
                started = True
        else:
            kubeconfig = _value(configuration, "ambient_kubeconfig")
            if kubeconfig:
                # chaostoolkit-kubernetes' activities read the kubeconfig from KUBECONFIG
                os.environ["KUBECONFIG"] = kubeconfig
            target = cls(kubeconfig=kubeconfig or None)
            target.start()
    except TargetError as e:
        raise InterruptExecution(f"the {kind} target is not usable: {e}") from None
    _current = Session(target, kind, out, experiment, dict(configuration or {}), started)
    return _current


def session(configuration: dict | None) -> Session:
    """The current run's session; opened on first use when no control opened it (a bare
    `chaos run` of an experiment without the control: the cluster must then be named)."""
    if _current is None:
        return open_session(configuration, start_cluster=False)
    return _current


def close_session() -> None:
    global _current
    if _current is not None and _current.started_cluster:
        _current.target.stop()
    _current = None


def failed(what: str, e: Exception) -> ActivityFailed:
    """An activity's failure as Chaos Toolkit expects it: one sentence."""
    kind = "not supported" if isinstance(e, NotSupported) else "failed"
    return ActivityFailed(f"{what} {kind}: {e}")
