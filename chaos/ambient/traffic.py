"""Background traffic, a probe's business: a bounded generator in client pods records every
request's outcome and latency with its start time, per stream (client -> service).

`background_traffic` is the probe an experiment's method runs with `background: true` while its
actions inject the fault; its records are kept in the run's directory as `traffic-<recording>.json`
for the steady-state probes, the report and the plot. A stream only ever addresses a Service of
the experiment's own namespace (world.NAMESPACE), so no traffic leaves the cluster.
"""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

from conformance import workloads as w
from conformance.targets.base import TargetError

from . import analysis, world
from .session import Session, failed, session

SOURCE = (Path(__file__).with_name("pod_traffic.py")).read_text()
#: bounds on every traffic loop, whatever an experiment asks for
MAX_SECONDS = 120
MAX_REQUESTS = 2400
MIN_INTERVAL = 0.02


def _spec(stream: dict, mode: str, seconds: float, interval: float, timeout: float) -> dict:
    service = stream["to"]
    if not isinstance(service, str) or "." in service or "/" in service:
        raise ValueError(f"stream {stream}: `to` must name a Service of namespace {world.NAMESPACE} "
                         "(traffic stays inside the experiment's own namespace)")
    seconds = min(float(seconds), MAX_SECONDS)
    interval = max(float(interval), MIN_INTERVAL)
    return {"mode": mode, "host": f"{service}.{world.NAMESPACE}", "port": w.HTTP_PORT,
            "path": stream.get("path", "/get"), "expect": stream.get("expect"),
            "count": min(MAX_REQUESTS, math.ceil(seconds / interval) + 1),
            "interval": interval, "timeout": float(timeout), "seconds": seconds}


def name_of(stream: dict) -> str:
    return stream.get("name") or f"{stream['from']}>{stream['to']}"


def _client(s: Session, name: str):
    pods = [p for p in s.target.pods(world.NAMESPACE, {"app": name}) if p.ready]
    if not pods:
        raise TargetError(f"no Ready pod of client {world.NAMESPACE}/{name}")
    return pods[0]


def _run(s: Session, stream: dict, spec: dict) -> dict:
    pod = _client(s, stream["from"])
    result = s.target.run_python(pod, SOURCE, [json.dumps(spec)], timeout=spec["seconds"] + spec["timeout"] + 30)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TargetError(f"the traffic generator in {pod.namespace}/{pod.name} printed no result "
                          f"(exit {result.returncode}): {result.stderr.strip()[-300:]}") from None


def run_streams(s: Session, streams: list[dict], seconds: float, interval: float, timeout: float,
                mode: str = "requests") -> dict[str, dict]:
    """Every stream at once, one generator process each; {stream name: its generator's result}."""
    specs = {name_of(st): (st, _spec(st, mode, seconds, interval, timeout)) for st in streams}
    results, errors = {}, {}

    def one(name, stream, spec):
        try:
            results[name] = _run(s, stream, spec)
        except Exception as e:  # reported below, with the stream's name
            errors[name] = e
    threads = [threading.Thread(target=one, args=(n, st, sp), daemon=True) for n, (st, sp) in specs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        name, e = next(iter(errors.items()))
        raise TargetError(f"stream {name}: {e}")
    return {name: {**results[name], "spec": specs[name][1]} for name in specs}


def path_of(s: Session, recording: str) -> Path:
    return s.out / f"traffic-{recording}.json"


def load(s: Session, recording: str) -> dict | None:
    path = path_of(s, recording)
    return json.loads(path.read_text()) if path.exists() else None


def summary(streams: dict[str, dict]) -> dict:
    out = {}
    for name, result in streams.items():
        records = result.get("records", [])
        out[name] = {"requests": len(records), "failed": analysis.failures(records),
                     "success_rate": analysis.success_rate(records),
                     "outcomes": analysis.outcome_counts(records)}
    return out


def background_traffic(streams: list[dict], seconds: float = 10, interval: float = 0.1, timeout: float = 2.0,
                       recording: str = "method", configuration: dict = None) -> dict:
    """Run `streams` for `seconds` (one request every `interval` s per stream, each on a fresh
    connection, each bounded by `timeout`), record them as `recording`, return per-stream totals."""
    s = session(configuration)
    started = s.event(f"traffic-start:{recording}")
    try:
        results = run_streams(s, streams, seconds, interval, timeout)
    except (TargetError, ValueError) as e:
        raise failed(f"background traffic {recording}", e) from None
    ended = s.event(f"traffic-end:{recording}")
    path_of(s, recording).write_text(json.dumps({"started": started, "ended": ended, "streams": results}))
    return summary(results)


def held_connection(client: str, to: str, seconds: float = 20, recording: str = "held",
                    configuration: dict = None) -> dict:
    """One long-lived connection from `client` to `to` (httpbin /drip trickling one byte a second
    for `seconds`), recorded as `recording`: when it started, each byte's arrival, how it ended."""
    s = session(configuration)
    stream = {"from": client, "to": to, "path": f"/drip?duration={int(seconds)}&numbytes={int(seconds)}&delay=0"}
    try:
        result = run_streams(s, [stream], seconds + 5, 1, timeout=seconds + 5, mode="hold")
    except (TargetError, ValueError) as e:
        raise failed(f"held connection {recording}", e) from None
    (s.out / f"held-{recording}.json").write_text(json.dumps(next(iter(result.values()))))
    held = next(iter(result.values()))
    return {"outcome": held["outcome"], "seconds": round(held["ended"] - held["started"], 3),
            "chunks": len(held["chunks"])}


def window(s: Session, streams: list[dict], recording: str, count: int = 10, interval: float = 0.05,
           timeout: float = 2.0) -> tuple[dict[str, list], bool]:
    """The traffic a steady-state probe judges: the method's recording once it exists (the
    hypothesis after the method), else a fresh burst of `count` requests per stream (before it).
    Returns ({stream name: records}, whether it is the recording)."""
    recorded = load(s, recording)
    names = [name_of(st) for st in streams]
    if recorded is not None:
        missing = [n for n in names if n not in recorded["streams"]]
        if missing:
            raise ValueError(f"recording {recording} has no stream {', '.join(missing)}; "
                             f"it has {', '.join(recorded['streams'])}")
        return {n: recorded["streams"][n]["records"] for n in names}, True
    fresh = run_streams(s, streams, count * interval + timeout, interval, timeout)
    for result in fresh.values():
        result["records"] = result["records"][:count]
    return {n: fresh[n]["records"] for n in names}, False
