"""`ambient-conformance load`: hop latency and proxy cost per path, with Locust, on a Target.

    ambient-conformance load [--target reference|kubernetes] [--kubeconfig K] [--rate 200]
        [--users 8] [--payload 1024] [--slot-seconds 3] [--rounds 3] [--out out/load] [--smoke]

Registered into the project's CLI (reference_impl/cli.py loads `load.cli.register`). The
reference target starts its own 2-node cluster (and stops it); the kubernetes target uses the
cluster of the kubeconfig and deletes the load's namespaces afterwards.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from conformance.targets import target_class
from conformance.targets.base import NotSupported, TargetError

#: a second per path: the pipeline, not the numbers (tests/integration/test_load_smoke.py)
SMOKE = {"rate": 50.0, "users": 2, "slot_s": 1.0, "rounds": 1, "warmup_s": 0.3, "start_margin_s": 4.0}


def register(cli) -> None:
    p = cli.commands.add_parser("load", help="load test with Locust: latency per path (direct, ztunnel, waypoint, "
                                             "sidecar, Envoy peer), added latency per hop, proxy cost; CSV/JSON/PNG")
    add_arguments(p)
    p.set_defaults(func=main)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from load.runner import Options
    d = Options()
    p.add_argument("--target", default="reference", choices=["reference", "kubernetes"])
    p.add_argument("--kubeconfig", help="kubernetes target: the cluster's kubeconfig")
    p.add_argument("--context", help="kubernetes target: the kubeconfig context")
    p.add_argument("--rate", type=float, default=d.rate, help="offered requests/s on each path (default %(default)s)")
    p.add_argument("--users", type=int, default=d.users,
                   help="Locust users per client pod = keep-alive connections per path (default %(default)s)")
    p.add_argument("--payload", type=int, default=d.payload, help="response bytes (default %(default)s)")
    p.add_argument("--slot-seconds", type=float, default=d.slot_s, help="a path's turn per round (default %(default)s)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="interleaved rounds (default %(default)s)")
    p.add_argument("--warmup-seconds", type=float, default=d.warmup_s, help="per path, not counted")
    p.add_argument("--out", default=str(d.out), help="results go to OUT/<run>/ (default %(default)s)")
    p.add_argument("--run", default="", help="the run's name (default: the UTC time)")
    p.add_argument("--smoke", action="store_true", help="a few seconds per path: checks the pipeline, not the numbers")
    p.add_argument("--keep-cluster", action="store_true", help="reference target: leave the cluster running")


def options(args):
    from load.runner import Options
    opts = Options(rate=args.rate, users=args.users, payload=args.payload, slot_s=args.slot_seconds,
                   rounds=args.rounds, warmup_s=args.warmup_seconds, out=Path(args.out),
                   run=args.run or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(opts, k, v)
    opts.check()
    return opts


def make_target(args, cluster: str | None = None):
    cls = target_class(args.target)
    if args.target == "kubernetes":
        return cls(kubeconfig=args.kubeconfig, context=args.context)
    from reference_impl.cluster import client
    return cls(cluster=cluster or client.run_scoped_name("cf", "load"), keep=args.keep_cluster)


def main(args) -> int:
    from load import report, runner
    try:
        opts = options(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = make_target(args)
    started = time.monotonic()
    try:
        print(f"starting the {target.name} target...", flush=True)
        target.start()
        placed, proxies = runner.setup(target, opts, log=lambda m: print(m, flush=True))
        result = runner.run(target, opts, placed, proxies, log=lambda m: print(m, flush=True))
        out = opts.out / opts.run
        summary = report.write(result, out)
        print()
        print(report.table(summary))
        print(f"\nwrote {out}/: hops.csv, summary.json, histograms.json, percentiles.png, cdf.png, table.txt, "
              f"locust/ (Locust's own CSV and HTML)")
    except (TargetError, NotSupported) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if args.target == "kubernetes":
            runner.teardown(target)
        target.stop()
        print(f"load wall time: {time.monotonic() - started:.1f} s", flush=True)
    behind = [n for n, e in summary["paths"].items() if e.get("status", "ok") not in ("ok",) and "latency_us" in e]
    if behind:
        print(f"flagged: {', '.join(behind)} (see status)", file=sys.stderr)
    return 0
