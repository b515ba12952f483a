"""HBONE's mutual-TLS contexts (stdlib ssl) and the SPIFFE checks ssl cannot do by itself.

TLS 1.3 only, ALPN ``h2``, no SNI, no session resumption. Python's hostname checking knows nothing
of URI SANs, so chain verification is left to OpenSSL (CERT_REQUIRED against the mesh root) and the
identity checks run on the peer certificate right after the handshake.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterable

from .certificate import WorkloadCertificate, identities_of
from .spiffe import Identity

ALPN_H2 = "h2"
CLIENT = "client"
SERVER = "server"


class PeerVerificationError(ssl.SSLError):
    """The peer's certificate chained to the root but is not an identity we accept."""


def _base_context(purpose: int, cert: WorkloadCertificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET
    ctx.set_alpn_protocols([ALPN_H2])
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=cert.root_pem)
    # ssl only loads keys from files: keep them in a private directory just long enough to load.
    with tempfile.TemporaryDirectory(prefix="hbone-cert-") as tmp:
        chain_path, key_path = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        for path, text in ((chain_path, cert.chain_pem), (key_path, cert.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
        ctx.load_cert_chain(chain_path, key_path)
    return ctx


def client_context(cert: WorkloadCertificate) -> ssl.SSLContext:
    """Presents the SOURCE workload's certificate; the server's identity is checked afterwards."""
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, cert)


def server_context(cert: WorkloadCertificate) -> ssl.SSLContext:
    """Presents the DESTINATION workload's certificate and requires a client certificate."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, cert)
    ctx.num_tickets = 0  # TLS 1.3 resumption tickets, which OP_NO_TICKET alone does not stop
    return ctx


def context_for(cert: WorkloadCertificate, role: str) -> ssl.SSLContext:
    if role == CLIENT:
        return client_context(cert)
    if role == SERVER:
        return server_context(cert)
    raise ValueError(f"TLS role {role!r} must be {CLIENT!r} or {SERVER!r}")


def peer_identities(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[Identity]:
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise PeerVerificationError("peer presented no certificate")
    return identities_of(der)


def check_negotiated(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> None:
    version = ssl_object.version()
    if version != "TLSv1.3":
        raise PeerVerificationError(f"negotiated {version}, HBONE requires TLSv1.3")
    alpn = ssl_object.selected_alpn_protocol()
    if alpn not in (None, ALPN_H2):
        raise PeerVerificationError(f"negotiated ALPN {alpn!r}, HBONE requires 'h2'")


def verify_server_identity(ssl_object, expected: Iterable[Identity]) -> Identity:
    """Client side: the server's URI SAN must be one of the expected identities."""
    check_negotiated(ssl_object)
    expected = set(expected)
    presented = peer_identities(ssl_object)
    for identity in presented:
        if identity in expected:
            return identity
    raise PeerVerificationError(
        f"server identity {[str(i) for i in presented]} is not one of the expected {sorted(map(str, expected))}")


def verify_client_trust_domain(ssl_object, trust_domain: str) -> Identity:
    """Server side: the client's certificate must carry an identity of our trust domain."""
    check_negotiated(ssl_object)
    presented = peer_identities(ssl_object)
    for identity in presented:
        if identity.trust_domain == trust_domain:
            return identity
    raise PeerVerificationError(
        f"client identity {[str(i) for i in presented]} is not in trust domain {trust_domain!r}")
