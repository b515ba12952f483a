"""The API server's own PKI: a cluster CA, the server's certificate and the admin's client
certificate, and the kubeconfig that carries them (mode 0600, as kind and kubeadm write theirs).

This CA is not the mesh's (istiod's SPIFFE CA in `ca/`): it only authenticates API clients, as
kube-apiserver's `--client-ca-file` does. It lives in `<run dir>/kubeapi/` and is made anew for
every cluster start.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .clientauth import ClientCA, accept_any_client_certificate

ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "system:masters"


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


class ApiPKI:
    """CA + server + admin certificates under `directory` (PEM files, 0600)."""

    def __init__(self, directory: str, cluster: str):
        self.directory = directory
        self.cluster = cluster
        self.ca_cert_path = os.path.join(directory, "ca.crt")
        self.server_cert_path = os.path.join(directory, "apiserver.crt")
        self.server_key_path = os.path.join(directory, "apiserver.key")
        self.admin_cert_path = os.path.join(directory, "admin.crt")
        self.admin_key_path = os.path.join(directory, "admin.key")

    def create(self, host: str) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name(f"ambient-conformance {self.cluster} API CA")
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                           False), critical=True)
              .sign(ca_key, hashes.SHA256()))

        def leaf(subject: x509.Name, usage, sans=None):
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
                       .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                       .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
            if sans:
                builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            return key, builder.sign(ca_key, hashes.SHA256())

        server_key, server = leaf(_name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH,
                                  [x509.DNSName("localhost"),
                                   x509.IPAddress(ipaddress.ip_address(host))])
        admin_key, admin = leaf(_name(ADMIN_USER, ADMIN_GROUP), ExtendedKeyUsageOID.CLIENT_AUTH)
        pem = serialization.Encoding.PEM
        _write(self.ca_cert_path, ca.public_bytes(pem))
        _write(self.server_cert_path, server.public_bytes(pem))
        _write(self.server_key_path, _pem_key(server_key))
        _write(self.admin_cert_path, admin.public_bytes(pem))
        _write(self.admin_key_path, _pem_key(admin_key))

    def server_context(self) -> ssl.SSLContext:
        """TLS for the API: a client certificate is asked for, optional, and taken whatever CA
        issued it, so that a request without one or with a wrong one reaches the server and gets
        Kubernetes' 401 Status; `client_ca().authenticate` judges it."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.server_cert_path, self.server_key_path)
        ctx.set_alpn_protocols(["http/1.1"])
        accept_any_client_certificate(ctx)
        return ctx

    def client_ca(self) -> ClientCA:
        with open(self.ca_cert_path, "rb") as f:
            return ClientCA(f.read())

    def kubeconfig(self, server: str) -> dict:
        def b64(path: str) -> str:
            import base64
            with open(path, "rb") as f:
                return base64.b64encode(f.read()).decode()
        name = f"ac-{self.cluster}"
        return {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": name, "cluster": {
                "server": server, "certificate-authority-data": b64(self.ca_cert_path)}}],
            "users": [{"name": f"{name}-admin", "user": {
                "client-certificate-data": b64(self.admin_cert_path),
                "client-key-data": b64(self.admin_key_path)}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
            "current-context": name,
        }

    def write_kubeconfig(self, path: str, server: str) -> None:
        _write(path + ".tmp", yaml.safe_dump(self.kubeconfig(server), sort_keys=False).encode())
        os.replace(path + ".tmp", path)
