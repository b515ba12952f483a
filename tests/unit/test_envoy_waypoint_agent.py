"""The Envoy waypoint's agent without Envoy or istiod: what it hands Envoy's file-based dynamic
resources (CDS before LDS, replaced by rename), that a snapshot it cannot translate raises (the
XdsClient NACKs it) and leaves the files as they were, and that every certificate renewal
rewrites the SDS files."""
from __future__ import annotations

import asyncio
import json

import pytest

from reference_impl.identity import CertificateAuthority, Identity, WorkloadCertificate
from reference_impl.identity.ca import make_csr
from reference_impl.waypoint.config import ConfigError
from reference_impl.waypoint_envoy import translate as tr
from reference_impl.waypoint_envoy.agent import EnvoyAgent
from tests.unit.test_envoy_waypoint_translate import NS, manifest, snapshot, world

ENV = {"POD_NAMESPACE": NS, "SERVICE_ACCOUNT": "waypoint", "POD_NAME": "waypoint-0"}
IDENTITY = Identity.parse(f"spiffe://cluster.local/ns/{NS}/sa/waypoint")


def agent(tmp_path) -> EnvoyAgent:
    return EnvoyAgent("/bin/false", ENV, run_dir=str(tmp_path))


def resources(tmp_path, kind: str) -> list[dict]:
    return json.loads((tmp_path / "config" / f"{kind}.json").read_text())["resources"]


def test_a_snapshot_becomes_cds_and_lds_files(tmp_path):
    a = agent(tmp_path)
    a.apply(snapshot(world(*manifest("allow-nothing.yaml"))), 7)
    names = [l["name"] for l in resources(tmp_path, "lds")]
    assert names[0] == "connect_terminate" and any(n.startswith("inbound-vip|8000|alpha") for n in names)
    assert any(c["name"].startswith("outbound|8000||alpha") for c in resources(tmp_path, "cds"))
    assert a.version == 7
    assert not [p.name for p in (tmp_path / "config").iterdir() if p.name.startswith(".tmp-")]


def test_a_bad_snapshot_raises_and_keeps_the_last_files(tmp_path):
    a = agent(tmp_path)
    a.apply(snapshot(world()), 1)
    before = (tmp_path / "config" / "lds.json").read_text()
    bad = snapshot(world())
    bad["services"] = [f"{NS}/nowhere.{NS}.svc.cluster.local"]
    with pytest.raises(ConfigError):
        a.apply(bad, 2)
    assert (tmp_path / "config" / "lds.json").read_text() == before and a.version == 1


class _Renewing:
    """Hands out one certificate, then a renewed one."""

    def __init__(self, certs):
        self.certs = list(certs)

    async def get(self, identity, timeout):
        return self.certs[0]

    async def wait_for_renewal(self, identity, after, timeout):
        if after is self.certs[-1]:
            await asyncio.sleep(3600)
        return self.certs[self.certs.index(after) + 1]


def _cert(ca) -> WorkloadCertificate:
    key, csr = make_csr(IDENTITY)
    return WorkloadCertificate.from_pem(IDENTITY, key, ca.sign_csr(csr, IDENTITY), ca.root_pem)


def test_every_renewal_rewrites_the_sds_files(tmp_path):
    ca = CertificateAuthority.create()
    first, second = _cert(ca), _cert(ca)
    a = agent(tmp_path)
    a.certs = _Renewing([first, second])

    async def run():
        task = asyncio.ensure_future(a._certificates())
        for _ in range(100):
            await asyncio.sleep(0.01)
            doc = json.loads((tmp_path / "sds" / f"{tr.CERT_SECRET}.json").read_text()) \
                if (tmp_path / "sds" / f"{tr.CERT_SECRET}.json").exists() else None
            if doc and doc["resources"][0]["tls_certificate"]["certificate_chain"]["inline_string"] == second.chain_pem:
                break
        task.cancel()
        return doc
    doc = asyncio.run(run())
    assert doc["resources"][0]["tls_certificate"]["certificate_chain"]["inline_string"] == second.chain_pem
    root = json.loads((tmp_path / "sds" / f"{tr.ROOT_SECRET}.json").read_text())
    assert root["resources"][0]["validation_context"]["trusted_ca"]["inline_string"] == ca.root_pem
    assert a.cert_written
