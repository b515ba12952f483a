"""`python -m reference_impl.sidecar`: the injected istio-proxy container.

Environment (set by the kubelet, docs/INTERNALS.md): POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT,
NODE_NAME, INSTANCE_IP, AC_RUN_DIR (istiod.sock); TERMINATION_DRAIN_DURATION_SECONDS (default 5).
On SIGTERM it stops accepting and drains open connections, up to that deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from .capture import CaptureError
from .run import SidecarProcess, StartupError, drain_deadline


def main() -> int:
    logging.basicConfig(level=os.environ.get("SIDECAR_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The engine's own access line lacks whether the peer came over mTLS; sidecar.access has it.
    logging.getLogger("l7.access").setLevel(logging.WARNING)
    try:
        proc = SidecarProcess()
    except StartupError as exc:
        print(f"istio-proxy: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(proc))


async def _serve(proc: SidecarProcess) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await proc.start()
    except (StartupError, CaptureError, OSError, ValueError) as exc:
        logging.getLogger("sidecar").error("istio-proxy cannot start: %s", exc)
        await proc.shutdown()
        return 1
    await stop.wait()
    logging.getLogger("sidecar").info("SIGTERM: draining (up to %gs)", drain_deadline(os.environ))
    await proc.shutdown(drain_deadline(os.environ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
