"""`ambient-conformance run [pytest args]`: run the conformance suite and print its report.

Registered into the project's CLI (reference_impl/cli.py loads `conformance.cli.register`).
Every argument is handed to pytest, e.g. `-n 2`, `--target kubernetes --kubeconfig K`,
`--profile AMBIENT-L4`, `--junitxml out/junit.xml`; `--report` defaults to
out/conformance-report.yaml.
"""
from __future__ import annotations

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


def main(args) -> int:
    forwarded = list(getattr(args, "pytest_args", []) or []) + list(getattr(args, "after_dashes", None) or [])
    argv, report = pytest_argv(forwarded)
    started = time.monotonic()
    code = subprocess.call(argv, cwd=ROOT)
    wall = time.monotonic() - started
    report_path = report if report.is_absolute() else ROOT / report
    if report_path.exists():
        print(f"\n--- {report} ---")
        print(report_path.read_text(), end="")
    else:
        print(f"no report was written to {report} (pytest exit {code})", file=sys.stderr)
    print(f"conformance suite wall time: {wall:.1f}s (pytest exit {code})")
    return code
