"""`python -m reference_impl.controlplane`: the istiod pod's process.

Reads AC_RUN_DIR (istiod.sock and ca/ live there) and AC_API_SOCK (the store) from the pod
environment. The workload certificate lifetime (default 24 h, also the cap on a CSR's
`ttlSeconds`) comes from DEFAULT_WORKLOAD_CERT_TTL, Istio's own variable, as a Go duration
("24h", "1m30s", "6s") or whole seconds; AC_CERT_TTL_SECONDS (whole seconds) is the older name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys

from reference_impl.identity import DEFAULT_WORKLOAD_TTL


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration ("24h", "1m30s", "6s", "1.5h") or a bare number of seconds.

    Raises ValueError for anything else."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d*)?", text):
        return float(text)
    if not text or _GO_DURATION.sub("", text) != "":
        raise ValueError(text)
    return sum(float(number) * _GO_UNITS[unit] for number, unit in _GO_DURATION.findall(text))


def cert_ttl_from_env(env=os.environ) -> int:
    """Workload certificate lifetime in whole seconds (>= 1) from the pod environment.

    Raises ValueError with one sentence naming the variable when its value is unusable."""
    for name, durations in (("DEFAULT_WORKLOAD_CERT_TTL", True), ("AC_CERT_TTL_SECONDS", False)):
        value = env.get(name)
        if value is None:
            continue
        try:
            seconds = parse_duration(value) if durations else float(int(value))
        except ValueError:
            seconds = 0.0
        if round(seconds) < 1:
            form = 'a Go duration such as "24h" or "6s", or whole seconds' if durations else "whole seconds"
            raise ValueError(f"istiod: {name}={value!r} must be {form}, at least 1 s; fix the env of "
                             f"the istiod Deployment (reference_impl/cluster/addons/istiod.yaml)")
        return int(round(seconds))  # X.509 validity has whole seconds
    return DEFAULT_WORKLOAD_TTL


#: where Istio's gRPC CA listens (ca_grpc.py): istiod's 15012 on its pod IP (hostNetwork: the node's)
GRPC_CA_ADDRESS_ENV = "AC_CA_GRPC_ADDRESS"


async def _main(run_dir: str, api_sock: str, ttl: int) -> None:
    from .istiod import Istiod

    istiod = Istiod(run_dir, api_sock, cert_ttl_seconds=ttl,
                    grpc_ca_address=os.environ.get(GRPC_CA_ADDRESS_ENV, "0.0.0.0:15012") or None,
                    pod_ip=os.environ.get("INSTANCE_IP") or None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await istiod.start()
    await stop.wait()
    logging.getLogger("controlplane.istiod").info("stopping")
    await istiod.close()


def main() -> None:
    logging.basicConfig(level=os.environ.get("AC_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per store request is noise
    run_dir, api_sock = os.environ.get("AC_RUN_DIR"), os.environ.get("AC_API_SOCK")
    if not run_dir or not api_sock:
        sys.exit("istiod: AC_RUN_DIR and AC_API_SOCK must be set (the cluster's kubelet sets them "
                 "for the istiod pod); run it with `ambient-conformance cluster up`")
    try:
        ttl = cert_ttl_from_env()
    except ValueError as exc:
        sys.exit(str(exc))
    logging.getLogger("controlplane.istiod").info("workload certificates live %ds", ttl)
    asyncio.run(_main(run_dir, api_sock, ttl))


if __name__ == "__main__":
    main()
