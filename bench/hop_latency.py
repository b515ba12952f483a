"""Added latency per hop: one measurement, and it lives in load/ (`ambient-conformance load`).

This name is kept so the README's figures stay reproducible by the command they name; every
argument goes to `ambient-conformance load` (e.g. `--rate 200 --rounds 3`, `--smoke`). The
data-plane hop itself (one connection, one round trip in flight, CPU per round trip and bulk
through one tunnel, beside a real Envoy HBONE pair in the same run) is bench/hbone_throughput.py.

    sudo .venv/bin/python bench/hop_latency.py [ambient-conformance load options]
"""
from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reference_impl.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["load", *sys.argv[1:]]))
