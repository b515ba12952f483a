"""Workload identity: SPIFFE ids, the mesh CA, workload certificates and HBONE's TLS contexts.

Imports nothing else from reference_impl.
"""

from .ca import DEFAULT_WORKLOAD_TTL, ROOT_CERT_FILE, ROOT_KEY_FILE, CertificateAuthority, make_csr
from .certificate import CertificateError, WorkloadCertificate, identities_of
from .manager import CertificateManager, CertificateUnavailable
from .spiffe import DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, Identity, IdentityError
from .tls import (ALPN_H2, CLIENT, SERVER, PeerVerificationError, client_context, context_for,
                  peer_identities, server_context, verify_client_trust_domain, verify_server_identity)

__all__ = [
    "ALPN_H2", "CLIENT", "SERVER", "DEFAULT_SERVICE_ACCOUNT", "DEFAULT_TRUST_DOMAIN", "DEFAULT_WORKLOAD_TTL",
    "ROOT_CERT_FILE", "ROOT_KEY_FILE", "CertificateAuthority", "CertificateError", "CertificateManager",
    "CertificateUnavailable", "Identity", "IdentityError", "PeerVerificationError", "WorkloadCertificate",
    "client_context", "context_for", "identities_of", "make_csr", "peer_identities", "server_context",
    "verify_client_trust_domain", "verify_server_identity",
]
