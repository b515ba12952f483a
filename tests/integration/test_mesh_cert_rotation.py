"""Workload certificates rotate at half-life without dropping connections (issue 3, "HBONE and identity").

The cluster's istiod Deployment is re-applied with Istio's DEFAULT_WORKLOAD_CERT_TTL=6s before
any workload exists, so every workload certificate lives 6 s. Then, on a real 2-node cluster
(httpbin on node-1, two sleep pods on node-0):
- the destination ztunnel's certificate for httpbin (its /config_dump on 127.0.0.1:15000 in the
  node namespace) is replaced by a new serial at about half its lifetime;
- a streaming request opened before that renewal keeps receiving bytes after it and after the
  old certificate's expiry, and completes;
- after the expiry, a request from a pod with no pooled HBONE connection succeeds (a fresh mTLS
  handshake in both directions), and httpbin's HBONE port presents the renewed certificate.
"""
from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from reference_impl.cluster import naming
from reference_impl.identity import CertificateAuthority, Identity, WorkloadCertificate, make_csr
from reference_impl.identity.ca import CLOCK_SKEW_GRACE
from reference_impl.identity.tls import client_context
from reference_impl.netns import socket_in

from meshkit import (NS, HeldStream, istiod_deployment, istiod_pods, outcome, pinned_pod,
                               pod_of, seed_objects, start_cluster, until, ztunnel_dump, ztunnels_in_sync)

TTL_S = 6
HTTPBIN_ID = f"spiffe://cluster.local/ns/{NS}/sa/httpbin-ambient"
SLEEP_ID = f"spiffe://cluster.local/ns/{NS}/sa/sleep-ambient"


@pytest.fixture(scope="module")
def c(cluster_factory, worker_id):
    c = start_cluster(cluster_factory, worker_id, "crt", [])
    c.apply([istiod_deployment({"DEFAULT_WORKLOAD_CERT_TTL": f"{TTL_S}s"})])

    def rolled_out():
        pods = c.list("Pod", "istio-system", selector={"app": "istiod"})  # terminating ones too
        return len(pods) == 1 and all(
            e.get("value") == f"{TTL_S}s" for e in pods[0]["spec"]["containers"][0].get("env") or ()) \
            and pods[0]["spec"]["containers"][0].get("env") and pods[0].get("status", {}).get("phase") == "Running"
    until(rolled_out, 30, what="istiod rolled out with DEFAULT_WORKLOAD_CERT_TTL")
    until(lambda: ztunnels_in_sync(c), 15, what="ztunnels connected to the new istiod")
    objects = seed_objects(pin={"httpbin-ambient": "node-1", "sleep-ambient": "node-0"})
    objects = [o for o in objects if o["metadata"]["name"] not in ("rogue-client", "rogue-sa")]
    objects.append(pinned_pod("sleep-fresh", NS, "node-0", "sleep-ambient"))
    c.apply(objects)
    c.wait_ready(60)
    return c


def held_cert(c, node: str, identity: str) -> x509.Certificate | None:
    for entry in ztunnel_dump(c, node).get("certificates", ()):
        if entry["identity"] == identity and entry.get("certChain"):
            return x509.load_pem_x509_certificate(entry["certChain"].encode())
    return None


def issued_at(cert: x509.Certificate) -> float:
    """The moment istiod signed it: its not_before is backdated by Istio's clock-skew grace."""
    return (cert.not_valid_before_utc + CLOCK_SKEW_GRACE).timestamp()


def lifetime(cert: x509.Certificate) -> float:
    return cert.not_valid_after_utc.timestamp() - issued_at(cert)


def presented_cert(c, node: str, ip: str) -> x509.Certificate:
    """The certificate the HBONE server at ip:15008 presents to a fresh mesh client."""
    ca = CertificateAuthority.load(Path(naming.run_dir(c.name)) / "ca")
    identity = Identity.parse(SLEEP_ID)
    key, csr = make_csr(identity)
    ours = WorkloadCertificate.from_pem(identity, key, [ca.sign_csr(csr, identity, 60)], ca.root_pem)
    sock = socket_in(c.node_netns(node))
    sock.settimeout(5)
    try:
        sock.connect((ip, 15008))
        with client_context(ours).wrap_socket(sock) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    except (OSError, ssl.SSLError) as exc:
        raise AssertionError(f"TLS to {ip}:15008 failed: {exc}") from None
    finally:
        sock.close()


def test_certificate_renews_at_half_life_and_connections_survive_expiry(c):
    httpbin = c.get("Pod", NS, pod_of(c, "httpbin-ambient"))
    first = until(lambda: held_cert(c, "node-1", HTTPBIN_ID), 15, what="node-1's ztunnel holding httpbin's certificate")
    assert lifetime(first) == TTL_S, f"istiod issued a {lifetime(first)}s certificate, not {TTL_S}s"

    until(lambda: outcome(c, NS, pod_of(c, "sleep-ambient")) == "allowed", 10, what="sleep reaching httpbin")
    held = HeldStream(c, NS, pod_of(c, "sleep-ambient"), seconds=2 * TTL_S)
    try:
        until(held.flowing, 10, what="the first byte of the held stream")
        # The certificate in use when the stream opened, and its successor.
        old = held_cert(c, "node-1", HTTPBIN_ID)
        new = until(lambda: (cert := held_cert(c, "node-1", HTTPBIN_ID)) is not None
                    and cert.serial_number != old.serial_number and cert, TTL_S + 2, interval=0.02,
                    what="a renewed certificate for httpbin")
        renewed_at = time.time()
        issued = issued_at(old)
        half_life = issued + TTL_S / 2
        assert half_life - 0.25 <= renewed_at <= half_life + 1.5, \
            f"renewed {renewed_at - issued:.2f}s into a {TTL_S}s certificate, not at about half-life"
        print(f"httpbin's certificate renewed {renewed_at - issued:.2f}s into its {TTL_S}s lifetime")
        assert new.not_valid_before_utc >= old.not_valid_before_utc and lifetime(new) == TTL_S

        expired_at = old.not_valid_after_utc.timestamp()
        until(lambda: time.time() > expired_at + 0.5, TTL_S, what="the old certificate's expiry")
        mono_expired = time.monotonic() - (time.time() - expired_at)
        until(lambda: held.bytes_between(mono_expired, time.monotonic()) >= 2, 5,
              what="bytes on the held stream after the old certificate expired")

        # sleep-fresh has never talked to httpbin: no pooled HBONE connection, a new handshake
        # with certificates on both sides that must be the renewed ones.
        assert outcome(c, NS, "sleep-fresh") == "allowed"
        assert outcome(c, NS, pod_of(c, "sleep-ambient")) == "allowed"
        presented = presented_cert(c, "node-1", httpbin["status"]["podIP"])
        assert presented.serial_number != old.serial_number
        assert presented.not_valid_after_utc.timestamp() > time.time(), "httpbin's ztunnel presented an expired certificate"

        rc, received, status = held.finish()
        assert (rc, status) == (0, "200") and received == 2 * TTL_S * 4, \
            f"held stream: curl exit {rc}, HTTP {status}, {received}/{2 * TTL_S * 4} bytes"
    finally:
        held.close()
    client_side = held_cert(c, "node-0", SLEEP_ID)
    assert client_side is not None and lifetime(client_side) == TTL_S
    assert client_side.not_valid_after_utc.timestamp() > time.time() - 1, "node-0 stopped renewing sleep's certificate"
    assert len(istiod_pods(c)) == 1
