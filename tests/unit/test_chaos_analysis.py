"""The chaos report's arithmetic over traffic records: success rate, failures after the fault,
recovery time, the per-second timeline."""
from __future__ import annotations

import math

from chaos.ambient import analysis

# [start, latency, outcome]: fails from t=12 to t=13.5, the fault struck at t=11.9
RECORDS = [[10.0, 0.01, 200], [11.0, 0.01, 200], [12.0, 1.0, "timeout"], [13.0, 0.01, "refused"],
           [13.5, 0.01, 503], [14.0, 0.02, 200], [15.0, 0.01, 200]]


def test_success_rate_and_failures_since_a_moment():
    assert analysis.success_rate(RECORDS) == round(4 / 7, 4)
    assert analysis.failures(RECORDS) == 3
    assert analysis.failures(RECORDS, since=13.0) == 2
    assert analysis.success_rate([]) == 0.0


def test_recovery_runs_from_the_fault_to_the_first_request_of_the_final_run_of_successes():
    assert analysis.recovery_seconds(RECORDS, 11.9) == 2.1
    assert analysis.recovery_seconds(RECORDS[:2], 11.9) == 0.0            # nothing failed
    assert math.isinf(analysis.recovery_seconds(RECORDS[:4], 11.9))       # still failing at the end
    flaky = RECORDS[:3] + [[12.5, 0.01, 200]] + RECORDS[3:]                # one success is not recovery
    assert analysis.recovery_seconds(flaky, 11.9) == 2.1


def test_first_streak_is_timed_by_its_first_request_and_bounded_by_the_last_other():
    assert analysis.first_streak(RECORDS, lambda o: o != 200, 3) == (12.0, 11.0)
    assert analysis.first_streak(RECORDS, analysis.ok, 2) == (10.0, None)   # in force from the start
    assert analysis.first_streak(RECORDS, analysis.ok, 3) is None           # 2 then 2: never 3 in a row
    assert analysis.first_streak([], analysis.ok, 1) is None


def test_per_second_rows_cover_every_second_of_every_stream():
    rows = analysis.per_second({"a": RECORDS, "b": [[10.2, 0.004, 200], [12.1, 0.006, 200]]}, origin=10.0)
    assert [r["second"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[0] == {"second": 0, "requests": 2, "ok": 2, "success_rate": 1.0, "p50_ms": 10.0, "max_ms": 10.0}
    assert rows[2]["success_rate"] == 0.5 and rows[2]["max_ms"] == 1000.0
    assert rows[3] == {"second": 3, "requests": 2, "ok": 0, "success_rate": 0.0, "p50_ms": 10.0, "max_ms": 10.0}
    assert analysis.outcome_counts(RECORDS) == {"200": 4, "timeout": 1, "refused": 1, "503": 1}
