"""Signing a workload certificate with the MESH's CA, as an auditor holding the CA's key would:
the one signing path of every target that can read that key (the reference target from its run
directory, the kubernetes target from Istio's CA Secret), with `cryptography` only.

Istio keeps its CA in one of two Secrets of istio-system (security/pkg/pki/ca/ca.go and the
`cacerts` plug-in): `cacerts` (a plugged-in CA: `ca-cert.pem` an intermediate, `cert-chain.pem`
the chain from it up to the root), else `istio-ca-secret` (the self-signed CA: `ca-cert.pem` is
the root, `cert-chain.pem` empty). A leaf is issued as istiod issues one: the SPIFFE URI as the
only, critical SAN, not a CA, for server and client auth, followed by the signing CA's chain.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

CA_CERT_KEY = "ca-cert.pem"
CA_KEY_KEY = "ca-key.pem"
CERT_CHAIN_KEY = "cert-chain.pem"
#: the Secrets of the mesh namespace to read, in Istio's order of precedence
CA_SECRETS = ("cacerts", "istio-ca-secret")


class MeshCAError(ValueError):
    """The CA material is missing or unusable; the message names what and where."""


@dataclass(frozen=True)
class MeshCA:
    cert_pem: bytes
    key_pem: bytes
    chain_pem: bytes = b""   # intermediates up to the root, as istiod appends them; may be empty

    @classmethod
    def from_secret_data(cls, data: dict | None, where: str) -> MeshCA:
        """From a Secret's `data` (base64 values, as the API serves them)."""
        data = data or {}
        values = {}
        for key in (CA_CERT_KEY, CA_KEY_KEY, CERT_CHAIN_KEY):
            try:
                values[key] = base64.b64decode(data.get(key) or "", validate=True)
            except (binascii.Error, ValueError):
                raise MeshCAError(f"{where}: {key} is not base64") from None
        for key in (CA_CERT_KEY, CA_KEY_KEY):
            if not values[key].strip():
                raise MeshCAError(f"{where} has no {key}: it holds no CA the suite can sign with")
        return cls(values[CA_CERT_KEY], values[CA_KEY_KEY], values[CERT_CHAIN_KEY])

    def sign(self, spiffe_id: str, public_key_pem: str, not_before, not_after) -> str:
        """The chain (PEM, leaf first) for `spiffe_id`, valid from `not_before` to `not_after`."""
        try:
            ca = x509.load_pem_x509_certificate(self.cert_pem)
            key = serialization.load_pem_private_key(self.key_pem, password=None)
        except ValueError as exc:
            raise MeshCAError(f"the mesh CA's {CA_CERT_KEY} or {CA_KEY_KEY} is not PEM ({exc})") from None
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.subject)
                .public_key(serialization.load_pem_public_key(public_key_pem.encode()))
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                               critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(key, hashes.SHA256()))
        chain = self.chain_pem.decode().strip()
        return leaf.public_bytes(serialization.Encoding.PEM).decode() + (chain + "\n" if chain else "")
