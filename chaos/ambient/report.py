"""The human report of one experiment run: timeline.png (success rate and latency per second, the
fault's start and end marked) and report.md (the verdict, each hypothesis probe's value, the
numbers), beside the journal, in out/chaos/<run>/<experiment>/."""
from __future__ import annotations

import json
from pathlib import Path

from . import analysis


def _recordings(out: Path) -> dict[str, dict]:
    return {p.stem.removeprefix("traffic-"): json.loads(p.read_text()) for p in sorted(out.glob("traffic-*.json"))}


def numbers(journal: dict, out: Path) -> dict:
    """What the table and the report show: result, blast radius (streams that lost requests
    after the fault / all streams), recovery time, failed requests."""
    events = json.loads((out / "events.json").read_text()) if (out / "events.json").exists() else []
    fault = next((e["t"] for e in events if e["event"] == "fault-start"), None)
    hit, streams, failed_total, recovery = [], 0, 0, 0.0
    for rec in _recordings(out).values():
        for name, result in rec["streams"].items():
            records = result["records"]
            streams += 1
            lost = analysis.failures(records, fault)
            failed_total += lost
            if lost:
                hit.append(name)
                recovery = max(recovery, analysis.recovery_seconds(records, fault))
    result = "deviated" if journal.get("deviated") else journal.get("status", "?")
    return {"result": result, "blast_radius": f"{len(hit)}/{streams}" + (f" ({', '.join(hit)})" if hit else ""),
            "streams_hit": hit, "recovery_seconds": recovery, "failed_requests": failed_total}


def plot(out: Path, title: str) -> Path | None:
    recordings = _recordings(out)
    if not recordings:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    events = json.loads((out / "events.json").read_text()) if (out / "events.json").exists() else []
    origin = min(r["started"] for r in recordings.values())
    fig, (rate_ax, lat_ax) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    for rec_name, rec in recordings.items():
        for name, result in rec["streams"].items():
            rows = analysis.per_second({name: result["records"]}, origin)
            xs = [r["second"] for r in rows if r["requests"]]
            rate_ax.step(xs, [r["success_rate"] for r in rows if r["requests"]], where="post", label=name)
            lat_ax.plot(xs, [r["p50_ms"] for r in rows if r["requests"]], marker=".", label=f"{name} p50")
    for e in events:
        if e["event"] in ("fault-start", "fault-end"):
            for ax in (rate_ax, lat_ax):
                ax.axvline(e["t"] - origin, color="red" if e["event"] == "fault-start" else "green",
                           linestyle="--", linewidth=1)
            rate_ax.annotate(e["event"], (e["t"] - origin, 1.02), fontsize=7, rotation=0)
    rate_ax.set_ylabel("success rate / s")
    rate_ax.set_ylim(-0.05, 1.1)
    rate_ax.legend(fontsize=7, loc="lower left")
    lat_ax.set_ylabel("latency p50 (ms)")
    lat_ax.set_yscale("log")
    lat_ax.set_xlabel("seconds since the traffic started")
    lat_ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = out / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(journal: dict, out: Path) -> dict:
    """Write journal.json, timeline.png and report.md into `out`; returns the numbers."""
    (out / "journal.json").write_text(json.dumps(journal, indent=1, default=str))
    title = (journal.get("experiment") or {}).get("title", out.name)
    nums = numbers(journal, out)
    png = plot(out, f"{out.name}: {title}")
    lines = [f"# {out.name}: {title}", "", f"- result: **{nums['result']}**",
             f"- blast radius (streams that lost requests after the fault): {nums['blast_radius']}",
             f"- recovery time: {nums['recovery_seconds']} s", f"- failed requests: {nums['failed_requests']}", ""]
    for phase in ("before", "after"):
        ssh = (journal.get("steady_states") or {}).get(phase) or {}
        if ssh:
            lines.append(f"## steady state {phase} the method: {'met' if ssh.get('steady_state_met') else 'NOT met'}")
            for probe in ssh.get("probes", []):
                lines.append(f"- {probe['activity']['name']}: {probe.get('output')!r} "
                             f"(tolerance {probe['activity'].get('tolerance')!r}, "
                             f"{'ok' if probe.get('tolerance_met') else 'VIOLATED'})")
            lines.append("")
    lines.append("## method")
    for run in journal.get("run", []):
        out_text = json.dumps(run.get("output"), default=str)
        lines.append(f"- {run['activity']['name']}: {run['status']} {out_text[:300]}")
    if png:
        lines += ["", f"![timeline]({png.name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "numbers.json").write_text(json.dumps(nums, indent=1))
    return nums
