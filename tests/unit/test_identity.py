"""SPIFFE ids, the mesh CA and workload certificates (reference_impl.identity)."""

from datetime import datetime, timedelta, timezone

import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from reference_impl.identity import (CertificateAuthority, CertificateError, Identity, IdentityError,
                                     WorkloadCertificate, identities_of, make_csr)
from reference_impl.identity.ca import CLOCK_SKEW_GRACE


# ---- SPIFFE ids ----

def test_spiffe_format_and_parse_round_trip():
    identity = Identity("cluster.local", "ambient-apps", "httpbin")
    assert str(identity) == "spiffe://cluster.local/ns/ambient-apps/sa/httpbin"
    assert identity.principal == "cluster.local/ns/ambient-apps/sa/httpbin"
    assert Identity.parse(identity.uri) == identity


def test_service_account_defaults_to_default():
    assert Identity.for_workload("legacy-apps").uri == "spiffe://cluster.local/ns/legacy-apps/sa/default"
    assert Identity("cluster.local", "x", "").service_account == "default"


@pytest.mark.parametrize("bad", [
    "http://cluster.local/ns/a/sa/b",
    "spiffe://cluster.local/ns/a",
    "spiffe://cluster.local/namespace/a/sa/b",
    "spiffe://cluster.local/ns/a/sa/b/extra",
    "spiffe://Cluster Local/ns/a/sa/b",
    "spiffe://cluster.local/ns/UPPER/sa/b",
])
def test_malformed_spiffe_ids_are_refused_with_a_sentence(bad):
    with pytest.raises(IdentityError, match=r"(spiffe|trust domain|namespace|Kubernetes name)"):
        Identity.parse(bad)


# ---- CA ----

@pytest.fixture(scope="module")
def ca():
    return CertificateAuthority.create()


def _leaf(chain_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain_pem.encode())[0]


def test_root_is_a_p256_ca(ca):
    root = ca.root_cert
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"
    root.verify_directly_issued_by(root)


def test_sign_csr_issues_the_requested_spiffe_identity(ca):
    identity = Identity.for_workload("ambient-apps", "sleep")
    key_pem, csr_pem = make_csr(identity)
    leaf = _leaf(ca.sign_csr(csr_pem, identity))
    leaf.verify_directly_issued_by(ca.root_cert)
    assert identities_of(leaf) == [identity]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.public_key().curve.name == "secp256r1"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc - CLOCK_SKEW_GRACE
    assert lifetime.total_seconds() == 24 * 3600


def test_ttl_is_configurable_down_to_seconds(ca):
    identity = Identity.for_workload("a")
    _, csr_pem = make_csr(identity)
    leaf = _leaf(ca.sign_csr(csr_pem, identity, ttl_seconds=3))
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc - CLOCK_SKEW_GRACE).total_seconds() == 3
    with pytest.raises(CertificateError, match="TTL"):
        ca.sign_csr(csr_pem, identity, ttl_seconds=0)


def test_csr_whose_san_differs_from_the_requested_identity_is_refused(ca):
    asked_for = Identity.for_workload("ambient-apps", "httpbin")
    _, csr_pem = make_csr(Identity.for_workload("ambient-apps", "sleep"))
    with pytest.raises(CertificateError, match="not exactly the requested identity"):
        ca.sign_csr(csr_pem, asked_for)


def test_identity_of_a_foreign_trust_domain_is_refused_unless_aliased():
    identity = Identity("other.local", "a", "b")
    _, csr_pem = make_csr(identity)
    with pytest.raises(CertificateError, match="trust domain"):
        CertificateAuthority.create().sign_csr(csr_pem, identity)
    aliased = CertificateAuthority.create(trust_domain_aliases=("other.local",))
    assert identities_of(_leaf(aliased.sign_csr(csr_pem, identity))) == [identity]


def test_garbage_csr_gets_a_clear_error(ca):
    with pytest.raises(CertificateError, match="not a PEM certificate request"):
        ca.sign_csr("hello", Identity.for_workload("a"))


def test_ca_saves_and_loads_from_a_directory(tmp_path, ca):
    ca.save(tmp_path)
    assert (tmp_path / "root-cert.pem").read_text() == ca.root_pem
    assert (tmp_path / "root-key.pem").stat().st_mode & 0o077 == 0
    loaded = CertificateAuthority.load(tmp_path)
    assert loaded.root_pem == ca.root_pem
    identity = Identity.for_workload("a")
    _, csr_pem = make_csr(identity)
    _leaf(loaded.sign_csr(csr_pem, identity)).verify_directly_issued_by(ca.root_cert)
    assert CertificateAuthority.load_or_create(tmp_path).root_pem == ca.root_pem


def test_loading_a_missing_ca_names_the_missing_file(tmp_path):
    with pytest.raises(CertificateError, match="root-cert.pem"):
        CertificateAuthority.load(tmp_path)


# ---- WorkloadCertificate ----

def _workload_cert(ca, identity, ttl):
    key_pem, csr_pem = make_csr(identity)
    return WorkloadCertificate.from_pem(identity, key_pem, ca.sign_csr(csr_pem, identity, ttl), ca.root_pem)


def test_refresh_is_due_at_half_the_lifetime_left_on_receipt(ca):
    before = time.time()
    cert = _workload_cert(ca, Identity.for_workload("a"), 100)
    after = time.time()
    grace = CLOCK_SKEW_GRACE.total_seconds()
    # valid from two minutes before issue (Istio's ClockSkewGracePeriod), for 100 s after it (whole
    # seconds: the issue time is truncated, so not_after may be up to a second before issue + 100)
    assert cert.not_after - cert.not_before == 100 + grace
    assert before <= cert.received_at <= after
    assert before + 99 <= cert.not_after <= after + 100
    assert cert.refresh_at == cert.received_at + (cert.not_after - cert.received_at) / 2
    assert not cert.needs_refresh(cert.refresh_at - 0.1)
    assert cert.needs_refresh(cert.refresh_at)
    assert cert.needs_refresh(datetime.fromtimestamp(cert.refresh_at + 10, timezone.utc))
    assert not cert.is_expired(cert.not_after - 0.1) and cert.is_expired(cert.not_after)


def test_a_certificate_from_a_verifier_whose_clock_is_behind_still_verifies(ca):
    """The backdating's point: a peer whose clock is a minute behind the CA's accepts the leaf."""
    cert = _workload_cert(ca, Identity.for_workload("a"), 100)
    leaf = x509.load_pem_x509_certificate(cert.chain_pem.encode())
    a_minute_behind = datetime.now(timezone.utc) - timedelta(minutes=1)
    assert leaf.not_valid_before_utc <= a_minute_behind <= leaf.not_valid_after_utc


def test_workload_certificate_must_name_its_identity(ca):
    identity = Identity.for_workload("a")
    key_pem, csr_pem = make_csr(identity)
    chain = ca.sign_csr(csr_pem, identity)
    with pytest.raises(CertificateError, match="names"):
        WorkloadCertificate.from_pem(Identity.for_workload("b"), key_pem, chain, ca.root_pem)
    # the xDS contract sends the chain as a list of PEMs
    assert WorkloadCertificate.from_pem(identity, key_pem, [chain], ca.root_pem).identity == identity
