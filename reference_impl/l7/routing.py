"""Where a tunnelled request goes: the CONNECT authority names a service VIP or a workload IP.

Service-addressed traffic is balanced round-robin over the service's healthy endpoints (Envoy's
default is round-robin too); workload-addressed traffic goes to that workload on the same port.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .config import L7Config, Service, Workload


@dataclass(frozen=True)
class Destination:
    """What a CONNECT asked for, resolved against the config at CONNECT time."""

    ip: str
    port: int
    service: Service | None = None
    workload: Workload | None = None

    def __str__(self) -> str:
        what = self.service.hostname if self.service else (self.workload.name if self.workload else "?")
        return f"{what}({self.ip}:{self.port})"


@dataclass(frozen=True)
class Upstream:
    """One chosen endpoint: the workload and the port its app listens on."""

    workload: Workload
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return self.workload.ip, self.port


def resolve(config: L7Config, authority: tuple[str, int]) -> Destination | None:
    """The service or workload this proxy fronts at ``authority``, or None if it fronts neither."""
    ip, port = authority
    service = config.services_by_vip.get(ip)
    if service is not None:
        return Destination(ip, port, service=service) if port in service.ports else None
    workload = config.fronted_workloads_by_ip.get(ip)
    if workload is not None:
        return Destination(ip, port, workload=workload)
    return None


class Router:
    """Keeps the round-robin position of each service across requests and config versions."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count] = {}

    def pick(self, config: L7Config, destination: Destination) -> Upstream | None:
        if destination.workload is not None:
            workload = config.workloads.get(destination.workload.uid, destination.workload)
            return Upstream(workload, destination.port)
        service = destination.service
        candidates = _candidates(config, service, destination.port)
        if not candidates:
            return None
        counter = self._counters.setdefault(service.key, itertools.count())
        return candidates[next(counter) % len(candidates)]


def _candidates(config: L7Config, service: Service, port: int) -> list[Upstream]:
    """The healthy endpoints of `service` (as resolved at CONNECT time) in `config`'s workloads:
    found once per config version and service, not per request (L7Config._lookups)."""
    key = ("endpoints", id(service), port, len(config.workloads))
    hit = config._lookups.get(key)
    if hit is not None and hit[0] is service:
        return hit[1]
    candidates = []
    for endpoint in service.endpoints:
        workload = config.workloads.get(endpoint.workload_uid)
        target = endpoint.ports.get(port) or service.ports.get(port)
        if workload is not None and endpoint.healthy and workload.healthy and target:
            candidates.append(Upstream(workload, target))
    config._lookups[key] = (service, candidates)
    return candidates
