"""Propagation time: from `POST /apply` of a policy change to the new snapshot at a node proxy.

    .venv/bin/python bench/propagation.py [--sizes 10,1000] [--policies 100] [--samples 30]

Per size it starts, as separate processes like in a cluster: the store (the cluster's real
Store + API server on a temp Unix socket, holding N synthetic Running/Ready pods written the way
the kubelet writes them, spread over 10 namespaces with 1 Service per 20 pods) and istiod
(`python -m reference_impl.controlplane`). No network namespaces: the pods are store objects
only, so 1,000 of them fit on a laptop. With P AuthorizationPolicies in place, it then applies a
change to one policy (a new principal) and times until a connected XdsClient (a node proxy's
view) has received a snapshot containing that change. Prints p50/p90/max per size.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from reference_impl.xds import XdsClient  # noqa: E402

NAMESPACES = [f"bench-{i}" for i in range(10)]


def synthetic_pod(i: int) -> dict:
    ns = NAMESPACES[i % len(NAMESPACES)]
    node = i % 2
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"app-{i}", "namespace": ns,
                         "labels": {"app": f"app-{i // 20}", "pod": f"p{i}"}},
            "spec": {"nodeName": f"node-{node}", "serviceAccountName": f"sa-{i % 50}",
                     "containers": [{"name": "app", "image": "bench",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": f"10.{244 + node}.{(i // 250) % 250}.{i % 250 + 2}",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def serve_store(sock: str, pods: int) -> None:
    """The store process: the cluster's own Store and API server, pre-filled like a kubelet would."""
    from reference_impl.cluster.apiserver import APIServer
    from reference_impl.cluster.store import Store

    async def main():
        store = Store()
        store.apply([{"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": ns, "labels": {"istio.io/dataplane-mode": "ambient"}}}
                     for ns in NAMESPACES + ["istio-system"]])
        for i in range(pods):
            store.create(synthetic_pod(i))
        services = []
        for s in range(max(1, pods // 20)):
            ns = NAMESPACES[(s * 20) % len(NAMESPACES)]
            services.append({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": f"svc-{s}", "namespace": ns},
                             "spec": {"selector": {"app": f"app-{s}"},
                                      "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        store.apply(services)
        server = APIServer(store, {"apply": store.apply, "delete": store.delete})
        await server.start(sock)
        await asyncio.Event().wait()

    asyncio.run(main())


def policy(i: int, principal: str) -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": f"policy-{i}", "namespace": NAMESPACES[i % len(NAMESPACES)]},
            "spec": {"selector": {"matchLabels": {"app": f"app-{i % 50}"}}, "action": "ALLOW",
                     "rules": [{"from": [{"source": {"principals": [principal]}}],
                                "to": [{"operation": {"ports": ["8080"]}}]}]}}


def wait_for_socket(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {path} did not appear within {timeout}s")
        time.sleep(0.02)


def has_principal(config: dict, name: str, principal: str) -> bool:
    for p in config.get("policies") or ():
        if p["name"] == name:
            return principal.replace("spiffe://", "") in repr(p["rules"])
    return False


async def measure(run_dir: str, api_sock: str, pods: int, policies: int, samples: int) -> list[float]:
    received: dict = {}

    def on_snapshot(config, version):
        received["at"] = time.perf_counter()

    client = XdsClient(os.path.join(run_dir, "istiod.sock"), proxy="ztunnel", node="node-0",
                       pod="bench-proxy", namespace="istio-system", on_snapshot=on_snapshot)
    await client.start()
    transport = httpx.AsyncHTTPTransport(uds=api_sock)
    async with httpx.AsyncClient(transport=transport, base_url="http://store", timeout=30) as store:
        response = await store.post("/apply", json={"objects": [
            policy(i, "cluster.local/ns/bench-0/sa/initial") for i in range(policies)]})
        response.raise_for_status()
        deadline = time.monotonic() + 60
        while True:
            config = client.config or {}
            if len(config.get("workloads") or ()) >= pods and len(config.get("policies") or ()) >= policies:
                break
            if time.monotonic() > deadline:
                raise SystemExit("bench: istiod never delivered the initial mesh")
            await asyncio.sleep(0.05)
        timings = []
        for sample in range(samples):
            principal = f"cluster.local/ns/bench-1/sa/changed-{sample}"
            target = sample % policies
            name = f"policy-{target}"
            started = time.perf_counter()
            response = await store.post("/apply", json={"objects": [policy(target, principal)]})
            response.raise_for_status()
            limit = time.monotonic() + 30
            while not has_principal(client.config or {}, name, principal):
                if time.monotonic() > limit:
                    raise SystemExit(f"bench: change {sample} never reached the proxy")
                await asyncio.sleep(0.001)
            timings.append(received["at"] - started)
    await client.close()
    return timings


def run_size(pods: int, policies: int, samples: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="tp-bench-") as run_dir:
        api_sock = os.path.join(run_dir, "api.sock")
        store = multiprocessing.Process(target=serve_store, args=(api_sock, pods), daemon=True)
        store.start()
        istiod = None
        try:
            wait_for_socket(api_sock, 60)
            env = dict(os.environ, AC_RUN_DIR=run_dir, AC_API_SOCK=api_sock, AC_LOG_LEVEL="WARNING",
                       PYTHONPATH=REPO)
            istiod = subprocess.Popen([sys.executable, "-m", "reference_impl.controlplane"], env=env,
                                      cwd=REPO)
            wait_for_socket(os.path.join(run_dir, "istiod.sock"), 30)
            return asyncio.run(measure(run_dir, api_sock, pods, policies, samples))
        finally:
            if istiod is not None:
                istiod.terminate()
                try:
                    istiod.wait(10)
                except subprocess.TimeoutExpired:
                    istiod.kill()
            store.terminate()
            store.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000", help="workload counts, comma-separated")
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    print(f"propagation: apply of one changed AuthorizationPolicy -> snapshot at a node proxy "
          f"({args.policies} policies, {args.samples} samples per size, {os.cpu_count()} CPUs)")
    print(f"{'workloads':>10} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        timings = sorted(t * 1000 for t in run_size(size, args.policies, args.samples))
        p90 = timings[min(len(timings) - 1, int(len(timings) * 0.9))]
        print(f"{size:>10} {statistics.median(timings):>8.1f} {p90:>8.1f} {max(timings):>8.1f}")


if __name__ == "__main__":
    main()
