"""HBONE client ↔ server on loopback: tunnels, statuses, headers, pooling, flow control, resets."""

import asyncio
import hashlib
import os
import re
import socket
import time

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from waiting import poll, run_bounded
from hbone_testing import LocalPKI, count_then_answer, start_echo, tcp_connector
from reference_impl.hbone import (HboneClient, abort, HboneError, HboneServer, Outcome, format_forwarded,
                                  parse_baggage, parse_forwarded, parse_traceparent, workload_baggage)
from reference_impl.identity import SERVER, Identity

CLIENT_ID = Identity.for_workload("th-client", "sleep")
SERVER_ID = Identity.for_workload("th-server", "httpbin")
TIMEOUT = 60


class Mesh:
    """A PKI, a TCP echo upstream, an HBONE server listener and a client, all on loopback."""

    def __init__(self, authorize=None, host="127.0.0.2", **client_options):
        self.authorize = authorize
        self.host = host
        self.client_options = client_options
        self.requests = []

    async def __aenter__(self):
        self.pki = LocalPKI()
        self.echo, self.echo_port = await start_echo(self.host)
        connect = tcp_connector()

        async def authorize_and_connect(request):
            self.requests.append(request)
            if self.authorize is not None:
                return await self.authorize(request)
            return await connect(request)

        self.server = HboneServer(authorize_and_connect, self.pki.context)
        self.listener = await self.server.listen((self.host, 0), SERVER_ID)
        self.client = HboneClient(self.pki.context, **self.client_options)
        return self

    async def connect(self, authority=None, headers=None, **kw):
        return await self.client.connect(CLIENT_ID, self.listener.address, [SERVER_ID],
                                         authority or (self.host, self.echo_port), headers, **kw)

    async def __aexit__(self, *exc):
        await self.client.close()
        await self.server.close()
        self.echo.close()


async def read_all(stream):
    chunks = []
    while data := await stream.read():
        chunks.append(data)
    return b"".join(chunks)


def test_bytes_round_trip_through_the_tunnel_with_half_close():
    async def scenario():
        async with Mesh() as mesh:
            stream = await mesh.connect()
            payload = os.urandom(8 * 1024 * 1024 + 17)  # > window: flow control must kick in

            async def send():
                for i in range(0, len(payload), 100_000):
                    stream.write(payload[i:i + 100_000])
                    await stream.drain()
                stream.write_eof()

            sender = asyncio.ensure_future(send())
            echoed = await read_all(stream)  # EOF only comes after our FIN went through
            await sender
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            await poll(lambda: stream.finished, what="stream closed in both directions")
            request = mesh.requests[0]
            assert request.peer_identity == CLIENT_ID
            assert request.local_identity == SERVER_ID
            assert request.authority == (mesh.host, mesh.echo_port)
    run_bounded(scenario(), TIMEOUT)


@pytest.mark.parametrize("status,reason", [
    (401, "RBAC: denied by policy th-deny"),
    (503, "unknown port"),
    (400, "authority IP is not this pod"),
])
def test_refusal_status_surfaces_as_hbone_error(status, reason):
    async def refuse(request):
        return Outcome.refused(status, reason)

    async def scenario():
        async with Mesh(authorize=refuse) as mesh:
            with pytest.raises(HboneError) as caught:
                await mesh.connect()
            assert caught.value.status == status
            assert any(s == status and r == reason for _, s, r in mesh.server.refusals)
            # the connection survives a refused stream and carries the next one
            mesh.authorize = None
            stream = await mesh.connect()
            stream.write(b"ping")
            stream.write_eof()
            assert await read_all(stream) == b"ping"
            assert mesh.server.connections_accepted == 1
    run_bounded(scenario(), TIMEOUT)


def test_upstream_connect_failure_is_503():
    async def scenario():
        async with Mesh() as mesh:
            closed = socket.socket()
            closed.bind((mesh.host, 0))
            port = closed.getsockname()[1]
            closed.close()  # nothing listens there now
            with pytest.raises(HboneError) as caught:
                await mesh.connect(authority=(mesh.host, port))
            assert caught.value.status == 503
    run_bounded(scenario(), TIMEOUT)


