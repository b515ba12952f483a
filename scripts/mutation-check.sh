#!/usr/bin/env bash
# Does the conformance suite catch a broken mesh? Runs every realistic bug of the mutation catalog
# (scripts/mutants/catalog.py) against the suite in a scratch clone and prints killed/survived per
# mutant and the kill rate; exits 1 when a security-critical mutant survives. `make mutants` runs
# the same. Arguments go to scripts/mutants/run.py (e.g. --list, --only NAME). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec .venv/bin/python scripts/mutants/run.py "$@"
