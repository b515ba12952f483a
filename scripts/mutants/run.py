"""Measures the conformance suite's kill rate: each mutant of the catalog (catalog.py) is one
realistic bug put into the reference mesh; the suite must refuse to certify the mutated mesh.

For every mutant, in a scratch clone of HEAD (the checkout is never touched): reset the tree, apply
the one edit, run `ambient-conformance run` against the mutated reference mesh, and count the mutant
killed when the suite fails (the tests that failed are listed), survived when it certifies.
Prints one line a mutant, then the kill rate; exits 1 when a security-critical mutant survives (or
the unmutated mesh does not pass). Progress goes to stderr; out/mutants.yaml keeps the figures.

    .venv/bin/python scripts/mutants/run.py               # the whole catalog (~15 min)
    .venv/bin/python scripts/mutants/run.py --only NAME   # one mutant (repeatable)
    .venv/bin/python scripts/mutants/run.py --list
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog import MUTANTS, Mutant, apply_to  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAILED_RE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def _run_suite(clone: Path, timeout: float, tests: list[str] = (),
               suite_env: tuple[tuple[str, str], ...] = ()) -> tuple[int | None, list[str], float]:
    """(pytest exit code or None on timeout, failed test node ids, seconds) of one suite run
    (the whole suite, or only `tests`), with the mutant's `suite_env` (e.g. AC_WAYPOINT=envoy)."""
    env = dict(os.environ, PYTHONPATH=str(clone), **dict(suite_env))
    env.pop("AC_RUN_OWNER", None)
    started = time.monotonic()
    try:
        proc = subprocess.run([str(clone / ".venv/bin/ambient-conformance"), "run", "-n", "2", "-q",
                               "-p", "no:cacheprovider", *tests], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run([str(clone / ".venv/bin/ambient-conformance"), "cluster", "down", "--all"],
                       cwd=clone, env=env, capture_output=True)
        return None, [], time.monotonic() - started
    failed = sorted(set(FAILED_RE.findall(proc.stdout)))
    return proc.returncode, failed, time.monotonic() - started


def _reset(clone: Path) -> None:
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=clone, check=True)
    subprocess.run(["git", "clean", "-fdq"], cwd=clone, check=True)


def _scratch_clone(work: Path) -> Path:
    clone = work / "repo"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(clone)], check=True)
    for env_dir in (".venv", ".venv-httpbin"):  # the suite's own environments, shared read-only
        if not (REPO / env_dir).exists():
            sys.exit(f"mutants: {REPO / env_dir} is missing; run `make setup` first")
        (clone / env_dir).symlink_to(REPO / env_dir)
    return clone


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this mutant")
    ap.add_argument("--list", action="store_true", help="list the catalog and exit")
    ap.add_argument("--timeout", type=float, default=480, help="seconds one suite run may take")
    ap.add_argument("--report", default=str(REPO / "out" / "mutants.yaml"))
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in MUTANTS:
            print(f"{m.area:<18} {'critical' if m.critical else 'ordinary':<9} {m.name}")
        return 0
    unknown = set(args.only) - {m.name for m in MUTANTS}
    if unknown:
        sys.exit(f"mutants: no mutant named {', '.join(sorted(unknown))}; see --list")

    with tempfile.TemporaryDirectory(prefix="ac-mutants-") as tmp:
        clone = _scratch_clone(Path(tmp))
        print(f"mutants: {len(chosen)} of {len(MUTANTS)} against {clone} "
              f"(HEAD {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True).stdout.strip()})",
              file=sys.stderr)
        code, failed, secs = _run_suite(clone, args.timeout)
        if code != 0:
            print(f"mutants: the UNMUTATED mesh does not pass the suite (exit {code}, failed {failed}); "
                  "a kill would mean nothing", file=sys.stderr)
            return 1
        print(f"mutants: unmutated mesh certified in {secs:.0f}s", file=sys.stderr)
        results = []
        for i, m in enumerate(chosen, 1):
            _reset(clone)
            apply_to(clone, m)
            print(f"[{i}/{len(chosen)}] {m.name} ...", file=sys.stderr, flush=True)
            code, failed, secs = _run_suite(clone, args.timeout, suite_env=m.suite_env)
            verdict = "survived" if code == 0 else "killed"
            if failed and code is not None:
                # A kill counts only if it repeats: the failed tests run once more against the same
                # mutant, so a flaky test on a busy machine cannot inflate the rate.
                again, refailed, _ = _run_suite(clone, args.timeout, failed, suite_env=m.suite_env)
                if again == 0:
                    verdict = "survived"
                    failed = [f"{t} (failed once, passed on rerun)" for t in failed]
                else:
                    failed = refailed or failed
            short = [t.split("::")[-1] for t in failed]
            results.append({"name": m.name, "area": m.area, "critical": m.critical, "verdict": verdict,
                            "seconds": round(secs, 1), "timed_out": code is None, "caught_by": short})
            how = "suite timed out" if code is None else (", ".join(short) or f"exit {code}")
            print(f"{verdict.upper():<9} {m.area:<18} {m.name}  [{how}]", flush=True)
        _reset(clone)
    killed = sum(r["verdict"] == "killed" for r in results)
    critical_survivors = [r["name"] for r in results if r["verdict"] == "survived" and r["critical"]]
    rate = killed / len(results) if results else 0.0
    print(f"kill rate: {killed}/{len(results)} = {rate:.0%}"
          + (f"; security-critical survivors: {', '.join(critical_survivors)}" if critical_survivors else ""))
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    with open(args.report, "w") as f:
        yaml.safe_dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        "killed": killed, "total": len(results), "rate": round(rate, 3),
                        "critical_survivors": critical_survivors, "mutants": results}, f, sort_keys=False)
    return 1 if critical_survivors else 0


if __name__ == "__main__":
    sys.exit(main())
