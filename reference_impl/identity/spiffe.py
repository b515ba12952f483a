"""SPIFFE workload identities: ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_SERVICE_ACCOUNT = "default"

# Kubernetes names (DNS-1123 labels/subdomains); trust domains are DNS-like names.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


class IdentityError(ValueError):
    """A SPIFFE id or one of its parts is malformed."""


@dataclass(frozen=True, order=True)
class Identity:
    trust_domain: str
    namespace: str
    service_account: str = DEFAULT_SERVICE_ACCOUNT

    def __post_init__(self) -> None:
        if not self.service_account:
            object.__setattr__(self, "service_account", DEFAULT_SERVICE_ACCOUNT)
        if not _TRUST_DOMAIN.match(self.trust_domain or ""):
            raise IdentityError(
                f"trust domain {self.trust_domain!r} is not a lower-case DNS-like name; "
                f"use e.g. {DEFAULT_TRUST_DOMAIN!r}")
        for field, value in (("namespace", self.namespace), ("service account", self.service_account)):
            if not _NAME.match(value or ""):
                raise IdentityError(
                    f"{field} {value!r} is not a valid Kubernetes name (lower-case letters, digits, '-', '.')")

    @classmethod
    def for_workload(cls, namespace: str, service_account: str | None = None,
                     trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Identity:
        return cls(trust_domain, namespace, service_account or DEFAULT_SERVICE_ACCOUNT)

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """Parse ``spiffe://td/ns/NS/sa/SA``; raises IdentityError naming what is wrong."""
        if not isinstance(uri, str) or not uri.startswith("spiffe://"):
            raise IdentityError(f"SPIFFE id {uri!r} must start with 'spiffe://'")
        trust_domain, _, path = uri[len("spiffe://"):].partition("/")
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise IdentityError(
                f"SPIFFE id {uri!r} must have the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>")
        return cls(trust_domain, parts[1], parts[3])

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy ``principals`` compare against (no ``spiffe://``)."""
        return self.uri[len("spiffe://"):]

    def __str__(self) -> str:
        return self.uri
