"""A TCP socket spliced to an HBONE stream (hbone/splice.py, the ztunnel's copy path) on both
ends of a loopback tunnel: bytes intact, half-close each way, resets each way, and a reader that
does not read holds the writer back (bounded memory), on uvloop and on the stdlib loop."""

import asyncio
import hashlib
import os
import socket

import pytest

from waiting import poll
from hbone_testing import LocalPKI, count_then_answer, start_echo
from reference_impl.hbone import HboneClient, HboneServer, Outcome, StreamSplice, eventloop, splice
from reference_impl.identity import Identity

CLIENT_ID = Identity.for_workload("sp-client", "sleep")
SERVER_ID = Identity.for_workload("sp-server", "httpbin")
HOST = "127.0.0.2"
TIMEOUT = 60
LOOPS = pytest.mark.parametrize("loop", eventloop.KINDS)


def run(scenario, loop):
    eventloop.run(asyncio.wait_for(scenario, TIMEOUT), loop)


async def _connected_socket(addr) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, addr)
    return sock


class Tunnel:
    """HBONE server splicing each CONNECT to its authority; the client side splices one end of a
    loopback TCP connection to the stream, the test holds the other end as asyncio streams."""

    def __init__(self, upstream=None):
        self.upstream = upstream  # request -> connected socket; default: the CONNECT authority
        self.splices: list[StreamSplice] = []
        self.client_splice: asyncio.Task | None = None

    async def __aenter__(self):
        self.pki = LocalPKI()

        async def connect(request):
            sock = await (self.upstream(request) if self.upstream else _connected_socket(request.authority))
            self.splices.append(StreamSplice(sock))
            return Outcome.spliced(self.splices[-1])

        self.server = HboneServer(connect, self.pki.context)
        self.listener = await self.server.listen((HOST, 0), SERVER_ID)
        self.client = HboneClient(self.pki.context)
        return self

    async def open(self, authority):
        self.stream = await self.client.connect(CLIENT_ID, self.listener.address, [SERVER_ID], authority)
        with socket.create_server((HOST, 0)) as listener:  # TCP, so that a reset is a real RST
            listener.setblocking(False)
            connecting = asyncio.ensure_future(asyncio.open_connection(*listener.getsockname()))
            ours, _ = await asyncio.get_running_loop().sock_accept(listener)
            pair = await connecting
        self.client_splice = asyncio.ensure_future(splice(ours, self.stream))
        return pair

    async def __aexit__(self, *exc):
        if self.client_splice is not None and not self.client_splice.done():
            self.client_splice.cancel()
        await self.client.close()
        await self.server.close()


@LOOPS
def test_bytes_round_trip_spliced_at_both_ends_with_half_close(loop):
    async def scenario():
        echo, port = await start_echo(HOST)
        async with Tunnel() as tunnel:
            reader, writer = await tunnel.open((HOST, port))
            payload = os.urandom(8 * 1024 * 1024 + 17)  # > the stream window: flow control kicks in

            async def send():
                for i in range(0, len(payload), 100_000):
                    writer.write(payload[i:i + 100_000])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.ensure_future(send())
            echoed = await reader.read(-1)  # EOF only comes after our FIN went through and back
            await sender
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            assert await tunnel.client_splice == (len(payload), len(payload))
            await poll(lambda: tunnel.stream.finished, what="stream closed both ways")
            assert (tunnel.splices[0].from_stream, tunnel.splices[0].to_stream) == (len(payload), len(payload))
        echo.close()
    run(scenario(), loop)


@LOOPS
def test_half_close_keeps_the_reverse_direction_open(loop):
    async def scenario():
        app = await asyncio.start_server(count_then_answer, HOST, 0)
        async with Tunnel() as tunnel:
            reader, writer = await tunnel.open((HOST, app.sockets[0].getsockname()[1]))
            writer.write(b"a" * 300_000)
            writer.write_eof()
            assert await reader.read(-1) == b"got 300000"
        app.close()
    run(scenario(), loop)


@LOOPS
def test_a_reset_on_either_side_resets_the_other(loop):
    async def scenario():
        accepted = asyncio.Queue()

        async def app(reader, writer):
            await accepted.put((reader, writer))

        app_server = await asyncio.start_server(app, HOST, 0)
        port = app_server.sockets[0].getsockname()[1]
        async with Tunnel() as tunnel:
            reader, writer = await tunnel.open((HOST, port))
            _, app_writer = await accepted.get()
            app_writer.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            app_writer.transport.abort()  # the app's TCP RST ...
            with pytest.raises(ConnectionResetError):  # ... is a TCP RST at the client, not an EOF
                await reader.read(-1)
            with pytest.raises(ConnectionResetError):
                await tunnel.client_splice

            reader, writer = await tunnel.open((HOST, port))
            app_reader, _ = await accepted.get()
            writer.write(b"partial")
            assert await app_reader.readexactly(7) == b"partial"
            tunnel.splices[-1].reset()  # what a policy revocation does ...
            with pytest.raises(ConnectionResetError):  # ... is a TCP RST at the app
                await app_reader.read()
            with pytest.raises(ConnectionResetError):  # ... and at the client
                await reader.read(-1)
            with pytest.raises(ConnectionResetError):
                await tunnel.client_splice
        app_server.close()
    run(scenario(), loop)


