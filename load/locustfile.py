"""Locust load for hop latency: an open model at a fixed offered rate, microsecond HDR histograms.

Run it the way Locust is run:

    locust -f load/locustfile.py --headless -u 8 -r 8 -t 30s --host http://10.96.0.10:8080 \\
        --ac-rate 200 --ac-payload 1024 --csv out/my --html out/my.html

or let `ambient-conformance load` set up the paths on a cluster and run it inside a client pod.

Why not Locust's own statistics: below 100 ms Locust buckets response times to whole
milliseconds, and its users are a closed loop (a user waits for its answer before it sends the
next request), so a stall shows as fewer requests instead of as latency (coordinated omission).
Here every request has a time slot fixed in advance (`--ac-rate` per second); a free user takes
the next slot, sleeps until it, sends, and the latency is counted from the slot's time, not from
when the request went out. Each latency goes into an HDR histogram (µs, 3 significant digits)
per path, from a listener on Locust's request event with the full precision of a monotonic clock.
The offered and achieved rates are both written, so a run that fell behind is visible.

Paths take turns in short rounds (`--ac-timetable`, written by load/runner.py): several Locust
processes in different client pods share one wall-clock timetable, each sending only in its own
paths' slots, so machine noise hits every path alike. Without a timetable there is one path,
`--host` + `/bytes/<payload>`, for `--ac-seconds` (or until Locust's `-t`).

Results (`--ac-results FILE`, JSON): per path the encoded histograms, counts, offered and achieved
rate; load/report.py reads them. In a distributed run (master/worker, load/k8s/) the workers send
their histograms to the master with Locust's report_to_master event, and the master writes them.
"""
from __future__ import annotations

import json
import time

import gevent
from hdrh.histogram import HdrHistogram
from locust import FastHttpUser, events, task
from locust.runners import MasterRunner, WorkerRunner

LOWEST_US, HIGHEST_US, DIGITS = 1, 60_000_000, 3
#: a request whose slot has passed by more than this is not sent on time: the run fell behind
ON_TIME_US = 10_000
#: how long before its slot a user stops sleeping and yields until the slot's time instead
EARLY_S = 0.0012
#: how long after the schedule's end answers still in flight are waited for
DRAIN_S = 10.0
#: the user's connection opens here and is not counted (TCP handshake, tunnels, certificates)
WARMUP = "warm-up"


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--ac-rate", type=float, default=100.0, include_in_web_ui=True,
                       help="offered requests per second (of this process), scheduled in advance")
    parser.add_argument("--ac-payload", type=int, default=1024, include_in_web_ui=True,
                       help="response body bytes: the URL is <host>/bytes/<payload> (httpbin's form)")
    parser.add_argument("--ac-seconds", type=float, default=0.0, include_in_web_ui=True,
                       help="without a timetable: length of the one slot (0 = Locust's -t, else 60 s)")
    parser.add_argument("--ac-timetable", default="", help="JSON written by load/runner.py: "
                       '{"paths": {name: url}, "slots": [[start_epoch, end_epoch, name, warm], ...]}')
    parser.add_argument("--ac-results", default="", help="write the per-path histograms here (JSON)")


class Slot:
    __slots__ = ("start", "end", "path", "url", "warm")

    def __init__(self, start: float, end: float, path: str, url: str, warm: bool):
        self.start, self.end, self.path, self.url, self.warm = start, end, path, url, warm


class Recorder:
    """Per path: latency from the scheduled start, service time (from the send), counts."""

    def __init__(self):
        self.paths: dict[str, dict] = {}

    def path(self, name: str) -> dict:
        if name not in self.paths:
            self.paths[name] = {"latency": HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS),
                                "service": HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS),
                                "scheduled": 0, "completed": 0, "in_slot": 0, "late_sends": 0,
                                "errors": 0, "error_samples": [], "slot_seconds": 0.0,
                                "max_send_lag_us": 0}
        return self.paths[name]

    def record(self, name: str, latency_us: int, service_us: int, in_slot: bool, send_lag_us: int,
               error: str | None) -> None:
        p = self.path(name)
        p["completed"] += 1
        p["in_slot"] += in_slot
        p["late_sends"] += send_lag_us > ON_TIME_US
        p["max_send_lag_us"] = max(p["max_send_lag_us"], send_lag_us)
        if error:
            p["errors"] += 1
            if len(p["error_samples"]) < 5:
                p["error_samples"].append(error[:200])
            return
        p["latency"].record_value(min(max(latency_us, LOWEST_US), HIGHEST_US))
        p["service"].record_value(min(max(service_us, LOWEST_US), HIGHEST_US))

    def export(self) -> dict:
        out = {}
        for name, p in self.paths.items():
            out[name] = {k: v for k, v in p.items() if k not in ("latency", "service")}
            out[name]["latency"] = p["latency"].encode().decode()
            out[name]["service"] = p["service"].encode().decode()
        return out

    def merge(self, exported: dict) -> None:
        for name, q in exported.items():
            p = self.path(name)
            for k in ("scheduled", "completed", "in_slot", "late_sends", "errors"):
                p[k] += q[k]
            p["slot_seconds"] = max(p["slot_seconds"], q["slot_seconds"])
            p["max_send_lag_us"] = max(p["max_send_lag_us"], q["max_send_lag_us"])
            p["error_samples"] = (p["error_samples"] + q["error_samples"])[:5]
            for k in ("latency", "service"):
                p[k].decode_and_add(q[k])


