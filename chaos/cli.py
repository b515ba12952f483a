"""`ambient-conformance chaos [--target ...] [EXPERIMENT...]`: run a set of the chaos experiments
(chaos/experiments/*.yaml; all of them by default), each with Chaos Toolkit's own `chaos run`
in its own process (chaoslib runs an experiment on the main thread), and print a table:
experiment, result, blast radius, recovery time, failed requests.

On the reference target one cluster is started for the whole set (or `--cluster` names a running
one) and handed to every experiment as AMBIENT_CLUSTER; journals, reports and timelines land in
out/chaos/<run>/<experiment>/.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "chaos" / "experiments"


def register(cli) -> None:
    p = cli.commands.add_parser("chaos", help="run chaos experiments (Chaos Toolkit) against a target and "
                                              "print experiment, result, blast radius, recovery, failures")
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                   help="names (ztunnel-kill) or files; default: every chaos/experiments/*.yaml")
    p.add_argument("--target", default="reference", choices=("reference", "kubernetes"))
    p.add_argument("--kubeconfig", default="", help="kubernetes target: the kubeconfig to use")
    p.add_argument("--cluster", default="", help="reference target: a running cluster to use "
                                                 "(default: start one for the set and stop it after)")
    p.add_argument("--out", default="out/chaos", help="where runs are written (default out/chaos)")
    p.add_argument("--run", default="", help="the run's name (default: a UTC timestamp)")
    p.set_defaults(func=main)


def resolve(names: list[str]) -> list[Path]:
    if not names:
        return sorted(EXPERIMENTS.glob("*.yaml"))
    paths = []
    for name in names:
        path = Path(name) if name.endswith((".yaml", ".yml", ".json")) else EXPERIMENTS / f"{name}.yaml"
        if not path.exists():
            known = ", ".join(p.stem for p in sorted(EXPERIMENTS.glob("*.yaml")))
            raise SystemExit(f"no chaos experiment {name!r}: {path} does not exist; known: {known}")
        paths.append(path)
    return paths


def run_one(path: Path, env: dict, out: Path) -> dict:
    """`chaos run` one experiment file; its row of the table (from the journal and numbers.json)."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(out / "chaos.out", "w") as log:
        code = subprocess.call([sys.executable, "-m", "chaostoolkit", "--log-file", str(out / "chaos.log"),
                                "run", "--journal-path", str(out / "journal.json"), str(path)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    row = {"experiment": path.stem, "seconds": round(time.monotonic() - started, 1), "exit": code}
    journal = out / "journal.json"
    numbers = out / "numbers.json"
    if journal.exists():
        j = json.loads(journal.read_text())
        row["result"] = "deviated" if j.get("deviated") else j.get("status", "?")
        log_text = (out / "chaos.log").read_text(errors="replace") if (out / "chaos.log").exists() else ""
        if row["result"] == "interrupted" and "not supported" in log_text:
            # the target cannot inject this fault: reported, as the conformance suite's NOT_SUPPORTED
            row["result"] = "not supported"
    else:
        row["result"] = f"no journal (exit {code}; see {out / 'chaos.out'})"
    if numbers.exists():
        row.update({k: v for k, v in json.loads(numbers.read_text()).items() if k != "result"})
    return row


def table(rows: list[dict]) -> str:
    head = ("experiment", "result", "blast radius", "recovery (s)", "failed requests", "wall (s)")
    body = [(r["experiment"], r["result"], r.get("blast_radius", "-"), str(r.get("recovery_seconds", "-")),
             str(r.get("failed_requests", "-")), str(r["seconds"])) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def main(args) -> int:
    paths = resolve(args.experiments)
    run = args.run or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    env = dict(os.environ, AMBIENT_TARGET=args.target, AMBIENT_CHAOS_RUN=run,
               AMBIENT_CHAOS_OUT=str(Path(args.out).resolve()), AMBIENT_KUBECONFIG=args.kubeconfig,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("AC_RUN_OWNER", str(os.getpid()))
    target = None
    started = time.monotonic()
    if args.target == "reference" and not args.cluster:
        from conformance.targets.base import TargetError
        from conformance.targets.reference import ReferenceTarget
        os.environ.setdefault("AC_RUN_OWNER", env["AC_RUN_OWNER"])
        target = ReferenceTarget.for_run("chaos")
        try:
            target.start()
        except TargetError as e:
            print(f"ambient-conformance chaos: {e}", file=sys.stderr)
            return 1
        env["AMBIENT_CLUSTER"] = target.cluster
    elif args.cluster:
        env["AMBIENT_CLUSTER"] = args.cluster
    rows = []
    try:
        for path in paths:
            row = run_one(path, env, Path(args.out) / run / path.stem)
            rows.append(row)
            print(f"{row['experiment']}: {row['result']} ({row['seconds']}s)", flush=True)
    finally:
        if target is not None:
            target.stop()
    wall = time.monotonic() - started
    print()
    print(table(rows))
    print(f"\n{len(rows)} experiments, wall time {wall:.1f}s; journals, reports and timelines in "
          f"{Path(args.out) / run}/")
    (Path(args.out) / run).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / run / "summary.json").write_text(json.dumps({"wall_seconds": round(wall, 1), "rows": rows}, indent=1))
    return 0 if all(r["result"] in ("completed", "not supported") for r in rows) else 1
