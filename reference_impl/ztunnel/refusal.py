"""A refused connection as one value: raised once where the decision is made (outbound,
inbound, inbound passthrough), and turned into what the wire and the telemetry show in one
place, `answer`."""
from __future__ import annotations

from ..hbone import Outcome
from . import sockets
from .telemetry import Connection, Telemetry


class Refusal(Exception):
    """Why a connection is not proxied.

    ``outcome`` is the access log's outcome (and the metrics' response flag): "denied" (policy),
    "error" (nothing to proxy to) or "connect_failed" (the upstream did not answer).
    ``status`` is the answer to an inbound HBONE CONNECT: 400 (malformed or misdirected), 401
    (denied by policy), 503 (unavailable). ``reason`` goes to the access log; ``told`` is what the
    HBONE peer (and the HBONE server's log) is told, when it is worded for the peer."""

    def __init__(self, outcome: str, reason: str, *, status: int = 503, told: str | None = None):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.status = status
        self.told = reason if told is None else told


def answer(refusal: Refusal, conn: Connection, telemetry: Telemetry, sock=None) -> Outcome | None:
    """The refusal on the wire: a plain TCP connection (``sock``) is reset, as ztunnel does; an
    HBONE CONNECT gets the returned Outcome (the refusal's status). Either way the connection
    is logged once, and not counted as opened (it never was)."""
    conn.outcome, conn.reason = refusal.outcome, refusal.reason
    if sock is not None:
        sockets.reset(sock)
    telemetry.log(conn)
    if sock is not None:
        return None
    return Outcome.refused(refusal.status, refusal.told)
