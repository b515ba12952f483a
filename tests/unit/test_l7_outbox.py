"""The L7 engine's outbox (l7/http.py _Outbox): a message's bytes leave in one piece when it
ends, at once when no other request is in flight, else with the loop turn's other writes; what a
message leaves held goes out by the end of the turn; and the in-flight count returns to zero
whatever becomes of the requests."""

import asyncio

import h11

from reference_impl.l7.http import _Outbox
from tests.support.waypoint_seed import seed_snapshot
from tests.unit.test_waypoint_http import TIMEOUT, Harness


class Recorder:
    """A writer with an HBONE stream's two ways to write: send() now, write() at the turn's end."""

    def __init__(self):
        self.calls = []

    def write(self, data):
        self.calls.append(("write", data))

    def send(self, data):
        self.calls.append(("send", data))


def test_a_finished_message_leaves_in_one_send_when_it_is_the_only_request():
    async def main():
        writer = Recorder()
        out = _Outbox(writer)
        assert not out.put(b"HTTP/1.1 200 OK\r\n\r\n", end=False)
        assert not out.put(b"ok", end=False)
        assert writer.calls == []
        assert out.put(b"", end=True)
        assert writer.calls == [("send", b"HTTP/1.1 200 OK\r\n\r\nok")]
        await asyncio.sleep(0)   # the turn-end release finds nothing left
        assert len(writer.calls) == 1

    asyncio.run(main())


def test_with_other_requests_in_flight_a_finished_message_is_written_for_the_turns_end():
    async def main():
        writer = Recorder()
        out = _Outbox(writer)
        _Outbox.in_flight += 2
        try:
            out.put(b"head", end=False)
            out.put(b"body", end=True)
        finally:
            _Outbox.in_flight -= 2
        assert writer.calls == [("write", b"headbody")]

    asyncio.run(main())


def test_what_a_message_leaves_held_goes_out_by_the_end_of_the_turn():
    async def main():
        writer = Recorder()
        out = _Outbox(writer)
        out.put(b"head of a response whose body is slow", end=False)
        await asyncio.sleep(0)
        assert writer.calls == [("send", b"head of a response whose body is slow")]
        out.put(b"x" * (64 * 1024), end=False)   # CHUNK held: written now, so drain() sees it
        assert writer.calls[-1] == ("write", b"x" * (64 * 1024))

    asyncio.run(main())


def test_the_in_flight_count_returns_to_zero_after_good_refused_and_failed_requests():
    async def main():
        h = Harness(seed_snapshot(policies=False))
        h.fail_upstream = True
        assert (await h.request("/get"))[0] == 503
        h.fail_upstream = False
        assert (await h.request("/get"))[0] == 200
        assert _Outbox.in_flight == 0
        await h.close()
        # the upstream resets mid-response: the request ends in an exception (the client is reset)
        headers_seen = asyncio.Event()
        h = Harness(seed_snapshot(policies=False), cut_after_headers=headers_seen)
        h.client.write(h.h11.send(h11.Request(method="GET", target="/get", headers=[("host", "x")]))
                       + h.h11.send(h11.EndOfMessage()))
        while not headers_seen.is_set():
            event = h.h11.next_event()
            if event is h11.NEED_DATA:
                h.h11.receive_data(await asyncio.wait_for(h.client.read(65536), TIMEOUT))
            elif isinstance(event, h11.Response):
                headers_seen.set()
        await asyncio.wait_for(h.served, TIMEOUT)
        assert h.connection.writer.was_reset
        assert _Outbox.in_flight == 0

    asyncio.run(main())
