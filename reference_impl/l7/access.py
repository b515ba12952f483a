"""The L7 engine's access log (logger `l7.access`): one line per request, the same line the
logging module would write for `access_log.info("%s", line)`, but written once per loop turn.

A busy waypoint finishes several requests in one event-loop turn (eight connections' responses
meet there); logging each one on its own cost a `write` system call per request plus logging's
caller lookup and handler locking. Here a request's record is kept with its own timestamp, and at
the end of the turn the records go through each handler's own formatter and filters, one write
per handler. `flush()` also runs at exit, so a line is never lost on shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import logging

log = logging.getLogger("l7.access")


class AccessLog:
    def __init__(self, logger: logging.Logger = log):
        self.logger = logger
        self._pending: list[logging.LogRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def write(self, entry, loop: asyncio.AbstractEventLoop | None) -> None:
        """Log `entry.line()` at INFO by the end of `loop`'s current turn (at once without a
        loop); the line is not even built when the logger is off (the sidecar's)."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        record = self.logger.makeRecord(self.logger.name, logging.INFO, "(access log)", 0, "%s",
                                        (entry.line(),), None)
        if loop is None or loop.is_closed():
            return self._emit([record])
        if loop is not self._loop:   # another loop (a test's): what the last one left goes first
            self.flush()
            self._loop = loop
        self._pending.append(record)
        if len(self._pending) == 1:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self._emit(pending)

    def _emit(self, records: list[logging.LogRecord]) -> None:
        """Logger.handle for a batch: the logger's filters, then every handler up the hierarchy as
        callHandlers finds them; a plain StreamHandler gets the batch's lines in one write."""
        logger = self.logger
        if logger.disabled:
            return
        records = [r for r in records if logger.filter(r)]
        current, found = logger, False
        while current is not None and records:
            for handler in current.handlers:
                found = True
                if logging.INFO >= handler.level:
                    _handle_batch(handler, records)
            current = current.parent if current.propagate else None
        if not found and records and logging.lastResort is not None \
                and logging.INFO >= logging.lastResort.level:
            _handle_batch(logging.lastResort, records)


def _handle_batch(handler: logging.Handler, records: list[logging.LogRecord]) -> None:
    if type(handler).emit is not logging.StreamHandler.emit:   # a file, syslog, memory handler: its own way
        for record in records:
            handler.handle(record)
        return
    kept = [r for r in records if handler.filter(r)]
    if not kept:
        return
    try:
        text = "".join(handler.format(r) + handler.terminator for r in kept)
    except Exception:
        for record in kept:
            handler.handleError(record)
        return
    with handler.lock:
        try:
            handler.stream.write(text)
            handler.flush()
        except RecursionError:
            raise
        except Exception:
            handler.handleError(kept[0])


ACCESS_LOG = AccessLog()
