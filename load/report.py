"""From a run's histograms and samples to the summary: the table, hops.csv, summary.json, plots.

Latency is from each request's scheduled start (open model, load/locustfile.py), in µs. The
added latency of a path is pXX(path) − pXX(direct), and per hop that divided by the path's
proxies; `baseline` is a second uncaptured client on the same node pair, so |pXX(baseline) −
pXX(direct)| is how much of a difference this run can resolve (its noise floor).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
#: a path whose achieved rate is below this share of the offered one fell behind
ACHIEVED_MIN = 0.95
#: Istio 1.24's published cost per 1,000 requests/s (istio.io, "Performance and Scalability")
ISTIO_1_24 = {"ztunnel": (0.06, 12), "waypoint": (0.25, 60), "envoy-waypoint": (0.25, 60), "sidecar": (0.20, 60)}
NOT_RUN = "not available"


def _pct_label(p: float) -> str:
    return f"p{p:g}"


def summarize(run) -> tuple[dict, dict]:
    """The JSON summary of a `runner.RunResult`, and the latency histogram of each path."""
    cond = run.conditions
    paths = {}
    hist = {}
    for path in run.paths:
        if path.unavailable:
            paths[path.name] = {"description": path.description, "hops": path.hops, "status": path.unavailable}
            continue
        r = run.results.get(path.name)
        if r is None:
            paths[path.name] = {"description": path.description, "hops": path.hops,
                                "status": "no results (its Locust process recorded nothing)"}
            continue
        h = HdrHistogram.decode(r["latency"])
        service = HdrHistogram.decode(r["service"])
        hist[path.name] = h
        offered = r["scheduled"] / r["slot_seconds"] if r["slot_seconds"] else 0.0
        achieved = r["in_slot"] / r["slot_seconds"] if r["slot_seconds"] else 0.0
        behind = offered == 0 or achieved < ACHIEVED_MIN * offered or r["errors"] > 0
        reasons = []
        if achieved < ACHIEVED_MIN * offered:
            reasons.append(f"BEHIND: achieved {achieved:.0f} of {offered:.0f} requests/s")
        if r["errors"]:
            reasons.append(f"{r['errors']} errors, e.g. {r['error_samples'][:1]}")
        if path.name == "sidecar" and (cond.get("sidecar_through") or {}).get("problems"):
            behind = True
            reasons.append("NOT THROUGH THE SIDECARS: " + "; ".join(cond["sidecar_through"]["problems"]))
        paths[path.name] = {
            "description": path.description, "hops": path.hops,
            "status": "; ".join(reasons) if behind else "ok",
            "requests": h.get_total_count(), "errors": r["errors"], "scheduled": r["scheduled"],
            "offered_rps": round(offered, 1), "achieved_rps": round(achieved, 1),
            "late_sends": r["late_sends"], "max_send_lag_us": r["max_send_lag_us"],
            "latency_us": {_pct_label(p): h.get_value_at_percentile(p) for p in PERCENTILES},
            "service_time_us": {_pct_label(p): service.get_value_at_percentile(p) for p in PERCENTILES},
            "mean_us": round(h.get_mean_value(), 1),
        }
    direct = paths.get("direct", {}).get("latency_us")
    baseline = paths.get("baseline", {}).get("latency_us")
    for name, entry in paths.items():
        lat = entry.get("latency_us")
        if not (lat and direct):
            continue
        entry["added_us"] = {k: lat[k] - direct[k] for k in lat}
        if entry["hops"]:
            entry["added_per_hop_us"] = {k: round((lat[k] - direct[k]) / entry["hops"], 1) for k in lat}
    noise = {k: abs(baseline[k] - direct[k]) for k in direct} if direct and baseline else None
    summary = {"conditions": cond, "percentiles": [_pct_label(p) for p in PERCENTILES], "paths": paths,
               "noise_floor_us": noise, "cost": cost(run, paths), "comparisons": comparisons(paths)}
    return summary, hist


def comparisons(paths: dict) -> dict:
    out = {}
    l4, l7, envoy = (paths.get(n, {}).get("added_per_hop_us") for n in ("ambient-l4", "ambient-l7", "envoy-hbone"))
    if l4 and envoy:
        out["ztunnel_hop_over_envoy_hop"] = {k: (round(l4[k] / envoy[k], 2) if envoy[k] > 0 else None) for k in l4}
    a4, a7, a7e = (paths.get(n, {}).get("latency_us") for n in ("ambient-l4", "ambient-l7", "ambient-l7-envoy"))
    if a4 and a7:
        out["waypoint_hop_us"] = {k: a7[k] - a4[k] for k in a4}
    if a4 and a7e:   # issue 16: the same hop through the Envoy waypoint, in the same run
        out["envoy_waypoint_hop_us"] = {k: a7e[k] - a4[k] for k in a4}
    return out


def cost(run, paths: dict) -> dict:
    """Per path, per proxy: CPU (vCPU while the path ran, and per 1,000 requests/s) and RSS."""
    out = {}
    for name, proxies in run.usage.items():
        rps = (paths.get(name) or {}).get("achieved_rps") or 0
        rows = {}
        for label, u in sorted(proxies.items()):
            vcpu = u["cpu_s"] / u["seconds"] if u["seconds"] else 0.0
            rows[label] = {"role": u["role"], "cpu_seconds": round(u["cpu_s"], 3), "vcpu": round(vcpu, 3),
                           "vcpu_per_1000_rps": round(vcpu * 1000 / rps, 3) if rps else None,
                           "rss_mb": round(u["rss_max"] / 2**20, 1),
                           "istio_1_24": dict(zip(("vcpu_per_1000_rps", "mb_per_1000_rps"),
                                                  ISTIO_1_24.get(u["role"], (None, None))))}
        out[name] = rows
    return out


# -- output ----------------------------------------------------------------------------------

def hops_csv(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "hops", "percentile", "latency_us", "added_us", "added_per_hop_us", "noise_floor_us",
                "service_time_us", "offered_rps", "achieved_rps", "status"])
    noise = summary["noise_floor_us"] or {}
    for name, e in summary["paths"].items():
        if "latency_us" not in e:
            w.writerow([name, e["hops"], "", "", "", "", "", "", "", "", e["status"]])
            continue
        for k, v in e["latency_us"].items():
            w.writerow([name, e["hops"], k, v, (e.get("added_us") or {}).get(k, ""),
                        (e.get("added_per_hop_us") or {}).get(k, ""), noise.get(k, ""), e["service_time_us"][k],
                        e["offered_rps"], e["achieved_rps"], e["status"]])
    return buf.getvalue()


def table(summary: dict) -> str:
    c = summary["conditions"]
    pcts = summary["percentiles"]
    lines = [f"open model: {c['rate']:g} requests/s offered per path in its slot, {c['payload']} B responses, "
             f"{c['users']} Locust users = {c['connections_per_path']} keep-alive connections per path; "
             f"{c['rounds']} interleaved rounds of {c['slot_seconds']:g} s per path after a "
             f"{c['warmup_seconds']:g} s warm-up; client {c['client_node']} → server {c['server_node']}",
             f"load average before/after (1, 5, 15 min): {c['load_average_before']} / {c['load_average_after']} "
             f"on {c['cores']} cores; the suite's {c.get('interpreter', 'Python')} (the reference mesh's too)"
             + ("  — BUSY MACHINE: latencies are pessimistic"
                                         if max(c['load_average_after'][0], c['load_average_before'][0]) > c['cores']
                                         else ""),
             "latency from the scheduled start, µs:",
             f"{'path':<17}{'hops':>5}" + "".join(f"{p:>9}" for p in pcts) + "   added per hop (vs direct)"
             + " " * 14 + "achieved/offered rps  status"]
    noise = summary["noise_floor_us"] or {}
    within = False
    for name, e in summary["paths"].items():
        if "latency_us" not in e:
            lines.append(f"{name:<17}{e['hops']:>5}   {e['status']}")
            continue
        per_hop = e.get("added_per_hop_us")
        marks = {p: "*" if per_hop and e["added_us"][p] <= noise.get(p, -1) else " " for p in pcts}
        within = within or "*" in marks.values()
        hop_text = " ".join(f"{per_hop[p]:>6.0f}{marks[p]}" for p in pcts) if per_hop else " " * 31
        lines.append(f"{name:<17}{e['hops']:>5}" + "".join(f"{e['latency_us'][p]:>9}" for p in pcts)
                     + f"   {hop_text:<40} {e['achieved_rps']:>7.0f}/{e['offered_rps']:<7.0f}   {e['status']}")
    if summary["noise_floor_us"]:
        lines.append("noise floor |baseline − direct|: " +
                     ", ".join(f"{p} {v} µs" for p, v in summary["noise_floor_us"].items())
                     + ("   (* added latency within the noise floor: not resolved by this run)" if within else ""))
    comp = summary["comparisons"]
    if "waypoint_hop_us" in comp:
        lines.append("waypoint hop pXX(ambient-l7) − pXX(ambient-l4): " +
                     ", ".join(f"{p} {v} µs" for p, v in comp["waypoint_hop_us"].items()))
    if "envoy_waypoint_hop_us" in comp:
        lines.append("Envoy waypoint hop pXX(ambient-l7-envoy) − pXX(ambient-l4): " +
                     ", ".join(f"{p} {v} µs" for p, v in comp["envoy_waypoint_hop_us"].items()))
    if "ztunnel_hop_over_envoy_hop" in comp:
        lines.append("ztunnel hop / Envoy HBONE hop (same run, same node pair): " +
                     ", ".join(f"{p} {v}×" if v is not None else f"{p} n/a (Envoy's hop ≤ 0 here)"
                               for p, v in comp["ztunnel_hop_over_envoy_hop"].items()))
    through = c.get("sidecar_through")
    if through:
        lines.append(f"sidecar path through both istio-proxy containers: the server's counted "
                     f"{through['server_sidecar_mtls_requests']:g} mutual-TLS requests from the client's identity "
                     f"(Locust recorded {through['locust_requests']}, warm-up and probes on top), the client's "
                     f"carried {through['client_sidecar_hbone_connections']:g} connections over HBONE "
                     f"to the server's identity"
                     + (f"  — {'; '.join(through['problems'])}" if through["problems"] else ""))
    lines.append("cost while each path ran (vCPU = CPU seconds / slot seconds; Istio 1.24 per 1,000 rps "
                 "beside: ztunnel 0.06 vCPU / 12 MB, waypoint 0.25 / 60, sidecar 0.20 / 60):")
    lines.append(f"  {'path':<17}{'proxy':<22}{'vCPU':>7}{'vCPU/1k rps':>13}{'RSS MB':>9}{'Istio 1.24':>14}")
    for name, rows in summary["cost"].items():
        roles = set(role for role in ISTIO_1_24.keys() | {"envoy"} if role in _path_roles(name))
        for label, r in rows.items():
            if r["role"] not in roles:
                continue
            istio = r["istio_1_24"]
            ref = f"{istio['vcpu_per_1000_rps']} / {istio['mb_per_1000_rps']}" if istio["vcpu_per_1000_rps"] else "—"
            per_k = f"{r['vcpu_per_1000_rps']:.3f}" if r["vcpu_per_1000_rps"] is not None else "—"
            lines.append(f"  {name:<17}{label:<22}{r['vcpu']:>7.3f}{per_k:>13}{r['rss_mb']:>9.1f}{ref:>14}")
    return "\n".join(lines)


def _path_roles(name: str) -> tuple[str, ...]:
    from load import scenario
    for p in scenario.PATHS:
        if p.name == name:
            return p.proxies
    return ()


def plots(summary: dict, hist: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = summary["conditions"]
    subtitle = (f"{c['rate']:g} req/s per path, {c['payload']} B, {c['connections_per_path']} connections, "
                f"load avg {c['load_average_after'][0]} on {c['cores']} cores")
    names = [n for n, e in summary["paths"].items() if "latency_us" in e]
    pcts = summary["percentiles"]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [summary["paths"][name]["latency_us"][p] for p in pcts]
        ax.bar([j + i * width for j in range(len(pcts))], values, width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(pcts))], pcts)
    ax.set_ylabel("latency from scheduled start (µs)")
    ax.set_yscale("log")
    ax.set_title(f"latency percentiles per path\n{subtitle}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    bars = out / "percentiles.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 5))
    for name in names:
        xs, ys = [], []
        for it in hist[name].get_recorded_iterator():
            xs.append(it.value_iterated_to)
            ys.append(it.percentile / 100)
        ax.plot(xs, ys, label=name, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("latency from scheduled start (µs)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"latency CDF per path\n{subtitle}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    cdf = out / "cdf.png"
    fig.savefig(cdf, dpi=110)
    plt.close(fig)
    return [bars, cdf]


def write(run, out: Path) -> dict:
    """Everything into `out` (created); returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary, hist = summarize(run)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    (out / "hops.csv").write_text(hops_csv(summary))
    (out / "histograms.json").write_text(json.dumps(
        {name: {"latency": r["latency"], "service": r["service"]} for name, r in run.results.items()}) + "\n")
    for label, files in run.locust_files.items():
        d = out / "locust" / label
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).write_text(text)
    summary["files"] = [str(p) for p in plots(summary, hist, out)]
    (out / "table.txt").write_text(table(summary) + "\n")
    return summary
