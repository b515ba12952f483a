"""CertificateManager: fetch, half-life rotation, retry with backoff while keeping the valid cert.

The signer is the manager's dependency (the xDS CSR round trip); here it wraps a real CA and can
be told to fail.
"""

import asyncio
import time

import pytest

from reference_impl.identity import (CertificateAuthority, CertificateManager, CertificateUnavailable,
                                     Identity)


class FlakySigner:
    """Signs with a real CA, except while ``failing`` is set."""

    def __init__(self, ca, ttl):
        self.ca, self.ttl = ca, ttl
        self.failing = False
        self.calls: list[float] = []

    async def __call__(self, identity, csr_pem):
        self.calls.append(time.monotonic())
        if self.failing:
            raise ConnectionError("istiod unreachable")
        return [self.ca.sign_csr(csr_pem, identity, self.ttl)], self.ca.root_pem


async def _poll(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def test_manager_fetches_then_renews_at_half_life():
    async def scenario():
        signer = FlakySigner(CertificateAuthority.create(), ttl=2)
        manager = CertificateManager(signer)
        identity = Identity.for_workload("ambient-apps", "sleep")
        try:
            first = await manager.get(identity)
            assert first.identity == identity and len(signer.calls) == 1
            second = await manager.wait_for_renewal(identity, first, timeout=5)
            # renewed no earlier than half-life (1 s of a 2 s certificate), and well before expiry
            assert time.time() >= first.refresh_at - 0.01
            assert not first.is_expired(time.time() - 0.5)
            assert second.not_after > first.not_after
            assert (await manager.get(identity)) is second
        finally:
            await manager.close()
    asyncio.run(scenario())


def test_manager_keeps_the_valid_cert_and_retries_with_backoff_on_failure():
    async def scenario():
        signer = FlakySigner(CertificateAuthority.create(), ttl=4)
        manager = CertificateManager(signer, min_backoff=0.1, max_backoff=1.0)
        identity = Identity.for_workload("ambient-apps", "httpbin")
        try:
            first = await manager.get(identity)
            signer.failing = True
            await _poll(lambda: len(signer.calls) >= 4, 6, "three failed renewals")
            # still serving the certificate it has, which is still valid
            assert manager.current(identity) is first and not first.is_expired()
            assert (await manager.get(identity)) is first
            assert manager.failures(identity) >= 3
            gaps = [b - a for a, b in zip(signer.calls[1:], signer.calls[2:])]
            assert gaps[-1] > gaps[0], f"retry gaps {gaps} do not grow"
            signer.failing = False
            renewed = await manager.wait_for_renewal(identity, first, timeout=5)
            assert renewed.not_after > first.not_after and manager.failures(identity) == 0
        finally:
            await manager.close()
    asyncio.run(scenario())


def test_get_without_any_certificate_reports_the_last_error():
    async def scenario():
        signer = FlakySigner(CertificateAuthority.create(), ttl=60)
        signer.failing = True
        manager = CertificateManager(signer, min_backoff=0.05)
        try:
            with pytest.raises(CertificateUnavailable, match="istiod unreachable"):
                await manager.get(Identity.for_workload("a"), timeout=0.5)
        finally:
            await manager.close()
    asyncio.run(scenario())


def test_ssl_context_is_rebuilt_after_renewal():
    async def scenario():
        signer = FlakySigner(CertificateAuthority.create(), ttl=2)
        manager = CertificateManager(signer)
        identity = Identity.for_workload("a")
        try:
            ctx1 = await manager.ssl_context_for(identity, "client")
            assert (await manager.ssl_context_for(identity, "client")) is ctx1
            await manager.wait_for_renewal(identity, manager.current(identity), timeout=5)
            assert (await manager.ssl_context_for(identity, "client")) is not ctx1
        finally:
            await manager.close()
    asyncio.run(scenario())
