"""HBONE CONNECT request headers: ``:authority``, ``baggage``, ``forwarded`` and ``traceparent``."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Mapping

BAGGAGE = "baggage"
FORWARDED = "forwarded"
TRACEPARENT = "traceparent"

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class BadAuthority(ValueError):
    """``:authority`` is not ``ip:port``."""


def format_addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_authority(authority: str | None) -> tuple[str, int]:
    """``10.0.0.1:80`` or ``[fd00::1]:80`` → (ip, port); anything else raises BadAuthority."""
    if not authority:
        raise BadAuthority("CONNECT has no :authority")
    host, sep, port_text = authority.rpartition(":")
    if not sep or not port_text.isdigit():
        raise BadAuthority(f":authority {authority!r} is not ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise BadAuthority(f":authority {authority!r} does not start with an IP address") from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise BadAuthority(f":authority {authority!r} has port {port} outside 1-65535")
    return str(ip), port


def format_baggage(values: Mapping[str, str]) -> str:
    """``k8s.namespace.name=…,k8s.deployment.name=…,service.name=…,service.version=…`` (empty values left out)."""
    return ",".join(f"{key}={value}" for key, value in values.items() if value)


def workload_baggage(namespace: str, workload: str, service: str = "", version: str = "",
                     workload_kind: str = "deployment") -> str:
    return format_baggage({"k8s.namespace.name": namespace, f"k8s.{workload_kind}.name": workload,
                           "service.name": service or workload, "service.version": version or "latest"})


def parse_baggage(header: str | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for member in (header or "").split(","):
        key, sep, value = member.strip().partition("=")
        if sep and key:
            result[key.strip()] = value.split(";", 1)[0].strip()
    return result


def format_forwarded(client_ip: str, client_port: int, host: str | None = None) -> str:
    text = f'for="{format_addr(client_ip, client_port)}"'
    return f"{text};host={host}" if host else text


def parse_forwarded(header: str | None) -> dict[str, str]:
    """The first element of ``Forwarded``: {'for': 'ip:port', 'host': …} with quotes removed."""
    result: dict[str, str] = {}
    first = (header or "").split(",", 1)[0]
    for pair in first.split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep:
            result[key.strip().lower()] = value.strip().strip('"')
    return result


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def parse_traceparent(header: str | None) -> tuple[str, str, str] | None:
    match = _TRACEPARENT.match(header or "")
    return match.groups() if match else None
