"""Istio's value matching: string patterns, SPIFFE principals, IP blocks and ports.

String patterns follow Istio's `stringToMatch` (is:pilot/pkg/serviceregistry/ambient/authorization.go):
`*` is presence (any non-empty value), `*x` a suffix, `x*` a prefix, anything else exact.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable

from ..api.path_templates import PathTemplateError, is_path_template, path_template_regex  # noqa: F401
from .errors import PolicyError

SPIFFE_PREFIX = "spiffe://"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class StringMatch:
    """One Istio string pattern; `kind` is exact | prefix | suffix | presence."""

    kind: str
    value: str = ""

    @classmethod
    def parse(cls, pattern: str) -> "StringMatch":
        if pattern == "*":
            return cls("presence")
        if pattern.startswith("*"):
            return cls("suffix", pattern[1:])
        if pattern.endswith("*"):
            return cls("prefix", pattern[:-1])
        return cls("exact", pattern)

    def matches(self, candidate: str | None, ignore_case: bool = False) -> bool:
        # A missing value never matches, not even presence: this is how plaintext
        # (no identity) fails positive principals/namespaces and passes their not* forms.
        if candidate is None:
            return False
        value = self.value
        if ignore_case:
            candidate, value = candidate.lower(), value.lower()
        if self.kind == "presence":
            return candidate != ""
        if self.kind == "prefix":
            return candidate.startswith(value)
        if self.kind == "suffix":
            return candidate.endswith(value)
        return candidate == value

    def to_dict(self) -> dict[str, Any]:
        return {"presence": {}} if self.kind == "presence" else {self.kind: self.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StringMatch":
        if not isinstance(data, dict) or len(data) != 1:
            raise PolicyError(f"string match {data!r} must be one of "
                              "{'exact': s}, {'prefix': s}, {'suffix': s}, {'presence': {}}")
        ((kind, value),) = data.items()
        if kind == "presence":
            return cls("presence")
        if kind not in ("exact", "prefix", "suffix") or not isinstance(value, str):
            raise PolicyError(f"string match {data!r} has an unknown kind or a non-string value")
        return cls(kind, value)

    def __str__(self) -> str:
        return {"presence": "*", "prefix": f"{self.value}*", "suffix": f"*{self.value}"}.get(
            self.kind, self.value)


def any_matches(patterns: Iterable[StringMatch], candidate: str | None,
                ignore_case: bool = False) -> bool:
    return any(p.matches(candidate, ignore_case) for p in patterns)


def positive_negative(positive: Iterable[Any], negative: Iterable[Any], predicate) -> bool:
    """Istio's field rule: some positive value matches (if any are given) and no negative one does."""
    positive, negative = list(positive), list(negative)
    if positive and not any(predicate(v) for v in positive):
        return False
    return not any(predicate(v) for v in negative)


# --- SPIFFE identities -------------------------------------------------------------------------

def strip_spiffe(principal: str | None) -> str | None:
    """`spiffe://td/ns/x/sa/y` → `td/ns/x/sa/y`; the bare form is returned as is; None stays None.

    Istio compares principals without the `spiffe://` scheme (ztunnel's `matches_principal`).
    Policy values are taken literally, as Istio does: a policy principal written with
    `spiffe://` never matches.
    """
    if principal is None or principal == "":
        return None
    return principal[len(SPIFFE_PREFIX):] if principal.startswith(SPIFFE_PREFIX) else principal


@dataclass(frozen=True)
class Identity:
    trust_domain: str
    namespace: str
    service_account: str


def parse_identity(principal: str | None) -> Identity | None:
    """Parse `[spiffe://]td/ns/<ns>/sa/<sa>`; anything else (or None) is no identity."""
    bare = strip_spiffe(principal)
    if bare is None:
        return None
    parts = bare.split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return Identity(parts[0], parts[2], parts[4])


# --- IPs and ports ----------------------------------------------------------------------------

def parse_cidr(value: Any, field: str) -> IPNetwork:
    """`10.0.0.1` → /32, `10.0.0.0/8` → that block (host bits ignored, as Go's netip does)."""
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise PolicyError(f"{field}: {value!r} is not an IP address or CIDR block; "
                          "write it like 10.0.0.1 or 10.0.0.0/8") from None


def parse_ip(value: Any) -> IPAddress | None:
    if value is None or value == "":
        return None
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    return ipaddress.ip_address(str(value))


def ip_in(network: IPNetwork, ip: IPAddress | None) -> bool:
    return ip is not None and ip.version == network.version and ip in network


def parse_port(value: Any, field: str) -> int:
    """Ports are written as strings in AuthorizationPolicy (`"8000"`); ints are accepted too."""
    if isinstance(value, bool):
        value = None
    try:
        port = int(str(value).strip())
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:
        raise PolicyError(f"{field}: {value!r} is not a port number (0-65535)")
    return port


class PeerSource:
    """The source-peer view both L4 connections and L7 requests offer to rule matching.

    Expects `source_principal` (None for plaintext) and `source_namespace` attributes."""

    @property
    def identity(self) -> Identity | None:
        return parse_identity(self.source_principal)

    @property
    def principal(self) -> str | None:
        """The peer principal without `spiffe://`; None for plaintext."""
        return strip_spiffe(self.source_principal)

    @property
    def namespace(self) -> str | None:
        # Taken from the peer's identity, as ztunnel does: plaintext has no namespace.
        if self.principal is None:
            return None
        ident = self.identity
        return ident.namespace if ident else self.source_namespace
