"""Services: endpoints from ready pods, then the kube-proxy rules and the DNS files from them.

`ServiceRouting.sync()` recomputes both and rewrites only what changed, so it is cheap to call
after every batch of store changes.
"""
from __future__ import annotations

import os

from . import dns, kubeproxy, naming
from .controllers import is_ready, is_terminating
from .store import Store


def _target_port(port: dict, pod: dict) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("name") == target:
                return int(cport["containerPort"])
    return None


def endpoints(store: Store, service: dict) -> list[dict]:
    """Ready, non-terminating pods with an IP that the service selects."""
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return []
    namespace = service["metadata"]["namespace"]
    return [p for p in store.list("Pod", namespace, selector)
            if is_ready(p) and not is_terminating(p) and (p.get("status") or {}).get("podIP")]


class ServiceRouting:
    def __init__(self, cluster: str, store: Store, node_count: int):
        self.cluster = cluster
        self.store = store
        self.node_count = node_count
        self._ruleset: str | None = None
        self._dns_targets: dict[str, tuple[str | None, tuple[str, str] | None]] = {}
        self._written: dict[str, str] = {}  # path -> content, so unchanged files are not reread

    # -- DNS ----------------------------------------------------------------------------------
    def register_netns(self, netns: str, namespace: str | None,
                       self_entry: tuple[str, str] | None) -> None:
        """Give `netns` its hosts/resolv.conf now (before any process starts in it) and on changes."""
        self._dns_targets[netns] = (namespace, self_entry)
        records = self._records()
        self._write_dns(netns, namespace, self_entry, records)

    def unregister_netns(self, netns: str) -> None:
        self._dns_targets.pop(netns, None)
        for name in ("hosts", "resolv.conf"):
            self._written.pop(os.path.join(naming.ETC_NETNS, netns, name), None)
            try:
                os.unlink(os.path.join(naming.ETC_NETNS, netns, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(os.path.join(naming.ETC_NETNS, netns))
        except OSError:
            pass

    def _records(self) -> list[tuple[str, str, list[str]]]:
        records = []
        for svc in self.store.list("Service"):
            meta, spec = svc["metadata"], svc.get("spec") or {}
            vip = spec.get("clusterIP")
            if vip and vip != "None":
                addresses = [vip]
            else:
                addresses = sorted({p["status"]["podIP"] for p in endpoints(self.store, svc)})
            if addresses:
                records.append((meta["name"], meta["namespace"], addresses))
        return records

    def _write_dns(self, netns: str, namespace: str | None, self_entry, records) -> None:
        base = os.path.join(naming.ETC_NETNS, netns)
        for path, content in ((os.path.join(base, "hosts"),
                               dns.render_hosts(records, namespace, self_entry)),
                              (os.path.join(base, "resolv.conf"), dns.render_resolv(namespace))):
            if self._written.get(path) != content:
                dns.write_in_place(path, content)
                self._written[path] = content

    # -- kube-proxy ---------------------------------------------------------------------------
    def _service_ports(self) -> list[kubeproxy.ServicePort]:
        ports = []
        for svc in self.store.list("Service"):
            spec = svc.get("spec") or {}
            vip = spec.get("clusterIP")
            if not vip or vip == "None":
                continue
            eps = endpoints(self.store, svc)
            for port in spec.get("ports") or []:
                protocol = str(port.get("protocol", "TCP")).lower()
                if protocol not in ("tcp", "udp"):
                    continue
                targets = []
                for pod in eps:
                    target = _target_port(port, pod)
                    if target:
                        targets.append((pod["status"]["podIP"], target))
                ports.append(kubeproxy.ServicePort(vip, int(port["port"]), protocol,
                                                   tuple(sorted(targets))))
        return ports

    def sync(self) -> None:
        ruleset = kubeproxy.render(self._service_ports())
        if ruleset != self._ruleset:
            for i in range(self.node_count):
                kubeproxy.apply(naming.node_netns(self.cluster, i), ruleset)
            self._ruleset = ruleset
        records = self._records()
        for netns, (namespace, self_entry) in list(self._dns_targets.items()):
            self._write_dns(netns, namespace, self_entry, records)

