"""Secrets through the reference cluster's Kubernetes API with the real kubectl: `stringData`
written into base64 `data`, `kubectl create secret generic`, the Kubernetes 422s; istiod's
self-signed CA in `istio-system/istio-ca-secret` as Istio keeps it; and the kubernetes target
signing a workload certificate with it (the adversarial probes' mesh-signed credentials)."""
from __future__ import annotations

import base64
import datetime as dt
import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conformance.targets.base import NotSupported
from conformance.targets.kubernetes import KubernetesTarget
from kubeapi_support import KUBECTLS, Kubectl
from reference_impl.cluster import naming
from reference_impl.cluster.kubeapi import kubeconfig_path

pytestmark = pytest.mark.skipif(not KUBECTLS, reason="no kubectl")


@pytest.fixture(scope="module")
def cluster(cluster_factory):
    return cluster_factory("ksec", nodes=1)


@pytest.fixture
def k(cluster, tmp_path):
    return Kubectl(KUBECTLS[0], cluster.name, tmp_path)


def _secret(k, ns: str, name: str) -> dict:
    return json.loads(k("get", "secret", name, "-n", ns, "-o", "json").stdout)


@pytest.mark.parametrize("binary", KUBECTLS, ids=os.path.basename)
def test_string_data_is_stored_as_base64_data(cluster, tmp_path, binary):
    k = Kubectl(binary, cluster.name, tmp_path)  # both kubectls: `create secret` sends protobuf
    k("create", "ns", "sec-rt")
    k("apply", "-f", "-", input="""
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: sec-rt}
data: {user: YWRtaW4=}
stringData: {password: "s3cr3t\\n", user: root}
""")
    got = _secret(k, "sec-rt", "creds")
    assert "stringData" not in got and got["type"] == "Opaque"
    # stringData wins over data for the same key, as the API server merges it
    assert got["data"] == {"password": base64.b64encode(b"s3cr3t\n").decode(),
                           "user": base64.b64encode(b"root").decode()}
    k("create", "secret", "generic", "lit", "-n", "sec-rt", "--from-literal=token=abc")
    assert k("get", "secret", "lit", "-n", "sec-rt", "-o", "jsonpath={.data.token}").stdout == \
        base64.b64encode(b"abc").decode()
    table = k("get", "secrets", "-n", "sec-rt").stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert [line.split()[:3] for line in table[1:]] == [["creds", "Opaque", "2"], ["lit", "Opaque", "1"]]
    k("delete", "ns", "sec-rt")


def test_an_invalid_secret_is_refused_naming_the_field(k):
    bad = """
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: default}
type: kubernetes.io/tls
stringData: {tls.crt: cert}
"""
    out = k("apply", "-f", "-", input=bad, check=False)
    assert out.returncode == 1
    assert 'The Secret "tls" is invalid' in out.stderr and "data.tls.key" in out.stderr, out.stderr
    assert k("get", "secret", "tls", "-n", "default", check=False).returncode == 1


def test_istiod_keeps_its_self_signed_ca_in_istio_ca_secret(k, cluster):
    k("wait", "--for=create", "secret/istio-ca-secret", "-n", "istio-system", "--timeout=20s")
    out = k("get", "secret", "-n", "istio-system", "istio-ca-secret")
    assert out.stdout.split()[4:7] == \
        ["istio-ca-secret", "istio.io/ca-root", "5"], (out.stdout, out.stderr)
    got = _secret(k, "istio-system", "istio-ca-secret")
    data = {key: base64.b64decode(value) for key, value in got["data"].items()}
    root = open(os.path.join(naming.run_dir(cluster.name), "ca", "root-cert.pem"), "rb").read()
    assert data["ca-cert.pem"] == root and data["cert-chain.pem"] == data["root-cert.pem"] == b""
    key = serialization.load_pem_private_key(data["ca-key.pem"], password=None)
    assert key.public_key() == x509.load_pem_x509_certificate(root).public_key()


def test_the_kubernetes_target_signs_with_the_mesh_ca_from_its_secret(cluster):
    target = KubernetesTarget(kubeconfig=kubeconfig_path(cluster.name))
    target.start()
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    spiffe = "spiffe://cluster.local/ns/default/sa/chosen"
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    chain = target.sign_workload_certificate(spiffe, public, now - dt.timedelta(hours=3),
                                             now - dt.timedelta(hours=1))
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    root = x509.load_pem_x509_certificate(target.mesh_trust_anchors().encode())
    leaf.verify_directly_issued_by(root)
    assert leaf.not_valid_after_utc == now - dt.timedelta(hours=1)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]
    # a mesh namespace that holds neither Secret: the API's 404s, named, and not supported
    target.MESH_NAMESPACE = "default"
    with pytest.raises(NotSupported, match=r"Secret default/cacerts: 404.*Secret default/istio-ca-secret: 404"):
        target.sign_workload_certificate(spiffe, public, now, now + dt.timedelta(hours=1))
