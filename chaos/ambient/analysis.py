"""Pure arithmetic over traffic records ([start epoch s, latency s, outcome]): success rates,
failures after a moment, recovery time, when a change took effect, the per-second timeline. No
I/O, unit-tested."""
from __future__ import annotations

import math


def ok(outcome) -> bool:
    return outcome == 200


def failures(records: list, since: float | None = None) -> int:
    """Failed requests, counting only those started at or after `since` when given."""
    return sum(1 for t, _, o in records if not ok(o) and (since is None or t >= since))


def success_rate(records: list) -> float:
    return round(sum(1 for r in records if ok(r[2])) / len(records), 4) if records else 0.0


def recovery_seconds(records: list, fault_start: float | None) -> float:
    """From `fault_start` to the start of the first request of the run of successes that lasts
    to the end of `records` (0 when nothing failed); infinite when the last request failed."""
    if not records or failures(records) == 0:
        return 0.0
    if not ok(records[-1][2]):
        return math.inf
    last_failed = max(i for i, r in enumerate(records) if not ok(r[2]))
    recovered_at = records[last_failed + 1][0]
    start = fault_start if fault_start is not None else records[0][0]
    return round(max(0.0, recovered_at - start), 3)


def first_streak(records: list, matches, count: int) -> tuple[float, float | None] | None:
    """The first run of `count` consecutive records whose outcome `matches`: (start of its first
    request, start of the last request before it that did not match, or None), so a change
    landed between the two; None when there is no such run."""
    run, last_other = 0, None
    for i, (t, _, outcome) in enumerate(records):
        if not matches(outcome):
            run, last_other = 0, t
            continue
        run += 1
        if run >= count:
            return records[i - count + 1][0], last_other
    return None


def per_second(streams: dict[str, list], origin: float) -> list[dict]:
    """One row per whole second since `origin` over all streams: requests, successes, success
    rate, median and maximum latency (ms)."""
    buckets: dict[int, list] = {}
    for records in streams.values():
        for t, latency, outcome in records:
            buckets.setdefault(int(t - origin), []).append((latency, outcome))
    rows = []
    for second in range(0, max(buckets) + 1 if buckets else 0):
        items = buckets.get(second, [])
        latencies = sorted(latency * 1000 for latency, _ in items)
        rows.append({"second": second, "requests": len(items), "ok": sum(1 for _, o in items if ok(o)),
                     "success_rate": round(sum(1 for _, o in items if ok(o)) / len(items), 4) if items else None,
                     "p50_ms": round(latencies[len(latencies) // 2], 2) if latencies else None,
                     "max_ms": round(latencies[-1], 2) if latencies else None})
    return rows


def outcome_counts(records: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, _, outcome in records:
        counts[str(outcome)] = counts.get(str(outcome), 0) + 1
    return counts
