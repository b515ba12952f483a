"""An HBONE stream handed to a handler that reads and writes it itself (Outcome.handled, the
waypoint's L7 engine): the handler's close() half-closes like a socket's (END_STREAM, a read
waiting in the handler returns b''), the stream then ends cleanly on the client's END_STREAM, and
is reset when the client sends more or the handler fails, on uvloop and on the stdlib loop."""

import asyncio
import contextlib

import pytest

from hbone_testing import LocalPKI
from reference_impl.hbone import HboneClient, HboneServer, Outcome, StreamReset, eventloop
from reference_impl.identity import Identity

CLIENT_ID = Identity.for_workload("ho-client", "sleep")
SERVER_ID = Identity.for_workload("ho-server", "waypoint")
HOST = "127.0.0.2"
TIMEOUT = 30
LOOPS = pytest.mark.parametrize("loop", eventloop.KINDS)


def run(scenario, loop):
    eventloop.run(asyncio.wait_for(scenario, TIMEOUT), loop)


@contextlib.asynccontextmanager
async def handed_off(handler):
    """A client stream whose CONNECT the server answered with Outcome.handled(handler)."""
    pki = LocalPKI()

    async def connect(request):
        return Outcome.handled(handler)

    server = HboneServer(connect, pki.context)
    client = HboneClient(pki.context)
    try:
        listener = await server.listen((HOST, 0), SERVER_ID)
        yield await client.connect(CLIENT_ID, listener.address, [SERVER_ID], ("10.0.0.1", 80))
    finally:
        await client.close()
        await server.close()


async def _read_all(stream) -> bytes:
    data = b""
    while chunk := await stream.read():
        data += chunk
    return data


@LOOPS
def test_a_handled_stream_answers_half_closes_and_ends_on_the_clients_end_stream(loop):
    async def scenario():
        served = asyncio.get_running_loop().create_future()

        async def handler(stream):
            request = await stream.read(100)
            stream.write(b"got " + request)
            stream.write_eof()
            stream.close()
            served.set_result(stream)

        async with handed_off(handler) as stream:
            stream.write(b"hello")
            assert await _read_all(stream) == b"got hello", "the answer, then END_STREAM"
            theirs = await served
            assert not theirs.finished, "half-closed: the client's way is still open"
            stream.write_eof()
            for _ in range(200):
                if theirs.finished:
                    break
                await asyncio.sleep(0.01)
            assert theirs.finished and theirs._reset is None, "ended by both END_STREAMs, not a reset"

    run(scenario(), loop)


@LOOPS
def test_close_wakes_a_read_in_the_handler_with_eof(loop):
    async def scenario():
        read_result = asyncio.get_running_loop().create_future()

        async def handler(stream):
            reading = asyncio.ensure_future(stream.read(100))
            await asyncio.sleep(0.05)
            stream.close()   # as the waypoint's drain closes an idle keep-alive connection
            read_result.set_result(await asyncio.wait_for(reading, 5))

        async with handed_off(handler) as stream:
            assert await read_result == b""
            assert await asyncio.wait_for(stream.read(), 5) == b"", "the client sees END_STREAM"

    run(scenario(), loop)


@LOOPS
def test_data_after_the_handler_closed_resets_the_stream(loop):
    async def scenario():
        closed = asyncio.get_running_loop().create_future()

        async def handler(stream):
            stream.close()
            closed.set_result(stream)

        async with handed_off(handler) as stream:
            theirs = await closed
            assert await asyncio.wait_for(stream.read(), 5) == b""
            stream.write(b"too late")
            with pytest.raises(StreamReset):
                for _ in range(100):
                    await asyncio.sleep(0.01)
                    stream.write(b"x")   # raises once the RST_STREAM is in
            assert theirs.finished

    run(scenario(), loop)


@LOOPS
def test_a_failing_handler_resets_the_stream(loop):
    async def scenario():
        async def handler(stream):
            await stream.read(100)
            raise ConnectionResetError("the upstream reset mid-response")

        async with handed_off(handler) as stream:
            stream.write(b"request")
            with pytest.raises(StreamReset):
                await asyncio.wait_for(_read_all(stream), 5)

    run(scenario(), loop)
