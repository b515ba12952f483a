"""`python -m reference_impl.ztunnel`: the node proxy as the DaemonSet pod runs it.

Environment (set by the kubelet, docs/INTERNALS.md): NODE_NAME, POD_NAME, POD_NAMESPACE,
AC_RUN_DIR (istiod.sock), AC_API_SOCK; TERMINATION_GRACE_PERIOD_SECONDS sets the drain deadline;
ZTUNNEL_EVENT_LOOP=asyncio runs on the stdlib event loop instead of uvloop (for comparison).
`--config FILE` runs from a static snapshot (JSON or YAML) instead of istiod, with certificates
from a local CA directory (`--ca-dir`): handy for scratch tests.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..hbone import eventloop
from ..process.allocator import keep_large_buffers
from ..process.serve import configure_logging, until_signalled
from .run import ZtunnelProcess, drain_deadline


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_impl.ztunnel", description=__doc__.split("\n")[0])
    parser.add_argument("--node", default=os.environ.get("NODE_NAME", ""))
    parser.add_argument("--config", help="static snapshot file instead of istiod")
    parser.add_argument("--ca-dir", help="with --config: directory of the mesh CA to sign workload certificates")
    parser.add_argument("--admin-host", default="127.0.0.1")
    parser.add_argument("--log-level", default=os.environ.get("ZTUNNEL_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    keep_large_buffers()
    configure_logging(args.log_level)
    if not args.node:
        print("ztunnel: NODE_NAME is not set; the kubelet sets it, or pass --node", file=sys.stderr)
        return 2
    static = None
    if args.config:
        try:
            with open(args.config) as f:
                text = f.read()
            import yaml
            static = yaml.safe_load(text) if not args.config.endswith(".json") else json.loads(text)
        except (OSError, ValueError) as exc:
            print(f"ztunnel: cannot read --config {args.config}: {exc}", file=sys.stderr)
            return 2
        if not args.ca_dir:
            print("ztunnel: --config needs --ca-dir (where the mesh CA lives) to issue certificates", file=sys.stderr)
            return 2
    proc = ZtunnelProcess(args.node, static_config=static, ca_dir=args.ca_dir, admin_host=args.admin_host)
    return eventloop.run(_serve(proc), os.environ.get("ZTUNNEL_EVENT_LOOP", "uvloop"), "ztunnel: ZTUNNEL_EVENT_LOOP")


async def _serve(proc: "ZtunnelProcess") -> int:
    return await until_signalled(proc, logger="ztunnel", what="ztunnel", shut_down_after_failed_start=False,
                                 drain_deadline=drain_deadline)


if __name__ == "__main__":
    sys.exit(main())