def _app_with_small_buffer(held: list, rcvbuf: int, then=None):
    """A Tunnel upstream: the app's end of a socketpair with a small receive buffer, appended to
    ``held`` as asyncio streams (and given to ``then``); the proxy splices the other end."""
    async def upstream(request):
        app_end, proxy_end = socket.socketpair()
        proxy_end.setblocking(False)
        app_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        held.append(await asyncio.open_connection(sock=app_end))
        if then is not None:
            then(held[-1])
        return proxy_end
    return upstream


@LOOPS
@pytest.mark.parametrize("slow", ["client", "app"])
def test_a_reader_that_does_not_read_holds_the_writer_back(loop, slow):
    total = 96 * 1024 * 1024
    produced = [0]

    async def produce(writer):
        chunk = b"z" * 65536
        while produced[0] < total:
            writer.write(chunk)
            await writer.drain()
            produced[0] += len(chunk)
        writer.write_eof()

    async def scenario():
        held = []
        then = (lambda app: asyncio.ensure_future(produce(app[1]))) if slow == "client" else None
        async with Tunnel(_app_with_small_buffer(held, 64 * 1024, then)) as tunnel:
            reader, writer = await tunnel.open((HOST, 9))
            writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            if slow == "app":
                asyncio.ensure_future(produce(writer))
            await poll(lambda: produced[0], what="producer started")
            last, still = -1, 0
            while still < 10:  # wait until the producer is stuck (0.5 s without progress)
                still = still + 1 if produced[0] == last else 0
                last = produced[0]
                await asyncio.sleep(0.05)
            assert produced[0] < total / 2, f"{produced[0]} bytes went in with nobody reading"
            sink = held[0][0] if slow == "app" else reader
            assert len(await sink.read(-1)) == total  # and all of it arrives once read
    run(scenario(), loop)


@LOOPS
@pytest.mark.parametrize("slow", ["client", "app"])
def test_a_slow_reader_gets_every_byte_intact(loop, slow):
    """Random bytes to a reader that takes them in small bites with pauses: its socket's writes
    come up short, so the TCP transport keeps what it could not write, and what it keeps must stay
    as it was while the session reads on (a received DATA frame leaves as a view of the session's
    read buffer, so that buffer must not be reused under it)."""
    payload = os.urandom(12 * 1024 * 1024 + 5)

    async def slowly(reader) -> bytes:
        got = bytearray()
        while chunk := await reader.read(48 * 1024):
            got += chunk
            if len(got) % 7 == 0:  # pauses at no fixed place: the sender's reads and writes vary
                await asyncio.sleep(0.002)
        return bytes(got)

    async def scenario():
        held = []
        async with Tunnel(_app_with_small_buffer(held, 32 * 1024)) as tunnel:
            reader, writer = await tunnel.open((HOST, 9))
            await poll(lambda: held, what="the server side spliced to the app")
            app_reader, app_writer = held[0]
            if slow == "app":   # client → HBONE → the server's splice → a slow app
                sender, receiver = writer, app_reader
            else:               # the app → HBONE → the client's splice → a slow client
                writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
                sender, receiver = app_writer, reader

            async def send():
                for i in range(0, len(payload), 256 * 1024):
                    sender.write(payload[i:i + 256 * 1024])
                    await sender.drain()
                sender.write_eof()

            sending = asyncio.ensure_future(send())
            got = await slowly(receiver)
            await sending
            assert len(got) == len(payload), f"{len(got)} of {len(payload)} bytes arrived"
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest(), \
                f"the bytes changed on the way: first difference at {_first_difference(got, payload)}"
    run(scenario(), loop)


def _first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@LOOPS
def test_a_reset_after_the_peers_end_stream_still_delivers_what_came_before_it(loop):
    """The peer sends its whole answer, END_STREAM, then RST_STREAM(CANCEL) (an Envoy waypoint
    ending a `Connection: close` tunnel): the spliced socket gets every byte and then a FIN, even
    when its reader is slow to read them, not an RST that drops what the transport still holds."""
    answer = os.urandom(3 * 1024 * 1024)  # within the stream window: END_STREAM follows at once

    async def answer_then_reset(stream):
        assert await stream.read() == b"request"
        stream.write(answer)
        stream.write_eof()
        await poll(lambda: stream._local_done, what="the answer and END_STREAM sent", timeout=10)
        stream.reset()

    async def scenario():
        pki = LocalPKI()
        server = HboneServer(lambda request: _handled(answer_then_reset), pki.context)
        listener = await server.listen((HOST, 0), SERVER_ID)
        client = HboneClient(pki.context)
        try:
            stream = await client.connect(CLIENT_ID, listener.address, [SERVER_ID], (HOST, 9))
            with socket.create_server((HOST, 0)) as tcp:
                tcp.setblocking(False)
                connecting = asyncio.ensure_future(asyncio.open_connection(*tcp.getsockname()))
                ours, _ = await asyncio.get_running_loop().sock_accept(tcp)
                reader, writer = await connecting
            spliced = asyncio.ensure_future(splice(ours, stream))
            writer.write(b"request")
            await poll(lambda: stream._reset is not None, what="the peer's RST_STREAM", timeout=10)
            got = await reader.read()  # only now: what the splice holds must still be there
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(answer).hexdigest(), \
                f"{len(got)} of {len(answer)} bytes arrived before the end"
            await asyncio.wait_for(spliced, 10)
            writer.close()
        finally:
            await client.close()
            await server.close()
    run(scenario(), loop)


async def _handled(handler):
    return Outcome.handled(handler)
