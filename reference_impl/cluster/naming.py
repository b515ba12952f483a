"""Names, paths and addresses of one local cluster (docs/INTERNALS.md, "Names and paths").

Everything a cluster creates carries the prefix `ac-<cluster>-`, and teardown matches names with
the exact patterns below (never a bare prefix: cluster `a` must not sweep cluster `a-b`).
"""
from __future__ import annotations

import os
import re

from .errors import ClusterError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
RUN_ROOT = os.environ.get("AC_RUN_ROOT", "/run/ambient-conformance")
ETC_NETNS = "/etc/netns"
DEFAULT_NAME = "ambient"

SERVICE_CIDR_PREFIX = "10.96."  # 10.96.0.0/16, 10.96.0.1 reserved
POD_CIDR = "10.244.{i}.0/24"
FABRIC_NET = "172.18.0.0/24"
# Virtual nodes (the kwok role, virtual.py): a /22 each, so one node holds over 1,000 pods.
VIRTUAL_POD_CIDR = "10.245.{third}.0/22"
MAX_VIRTUAL_NODES = 64  # 64 /22s fill 10.245.0.0/16
VIRTUAL_NODE_RE = re.compile(r"^virtual-\d+$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise ClusterError(f"cluster name {name!r} is not valid; use 1-32 characters of a-z, 0-9 "
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


def virtual_node_name(i: int) -> str:
    return f"virtual-{i}"


def is_virtual_node(name: str | None) -> bool:
    return bool(name) and bool(VIRTUAL_NODE_RE.match(name))


def check_virtual_nodes(count: int) -> int:
    if not 0 <= count <= MAX_VIRTUAL_NODES:
        raise ClusterError(f"--virtual-nodes {count}: choose between 0 and {MAX_VIRTUAL_NODES} "
                           "virtual nodes (each holds up to 1,021 pods)")
    return count


def virtual_node_ip(i: int) -> str:
    """The InternalIP a virtual node reports; no namespace holds it (nothing routes there)."""
    return f"172.19.0.{10 + i}"


def virtual_pod_cidr(i: int) -> str:
    return VIRTUAL_POD_CIDR.format(third=4 * i)


def netns_pattern(name: str) -> re.Pattern:
    """Matches exactly the namespaces of cluster `name`."""
    return re.compile(rf"^ac-{re.escape(name)}-(fabric|node-\d+|p\d+)$")


ANY_CLUSTER_NETNS = re.compile(r"^ac-([a-z][a-z0-9-]{0,31}?)-(fabric|node-\d+|p\d+)$")


# A test run's clusters carry the run's owner (the pytest controller's pid, base 36) in their
# name: `<kind>-<owner>-<rest>`. Two runs on one machine then never share or sweep each other's
# clusters, and a run whose owner is gone left its clusters behind (swept at the next start).
RUN_OWNER_ENV = "AC_RUN_OWNER"
RUN_SCOPED_RE = re.compile(r"^(cf|tc|tm)-([0-9a-z]{1,7})-")
KEPT_MARK = "kept"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def run_owner() -> int:
    """The pid that owns this test run (set once by the controller, inherited by xdist workers)."""
    return int(os.environ.get(RUN_OWNER_ENV) or os.getpid())


def run_scoped_name(kind: str, *parts: str) -> str:
    """`kind-<owner>-parts...`, e.g. `cf-2hu7k-gw0`; ClusterError when it would be too long."""
    return check_name("-".join([kind, _base36(run_owner()), *[p for p in parts if p]]))


def run_owner_of(name: str) -> int | None:
    """The owner pid a run-scoped cluster name carries, or None for any other name."""
    m = RUN_SCOPED_RE.match(name)
    return int(m.group(2), 36) if m else None


def kept_mark(name: str) -> str:
    return os.path.join(run_dir(name), KEPT_MARK)
