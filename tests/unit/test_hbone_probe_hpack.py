"""The adversarial HBONE probe's own HTTP/2 reading (used in images without `h2`): the :status
of a response header block, as a real HPACK encoder writes it."""
import importlib.util
from pathlib import Path

import hpack
import pytest

_PATH = Path(__file__).resolve().parents[2] / "conformance" / "probes" / "hbone_probe.py"
_spec = importlib.util.spec_from_file_location("hbone_probe", _PATH)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 500, 503])
@pytest.mark.parametrize("huffman", [True, False])
def test_status_of_a_real_hpack_block(status, huffman):
    block = hpack.Encoder().encode([(":status", str(status)), ("server", "ztunnel"),
                                    ("date", "Tue, 01 Dec 2026 10:00:00 GMT")], huffman=huffman)
    assert probe._status_of(block) == status


def test_status_after_a_table_size_update_and_other_headers_first():
    encoder = hpack.Encoder()
    encoder.header_table_size = 256   # makes the next block start with a dynamic table size update
    block = encoder.encode([("x-first", "1"), (":status", "503")])
    assert probe._status_of(block) == 503


def test_hpack_integer_round_trip():
    for value in (0, 5, 126, 127, 128, 300, 70000):
        encoded = probe._hpack_int(value, 7)
        assert probe._read_int(encoded, 0, 7) == (value, len(encoded))