@pytest.mark.parametrize("authority", ["httpbin.ambient-apps:8000", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:http"])
def test_authority_that_is_not_ip_port_is_400_before_authorization(authority):
    async def scenario():
        async with Mesh() as mesh:
            with pytest.raises(HboneError) as caught:
                await mesh.connect(authority=authority)
            assert caught.value.status == 400
            assert mesh.requests == []  # never reached authorize_and_connect
    run_bounded(scenario(), TIMEOUT)


def test_headers_arrive_in_hbone_formats():
    async def scenario():
        async with Mesh() as mesh:
            baggage = workload_baggage("th-client", "sleep", service="sleep", version="v1")
            forwarded = format_forwarded("127.0.0.9", 41234, host="httpbin.th-server.svc.cluster.local")
            stream = await mesh.connect(headers={"baggage": baggage, "forwarded": forwarded},
                                        source_ip="127.0.0.3")
            stream.write_eof()
            await read_all(stream)
            request = mesh.requests[0]
            assert parse_baggage(request.baggage) == {
                "k8s.namespace.name": "th-client", "k8s.deployment.name": "sleep",
                "service.name": "sleep", "service.version": "v1"}
            assert request.forwarded == 'for="127.0.0.9:41234";host=httpbin.th-server.svc.cluster.local'
            assert parse_forwarded(request.forwarded)["for"] == "127.0.0.9:41234"
            assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", request.traceparent)
            assert parse_traceparent(request.traceparent) is not None
            assert request.peer_address[0] == "127.0.0.3"  # the pool's source IP is the socket's
    run_bounded(scenario(), TIMEOUT)


def test_two_streams_share_one_connection_and_the_101st_opens_a_second():
    async def scenario():
        async with Mesh() as mesh:
            first, second = await asyncio.gather(mesh.connect(), mesh.connect())
            assert mesh.server.connections_accepted == 1 and len(mesh.client.connections()) == 1
            held = [first, second] + list(await asyncio.gather(*(mesh.connect() for _ in range(98))))
            assert mesh.server.connections_accepted == 1
            extra = await mesh.connect()
            assert mesh.server.connections_accepted == 2 and len(mesh.client.connections()) == 2
            # every tunnel still works, on whichever connection it rides
            for stream in held[:3] + [extra]:
                stream.write(b"x")
                stream.write_eof()
                assert await read_all(stream) == b"x"
            # a different source identity never shares a pooled connection
            other = Identity.for_workload("th-client", "rogue")
            await mesh.client.connect(other, mesh.listener.address, [SERVER_ID], (mesh.host, mesh.echo_port))
            assert mesh.server.connections_accepted == 3
            for stream in held:
                stream.close()
    run_bounded(scenario(), TIMEOUT)


def test_slow_reader_holds_the_sender_at_the_flow_control_window():
    total = 48 * 1024 * 1024
    produced = []

    async def blaster(request):
        # an upstream app that writes as fast as the tunnel lets it
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=a)
        app_reader, app_writer = await asyncio.open_connection(sock=b)

        async def produce():
            chunk = b"z" * 65536
            sent = 0
            while sent < total:
                app_writer.write(chunk)
                await app_writer.drain()
                sent += len(chunk)
                produced.append(sent)
            app_writer.write_eof()
        asyncio.ensure_future(produce())
        return Outcome.connected(reader, writer)

    async def scenario():
        async with Mesh(authorize=blaster) as mesh:
            stream = await mesh.connect()
            await poll(lambda: produced, what="upstream started")
            last, stable_since = -1, time.monotonic()
            while time.monotonic() - stable_since < 0.5:  # wait until the producer is stuck
                if produced[-1] != last:
                    last, stable_since = produced[-1], time.monotonic()
                await asyncio.sleep(0.05)
            assert produced[-1] < total / 2, f"{produced[-1]} bytes left the app without a reader"
            assert stream.bytes_received <= 4 * 1024 * 1024
            stream.write_eof()
            assert len(await read_all(stream)) == total
    run_bounded(scenario(), TIMEOUT)


def test_upstream_reset_resets_the_stream_and_client_reset_reaches_upstream():
    async def scenario():
        accepted = asyncio.Queue()

        async def app(reader, writer):
            await accepted.put((reader, writer))

        app_server = await asyncio.start_server(app, "127.0.0.2", 0)
        app_port = app_server.sockets[0].getsockname()[1]
        async with Mesh() as mesh:
            stream = await mesh.connect(authority=("127.0.0.2", app_port))
            _, app_writer = await accepted.get()
            abort(app_writer)  # the app's TCP RST ...
            with pytest.raises(ConnectionResetError):  # ... is a reset of the tunnel, not an EOF
                while await stream.read():
                    pass

            stream = await mesh.connect(authority=("127.0.0.2", app_port))
            app_reader, _ = await accepted.get()
            stream.write(b"partial")
            assert await app_reader.readexactly(7) == b"partial"
            stream.reset()  # RST_STREAM from the client ...
            with pytest.raises(ConnectionResetError):  # ... is a TCP RST at the app
                await asyncio.wait_for(app_reader.read(), 5)
        app_server.close()
    run_bounded(scenario(), TIMEOUT)


def test_pings_are_acknowledged_and_idle_connections_are_released():
    async def scenario():
        async with Mesh(ping_interval=0.1, idle_timeout=0.5) as mesh:
            stream = await mesh.connect()
            session = mesh.client.connections()[0]
            await poll(lambda: session.pings_acked >= 2, what="two PING acks")
            stream.write_eof()
            await read_all(stream)
            assert not session.closed  # in use moments ago
            await poll(lambda: session.closed, 5, "idle release")
            assert mesh.client.connections() == []
            await mesh.connect()  # a fresh connection replaces it
            assert mesh.server.connections_accepted == 2
    run_bounded(scenario(), TIMEOUT)


def test_client_uses_an_injected_socket_factory():
    made = []

    async def marked_socket(dest):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x539)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, dest)
        made.append(sock)
        return sock

    async def scenario():
        async with Mesh(sock_factory=marked_socket) as mesh:
            stream = await mesh.connect()
            stream.write(b"marked")
            stream.write_eof()
            assert await read_all(stream) == b"marked"
            assert len(made) == 1
            assert made[0].getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == 0x539
    if os.geteuid() != 0:
        pytest.skip("SO_MARK needs CAP_NET_ADMIN (run as root)")
    run_bounded(scenario(), TIMEOUT)