class Schedule:
    """Request times fixed in advance, handed out in order: one per `1/rate` seconds inside each
    slot. Times are on the perf_counter clock; slots come in wall-clock (epoch) seconds so that
    processes in different pods share them."""

    def __init__(self, slots: list[Slot], rate: float, recorder: Recorder):
        if rate <= 0:
            raise ValueError(f"--ac-rate {rate:g}: the offered rate must be above 0 requests/s")
        offset = time.perf_counter() - time.time()
        self.slots = [Slot(s.start + offset, s.end + offset, s.path, s.url, s.warm) for s in slots]
        self.interval = 1.0 / rate
        self._slot, self._next = 0, (self.slots[0].start if self.slots else 0.0)
        self.end = max((s.end for s in self.slots), default=time.perf_counter())
        for s in self.slots:
            if not s.warm:
                p = recorder.path(s.path)
                p["slot_seconds"] += s.end - s.start
                p["scheduled"] += int((s.end - s.start) / self.interval)

    def next(self) -> tuple[float, Slot] | None:
        while self._slot < len(self.slots):
            slot = self.slots[self._slot]
            t = max(self._next, slot.start)
            # the slot's last request is the one its count above included
            if t + self.interval <= slot.end + 1e-9:
                self._next = t + self.interval
                return t, slot
            self._slot += 1
            if self._slot < len(self.slots):
                self._next = self.slots[self._slot].start
        return None


RECORDER = Recorder()
_state: dict = {}


def _slots_from(options, host: str) -> list[Slot]:
    if options.ac_timetable:
        table = json.loads(options.ac_timetable)
        unknown = sorted({s[2] for s in table["slots"]} - set(table["paths"]))
        if unknown:
            raise ValueError(f"--ac-timetable: slots name paths {unknown} that its `paths` does not define")
        return [Slot(float(a), float(b), name, table["paths"][name], bool(warm))
                for a, b, name, warm in table["slots"]]
    if not host:
        raise ValueError("give --host (e.g. http://10.96.0.10:8080) or --ac-timetable")
    seconds = options.ac_seconds or float(getattr(options, "run_time", None) or 60)
    url = f"{host.rstrip('/')}/bytes/{options.ac_payload}"
    now = time.time() + 0.5
    return [Slot(now, now + 1.0, "target", url, True), Slot(now + 1.0, now + 1.0 + seconds, "target", url, False)]


@events.test_start.add_listener
def _start(environment, **_):
    if isinstance(environment.runner, MasterRunner):
        return
    o = environment.parsed_options
    RECORDER.paths.clear()  # a new test in the web UI starts afresh
    _state["schedule"] = Schedule(_slots_from(o, environment.host or ""), o.ac_rate, RECORDER)
    _state["in_flight"] = 0
    _state["quit"] = gevent.spawn(_quit_after_schedule, environment)


def _quit_after_schedule(environment):
    # bounded: after the last slot's end, until no answer is in flight, DRAIN_S at most
    gevent.sleep(max(0.0, _state["schedule"].end - time.perf_counter()) + 0.05)
    deadline = time.perf_counter() + DRAIN_S
    while _state["in_flight"] and time.perf_counter() < deadline:
        gevent.sleep(0.05)
    if isinstance(environment.runner, WorkerRunner):
        return
    if environment.parsed_options.headless:
        environment.runner.quit()
    else:  # the web UI stays up for the next test
        environment.runner.stop()


@events.request.add_listener
def _on_request(context, response_time, exception, name, **_):
    scheduled = context.get("ac_scheduled") if context else None
    if scheduled is None:
        return
    done = time.perf_counter()
    slot = context["ac_slot"]
    if slot.warm:
        return
    RECORDER.record(slot.path, int((done - scheduled) * 1e6), int(response_time * 1000),
                    done <= slot.end, int((context["ac_sent"] - scheduled) * 1e6),
                    None if exception is None else repr(exception))


@events.report_to_master.add_listener
def _to_master(data, **_):
    data["ac_paths"] = RECORDER.export()
    RECORDER.paths.clear()


@events.worker_report.add_listener
def _from_worker(data, **_):
    if data.get("ac_paths"):
        RECORDER.merge(data["ac_paths"])


@events.test_stop.add_listener
@events.quitting.add_listener
def _write_results(environment, **_):
    o = environment.parsed_options
    if not o.ac_results or isinstance(environment.runner, WorkerRunner):
        return
    result = {"rate": o.ac_rate, "payload": o.ac_payload, "users": o.num_users,
              "on_time_us": ON_TIME_US, "paths": RECORDER.export()}
    with open(o.ac_results, "w") as f:
        json.dump(result, f)


class PathUser(FastHttpUser):
    """One keep-alive connection per path per user; requests at the schedule's times."""
    host = ""
    # a slot a user takes may be due now while this user's previous answer was slow: the
    # schedule, not the user, sets the pace, so no wait_time
    insecure = True
    # a request slower than this is an error; the drain after the schedule waits as long
    network_timeout = connection_timeout = DRAIN_S

    @task
    def scheduled_request(self):
        schedule = _state.get("schedule")
        got = schedule.next() if schedule else None
        if got is None:
            gevent.sleep(0.2)
            return
        at, slot = got
        # gevent's epoll loop wakes timers up to a millisecond late (epoll_wait counts whole ms):
        # sleep to just before the slot, then yield until it (other greenlets run meanwhile)
        delay = at - time.perf_counter() - EARLY_S
        if delay > 0:
            gevent.sleep(delay)
        while time.perf_counter() < at:
            gevent.sleep(0)
        name = f"{slot.path} ({WARMUP})" if slot.warm else slot.path
        _state["in_flight"] += 1
        try:
            self.client.request("GET", slot.url, name=name,
                                context={"ac_scheduled": at, "ac_slot": slot, "ac_sent": time.perf_counter()})
        finally:
            _state["in_flight"] -= 1

