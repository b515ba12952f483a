"""How long `cluster up` takes and how much memory the cluster's processes use.

    .venv/bin/python bench/cluster_up.py [--runs 3] [--nodes 2]

Each run starts a cluster with the seed's namespaces, httpbin (legacy + ambient) and sleep
manifests (plus the add-ons, e.g. istiod), measures the time until every pod is ready, sums the
resident memory (RSS) of the daemon and every process in the cluster's namespaces, and tears it
down. Prints the median start-up time (target on 2 cores: under 5 s) and the median RSS.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reference_impl.cluster import client, teardown  # noqa: E402

SEED = REPO / "fixtures" / "seed"
MANIFESTS = [SEED / n for n in ("namespaces.yaml", "httpbin-legacy.yaml", "httpbin-ambient.yaml",
                                "sleep-ambient.yaml")]


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cluster_pids(name: str) -> set[int]:
    state = teardown.read_state(name) or {}
    pids = {p for ns in teardown.cluster_netns(name) for p in teardown.netns_pids(ns)}
    if state.get("daemon"):
        pids.add(state["daemon"][0])
    return pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--name", default="bench")
    args = parser.parse_args()
    times, memory = [], []
    for run in range(args.runs):
        client.down(args.name)
        started = time.monotonic()
        c = client.up(args.name, nodes=args.nodes, manifests=[str(m) for m in MANIFESTS])
        elapsed = time.monotonic() - started
        pods = c.list("Pod")
        pids = cluster_pids(args.name)
        rss = sum(rss_kib(p) for p in pids) / 1024
        c.down()
        times.append(elapsed)
        memory.append(rss)
        print(f"run {run + 1}: ready in {elapsed:.2f} s, {len(pods)} pods, {len(pids)} processes, "
              f"RSS {rss:.0f} MiB")
    print(f"cluster up -> all ready ({args.nodes} nodes, seed namespaces + httpbin x2 + sleep): "
          f"median {statistics.median(times):.2f} s over {args.runs} runs (target < 5 s); "
          f"resident memory median {statistics.median(memory):.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
