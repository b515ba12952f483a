"""`ambient-conformance run [pytest args]`: run the conformance suite and print its report.

Registered into the project's CLI (reference_impl/cli.py loads `conformance.cli.register`).
Every argument is handed to pytest, e.g. `-n 2`, `--target kubernetes --kubeconfig K`,
`--profile AMBIENT-L4`, `--junitxml out/junit.xml`; `--report` defaults to
out/conformance-report.yaml. `--waypoint envoy` (ours, not pytest's) runs the reference target
with the Envoy waypoint (issue 16; the environment variable AC_WAYPOINT carries it).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent / "tests"
ROOT = TESTS.parents[1]
DEFAULT_REPORT = "out/conformance-report.yaml"


def register(cli) -> None:
    # prefix_chars="+": every "-x" argument is pytest's, not ours, so nothing needs quoting.
    p = cli.commands.add_parser("run", help="run the conformance suite (arguments go to pytest) and print "
                                            "the ConformanceReport", prefix_chars="+", add_help=False)
    p.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARG")
    p.set_defaults(func=main)


def pytest_argv(args: list[str]) -> tuple[list[str], Path]:
    report = DEFAULT_REPORT
    for i, a in enumerate(args):
        if a == "--report" and i + 1 < len(args):
            report = args[i + 1]
        elif a.startswith("--report="):
            report = a.split("=", 1)[1]
    extra = [] if any(a == "--report" or a.startswith("--report=") for a in args) else ["--report", report]
    return [sys.executable, "-m", "pytest", str(TESTS), "-p", "no:cacheprovider", *extra, *args], Path(report)


WAYPOINTS = ("python", "envoy")


def waypoint_option(args: list[str]) -> tuple[list[str], str | None]:
    """(the arguments without `--waypoint X` / `--waypoint=X`, X or None)."""
    rest, chosen, i = [], None, 0
    while i < len(args):
        a = args[i]
        if a == "--waypoint" and i + 1 < len(args):
            chosen, i = args[i + 1], i + 2
            continue
        if a.startswith("--waypoint="):
            chosen = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if chosen is not None and chosen not in WAYPOINTS:
        raise SystemExit(f"run --waypoint {chosen}: choose one of {', '.join(WAYPOINTS)}")
    return rest, chosen


def main(args) -> int:
    forwarded = list(getattr(args, "pytest_args", []) or []) + list(getattr(args, "after_dashes", None) or [])
    forwarded, waypoint = waypoint_option(forwarded)
    argv, report = pytest_argv(forwarded)
    env = dict(os.environ, AC_WAYPOINT=waypoint) if waypoint else None
    started = time.monotonic()
    code = subprocess.call(argv, cwd=ROOT, env=env)
    wall = time.monotonic() - started
    report_path = report if report.is_absolute() else ROOT / report
    if report_path.exists():
        print(f"\n--- {report} ---")
        print(report_path.read_text(), end="")
    else:
        print(f"no report was written to {report} (pytest exit {code})", file=sys.stderr)
    print(f"conformance suite wall time: {wall:.1f}s (pytest exit {code})")
    return code
