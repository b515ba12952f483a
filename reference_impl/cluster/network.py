"""The cluster's network: a fabric namespace, one namespace per node and one per pod.

Layout (docs/INTERNALS.md, "Addresses"):
- fabric `ac-<c>-fabric`: bridge `br0`; node i plugs in with veth `n<i>` <-> node's `eth0`
  (`172.18.0.(10+i)/24`); nodes route other nodes' pod CIDRs via their fabric address.
- node `ac-<c>-node-<i>`: bridge `br0` = `10.244.i.1/24`, ip_forward on.
- pod `ac-<c>-p<n>`: `eth0` with a /32 address and a default route via the node's bridge.

Pods get /32 addresses on purpose: every packet, even to a pod on the same node, then goes
through the node's IP stack rather than being switched by the bridge. That is what lets the
node's nftables DNAT (the kube-proxy role) see both directions of a connection to a ClusterIP
whose endpoint sits on the same node, without relying on `br_netfilter`.

The veth of a pod is created inside the node namespace (`ip -n NODE link add ... netns POD`), so
nothing ever touches the machine's own namespace.

Every bridge gets a fixed MAC address when it is created. A bridge without one takes the lowest
MAC of its ports and changes it whenever that port comes or goes, i.e. with pods starting and
stopping on the node; a pod that re-learned the gateway's MAC ignores the next change for a second
(the ARP cache's locktime) and then sends to a MAC that is gone, every packet dropped until its
entry expires and is probed again (13 s measured from a stale entry; a fresh one first waits out
its 15-45 s reachable time): a pooled HBONE connection that stalls without any error.
"""
from __future__ import annotations

import subprocess

from reference_impl import netns as nsutil

from . import naming
from .errors import ClusterError

NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    # The node routes pod-to-pod traffic back out of the bridge it came in on; redirects
    # would teach pods to bypass the node (and kube-proxy) for same-node peers.
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
}
BRIDGE_NF_SYSCTLS = {"net.bridge.bridge-nf-call-iptables": "0",
                     "net.bridge.bridge-nf-call-ip6tables": "0"}


#: the fabric bridge has no address of its own; its MAC is named after the subnet's first one
FABRIC_BRIDGE_IP = "172.18.0.1"
SERVICE_CIDR = f"{naming.SERVICE_CIDR_PREFIX}0.0/16"


def bridge_mac(ip: str) -> str:
    """The fixed MAC of the bridge whose (or whose subnet's) IPv4 address is `ip`: locally
    administered, unique within the cluster, stable while ports come and go."""
    return "02:00:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def _ip(args: list[str], batch: str | None = None) -> None:
    argv = ["ip", *args] + (["-batch", "-"] if batch is not None else [])
    proc = subprocess.run(argv, input=batch, text=True, capture_output=True, timeout=30)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ClusterError(f"network set-up failed: `{' '.join(argv)}`: "
                           f"{detail[-1] if detail else 'exit ' + str(proc.returncode)}")


def _netns_add(names: list[str]) -> None:
    _ip([], "".join(f"netns add {n}\n" for n in names))


def _node_sysctls(netns: str) -> None:
    nsutil.write_sysctls(netns, NODE_SYSCTLS)
    try:  # only present when br_netfilter is loaded; pods are routed, so it must stay out
        nsutil.write_sysctls(netns, BRIDGE_NF_SYSCTLS)
    except OSError:
        pass


def create_nodes(cluster: str, nodes: int) -> None:
    """Create the fabric and `nodes` node namespaces, fully wired and routed."""
    fabric = naming.fabric_netns(cluster)
    node_ns = [naming.node_netns(cluster, i) for i in range(nodes)]
    _netns_add([fabric, *node_ns])
    fabric_batch = ["link set lo up", f"link add br0 address {bridge_mac(FABRIC_BRIDGE_IP)} type bridge",
                    "link set br0 up"]
    for i, ns in enumerate(node_ns):
        fabric_batch += [f"link add n{i} type veth peer name eth0 netns {ns}",
                         f"link set n{i} master br0", f"link set n{i} up"]
    _ip(["-n", fabric], "\n".join(fabric_batch) + "\n")
    for i, ns in enumerate(node_ns):
        _node_sysctls(ns)
        batch = ["link set lo up", f"link add br0 address {bridge_mac(naming.node_gateway(i))} type bridge",
                 "link set br0 up",
                 f"addr add {naming.node_gateway(i)}/24 dev br0",
                 f"addr add {naming.node_ip(i)}/24 dev eth0", "link set eth0 up"]
        batch += [f"route add {naming.pod_cidr(j)} via {naming.node_ip(j)} dev eth0"
                  for j in range(nodes) if j != i]
        # hostNetwork pods (istiod fetching a jwksUri, say) reach ClusterIPs as on a real node: the
        # route only gets the packet to the OUTPUT hook, where the kube-proxy DNAT rewrites it
        batch.append(f"route add {SERVICE_CIDR} dev br0")
        _ip(["-n", ns], "\n".join(batch) + "\n")


def add_pod(cluster: str, node_index: int, pod_ns: str, veth: str, ip: str) -> None:
    """Create the pod's namespace and wire it to its node's bridge with address `ip`."""
    node_ns = naming.node_netns(cluster, node_index)
    gateway = naming.node_gateway(node_index)
    _netns_add([pod_ns])
    _ip(["-n", node_ns], f"link add {veth} type veth peer name eth0 netns {pod_ns}\n"
                         f"link set {veth} master br0\nlink set {veth} up\n")
    _ip(["-n", pod_ns], f"link set lo up\naddr add {ip}/32 dev eth0\nlink set eth0 up\n"
                        f"route add {gateway} dev eth0 scope link\n"
                        f"route add default via {gateway} dev eth0\n")


def remove_netns(name: str) -> None:
    """Delete a namespace (its veth pair goes with it). Missing namespaces are fine."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
