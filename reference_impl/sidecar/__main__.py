"""`python -m reference_impl.sidecar`: the injected istio-proxy container.

Environment (set by the kubelet, docs/INTERNALS.md): POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT,
NODE_NAME, INSTANCE_IP, AC_RUN_DIR (istiod.sock); TERMINATION_DRAIN_DURATION_SECONDS (default 5).
On SIGTERM it stops accepting and drains open connections, up to that deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from ..process.allocator import keep_large_buffers
from ..process.serve import configure_logging, until_signalled
from .capture import CaptureError
from .run import SidecarProcess, StartupError, drain_deadline


def main() -> int:
    keep_large_buffers()
    configure_logging(os.environ.get("SIDECAR_LOG_LEVEL", "INFO"))
    # The engine's own access line lacks whether the peer came over mTLS; sidecar.access has it.
    logging.getLogger("l7.access").setLevel(logging.WARNING)
    try:
        proc = SidecarProcess()
    except StartupError as exc:
        print(f"istio-proxy: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(proc))


async def _serve(proc: SidecarProcess) -> int:
    return await until_signalled(proc, logger="sidecar", what="istio-proxy",
                                 start_errors=(StartupError, CaptureError, OSError, ValueError),
                                 drain_deadline=lambda: drain_deadline(os.environ))


if __name__ == "__main__":
    sys.exit(main())
