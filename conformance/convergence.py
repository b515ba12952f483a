"""Convergence instead of sleeps: "N consecutive expected outcomes within T".

A mesh is eventually consistent: a policy reaches every node proxy a little after `apply`.
Tests therefore never sleep and then look; they poll until the expected outcome has been seen
N times in a row, and fail with the last observation when the bound T runs out. The bounds
below are published in docs/CONFORMANCE.md: an implementation that is slower is non-conformant.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

#: outcomes observed in a row before a state counts as reached
CONSECUTIVE = 3
#: a policy or label change must be in effect everywhere within this many seconds
POLICY_CONVERGENCE_SECONDS = 20.0
#: workloads of a test must be Ready within this many seconds of `apply`
READY_SECONDS = 120.0
#: an established connection that a new policy denies must be closed within this many seconds
LIVE_CONNECTION_CLOSE_SECONDS = 10.0
#: each request gives up after this many seconds; a request cut off by it stalled, and a stall is
#: never a deny (see curl.L4_REFUSALS)
REQUEST_MAX_SECONDS = 3.0
#: pause between two polls
POLL_INTERVAL_SECONDS = 0.5

BOUNDS = [
    ("CONSECUTIVE", CONSECUTIVE, "consecutive expected outcomes that make a state reached"),
    ("POLICY_CONVERGENCE_SECONDS", POLICY_CONVERGENCE_SECONDS,
     "time for a policy, PeerAuthentication or namespace label change to take effect"),
    ("READY_SECONDS", READY_SECONDS, "time for a test's workloads to become Ready"),
    ("LIVE_CONNECTION_CLOSE_SECONDS", LIVE_CONNECTION_CLOSE_SECONDS,
     "time for a newly denied, established connection to be closed"),
    ("REQUEST_MAX_SECONDS", REQUEST_MAX_SECONDS,
     "per-request limit; a request with neither an answer nor a refusal by then timed out, and a "
     "timeout never counts as a deny"),
]


class NotConverged(AssertionError):
    pass


@dataclass
class Observation:
    value: object
    ok: bool


def eventually(probe: Callable[[], Iterable[object]], expect: Callable[[object], bool],
               what: str, n_consecutive: int = CONSECUTIVE,
               timeout: float = POLICY_CONVERGENCE_SECONDS,
               interval: float = POLL_INTERVAL_SECONDS,
               why_not: Callable[[object], str | None] | None = None) -> list[object]:
    """Poll `probe` (which returns a batch of observations) until `n_consecutive` observations
    in a row satisfy `expect`; return that run. NotConverged, with the history, after `timeout`.
    An observation that fails `expect` breaks the run, whatever came before; `why_not(value)` may
    name what was wrong with such a value, and the failure message then says so."""
    deadline = time.monotonic() + timeout
    run: list[object] = []
    history: list[object] = []
    while True:
        for value in probe():
            history.append(value)
            run = run + [value] if expect(value) else []
            if len(run) >= n_consecutive:
                return run
        if time.monotonic() >= deadline:
            tail = history[-12:]
            reasons = _reasons(history, expect, why_not)
            raise NotConverged(f"{what}: not {n_consecutive} consecutive expected outcomes within "
                               f"{timeout:g}s; last observations {tail}" + "".join(f"; {r}" for r in reasons))
        time.sleep(interval)


def _reasons(history: list[object], expect, why_not) -> list[str]:
    """The distinct sentences `why_not` gives for the observations that failed, in order."""
    reasons: list[str] = []
    for value in history:
        reason = why_not(value) if why_not and not expect(value) else None
        if reason and reason not in reasons:
            reasons.append(reason)
    return reasons
