"""The kube-proxy role: nftables in every node namespace that DNATs ClusterIP:port to ready pods.

One table, `ip ac_kube_proxy`, replaced atomically with `nft -f` whenever services or endpoints
change. Each service port gets a chain that picks an endpoint with `numgen random` (random spread,
like kube-proxy's nftables mode) and jumps to a per-endpoint chain that DNATs. A connection from
an endpoint to itself through its own service (hairpin) is masqueraded, or the pod would receive
a packet from its own address and drop it. A service port without ready endpoints is rejected
with a TCP reset (connection refused), as kube-proxy does; so is any other packet still addressed
to the service range after DNAT (a ClusterIP port no Service has), as kube-proxy's nftables mode
rejects unallocated ClusterIP ports, instead of leaving it to an ARP query nobody answers.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from . import naming
from .errors import ClusterError

TABLE = "ac_kube_proxy"
HAIRPIN_MARK = "0x4000"


@dataclass(frozen=True)
class ServicePort:
    vip: str
    port: int
    protocol: str  # "tcp" | "udp"
    endpoints: tuple[tuple[str, int], ...] = field(default=())  # (pod IP, target port)


def render(ports: list[ServicePort]) -> str:
    lines = [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    dispatch, no_endpoints, chains = [], [], []
    for si, sp in enumerate(sorted(ports, key=lambda p: (p.vip, p.port, p.protocol))):
        match = f"ip daddr {sp.vip} {sp.protocol} dport {sp.port}"
        if not sp.endpoints:
            no_endpoints.append(f"    {match} reject with tcp reset" if sp.protocol == "tcp"
                                else f"    {match} reject")
            continue
        svc_chain = f"svc{si}"
        dispatch.append(f"    {match} jump {svc_chain}")
        targets = []
        for ei, (ip, target_port) in enumerate(sp.endpoints):
            ep_chain = f"svc{si}ep{ei}"
            chains += [f"  chain {ep_chain} {{",
                       f"    ip saddr {ip} meta mark set meta mark | {HAIRPIN_MARK}",
                       f"    meta l4proto {sp.protocol} dnat ip to {ip}:{target_port}", "  }"]
            targets.append(f"{ei} : jump {ep_chain}")
        chains += [f"  chain {svc_chain} {{",
                   f"    numgen random mod {len(sp.endpoints)} vmap {{ {', '.join(targets)} }}",
                   "  }"]
    lines += ["  chain services {", *dispatch, "  }"]
    service_cidr = f"{naming.SERVICE_CIDR_PREFIX}0.0/16"
    unallocated = [f"    ip daddr {service_cidr} meta l4proto tcp reject with tcp reset",
                   f"    ip daddr {service_cidr} reject"]
    lines += ["  chain no_endpoints {", *no_endpoints, *unallocated, "  }"]
    lines += chains
    lines += [
        "  chain nat_prerouting {", "    type nat hook prerouting priority dstnat; policy accept;",
        "    jump services", "  }",
        "  chain nat_output {", "    type nat hook output priority -100; policy accept;",
        "    jump services", "  }",
        "  chain nat_postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
        f"    meta mark & {HAIRPIN_MARK} == {HAIRPIN_MARK} masquerade", "  }",
        "  chain filter_prerouting {", "    type filter hook prerouting priority 0; policy accept;",
        "    jump no_endpoints", "  }",
        "  chain filter_output {", "    type filter hook output priority 0; policy accept;",
        "    jump no_endpoints", "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def apply(node_netns: str, ruleset: str) -> None:
    proc = subprocess.run(["ip", "netns", "exec", node_netns, "nft", "-f", "-"], input=ruleset,
                          text=True, capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise ClusterError(f"kube-proxy rules for {node_netns} were rejected by nft: "
                           f"{proc.stderr.strip().splitlines()[0] if proc.stderr else proc.returncode}")
