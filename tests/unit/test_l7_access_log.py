"""The L7 engine's access log (l7/access.py): the line logging itself would write, all of a loop
turn's lines in one write, none lost when the process ends before the turn's end."""

import asyncio
import io
import logging
import subprocess
import sys
from pathlib import Path

from reference_impl.l7.access import AccessLog

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"   # process/serve.py's configure_logging
REPO = Path(__file__).resolve().parents[2]


class Line:
    def __init__(self, text):
        self.text, self.built = text, 0

    def line(self):
        self.built += 1
        return self.text


class CountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, text):
        self.writes += 1
        return super().write(text)


def _logger(name, stream, level=logging.INFO):
    logger = logging.getLogger(name)
    logger.handlers[:] = []
    logger.propagate = False
    logger.setLevel(level)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    return logger


def test_a_turns_lines_are_written_at_its_end_in_one_write_as_logging_formats_them():
    ours, theirs = CountingStream(), io.StringIO()
    access = AccessLog(_logger("test.access.batch", ours))
    reference = _logger("test.access.reference", theirs)

    async def turn():
        loop = asyncio.get_running_loop()
        for n in range(3):
            access.write(Line(f'"GET /{n} HTTP/1.1" 200 src=- reason="allowed"'), loop)
            reference.info("%s", f'"GET /{n} HTTP/1.1" 200 src=- reason="allowed"')
        assert ours.getvalue() == "", "written before the loop turn ended"
        await asyncio.sleep(0)

    asyncio.run(turn())
    assert ours.writes == 1
    strip = lambda text: [line.split(" ", 2)[2].replace("test.access.batch", "NAME")
                          .replace("test.access.reference", "NAME") for line in text.splitlines()]
    assert strip(ours.getvalue()) == strip(theirs.getvalue())
    assert [line.split(" ", 4)[3] for line in ours.getvalue().splitlines()] == ["test.access.batch"] * 3
    # the timestamp is the request's, in logging's own format (date, time,msecs)
    assert all(len(line.split(" ")[1]) == len("12:00:00,000") for line in ours.getvalue().splitlines())


def test_a_logger_that_is_off_builds_no_line():
    stream = io.StringIO()
    access = AccessLog(_logger("test.access.off", stream, level=logging.WARNING))
    entry = Line("x")

    async def turn():
        access.write(entry, asyncio.get_running_loop())
        await asyncio.sleep(0)

    asyncio.run(turn())
    assert entry.built == 0 and stream.getvalue() == ""


def test_a_line_pending_when_the_loop_stops_is_written_at_exit():
    # The loop stops in the same turn the line was logged in, so the turn's flush never runs.
    script = (
        "import asyncio, logging, sys\n"
        "logging.basicConfig(level='INFO', stream=sys.stderr, format='%(name)s %(message)s')\n"
        "from reference_impl.l7.access import ACCESS_LOG\n"
        "class L:\n"
        "    def line(self): return 'the last request'\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.call_soon(lambda: (ACCESS_LOG.write(L(), loop), loop.stop()))\n"
        "loop.run_forever()\n"
        "print('loop stopped', file=sys.stderr, flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["loop stopped", "l7.access the last request"]


def test_a_record_emitted_outside_any_loop_is_written_at_once():
    from reference_impl.identity import Identity
    from reference_impl.l7.http import AccessRecord, TunnelHandler
    from reference_impl.l7.pipeline import Tunnel

    stream = io.StringIO()
    _logger("l7.access", stream)
    try:
        handler = TunnelHandler(None, None, Tunnel(Identity.parse("spiffe://cluster.local/ns/a/sa/b"), None, None),
                                lambda: None, None, None)
        handler.emit(AccessRecord("GET", "/", 200, "-", "allowed"))
        assert stream.getvalue().endswith('l7.access "GET /" 200 src=- jwt=- upstream=- 0.0ms reason="allowed"\n')
    finally:
        logger = logging.getLogger("l7.access")
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
