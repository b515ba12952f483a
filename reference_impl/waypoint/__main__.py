"""`python -m reference_impl.waypoint`: the waypoint as its Deployment's pod runs it.

Environment (set by the kubelet, docs/INTERNALS.md): POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT,
NODE_NAME, INSTANCE_IP (the HBONE listener's address), AC_RUN_DIR (istiod.sock);
WAYPOINT_EVENT_LOOP=asyncio runs on the stdlib loop instead of uvloop (hbone/eventloop.py).
`--config FILE --ca-dir DIR` serves a static snapshot (JSON or YAML) with certificates from a
local CA instead of istiod.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..hbone import eventloop
from ..process.allocator import keep_large_buffers
from ..process.serve import configure_logging, until_signalled
from .run import StartupError, WaypointProcess, drain_deadline


def _load(path: str) -> dict:
    import yaml

    with open(path) as f:
        text = f.read()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_impl.waypoint", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="static snapshot file instead of istiod")
    parser.add_argument("--ca-dir", help="with --config: directory of the mesh CA that signs the waypoint's certificate")
    parser.add_argument("--hbone-port", type=int, default=15008)
    parser.add_argument("--status-port", type=int, default=15021)
    parser.add_argument("--upstream-hbone-port", type=int, default=15008,
                        help="the port endpoints' HBONE servers listen on (15008 in a cluster; loopback tests differ)")
    parser.add_argument("--log-level", default=os.environ.get("WAYPOINT_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    keep_large_buffers()
    configure_logging(args.log_level)
    static = None
    if args.config:
        if not args.ca_dir:
            print("waypoint: --config needs --ca-dir (where the mesh CA lives) to issue its certificate",
                  file=sys.stderr)
            return 2
        try:
            static = _load(args.config)
        except (OSError, ValueError) as exc:
            print(f"waypoint: cannot read --config {args.config}: {exc}", file=sys.stderr)
            return 2
    try:
        proc = WaypointProcess(static_config=static, ca_dir=args.ca_dir, hbone_port=args.hbone_port,
                               status_port=args.status_port, upstream_hbone_port=args.upstream_hbone_port)
    except StartupError as exc:
        print(f"waypoint: {exc}", file=sys.stderr)
        return 2
    return eventloop.run(_serve(proc), os.environ.get("WAYPOINT_EVENT_LOOP", "uvloop"), "waypoint: WAYPOINT_EVENT_LOOP")


async def _serve(proc: WaypointProcess) -> int:
    return await until_signalled(proc, logger="waypoint", what="waypoint", start_errors=(StartupError, OSError, ValueError),
                                 drain_deadline=lambda: drain_deadline(os.environ))


if __name__ == "__main__":
    sys.exit(main())
