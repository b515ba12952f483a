"""The Kubernetes API of a reference cluster: HTTPS with the cluster's own CA, on loopback only,
a kubeconfig of mode 0600 that `cluster kubeconfig` names and `cluster up` exports, and 401 for
a request without the client certificate or with one of another CA."""
from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import REPO
from kubeapi_support import KUBECTLS, Kubectl
from reference_impl.cluster import client as cluster_client
from reference_impl.cluster.kubeapi import kubeconfig_path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reference_impl.cli", *args], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def up_output(_cluster_host, cluster_name):
    name = cluster_name("kauth")
    out = _cli("cluster", "up", "--name", name, "--nodes", "1")
    try:
        assert out.returncode == 0, out.stderr
        yield name, out.stdout
    finally:
        cluster_client.down(name)


def _server(name: str) -> tuple[str, int, dict]:
    config = yaml.safe_load(open(kubeconfig_path(name)))
    url = urlsplit(config["clusters"][0]["cluster"]["server"])
    return url.hostname, url.port, config


def test_up_prints_the_export_line_and_kubeconfig_prints_the_path(up_output):
    name, stdout = up_output
    path = kubeconfig_path(name)
    assert f"export KUBECONFIG={path}" in stdout.splitlines()
    shown = _cli("cluster", "kubeconfig", "--name", name)
    assert shown.returncode == 0 and shown.stdout.strip() == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    missing = _cli("cluster", "kubeconfig", "--name", "no-such-cluster")
    assert missing.returncode == 1 and "no cluster named 'no-such-cluster'" in missing.stderr


def test_the_api_listens_on_loopback_only(up_output):
    host, port, _ = _server(up_output[0])
    assert host == "127.0.0.1"
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                               text=True).stdout.split()
    assert listening and all(field.startswith("127.0.0.1:") for field in listening
                             if field.endswith(f":{port}"))
    other = [a for a in socket.gethostbyname_ex(socket.gethostname())[2]
             if not a.startswith("127.")]
    for address in other:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=1).close()


def _ca_file(config: dict, tmp_path) -> str:
    import base64
    path = tmp_path / "ca.crt"
    path.write_bytes(base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
    return str(path)


def test_no_client_certificate_gets_401_and_the_admin_one_is_let_in(up_output, tmp_path):
    host, port, config = _server(up_output[0])
    ca = _ca_file(config, tmp_path)
    anonymous = httpx.get(f"https://{host}:{port}/api/v1/namespaces", verify=ssl.create_default_context(cafile=ca))
    assert anonymous.status_code == 401
    assert anonymous.json()["reason"] == "Unauthorized" and anonymous.json()["kind"] == "Status"
    import base64
    user = config["users"][0]["user"]
    (tmp_path / "admin.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (tmp_path / "admin.key").write_bytes(base64.b64decode(user["client-key-data"]))
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(str(tmp_path / "admin.crt"), str(tmp_path / "admin.key"))
    admin = httpx.get(f"https://{host}:{port}/api/v1/namespaces", verify=ctx)
    assert admin.status_code == 200
    assert "istio-system" in {i["metadata"]["name"] for i in admin.json()["items"]}


def _foreign_client_cert(tmp_path) -> tuple[str, str]:
    """A "kubernetes-admin" client certificate issued by a CA of our own making, not the
    cluster's: same subject as the admin's, wrong issuer."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-admin")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "foreign.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "foreign.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(tmp_path / "foreign.crt"), str(tmp_path / "foreign.key")


def test_a_certificate_of_another_ca_gets_401(up_output, tmp_path):
    """The handshake takes the foreign certificate (as kube-apiserver's does) and the request is
    refused with Kubernetes' Status, not a TLS alert; the admin's certificate on the same
    connection settings is served."""
    host, port, config = _server(up_output[0])
    ctx = ssl.create_default_context(cafile=_ca_file(config, tmp_path))
    ctx.load_cert_chain(*_foreign_client_cert(tmp_path))
    response = httpx.get(f"https://{host}:{port}/api/v1/namespaces", verify=ctx)
    assert response.status_code == 401
    assert response.json()["kind"] == "Status" and response.json()["reason"] == "Unauthorized"
    assert "items" not in response.json()


@pytest.mark.skipif(not KUBECTLS, reason="no kubectl")
def test_kubectl_with_a_certificate_of_another_ca_must_log_in(up_output, tmp_path):
    import base64
    name = up_output[0]
    config = yaml.safe_load(open(kubeconfig_path(name)))
    cert, key = _foreign_client_cert(tmp_path)
    config["users"][0]["user"] = {
        "client-certificate-data": base64.b64encode(open(cert, "rb").read()).decode(),
        "client-key-data": base64.b64encode(open(key, "rb").read()).decode()}
    foreign = tmp_path / "foreign.kubeconfig"
    foreign.write_text(yaml.safe_dump(config))
    for i, kubectl in enumerate(KUBECTLS):
        k = Kubectl(kubectl, name, tmp_path / f"home{i}")
        k.env["KUBECONFIG"] = str(foreign)
        out = k("get", "pods", "-A", check=False)
        assert out.returncode == 1, out.stdout
        assert "You must be logged in to the server" in out.stderr, out.stderr
        k.env["KUBECONFIG"] = kubeconfig_path(name)
        assert "ztunnel-" in k("get", "pods", "-A").stdout


@pytest.mark.skipif(not KUBECTLS, reason="no kubectl")
def test_kubectl_without_the_certificate_is_told_it_must_log_in(up_output, tmp_path):
    name = up_output[0]
    config = yaml.safe_load(open(kubeconfig_path(name)))
    config["users"][0]["user"] = {"token": "a-token-this-cluster-never-issued"}
    anonymous = tmp_path / "anonymous.kubeconfig"
    anonymous.write_text(yaml.safe_dump(config))
    k = Kubectl(KUBECTLS[0], name, tmp_path)
    k.env["KUBECONFIG"] = str(anonymous)
    out = k("get", "pods", "-A", check=False)
    assert out.returncode == 1
    assert "You must be logged in to the server" in out.stderr
    k.env["KUBECONFIG"] = kubeconfig_path(name)
    assert "ztunnel-" in k("get", "pods", "-A").stdout
