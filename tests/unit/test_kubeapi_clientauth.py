"""The Kubernetes API's judge of client certificates: only a certificate the cluster's API CA
issued, valid now and for client auth, authenticates; the user and groups are its CN and O."""
from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reference_impl.cluster.kubeapi.clientauth import ClientCA
from reference_impl.cluster.kubeapi.pki import ApiPKI

NOW = datetime.datetime.now(datetime.timezone.utc)


def _leaf(issuer_cert, issuer_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
          not_after=NOW + datetime.timedelta(days=1)) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-admin")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=2)).not_valid_after(not_after)
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
            .sign(issuer_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _ca(tmp_path, name):
    pki = ApiPKI(str(tmp_path / name), name)
    pki.create("127.0.0.1")
    cert = x509.load_pem_x509_certificate(open(pki.ca_cert_path, "rb").read())
    return pki, cert


def test_only_the_cluster_ca_s_valid_client_certificates_authenticate(tmp_path):
    pki, _ = _ca(tmp_path, "ours")
    judge = pki.client_ca()
    admin = x509.load_pem_x509_certificate(open(pki.admin_cert_path, "rb").read())
    assert judge.authenticate(admin.public_bytes(serialization.Encoding.DER)) == \
        ("kubernetes-admin", ["system:masters"])
    # The same subject from another CA whose name is the same as ours: the signature decides.
    twin_key = ec.generate_private_key(ec.SECP256R1())
    ours = judge.ca
    assert judge.authenticate(_leaf(ours, twin_key)) is None
    other, other_cert = _ca(tmp_path, "theirs")
    other_key = serialization.load_pem_private_key(
        open(other.admin_key_path, "rb").read(), None)  # any key that is not our CA's
    assert judge.authenticate(_leaf(other_cert, other_key)) is None
    assert judge.authenticate(None) is None and judge.authenticate(b"not a certificate") is None


def test_an_expired_or_server_only_certificate_does_not_authenticate(tmp_path):
    pki, ca = _ca(tmp_path, "ours")
    judge = pki.client_ca()
    server = x509.load_pem_x509_certificate(open(pki.server_cert_path, "rb").read())
    assert judge.authenticate(server.public_bytes(serialization.Encoding.DER)) is None
    # A CA key is not written to disk; sign with a CA made here, judged by its own ClientCA.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    own = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(key.public_key()).serial_number(1)
           .not_valid_before(NOW - datetime.timedelta(days=3))
           .not_valid_after(NOW + datetime.timedelta(days=3))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
           .sign(key, hashes.SHA256()))
    own_judge = ClientCA(own.public_bytes(serialization.Encoding.PEM))
    assert own_judge.authenticate(_leaf(own, key)) == ("kubernetes-admin", ["system:masters"])
    assert own_judge.authenticate(_leaf(own, key, not_after=NOW - datetime.timedelta(days=1))) \
        is None
    assert own_judge.authenticate(_leaf(own, key, usage=ExtendedKeyUsageOID.SERVER_AUTH)) is None
