"""Client-certificate authentication as kube-apiserver does it: the TLS handshake takes any
certificate the client offers, and the request is then authenticated (or answered 401 with a
Status) by checking that certificate against the cluster's API CA.

Python's `ssl` module has no verify callback: with `CERT_OPTIONAL` and a CA loaded, OpenSSL
aborts the handshake on a certificate of another CA, so the client sees a TLS alert instead of
Kubernetes' 401. `accept_any_client_certificate` installs, through ctypes on the context's own
`SSL_CTX`, a callback that lets the handshake finish whatever the chain; `authenticate` is then
the only judge (issuer signature, validity, client-auth usage), and a request whose certificate
fails it is never served.
"""
from __future__ import annotations

import ctypes
import datetime
import ssl

import _ssl
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_SSL_VERIFY_PEER = 0x01
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
# The handshake outcome is decided by `authenticate`, not here.
_accept = _VERIFY_CALLBACK(lambda preverify_ok, store_ctx: 1)
_libssl = ctypes.CDLL(_ssl.__file__)  # dlsym through _ssl finds the libssl it is linked with
_libssl.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
_libssl.SSL_CTX_set_verify.restype = None
_libssl.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
_libssl.SSL_CTX_get_verify_mode.restype = ctypes.c_int


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    # CPython's PySSLContext starts with PyObject_HEAD followed by `SSL_CTX *ctx`.
    return ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value


def accept_any_client_certificate(ctx: ssl.SSLContext) -> None:
    """Ask for a client certificate (optional) and let the handshake finish whatever it is."""
    ctx.verify_mode = ssl.CERT_OPTIONAL
    pointer = _ssl_ctx_pointer(ctx)
    if not pointer or _libssl.SSL_CTX_get_verify_mode(pointer) != _SSL_VERIFY_PEER:
        raise RuntimeError("cannot reach OpenSSL's SSL_CTX of this Python's ssl context; the "
                           "Kubernetes API cannot answer a wrong client certificate with 401")
    _libssl.SSL_CTX_set_verify(pointer, _SSL_VERIFY_PEER, _accept)


class ClientCA:
    """The API CA as a judge of client certificates."""

    def __init__(self, ca_pem: bytes):
        self.ca = x509.load_pem_x509_certificate(ca_pem)

    def authenticate(self, der: bytes | None) -> tuple[str, list[str]] | None:
        """(user, groups) of a certificate the CA issued for client auth, valid now; else None."""
        if not der:
            return None
        try:
            cert = x509.load_der_x509_certificate(der)
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            return None
        now = datetime.datetime.now(datetime.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return None
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            return None
        user = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        return (user[0] if user else ""), groups