def test_drain_finishes_open_streams_and_moves_new_ones_off_the_connection():
    async def scenario():
        async with Mesh() as mesh:
            stream = await mesh.connect()
            session = mesh.client.connections()[0]
            drained = asyncio.ensure_future(mesh.listener.drain(grace=20))
            await poll(lambda: session.goaway_received, what="GOAWAY at the client")
            stream.write(b"still here")
            assert await stream.read() == b"still here"  # the open stream keeps working
            with pytest.raises(HboneError) as caught:  # a new stream needs a new connection: refused
                await mesh.connect()
            assert caught.value.status is None and mesh.server.connections_accepted == 1
            stream.write_eof()
            assert await read_all(stream) == b""
            assert await asyncio.wait_for(drained, 5) == 0  # ended with the last stream, not the deadline
            await poll(lambda: session.closed, what="client connection closed after its last stream")
    run_bounded(scenario(), TIMEOUT)


def test_drain_deadline_resets_streams_still_open():
    async def scenario():
        async with Mesh() as mesh:
            stream = await mesh.connect()
            assert await mesh.listener.drain(grace=0.3) == 1
            with pytest.raises(ConnectionResetError):
                while await stream.read():
                    pass
    run_bounded(scenario(), TIMEOUT)


def test_half_close_keeps_the_reverse_direction_open():
    async def scenario():
        app = await asyncio.start_server(count_then_answer, "127.0.0.2", 0)
        port = app.sockets[0].getsockname()[1]
        async with Mesh() as mesh:
            stream = await mesh.connect(authority=("127.0.0.2", port))
            stream.write(b"a" * 300_000)
            stream.write_eof()
            assert await read_all(stream) == b"got 300000"
        app.close()
    run_bounded(scenario(), TIMEOUT)


# ---- which failures are safe to retry: HboneError.unprocessed ----

