"""Virtual nodes (the kwok role): nodes whose pods are simulated, for scale tests on a small machine.

A virtual node is a Node object only: no namespace, no bridge, no processes. It looks like a kwok
node (label `type: kwok`, annotation `kwok.x-k8s.io/node: fake`, taint
`kwok.x-k8s.io/node=fake:NoSchedule`), so only pods that tolerate the taint (or name the node in
`spec.nodeName`) land there. `VirtualKubelet.sync()` gives such a pod, once, the status a real
kubelet would write for a healthy pod (Running, Ready, an IP from the node's /22, `pid: null`)
and removes a deleted one at once, as kwok does. Everything else (istiod's workloads, Service
endpoints, kube-proxy rules) treats these pods like real ones; traffic to their IPs goes nowhere.
"""
from __future__ import annotations

import ipaddress

from . import naming
from .controllers import HOSTNAME_LABEL, is_terminating
from .store import Store, now_iso

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_LABEL = ("type", "kwok")
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
# What a pod needs to be scheduled onto a virtual node (plus, usually, a nodeSelector on type).
KWOK_TOLERATION = {"key": KWOK_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}


def node_object(i: int) -> dict:
    name = naming.virtual_node_name(i)
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name,
                     "labels": {HOSTNAME_LABEL: name, KWOK_LABEL[0]: KWOK_LABEL[1],
                                "kubernetes.io/role": "agent"},
                     "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {"podCIDR": naming.virtual_pod_cidr(i), "taints": [dict(KWOK_TAINT)]},
        "status": {"addresses": [{"type": "InternalIP", "address": naming.virtual_node_ip(i)},
                                 {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True"}]}}


class VirtualKubelet:
    def __init__(self, store: Store, count: int):
        self.store = store
        self.nodes = [naming.virtual_node_name(i) for i in range(count)]
        self._free = {node: [str(ip) for ip in
                             reversed(list(ipaddress.ip_network(naming.virtual_pod_cidr(i)).hosts())[1:])]
                      for i, node in enumerate(self.nodes)}  # .1 stays the (notional) gateway
        self._assigned: dict[str, tuple[str, str]] = {}  # pod uid -> (node, ip)

    def sync(self) -> None:
        if not self.nodes:
            return
        seen = set()
        for pod in self.store.list("Pod"):
            node = (pod.get("spec") or {}).get("nodeName")
            if node not in self._free:
                continue
            meta = pod["metadata"]
            seen.add(meta["uid"])
            if is_terminating(pod):
                self.store.remove("Pod", meta["namespace"], meta["name"])
                seen.discard(meta["uid"])  # its address is free for the next pod right away
            elif meta["uid"] not in self._assigned:
                self._start(pod, node)
        for uid in [u for u in self._assigned if u not in seen]:
            node, ip = self._assigned.pop(uid)
            self._free[node].append(ip)

    def _start(self, pod: dict, node: str) -> None:
        meta = pod["metadata"]
        if not self._free[node]:
            def no_address(p: dict) -> None:
                p["status"] = {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False", "reason": "NoAddress",
                     "message": f"virtual node {node} has no free address left in "
                                f"{self._cidr(node)}; add virtual nodes"}]}
            self.store.update("Pod", meta["namespace"], meta["name"], no_address)
            return
        ip = self._free[node].pop()
        self._assigned[meta["uid"]] = (node, ip)
        started = now_iso()
        statuses = [{"name": c.get("name", "main"), "image": c.get("image"), "ready": True,
                     "started": True, "restartCount": 0,
                     "state": {"running": {"startedAt": started}}, "pid": None}
                    for c in (pod.get("spec") or {}).get("containers") or []]
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": started}
        self.store.set_status("Pod", meta["namespace"], meta["name"], {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "hostIP": naming.virtual_node_ip(self.nodes.index(node)), "startTime": started,
            "conditions": [{"type": "PodScheduled", "status": "True"}, ready,
                           {"type": "ContainersReady", "status": "True"}],
            "containerStatuses": statuses})

    def _cidr(self, node: str) -> str:
        return naming.virtual_pod_cidr(self.nodes.index(node))
