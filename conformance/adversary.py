"""The attacker's side of the adversarial tests: certificates the suite makes itself, an
uncaptured pod that runs the HBONE probe (conformance/probes/hbone_probe.py), and the
probe's verdicts. What a deny looks like to a mesh client, and waiting for one, is the
Scenario's (`expect_denied`); here are only the attacker's own tools.

The suite's own CA is made here with `cryptography`; a certificate signed by the MESH's CA is
asked of the target (`Scenario.sign_workload_certificate`), which only some targets can do.
"""
from __future__ import annotations

import base64
import datetime as dt
import functools
import io
import json
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conformance import workloads as w
from conformance.scenario import Scenario
from conformance.targets.base import ExecResult, PodRef, TargetError

HBONE_PORT = 15008
PROBE_SCRIPT = "hbone_probe.py"
PROBES_DIR = Path(__file__).resolve().parent / "probes"
#: every probe attempt gives up after this many seconds; a refusal must come well before
PROBE_TIMEOUT_SECONDS = 5.0
#: what a prompt refusal of a TLS client looks like to the probe
TLS_REFUSED = "tls_refused"


def spiffe(namespace: str, service_account: str, trust_domain: str = w.TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class Credentials:
    cert_pem: str   # leaf first, then any intermediates
    key_pem: str


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_key_pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def workload_leaf(spiffe_id: str, public_key, issuer_name: x509.Name, issuer_key,
                  not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    """A leaf shaped like a mesh workload certificate: empty subject, one URI SAN, both TLS usages."""
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(issuer_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256()))


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class SuiteCA:
    """A CA of the suite's own: a mesh must trust nothing it signs."""

    def __init__(self, common_name: str = "ambient-conformance untrusted CA"):
        self.key = new_key()
        self.name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
                               x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        start = now() - dt.timedelta(hours=1)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(start).not_valid_after(start + dt.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, spiffe_id: str) -> Credentials:
        key = new_key()
        start = now() - dt.timedelta(minutes=5)
        leaf = workload_leaf(spiffe_id, key.public_key(), self.name, self.key, start, start + dt.timedelta(hours=2))
        return Credentials(pem(leaf) + pem(self.cert), key_pem(key))


def mesh_credentials(sc: Scenario, spiffe_id: str, expired: bool = False) -> Credentials:
    """A certificate for `spiffe_id` signed by the mesh's own CA (NotSupported on most targets)."""
    key = new_key()
    if expired:
        not_before, not_after = now() - dt.timedelta(hours=3), now() - dt.timedelta(hours=1)
    else:
        not_before, not_after = now() - dt.timedelta(minutes=5), now() + dt.timedelta(hours=1)
    chain = sc.sign_workload_certificate(spiffe_id, public_key_pem(key), not_before, not_after)
    return Credentials(chain, key_pem(key))


# -- the attacker pod ---------------------------------------------------------------------------
def probe_sources() -> dict[str, str]:
    return {**{p.name: p.read_text() for p in sorted(PROBES_DIR.glob("*.py"))}, H2_BUNDLE: h2_bundle()}


#: hbone_server.py needs `h2`, which a stock Python image lacks: the suite ships the pure-Python
#: h2, hpack and hyperframe it runs with beside the probes, a zip (base64, a ConfigMap holds
#: text) the server imports from when `import h2` fails (issue 14 item 5: the kubernetes target
#: runs the impostor servers in PROBE_IMAGE now that it can have their certificates mesh-signed)
H2_BUNDLE = "h2-bundle.zip.b64"


@functools.lru_cache(maxsize=1)
def h2_bundle() -> str:
    import h2
    import hpack
    import hyperframe
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
        for package in (h2, hpack, hyperframe):
            root = Path(package.__file__).parent
            for source in sorted(root.glob("*.py")):
                bundle.write(source, f"{package.__name__}/{source.name}")
    return base64.b64encode(out.getvalue()).decode()


def deploy_attacker(sc: Scenario, namespace: str, name: str = "attacker", node: str | None = None):
    """An uncaptured pod of the suite's own, able to run the probe; returns the Pod."""
    sc.deploy(sc.probe_manifests(namespace, name, node, probe_sources()), namespace)
    return sc.pod(namespace, name)


def tls_attempt(name: str, host: str, authority: str, creds: Credentials | None, root_pem: str | None,
                headers: dict | None = None, request: str = "", port: int = HBONE_PORT) -> dict:
    attempt = {"name": name, "host": host, "port": port, "mode": "tls", "authority": authority,
               "headers": headers or {}, "request": request, "timeout": PROBE_TIMEOUT_SECONDS}
    if creds:
        attempt.update(cert_pem=creds.cert_pem, key_pem=creds.key_pem)
    if root_pem:
        attempt["root_pem"] = root_pem
    return attempt


def plaintext_attempt(name: str, host: str, port: int = HBONE_PORT, request: str = "") -> dict:
    return {"name": name, "host": host, "port": port, "mode": "plaintext", "request": request,
            "timeout": PROBE_TIMEOUT_SECONDS}


def http_get(path: str = "/get", host: str = "httpbin", headers: dict | None = None) -> str:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"


def probe(sc: Scenario, attacker: PodRef, attempts: list[dict]) -> dict[str, dict]:
    """Run the attempts in one exec of the probe; results by attempt name."""
    spec = base64.b64encode(json.dumps({"attempts": attempts}).encode()).decode()
    done = sc.run_probe(attacker, PROBE_SCRIPT, [spec],
                            timeout=len(attempts) * (PROBE_TIMEOUT_SECONDS + 2) + 20)
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["name"]] = r
    missing = [a["name"] for a in attempts if a["name"] not in results]
    if missing:
        raise TargetError(f"the HBONE probe in {attacker.namespace}/{attacker.name} reported nothing for "
                          f"{missing} (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    return results


def assert_refused_promptly(result: dict, outcomes: set[str], what: str, statuses: set[int] = frozenset()) -> None:
    """A refusal in one of the accepted forms, well inside the probe's timeout (never a timeout)."""
    ok = result["outcome"] in outcomes or (result["outcome"] == "status" and result["status"] in statuses)
    assert ok, (f"{what}: expected a prompt refusal ({', '.join(sorted(outcomes))}"
                f"{' or HTTP ' + '/'.join(map(str, sorted(statuses))) if statuses else ''}), got {result}")
    assert result["seconds"] < PROBE_TIMEOUT_SECONDS - 1, f"{what}: the refusal was not prompt: {result}"


# -- a server of the suite's own where a mesh client expects a workload --------------------------
SERVER_SCRIPT = "hbone_server.py"


def deploy_impostor(sc: Scenario, namespace: str, name: str, node: str | None = None):
    """A pod that the mesh takes for a sidecar workload (a container named `istio-proxy`), so a
    mesh client sends it HBONE on 15008, where the suite's own server answers; returns the Pod."""
    manifests = sc.probe_manifests(namespace, name, node, probe_sources())
    for obj in manifests:
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["spec"]["containers"][0]["name"] = "istio-proxy"
    sc.deploy(manifests, namespace)
    return sc.pod(namespace, name)


class ServerRun:
    """hbone_server.py running in `pod` for `seconds`, in a thread (exec blocks until it ends)."""

    def __init__(self, sc: Scenario, pod: PodRef, creds: Credentials, seconds: float):
        spec = base64.b64encode(json.dumps({"cert_pem": creds.cert_pem, "key_pem": creds.key_pem,
                                            "port": HBONE_PORT, "seconds": seconds}).encode()).decode()
        self.result: ExecResult | None = None
        self._thread = threading.Thread(target=self._run, args=(sc, pod, spec, seconds), daemon=True)
        self._thread.start()

    def _run(self, sc: Scenario, pod: PodRef, spec: str, seconds: float) -> None:
        self.result = sc.run_probe(pod, SERVER_SCRIPT, [spec], timeout=seconds + 20)

    def counts(self) -> dict:
        self._thread.join()
        lines = [json.loads(line) for line in (self.result.stdout if self.result else "").splitlines()
                 if line.startswith("{")]
        if not lines or "connections" not in lines[-1]:
            raise TargetError(f"the suite's HBONE server reported nothing: "
                              f"{(self.result.stderr if self.result else '')[-400:]}")
        return lines[-1]