def test_connect_above_the_goaway_last_stream_id_is_unprocessed():
    async def scenario():
        async with Mesh() as mesh:
            first = await mesh.connect()
            client_session = mesh.client.connections()[0]
            server_session = next(iter(mesh.listener.sessions))
            # The server decides to go away (last stream 1) while the client's next CONNECT
            # (stream 3) is already on the wire: hold the server's reading so both cross.
            server_session.transport.pause_reading()
            second = asyncio.ensure_future(mesh.connect())
            await poll(lambda: 3 in client_session.streams, what="the second CONNECT sent")
            server_session.send_goaway()
            server_session.transport.resume_reading()
            with pytest.raises(HboneError) as caught:
                await second
            assert caught.value.unprocessed is True and caught.value.status is None, caught.value
            assert len(mesh.requests) == 1, "the server acted on a stream above its GOAWAY"
            first.write(b"still mine")  # stream 1 is at or below last_stream_id: it carries on
            assert await first.read() == b"still mine"
    run_bounded(scenario(), TIMEOUT)


def test_connect_on_a_connection_that_already_saw_goaway_is_unprocessed():
    async def scenario():
        async with Mesh() as mesh:
            await mesh.connect()
            session = mesh.client.connections()[0]
            checked_out = await mesh.client._checkout(session.key)  # pooled before the GOAWAY came
            assert checked_out is session
            drained = asyncio.ensure_future(mesh.listener.drain(grace=5))
            await poll(lambda: session.goaway_received, what="GOAWAY at the client")
            with pytest.raises(HboneError) as caught:
                await session.open_stream([(":method", "CONNECT"), (":authority", f"{mesh.host}:{mesh.echo_port}")])
            assert caught.value.unprocessed is True, caught.value
            assert len(mesh.requests) == 1
            drained.cancel()
    run_bounded(scenario(), TIMEOUT)


class _BareH2Server(asyncio.Protocol):
    """A bare HTTP/2 server (h2 over our mutual TLS) answering each CONNECT with
    ``answer(conn, stream_id)``: the frames other servers send, without our server's choices."""

    def __init__(self, answer):
        self.answer = answer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))

    def connection_made(self, transport):
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data):
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.answer(self.conn, event.stream_id)
        self.transport.write(self.conn.data_to_send())


async def _bare_h2_server(pki, answer):
    return await asyncio.get_running_loop().create_server(
        lambda: _BareH2Server(answer), "127.0.0.2", 0, ssl=await pki.context(SERVER_ID, SERVER))


@pytest.mark.parametrize("code, unprocessed", [(ErrorCodes.REFUSED_STREAM, True),
                                               (ErrorCodes.CONNECT_ERROR, False),
                                               (ErrorCodes.INTERNAL_ERROR, False)],
                         ids=["REFUSED_STREAM", "CONNECT_ERROR", "INTERNAL_ERROR"])
def test_only_refused_stream_marks_a_reset_connect_unprocessed(code, unprocessed):
    async def scenario():
        pki = LocalPKI()
        # REFUSED_STREAM is what an HTTP/2 server over its stream limit answers (Envoy does)
        peer = await _bare_h2_server(pki, lambda conn, sid: conn.reset_stream(sid, code))
        client = HboneClient(pki.context)
        try:
            with pytest.raises(HboneError) as caught:
                await client.connect(CLIENT_ID, peer.sockets[0].getsockname(), [SERVER_ID], ("127.0.0.2", 9))
            assert code.name in str(caught.value)
            assert caught.value.unprocessed is unprocessed and caught.value.status is None
        finally:
            await client.close()
            peer.close()
    run_bounded(scenario(), TIMEOUT)


def test_a_connect_the_server_acted_on_is_never_unprocessed():
    async def scenario():
        async def cut_connection(request):  # received and being authorized: processed
            next(iter(mesh.listener.sessions)).abort("test cuts the connection mid-authorization")
            return Outcome.refused(503, "unreachable")

        async with Mesh(authorize=cut_connection) as mesh:
            with pytest.raises(HboneError) as caught:
                await mesh.connect()
            assert caught.value.status is None and caught.value.unprocessed is False, caught.value
        async with Mesh(authorize=lambda request: _refuse_503()) as mesh:
            with pytest.raises(HboneError) as caught:
                await mesh.connect()
            assert caught.value.status == 503 and caught.value.unprocessed is False
    run_bounded(scenario(), TIMEOUT)


async def _refuse_503():
    return Outcome.refused(503, "no upstream")


