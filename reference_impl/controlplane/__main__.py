"""`python -m reference_impl.controlplane`: the istiod pod's process.

Reads AC_RUN_DIR (istiod.sock and ca/ live there) and AC_API_SOCK (the store) from the pod
environment; AC_CERT_TTL_SECONDS caps workload certificate lifetimes (default 24 h).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from reference_impl.identity import DEFAULT_WORKLOAD_TTL


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        sys.exit(f"istiod: {name}={value!r} must be a whole number of seconds >= 1")
    return int(value)


async def _main(run_dir: str, api_sock: str, ttl: int) -> None:
    from .istiod import Istiod

    istiod = Istiod(run_dir, api_sock, cert_ttl_seconds=ttl)
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
    asyncio.run(_main(run_dir, api_sock, _env_int("AC_CERT_TTL_SECONDS", DEFAULT_WORKLOAD_TTL)))


if __name__ == "__main__":
    main()
