"""Convergence checks made inside a method, after a fault ends: how long until a change made
during the fault (a policy, a new pod) takes effect, and whether one held its ground meanwhile.
Each check is recorded in the run's checks.json; the steady-state probe `check_violations`
counts those that missed their bound (none before the method: nothing has been checked)."""
from __future__ import annotations

import json
import time

from conformance.targets.base import TargetError

from . import analysis, traffic
from .session import Session, failed, session

__all__ = ["seconds_until", "holds_now", "check_violations"]
#: consecutive answers that count as "in effect", as the conformance suite's convergence rule
CONSECUTIVE = 3
#: seconds_until's generator runs WINDOW seconds, a request every INTERVAL, and a change is timed
#: by its requests' own start times, to within INTERVAL. Timed by when each one-request exec
#: began, it was counted in whole execs (1.2-1.5 s each at load 10, more on a busier machine), so
#: the time read said more about the machine than about when the change landed.
WINDOW, INTERVAL = 2.0, 0.1


def _record(s: Session, check: dict) -> None:
    path = s.out / "checks.json"
    checks = json.loads(path.read_text()) if path.exists() else []
    checks.append(check)
    path.write_text(json.dumps(checks, indent=1))


def _one(s: Session, stream: dict):
    result = traffic.run_streams(s, [stream], 1.0, 0.5, 1.0)
    return next(iter(result.values()))["records"][0][2]


def _matches(outcome, want: str) -> bool:
    return analysis.ok(outcome) if want == "allowed" else not analysis.ok(outcome)


def seconds_until(stream: dict, want: str = "allowed", bound: float = 5, timeout: float = 20,
                  since: str = "fault-end", configuration: dict = None) -> float:
    """Seconds from event `since` until `stream` is `want` (allowed / denied) for CONSECUTIVE
    requests in a row; recorded with `bound` (a violation when later, or never within `timeout`)
    and with the last request that was not yet `want` (the change landed in between)."""
    s = session(configuration)
    start = s.first(since) or time.time()
    deadline, records, streak = time.time() + timeout, [], None
    try:
        while streak is None and time.time() < deadline:
            result = traffic.run_streams(s, [stream], WINDOW, INTERVAL, 1.0)
            records += next(iter(result.values()))["records"]
            streak = analysis.first_streak(records, lambda o: _matches(o, want), CONSECUTIVE)
    except TargetError as e:
        raise failed(f"wait for {traffic.name_of(stream)} to be {want}", e) from None
    seconds = round(streak[0] - start, 3) if streak else None
    not_yet = round(streak[1] - start, 3) if streak and streak[1] is not None else None
    _record(s, {"check": f"{traffic.name_of(stream)} {want}", "seconds": seconds, "bound": float(bound),
                "last_not_yet": not_yet, "requests": len(records),
                "ok": seconds is not None and seconds <= float(bound)})
    return seconds if seconds is not None else float("inf")


def holds_now(stream: dict, want: str = "allowed", count: int = 3, configuration: dict = None) -> bool:
    """Whether `stream` is `want` for `count` requests now (e.g. a policy created while the
    control plane is down is not in force yet: the data plane keeps its last config); recorded."""
    s = session(configuration)
    try:
        outcomes = [_one(s, stream) for _ in range(int(count))]
    except TargetError as e:
        raise failed(f"check {traffic.name_of(stream)}", e) from None
    ok = all(_matches(o, want) for o in outcomes)
    _record(s, {"check": f"{traffic.name_of(stream)} still {want}", "outcomes": outcomes, "ok": ok})
    return ok


def check_violations(configuration: dict = None) -> int:
    """The method's convergence checks that missed their bound or did not hold."""
    s = session(configuration)
    path = s.out / "checks.json"
    return sum(1 for c in json.loads(path.read_text()) if not c["ok"]) if path.exists() else 0
