"""A pod leaving a node must not cut the node's other pods off (issue 10 item 8).

A Linux bridge without an address of its own takes the lowest MAC of its ports and changes it
whenever that port comes or goes. A pod that had just re-learned the gateway's MAC ignores the next
change for a second (the ARP cache's locktime) and sends to a MAC that no longer exists: every
packet it sends is dropped until its cache entry is probed again, seconds to tens of seconds later.
In the conformance suite that was a pooled HBONE connection whose CONNECTs reached the server ~27 s
late, with no error anywhere. The node's bridge must keep one MAC for its whole life.
"""
from __future__ import annotations

import socket
import subprocess
import time

import pytest

from reference_impl.cluster import naming, network
from reference_impl.netns import socket_in

#: lower than any random veth MAC, so a bridge that follows its ports takes it
LOWEST_MAC = "02:00:00:00:00:01"
STAYING_POD_MAC = "02:00:00:00:00:50"
PORT = 9999


def _mac(netns: str, dev: str) -> str:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show", dev], capture_output=True,
                         text=True, check=True).stdout
    return out.split("link/ether ", 1)[1].split()[0]


def _set_mac(netns: str, dev: str, mac: str) -> None:
    subprocess.run(["ip", "-n", netns, "link", "set", dev, "address", mac], check=True, timeout=10)


@pytest.fixture
def one_node(_cluster_host, cluster_name):
    name = cluster_name("brmac")
    created = [naming.fabric_netns(name), naming.node_netns(name, 0)]
    network.create_nodes(name, 1)
    pods: list[str] = []
    try:
        yield name, pods
    finally:
        for ns in pods + created:
            network.remove_netns(ns)


def test_a_pod_leaving_the_node_keeps_the_bridge_mac_and_the_other_pods_connected(one_node):
    name, pods = one_node
    node = naming.node_netns(name, 0)
    staying, leaving = naming.pod_netns(name, 0), naming.pod_netns(name, 1)
    pods += [staying, leaving]
    network.add_pod(name, 0, staying, "veth-stay", "10.244.0.2")
    _set_mac(node, "veth-stay", STAYING_POD_MAC)
    bridge_mac = _mac(node, "br0")

    listener = socket_in(node)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((naming.node_gateway(0), PORT))
    listener.listen(1)
    client = socket_in(staying)
    client.settimeout(5)
    client.connect((naming.node_gateway(0), PORT))
    server, _ = listener.accept()
    server.settimeout(2)

    def delivered() -> bool:
        client.send(b"ping")
        try:
            return server.recv(16) == b"ping"
        except socket.timeout:
            return False

    try:
        assert delivered(), "control: the staying pod reaches its gateway"
        network.add_pod(name, 0, leaving, "veth-leave", "10.244.0.3")
        _set_mac(node, "veth-leave", LOWEST_MAC)
        # The node answers, so the staying pod (re)learns the gateway's MAC as it is now ...
        assert delivered(), "the staying pod reaches its gateway after another pod joined"
        seen = [_mac(node, "br0")]
        # ... and the leaving pod goes within the second that learning locks the ARP entry.
        network.remove_netns(leaving)
        seen.append(_mac(node, "br0"))
        started = time.monotonic()
        assert delivered(), (f"the staying pod's packets were dropped for {time.monotonic() - started:.1f}s "
                             f"after another pod left the node; the bridge's MAC went {bridge_mac} -> "
                             f"{' -> '.join(seen)} and the pod's ARP cache kept one that is gone")
        assert seen == [bridge_mac] * 2, f"the bridge's MAC followed its ports: {bridge_mac} -> {seen}"
    finally:
        for s in (client, server, listener):
            s.close()
