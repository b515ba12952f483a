"""A workload's key + certificate chain, and reading SPIFFE ids out of certificates."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from .spiffe import Identity, IdentityError


class CertificateError(ValueError):
    """A certificate, key or CSR is malformed or does not fit what was asked."""


def load_pem_certificates(pem: str | bytes, what: str = "certificate PEM") -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"{what} holds no readable certificate ({exc}); pass PEM text") from None
    return certs


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)


def identities_of(cert: x509.Certificate | bytes) -> list[Identity]:
    """SPIFFE identities in a certificate's URI SANs (DER bytes or a parsed certificate)."""
    if isinstance(cert, (bytes, bytearray)):
        cert = x509.load_der_x509_certificate(bytes(cert))
    found = []
    for uri in uri_sans(cert):
        try:
            found.append(Identity.parse(uri))
        except IdentityError:
            continue
    return found


def _epoch(moment: float | datetime) -> float:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return float(moment)


@dataclass(frozen=True)
class WorkloadCertificate:
    """One identity's private key, its chain (leaf first) and the mesh root, all PEM."""

    identity: Identity
    key_pem: str
    chain_pem: str
    root_pem: str
    not_before: float = field(compare=False)
    not_after: float = field(compare=False)
    # When this process got it: renewal is timed from here (Istio's SecretItem.CreatedTime), not
    # from not_before, which CAs backdate for clock skew (by two minutes: ca.CLOCK_SKEW_GRACE).
    received_at: float = field(default=0.0, compare=False)

    @classmethod
    def from_pem(cls, identity: Identity, key_pem: str, chain: str | list[str], root_pem: str) -> WorkloadCertificate:
        chain_pem = "".join(chain) if isinstance(chain, (list, tuple)) else chain
        leaf = load_pem_certificates(chain_pem, f"certificate chain for {identity}")[0]
        if identity not in identities_of(leaf):
            raise CertificateError(
                f"certificate chain for {identity} names {uri_sans(leaf)} instead; the signer issued the wrong identity")
        load_pem_certificates(root_pem, f"root certificate for {identity}")
        return cls(identity, key_pem, chain_pem, root_pem,
                   leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp(), time.time())

    @property
    def refresh_at(self) -> float:
        """Half of the lifetime left when it was received: the moment a new certificate is asked for."""
        start = min(max(self.received_at, self.not_before), self.not_after)
        return start + (self.not_after - start) / 2

    def needs_refresh(self, now: float | datetime | None = None) -> bool:
        return (time.time() if now is None else _epoch(now)) >= self.refresh_at

    def is_expired(self, now: float | datetime | None = None) -> bool:
        return (time.time() if now is None else _epoch(now)) >= self.not_after
