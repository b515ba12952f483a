"""The suite's one way to sign with the mesh's CA (conformance/targets/mesh_ca.py), as both the
reference and the kubernetes target use it: from Istio's self-signed `istio-ca-secret` (the leaf
issued by the root itself) and from a plugged-in `cacerts` (the leaf issued by the intermediate,
followed by its chain up to the root); unusable Secret contents named."""
from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conformance.targets.mesh_ca import MeshCA, MeshCAError

SPIFFE = "spiffe://cluster.local/ns/apps/sa/chosen"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ca(name: str, issuer=None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    signer_cert, signer_key = issuer or (None, key)
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(signer_cert.subject if signer_cert else subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer_key, hashes.SHA256()))
    return cert, key


def _cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _secret_data(**values: bytes) -> dict:
    return {k.replace("_", "-") + ".pem": base64.b64encode(v).decode() for k, v in values.items()}


def _public_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_a_leaf_from_the_self_signed_ca_secret_is_issued_by_the_root():
    root, key = _ca("cluster.local")
    data = _secret_data(ca_cert=_cert_pem(root), ca_key=_pem(key), cert_chain=b"", root_cert=b"")
    ca = MeshCA.from_secret_data(data, "Secret istio-system/istio-ca-secret")
    chain = x509.load_pem_x509_certificates(ca.sign(SPIFFE, _public_pem(), NOW - dt.timedelta(hours=3),
                                                    NOW - dt.timedelta(hours=1)).encode())
    assert len(chain) == 1
    leaf = chain[0]
    leaf.verify_directly_issued_by(root)
    assert (leaf.not_valid_before_utc, leaf.not_valid_after_utc) == \
        (NOW - dt.timedelta(hours=3), NOW - dt.timedelta(hours=1))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # a CA of the suite's own is not the mesh's: its leaf does not verify against the root
    other_root, other_key = _ca("cluster.local")
    foreign = MeshCA(_cert_pem(other_root), _pem(other_key)).sign(SPIFFE, _public_pem(), NOW, NOW + dt.timedelta(hours=1))
    with pytest.raises(InvalidSignature):
        x509.load_pem_x509_certificate(foreign.encode()).verify_directly_issued_by(root)


def test_a_leaf_from_plugged_in_cacerts_carries_the_chain_to_the_root():
    root, root_key = _ca("root")
    intermediate, key = _ca("cluster1", issuer=(root, root_key))
    data = _secret_data(ca_cert=_cert_pem(intermediate), ca_key=_pem(key), root_cert=_cert_pem(root),
                        cert_chain=_cert_pem(intermediate) + _cert_pem(root))
    chain = x509.load_pem_x509_certificates(MeshCA.from_secret_data(data, "Secret istio-system/cacerts")
                                            .sign(SPIFFE, _public_pem(), NOW, NOW + dt.timedelta(hours=1)).encode())
    assert chain[1:] == [intermediate, root]
    chain[0].verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)


def test_unusable_secret_contents_are_named():
    root, key = _ca("cluster.local")
    with pytest.raises(MeshCAError, match="Secret istio-system/istio-ca-secret has no ca-key.pem"):
        MeshCA.from_secret_data(_secret_data(ca_cert=_cert_pem(root)), "Secret istio-system/istio-ca-secret")
    with pytest.raises(MeshCAError, match="cacerts: ca-cert.pem is not base64"):
        MeshCA.from_secret_data({"ca-cert.pem": "!!", "ca-key.pem": "eA=="}, "Secret istio-system/cacerts")
    with pytest.raises(MeshCAError, match="not PEM"):
        MeshCA(b"junk", _pem(key)).sign(SPIFFE, _public_pem(), NOW, NOW + dt.timedelta(hours=1))


def test_a_real_istiods_rsa_ca_in_pkcs1_signs_too():
    """Istio's self-signed CA is RSA 2048 with its key as `RSA PRIVATE KEY` (PKCS#1)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    data = _secret_data(ca_cert=_cert_pem(root), ca_key=pkcs1, cert_chain=b"", key=b"", root_cert=b"")
    chain = MeshCA.from_secret_data(data, "Secret istio-system/istio-ca-secret").sign(
        SPIFFE, _public_pem(), NOW, NOW + dt.timedelta(hours=1))
    x509.load_pem_x509_certificate(chain.encode()).verify_directly_issued_by(root)
