"""The reference ztunnel asks istiod for the certificate lifetime in its SECRET_TTL, as Istio's
ztunnel does (zt:src/config.rs SECRET_TTL, default 24 h, sent as the CSR's validity_duration), so
patching the ztunnel DaemonSet's env shortens workload certificates on both meshes alike."""
from __future__ import annotations

import os
import time

import pytest
from cryptography import x509

from reference_impl.identity import Identity, make_csr
from reference_impl.ztunnel.run import DEFAULT_SECRET_TTL, ZtunnelProcess, secret_ttl
from tests.unit.test_controlplane_istiod import Harness, run, running_pod


@pytest.mark.parametrize("raw, seconds", [(None, DEFAULT_SECRET_TTL), ("6s", 6), ("1m30s", 90), ("24h", 86400),
                                          ("45", 45), ("soon", DEFAULT_SECRET_TTL), ("0s", DEFAULT_SECRET_TTL)])
def test_secret_ttl_reads_durations_and_falls_back_to_a_day_as_ztunnel_does(raw, seconds):
    assert secret_ttl({} if raw is None else {"SECRET_TTL": raw}) == seconds


def _lifetime(ttl_env: dict) -> float:
    """Seconds from now to the end of the certificate a ztunnel with `ttl_env` gets from istiod."""
    out: list[float] = []

    async def scenario(h: Harness):
        h.store.create(running_pod("istio-system", "ztunnel-a", "node-0", "172.18.0.10",
                                   image="ambient-conformance/ztunnel", pid=os.getpid()))
        h.store.create(running_pod("ambient-apps", "local", "node-0", "10.244.0.5", sa="local-sa"))
        ztunnel = ZtunnelProcess("node-0", env=ttl_env)
        ztunnel.xds = h.ztunnel_client("node-0", "ztunnel-a")
        await ztunnel.xds.start()
        await ztunnel.xds.wait_version(timeout=5)
        identity = Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/local-sa")
        _key, csr = make_csr(identity)
        chain, _root = await ztunnel._sign(identity, csr)
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        out.append(leaf.not_valid_after_utc.timestamp() - time.time())

    run(scenario)
    return out[0]


def test_the_ztunnel_asks_istiod_for_its_secret_ttl():
    assert 0 < _lifetime({"SECRET_TTL": "7s"}) <= 8
    assert _lifetime({}) > 3600, "without SECRET_TTL the ztunnel asks for istiod's default day"
