"""Names, paths and addresses of one local cluster (docs/INTERNALS.md, "Names and paths").

Everything a cluster creates carries the prefix `ac-<cluster>-`, and teardown matches names with
the exact patterns below (never a bare prefix: cluster `a` must not sweep cluster `a-b`).
"""
from __future__ import annotations

import os
import re

from .errors import ClusterError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
RUN_ROOT = os.environ.get("AC_RUN_ROOT", "/run/ambient-conformance")
ETC_NETNS = "/etc/netns"
DEFAULT_NAME = "ambient"

SERVICE_CIDR_PREFIX = "10.96."  # 10.96.0.0/16, 10.96.0.1 reserved
POD_CIDR = "10.244.{i}.0/24"
FABRIC_NET = "172.18.0.0/24"


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise ClusterError(f"cluster name {name!r} is not valid; use 1-20 characters of a-z, 0-9 "
                           "and '-', starting with a letter")
    return name


def run_dir(name: str) -> str:
    return os.path.join(RUN_ROOT, name)


def api_sock(name: str) -> str:
    return os.path.join(run_dir(name), "api.sock")


def state_path(name: str) -> str:
    return os.path.join(run_dir(name), "state.json")


def logs_dir(name: str) -> str:
    return os.path.join(run_dir(name), "logs")


def daemon_log(name: str) -> str:
    return os.path.join(run_dir(name), "daemon.log")


def fabric_netns(name: str) -> str:
    return f"ac-{name}-fabric"


def node_name(i: int) -> str:
    return f"node-{i}"


def node_netns(name: str, i: int) -> str:
    return f"ac-{name}-node-{i}"


def pod_netns(name: str, n: int) -> str:
    return f"ac-{name}-p{n}"


def node_ip(i: int) -> str:
    return f"172.18.0.{10 + i}"


def node_gateway(i: int) -> str:
    return f"10.244.{i}.1"


def pod_cidr(i: int) -> str:
    return POD_CIDR.format(i=i)


def netns_pattern(name: str) -> re.Pattern:
    """Matches exactly the namespaces of cluster `name`."""
    return re.compile(rf"^ac-{re.escape(name)}-(fabric|node-\d+|p\d+)$")


ANY_CLUSTER_NETNS = re.compile(r"^ac-([a-z][a-z0-9-]{0,19}?)-(fabric|node-\d+|p\d+)$")
