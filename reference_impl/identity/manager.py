"""Holds one certificate per workload identity and keeps it fresh (ztunnel's SecretManager role).

A certificate is asked for through an injected async ``sign(identity, csr_pem) -> (chain, root)``
(the xDS CSR round trip in the real mesh), renewed at half-life, and on failure retried with
exponential backoff while the still-valid certificate stays in use.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable

from .ca import make_csr
from .certificate import WorkloadCertificate
from .spiffe import Identity
from .tls import context_for

log = logging.getLogger(__name__)

Signer = Callable[[Identity, str], Awaitable[tuple["str | list[str]", str]]]


class CertificateUnavailable(RuntimeError):
    """No valid certificate could be obtained for an identity in time."""


class _Entry:
    def __init__(self) -> None:
        self.cert: WorkloadCertificate | None = None
        self.changed = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.failures = 0
        self.last_error: BaseException | None = None
        self.contexts: dict[str, tuple[WorkloadCertificate, ssl.SSLContext]] = {}


class CertificateManager:
    def __init__(self, sign: Signer, *, min_backoff: float = 0.2, max_backoff: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self._sign = sign
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._entries: dict[Identity, _Entry] = {}
        self.fetch_attempts = 0

    def identities(self) -> list[Identity]:
        return list(self._entries)

    def current(self, identity: Identity) -> WorkloadCertificate | None:
        entry = self._entries.get(identity)
        return entry.cert if entry else None

    def failures(self, identity: Identity) -> int:
        entry = self._entries.get(identity)
        return entry.failures if entry else 0

    async def get(self, identity: Identity, timeout: float = 10.0) -> WorkloadCertificate:
        """The identity's valid certificate, fetching (and starting rotation) on first use."""
        entry = self._entry(identity)
        deadline = time.monotonic() + timeout
        while entry.cert is None or entry.cert.is_expired(self._clock()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CertificateUnavailable(
                    f"no valid certificate for {identity} after {timeout:g}s; last error: {entry.last_error}")
            entry.changed.clear()
            try:
                await asyncio.wait_for(entry.changed.wait(), remaining)
            except asyncio.TimeoutError:
                continue
        return entry.cert

    async def wait_for_renewal(self, identity: Identity, after: WorkloadCertificate, timeout: float) -> WorkloadCertificate:
        """Wait until the held certificate differs from ``after`` (tests and rotation probes)."""
        entry = self._entry(identity)
        deadline = time.monotonic() + timeout
        while entry.cert is after or entry.cert is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CertificateUnavailable(f"certificate for {identity} was not renewed within {timeout:g}s")
            entry.changed.clear()
            try:
                await asyncio.wait_for(entry.changed.wait(), remaining)
            except asyncio.TimeoutError:
                continue
        return entry.cert

    async def ssl_context_for(self, identity: Identity, role: str) -> ssl.SSLContext:
        """A TLS context presenting the identity's current certificate; rebuilt after each renewal."""
        cert = await self.get(identity)
        entry = self._entries[identity]
        cached = entry.contexts.get(role)
        if cached is None or cached[0] is not cert:
            cached = (cert, context_for(cert, role))
            entry.contexts[role] = cached
        return cached[1]

    def forget(self, identity: Identity) -> None:
        """Stop rotating an identity (its last workload left the node)."""
        entry = self._entries.pop(identity, None)
        if entry and entry.task:
            entry.task.cancel()

    async def close(self) -> None:
        tasks = [e.task for e in self._entries.values() if e.task]
        self._entries.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _entry(self, identity: Identity) -> _Entry:
        entry = self._entries.get(identity)
        if entry is None:
            entry = self._entries[identity] = _Entry()
            entry.task = asyncio.get_running_loop().create_task(
                self._rotate(identity, entry), name=f"cert-rotate {identity}")
        return entry

    async def _fetch(self, identity: Identity) -> WorkloadCertificate:
        self.fetch_attempts += 1
        key_pem, csr_pem = make_csr(identity)
        chain, root = await self._sign(identity, csr_pem)
        return WorkloadCertificate.from_pem(identity, key_pem, chain, root)

    async def _rotate(self, identity: Identity, entry: _Entry) -> None:
        while True:
            try:
                cert = await self._fetch(identity)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any signer failure: keep the old cert, back off, try again
                entry.failures += 1
                entry.last_error = exc
                delay = min(self._max_backoff, self._min_backoff * 2 ** (entry.failures - 1))
                delay *= random.uniform(0.8, 1.0)
                if entry.cert is not None and not entry.cert.is_expired(self._clock()):
                    # Never sleep past expiry of the certificate still in use.
                    delay = min(delay, max(0.05, entry.cert.not_after - self._clock()))
                log.warning("certificate for %s: fetch failed (%s); retry %d in %.2fs, keeping %s",
                            identity, exc, entry.failures, delay,
                            "the valid certificate" if entry.cert else "no certificate")
                await asyncio.sleep(delay)
                continue
            entry.cert = cert
            entry.failures = 0
            entry.last_error = None
            entry.changed.set()
            log.info("certificate for %s issued, valid until %s, refresh at %s",
                     identity, time.ctime(cert.not_after), time.ctime(cert.refresh_at))
            await asyncio.sleep(max(0.0, cert.refresh_at - self._clock()))
