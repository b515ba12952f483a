"""The HBONE session's own DATA reader (hbone/session.py `_receive`) fed a real h2 client's bytes
cut at every kind of boundary (inside a frame header, inside a payload, one byte at a time): the
stream reads exactly what was sent and END_STREAM once, and both receive windows are charged for
every payload byte as it arrives, as h2's own reader would."""

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from reference_impl.hbone.session import MAX_FRAME_SIZE, STREAM_WINDOW, H2Session
from reference_impl.hbone.stream import HboneStream


class _Recorder:
    """The transport side: what the session writes (SETTINGS, WINDOW_UPDATE) is kept, not sent."""

    def __init__(self):
        self.written = bytearray()

    def write(self, data):
        self.written += data

    def is_closing(self):
        return False

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_extra_info(self, name, default=None):
        return default


class _Server(H2Session):
    client_side = False

    def on_event(self, event):
        if isinstance(event, h2.events.RequestReceived):
            self.register(HboneStream(self, event.stream_id))


def _client_bytes(server_hello: bytes, payload: bytes, frame: int) -> bytes:
    """What a real h2 client sends after reading the server's SETTINGS: preface, SETTINGS, ACK,
    the CONNECT and `payload` in DATA frames of `frame` bytes, END_STREAM on the last."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.receive_data(server_hello)   # the server's SETTINGS (1 MiB frames, 4 MiB stream window)
    client.send_headers(1, [(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    for offset in range(0, len(payload), frame):
        client.send_data(1, payload[offset:offset + frame], end_stream=offset + frame >= len(payload))
    return client.data_to_send()


@pytest.mark.parametrize("cuts", [1, 5, 9, 10, 4093, 65536, 300_000])
@pytest.mark.parametrize("frame", [16_384, MAX_FRAME_SIZE])
def test_data_frames_cut_anywhere_are_read_whole_with_both_windows_charged(cuts, frame):
    payload = bytes(range(256)) * (2_500_000 // 256 + 1)
    payload = payload[:2_500_000 if cuts >= 4093 else 40_000]

    async def main():
        session, transport = _Server(), _Recorder()
        session.start_h2(transport)
        wire = _client_bytes(bytes(transport.written), payload, frame)
        conn_window = session.conn.inbound_flow_control_window
        for offset in range(0, len(wire), cuts):
            session.data_received(wire[offset:offset + cuts])
        stream = session.streams[1]
        assert session.conn.inbound_flow_control_window == conn_window - len(payload), \
            "the connection's receive window is charged for every DATA byte received"
        assert session.conn.streams[1].inbound_flow_control_window == STREAM_WINDOW - len(payload)
        got = bytearray()
        while chunk := await asyncio.wait_for(stream.read(), 5):   # everything is in: no wait
            got += chunk
        assert bytes(got) == payload
        assert stream.at_eof() and await stream.read() == b""

    asyncio.run(main())
