"""What an HBONE server refuses (and logs why), and what an HBONE client refuses."""

import asyncio
import ssl
import time

import h2.config
import h2.connection
import h2.events
import pytest

from waiting import poll, run_bounded
from hbone_testing import LocalPKI, start_echo, tcp_connector
from reference_impl.hbone import HboneClient, HboneError, HboneServer, HboneTLSError
from reference_impl.identity import CertificateAuthority, CertificateUnavailable, Identity, client_context

CLIENT_ID = Identity.for_workload("th-client", "sleep")
SERVER_ID = Identity.for_workload("th-server", "httpbin")
HOST = "127.0.0.4"


class Server:
    def __init__(self, pki: LocalPKI):
        self.pki = pki
        self.requests = []

    async def __aenter__(self):
        self.echo, self.echo_port = await start_echo(HOST)
        connect = tcp_connector()

        async def authorize_and_connect(request):
            self.requests.append(request)
            return await connect(request)

        self.server = HboneServer(authorize_and_connect, self.pki.context)
        self.listener = await self.server.listen((HOST, 0), SERVER_ID)
        self.address = self.listener.address
        return self

    async def __aexit__(self, *exc):
        await self.server.close()
        self.echo.close()

    def reasons(self):
        return [reason for _, _, reason in self.server.refusals]

    async def refused_because(self, fragment):
        await poll(lambda: any(fragment in r for r in self.reasons()), what=f"a refusal mentioning {fragment!r}")
        assert self.requests == [], "a refused connection must never reach authorization"


async def connect_with(pki, server, cert, identity=CLIENT_ID):
    """HboneClient whose source identity presents ``cert`` (a deliberately wrong one)."""
    ctx = client_context(cert)

    async def provider(_identity, _role):
        return ctx

    client = HboneClient(provider)
    try:
        stream = await client.connect(identity, server.address, [SERVER_ID], (HOST, server.echo_port))
        stream.write(b"hello")
        stream.write_eof()
        while await stream.read():
            pass
    finally:
        await client.close()


def test_client_without_certificate_is_refused():
    async def scenario():
        pki = LocalPKI()
        async with Server(pki) as server:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations(cadata=pki.ca.root_pem)
            ctx.set_alpn_protocols(["h2"])
            reader, writer = await asyncio.open_connection(*server.address, ssl=ctx, server_hostname="")
            # TLS 1.3: the client finishes first; the server's verdict closes the connection
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            try:
                data = await asyncio.wait_for(reader.read(100), 5)
            except (ssl.SSLError, ConnectionError):
                data = b""
            assert data == b"", f"server answered {data!r} to a client without a certificate"
            writer.close()
            await server.refused_because("client presented no certificate")
    run_bounded(scenario(), 60)


def test_certificate_from_another_ca_is_refused():
    async def scenario():
        pki = LocalPKI()
        async with Server(pki) as server:
            foreign = pki.issue(CLIENT_ID, ca=CertificateAuthority.create())
            with pytest.raises(HboneError) as caught:
                await connect_with(pki, server, foreign)
            assert caught.value.status is None
            await server.refused_because("unable to get local issuer certificate")
    run_bounded(scenario(), 60)


def test_certificate_of_another_trust_domain_is_refused():
    async def scenario():
        pki = LocalPKI(CertificateAuthority.create(trust_domain_aliases=("other.local",)))
        async with Server(pki) as server:
            stranger = Identity("other.local", "th-client", "sleep")
            with pytest.raises(HboneError):
                await connect_with(pki, server, pki.issue(stranger), identity=stranger)
            await server.refused_because("is not in trust domain 'cluster.local'")
    run_bounded(scenario(), 60)


def test_expired_certificate_is_refused():
    async def scenario():
        pki = LocalPKI()
        async with Server(pki) as server:
            short = pki.issue(CLIENT_ID, ttl=1)
            await poll(lambda: short.is_expired(time.time() - 1), 5, "the 1 s certificate to expire")
            with pytest.raises(HboneError):
                await connect_with(pki, server, short)
            await server.refused_because("certificate has expired")
    run_bounded(scenario(), 60)


@pytest.mark.parametrize("greeting", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
def test_plaintext_to_the_hbone_port_is_refused(greeting):
    async def scenario():
        async with Server(LocalPKI()) as server:
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(greeting)
            try:
                answer = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                answer = b""
            assert b"HTTP" not in answer
            writer.close()
            await server.refused_because("plaintext (not TLS)")
    run_bounded(scenario(), 60)


def test_tls_1_2_is_refused():
    async def scenario():
        pki = LocalPKI()
        async with Server(pki) as server:
            ctx = client_context(pki.issue(CLIENT_ID))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.open_connection(*server.address, ssl=ctx, server_hostname="")
            await server.refused_because("did not offer TLS 1.3")
    run_bounded(scenario(), 60)


def test_non_connect_method_gets_400():
    async def scenario():
        pki = LocalPKI()
        async with Server(pki) as server:
            ctx = client_context(pki.issue(CLIENT_ID))
            reader, writer = await asyncio.open_connection(*server.address, ssl=ctx, server_hostname="")
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":path", "/"),
                                  (":authority", f"{HOST}:{server.echo_port}")], end_stream=True)
            writer.write(conn.data_to_send())
            status = None
            while status is None:
                data = await asyncio.wait_for(reader.read(65536), 5)
                assert data, "server closed instead of answering"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[":status"]
                writer.write(conn.data_to_send())
            assert status == "400"
            await server.refused_because("is not CONNECT")
            writer.close()
    run_bounded(scenario(), 60)


def test_client_refuses_a_server_that_is_not_the_expected_identity():
    async def scenario():
        pki = LocalPKI()
        async with Server(pki) as server:
            client = HboneClient(pki.context)
            impostor_expected = Identity.for_workload("th-server", "not-httpbin")
            with pytest.raises(HboneTLSError, match="is not one of the expected"):
                await client.connect(CLIENT_ID, server.address, [impostor_expected], (HOST, server.echo_port))
            assert client.connections() == []
            assert server.requests == []
            # the right expectation (among others, e.g. a waypoint's) is accepted
            stream = await client.connect(CLIENT_ID, server.address, [impostor_expected, SERVER_ID],
                                          (HOST, server.echo_port))
            stream.write_eof()
            assert await stream.read() == b""
            await client.close()
    run_bounded(scenario(), 60)


def test_client_refuses_a_server_certificate_from_another_ca():
    async def scenario():
        mesh, rogue = LocalPKI(), LocalPKI()
        async with Server(rogue) as server:  # the server's certificate chains to a root we do not trust
            client = HboneClient(mesh.context)
            with pytest.raises(HboneTLSError, match="certificate verify failed"):
                await client.connect(CLIENT_ID, server.address, [SERVER_ID], (HOST, server.echo_port))
            await client.close()
            assert server.requests == []
    run_bounded(scenario(), 60)


def test_server_with_no_certificate_to_present_refuses_and_says_why():
    async def scenario():
        pki = LocalPKI()

        async def contexts(identity, role):
            if role == "server":
                raise CertificateUnavailable(f"no valid certificate for {identity} after 10s")
            return await pki.context(identity, role)

        server = HboneServer(tcp_connector(), contexts)
        listener = await server.listen((HOST, 0), SERVER_ID)
        client = HboneClient(pki.context)
        try:
            with pytest.raises(HboneError):
                await client.connect(CLIENT_ID, listener.address, [SERVER_ID], (HOST, 9))
            assert any(f"no certificate for {SERVER_ID} to present" in r for _, _, r in server.refusals)
        finally:
            await client.close()
            await server.close()
    run_bounded(scenario(), 60)
