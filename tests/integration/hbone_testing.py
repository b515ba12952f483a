"""Loopback helpers for tests and benchmarks of HBONE: a throw-away mesh PKI and a TCP echo app.

Test-only, so it lives beside the tests (imported as a top-level module, like ``waiting``)."""

from __future__ import annotations

import asyncio
import ssl

from reference_impl.hbone import Outcome
from reference_impl.identity import (CertificateAuthority, Identity, WorkloadCertificate, context_for, make_csr)


class LocalPKI:
    """A real CA that issues certificates on demand and hands out TLS contexts per (identity, role)."""

    def __init__(self, ca: CertificateAuthority | None = None, ttl: int = 3600):
        self.ca = ca or CertificateAuthority.create()
        self.ttl = ttl
        self._contexts: dict[tuple[Identity, str], ssl.SSLContext] = {}

    def issue(self, identity: Identity, ttl: int | None = None, ca: CertificateAuthority | None = None,
              root_pem: str | None = None) -> WorkloadCertificate:
        """A certificate for ``identity`` signed by ``ca`` (default: ours), trusting ``root_pem``."""
        signer = ca or self.ca
        key_pem, csr_pem = make_csr(identity)
        chain = signer.sign_csr(csr_pem, identity, ttl or self.ttl)
        return WorkloadCertificate.from_pem(identity, key_pem, chain, root_pem or self.ca.root_pem)

    async def context(self, identity: Identity, role: str) -> ssl.SSLContext:
        ctx = self._contexts.get((identity, role))
        if ctx is None:
            ctx = self._contexts[(identity, role)] = context_for(self.issue(identity), role)
        return ctx


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start_echo(host: str = "127.0.0.1") -> tuple[asyncio.base_events.Server, int]:
    """A TCP echo server that half-closes after the client does; returns (server, port)."""
    server = await asyncio.start_server(_echo, host, 0, limit=256 * 1024)
    return server, server.sockets[0].getsockname()[1]


async def count_then_answer(reader, writer):
    """An app that answers only after the client's FIN ("got N"): needs END_STREAM → FIN and the
    way back still open."""
    total = 0
    while data := await reader.read(65536):
        total += len(data)
    writer.write(f"got {total}".encode())
    await writer.drain()
    writer.close()


def tcp_connector(host: str | None = None, record: list | None = None):
    """An ``authorize_and_connect`` that allows everything and connects to the CONNECT authority
    (or to ``host`` with the authority's port); each request is appended to ``record`` if given."""

    async def authorize_and_connect(request):
        if record is not None:
            record.append(request)
        ip, port = request.authority
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host or ip, port, limit=256 * 1024), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            return Outcome.refused(503, f"upstream {ip}:{port} connect failed: {exc}")
        return Outcome.connected(reader, writer)

    return authorize_and_connect
