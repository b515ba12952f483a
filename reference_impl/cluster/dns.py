"""Cluster DNS through hosts files: `/etc/netns/<netns>/{hosts,resolv.conf}`.

`ip netns exec` bind-mounts these over `/etc/hosts` and `/etc/resolv.conf` for every process it
starts, so an unmodified `curl http://httpbin-ambient.ambient-apps:8000/` resolves inside a pod.
glibc's `files` source matches whole names only (the resolv.conf search list applies to DNS
queries, not to hosts files), so every service is listed under each name a pod may use:
`name.ns.svc.cluster.local name.ns.svc name.ns`, plus the bare `name` for the pod's own namespace.
Headless services list one line per ready pod IP (`multi on` in /etc/host.conf returns them all).

Files are rewritten in place (truncate + write): a bind mount pins the inode, so replacing the
file would leave running pods looking at the old one.
"""
from __future__ import annotations

import os

DOMAIN = "cluster.local"


def service_names(name: str, namespace: str, own_namespace: str | None) -> list[str]:
    names = [f"{name}.{namespace}.svc.{DOMAIN}", f"{name}.{namespace}.svc", f"{name}.{namespace}"]
    if namespace == own_namespace:
        names.append(name)
    return names


def render_hosts(records: list[tuple[str, str, list[str]]], own_namespace: str | None,
                 self_entry: tuple[str, str] | None = None) -> str:
    """records: (service name, namespace, addresses). self_entry: (pod IP, pod name)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if self_entry:
        lines.append(f"{self_entry[0]}\t{self_entry[1]}")
    for name, namespace, addresses in sorted(records):
        names = " ".join(service_names(name, namespace, own_namespace))
        lines += [f"{address}\t{names}" for address in addresses]
    return "\n".join(lines) + "\n"


def render_resolv(namespace: str | None) -> str:
    search = [f"svc.{DOMAIN}", DOMAIN]
    if namespace:
        search.insert(0, f"{namespace}.svc.{DOMAIN}")
    # No DNS server: names outside the cluster fail at once instead of waiting on a timeout.
    return f"search {' '.join(search)}\nnameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n"


def write_in_place(path: str, content: str) -> bool:
    """Write `content` keeping the file's inode; returns False when it was already current."""
    try:
        with open(path, "r+") as f:
            if f.read() == content:
                return False
            f.seek(0)
            f.truncate()
            f.write(content)
            return True
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
        return True
