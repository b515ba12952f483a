"""The mesh certificate authority (istiod's CA role) and workload CSRs."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certificate import CertificateError, load_pem_certificates
from .spiffe import DEFAULT_TRUST_DOMAIN, Identity

ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"
DEFAULT_WORKLOAD_TTL = 24 * 3600
ROOT_TTL = timedelta(days=3650)
# Istio's ClockSkewGracePeriod (security/pkg/pki/util/generate_cert.go): a workload certificate is
# valid from two minutes before it was issued, so a verifier whose clock is a little behind the
# CA's (or a clock stepped back by NTP) does not refuse it as "not yet valid".
CLOCK_SKEW_GRACE = timedelta(minutes=2)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _now() -> datetime:
    # X.509 times have whole seconds; truncating keeps not_before <= the real issue time.
    return datetime.now(timezone.utc).replace(microsecond=0)


def make_csr(identity: Identity) -> tuple[str, str]:
    """A fresh ECDSA P-256 key and a CSR whose only SAN is the identity's SPIFFE URI."""
    key = _new_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                          critical=True)
           .sign(key, hashes.SHA256()))
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM).decode()


class CertificateAuthority:
    """A self-signed ECDSA P-256 root that issues SPIFFE workload certificates."""

    def __init__(self, root_cert: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
                 trust_domain: str = DEFAULT_TRUST_DOMAIN, trust_domain_aliases: tuple[str, ...] = ()):
        self.root_cert = root_cert
        self.root_key = root_key
        self.trust_domain = trust_domain
        self.trust_domains = frozenset((trust_domain, *trust_domain_aliases))
        self.root_pem = root_cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def create(cls, trust_domain: str = DEFAULT_TRUST_DOMAIN, **kwargs) -> CertificateAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + ROOT_TTL)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key, trust_domain, **kwargs)

    @classmethod
    def load(cls, directory: str | os.PathLike, trust_domain: str = DEFAULT_TRUST_DOMAIN, **kwargs) -> CertificateAuthority:
        directory = Path(directory)
        cert_path, key_path = directory / ROOT_CERT_FILE, directory / ROOT_KEY_FILE
        for path in (cert_path, key_path):
            if not path.is_file():
                raise CertificateError(f"CA directory {directory} has no {path.name}; create the CA with "
                                       f"CertificateAuthority.create() and save() it there first")
        cert = load_pem_certificates(cert_path.read_bytes(), str(cert_path))[0]
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"{key_path} is not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CertificateError(f"{key_path} is not the ECDSA key of {cert_path}; replace both files together")
        return cls(cert, key, trust_domain, **kwargs)

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike, trust_domain: str = DEFAULT_TRUST_DOMAIN, **kwargs):
        directory = Path(directory)
        if (directory / ROOT_CERT_FILE).exists() or (directory / ROOT_KEY_FILE).exists():
            return cls.load(directory, trust_domain, **kwargs)
        ca = cls.create(trust_domain, **kwargs)
        ca.save(directory)
        return ca

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ROOT_CERT_FILE).write_text(self.root_pem)
        key_path = directory / ROOT_KEY_FILE
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(_key_pem(self.root_key))

    def sign_csr(self, csr_pem: str | bytes, identity: Identity, ttl_seconds: int = DEFAULT_WORKLOAD_TTL) -> str:
        """Issue a leaf for ``identity`` from a CSR that asks for exactly that identity; returns chain PEM."""
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError as exc:
            raise CertificateError(f"CSR for {identity} is not a PEM certificate request ({exc})") from None
        if not csr.is_signature_valid:
            raise CertificateError(f"CSR for {identity} has an invalid signature; make it with make_csr()")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise CertificateError(f"CSR for {identity} must carry an ECDSA P-256 key")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise CertificateError(f"CSR for {identity} has no subjectAltName; it must name {identity.uri}") from None
        names = list(san)
        if names != [x509.UniformResourceIdentifier(identity.uri)]:
            raise CertificateError(
                f"CSR SAN {[getattr(n, 'value', n) for n in names]} is not exactly the requested identity {identity.uri}")
        if identity.trust_domain not in self.trust_domains:
            raise CertificateError(
                f"identity {identity} is outside this CA's trust domain {self.trust_domain!r}")
        if not isinstance(ttl_seconds, int) or ttl_seconds < 1:
            raise CertificateError(f"certificate TTL {ttl_seconds!r} must be a whole number of seconds >= 1")
        now = _now()
        not_after = min(now + timedelta(seconds=ttl_seconds), self.root_cert.not_valid_after_utc)
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.root_cert.subject)
                .public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW_GRACE).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                             content_commitment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                               critical=True)
                .sign(self.root_key, hashes.SHA256()))
        return leaf.public_bytes(serialization.Encoding.PEM).decode()