def _answering(answer: bytes, then_reset: int | None):
    """A bare server's answer: 200, ``answer`` in 16 KiB DATA frames, END_STREAM, then
    RST_STREAM(``then_reset``) unless None."""
    def respond(conn, sid):
        conn.send_headers(sid, [(":status", "200")])
        for i in range(0, len(answer), 16384):
            conn.send_data(sid, answer[i:i + 16384])
        conn.end_stream(sid)
        if then_reset is not None:
            conn.reset_stream(sid, then_reset)
    return respond


@pytest.mark.parametrize("then_reset", [True, False], ids=["END_STREAM+RST_STREAM(NO_ERROR)", "END_STREAM"])
def test_a_complete_answer_followed_by_rst_no_error_is_kept(then_reset):
    # RFC 9113 §8.1: a server may answer in full, then RST_STREAM(NO_ERROR) so the client stops
    # sending (Envoy does at the end of every tunnel); the client MUST NOT discard the answer.
    answer = os.urandom(3 * 1024 * 1024)  # < the 4 MiB stream window: all of it arrives at once

    async def scenario():
        pki = LocalPKI()
        peer = await _bare_h2_server(pki, _answering(answer, ErrorCodes.NO_ERROR if then_reset else None))
        client = HboneClient(pki.context)
        try:
            stream = await client.connect(CLIENT_ID, peer.sockets[0].getsockname(), [SERVER_ID], ("127.0.0.2", 9))
            await poll(lambda: stream.finished if then_reset else stream._recv_eof, what="the whole answer in")
            stream.write(b"the server wants no more of this")  # dropped, not an error
            await stream.drain()
            assert await read_all(stream) == answer
            stream.close()
            again = await client.connect(CLIENT_ID, peer.sockets[0].getsockname(), [SERVER_ID], ("127.0.0.2", 9))
            assert await read_all(again) == answer
            assert client.connections_opened == 1
        finally:
            await client.close()
            peer.close()
    run_bounded(scenario(), TIMEOUT)


def test_an_answer_before_end_stream_stays_readable_after_a_cancel():
    # END_STREAM, then RST_STREAM(CANCEL) before the reader ran (an Envoy waypoint ending a
    # `Connection: close` tunnel; the waypoint resetting a closed stream the client still writes
    # to): the answer is whole and then EOF, as a socket's data before its FIN then RST.
    answer = os.urandom(3 * 1024 * 1024)

    async def scenario():
        pki = LocalPKI()
        peer = await _bare_h2_server(pki, _answering(answer, ErrorCodes.CANCEL))
        client = HboneClient(pki.context)
        try:
            stream = await client.connect(CLIENT_ID, peer.sockets[0].getsockname(), [SERVER_ID], ("127.0.0.2", 9))
            await poll(lambda: stream._reset is not None, what="the RST_STREAM in")
            assert await read_all(stream) == answer
            assert await stream.read() == b""
        finally:
            await client.close()
            peer.close()
    run_bounded(scenario(), TIMEOUT)


def test_closing_a_stream_with_unread_data_returns_its_window_to_the_connection():
    # A stream closed after the peer's END_STREAM with its answer left unread must still hand
    # those bytes back to the connection's flow-control window; otherwise each such close
    # shrinks the window for good, and once 16 MiB are lost every later tunnel on the pooled
    # connection opens (200) and then never gets an answer.
    answer = 4 * 1024 * 1024  # one stream window: it all arrives without a read

    async def talker(reader, writer):
        writer.write(os.urandom(answer))
        await writer.drain()
        writer.close()

    async def scenario():
        app = await asyncio.start_server(talker, "127.0.0.2", 0)
        talker_addr = ("127.0.0.2", app.sockets[0].getsockname()[1])
        async with Mesh() as mesh:
            for _ in range(4):  # 16 MiB left unread in all: the whole connection window
                stream = await mesh.connect(authority=talker_addr)
                await poll(lambda: stream._recv_eof, what="the whole answer in")
                stream.close()
            stream = await mesh.connect()
            stream.write(b"still answered")
            assert await asyncio.wait_for(stream.read(), 5) == b"still answered"
            assert mesh.client.connections_opened == 1
        app.close()
    run_bounded(scenario(), TIMEOUT)
