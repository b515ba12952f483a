"""The connections being proxied now: their metrics from open to close, and their revocation.
An inbound connection is admitted against the policy of the moment; when a snapshot changes
the policy, every live one is judged again and reset if it would be refused now
(zt:src/proxy/connection_manager.rs). The drain deadline resets whatever is left."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .pipe import Splice
from .state import State
from .telemetry import Connection, Telemetry

log = logging.getLogger("ztunnel")


@dataclass(frozen=True)
class Admission:
    """What an inbound connection was admitted as: to pod ``uid`` at ``dest_ip:port``, from
    ``source_ip`` with mesh identity ``principal`` (None: plaintext, no identity)."""
    uid: str
    source_ip: str
    dest_ip: str
    port: int
    principal: str | None

    def still_allowed(self, state: State) -> bool:
        w = state.by_uid.get(self.uid)
        if w is None:
            return False
        if self.principal is None and not state.plaintext_allowed(w, self.port):
            return False
        return state.authorize(w, self.source_ip, self.dest_ip, self.port, self.principal).allowed


@dataclass
class Live:
    """A connection being proxied, so a policy change or the drain deadline can reset it."""
    conn: Connection
    reset: Callable[[], None]
    pod_uid: str
    admission: Admission | None = None   # inbound only: re-judged on every policy change


class ConnectionManager:
    def __init__(self, telemetry: Telemetry):
        self.telemetry = telemetry
        self._live: dict[int, Live] = {}

    def __len__(self) -> int:
        return len(self._live)

    def track(self, live: Live) -> int:
        key = id(live)
        self._live[key] = live
        self.telemetry.opened_conn(live.conn)
        return key

    def untrack(self, key: int) -> None:
        live = self._live.pop(key, None)
        if live is not None:
            if live.conn.outcome == "open":
                live.conn.outcome = "ok"
            self.telemetry.closed_conn(live.conn)

    def revoke(self, state: State) -> None:
        """Reset every inbound connection the policy of ``state`` no longer allows."""
        for live in list(self._live.values()):
            if live.admission is not None and not live.admission.still_allowed(state):
                live.conn.outcome, live.conn.reason = "denied", "policy changed: connection no longer allowed"
                log.info("resetting live connection %s -> %s: now denied", live.conn.src, live.conn.dst)
                live.reset()

    def reset_all(self, reason: str) -> None:
        for live in list(self._live.values()):
            live.conn.outcome, live.conn.reason = "reset", reason
            live.reset()

    async def splice(self, a, b, conn: Connection, uid: str, admission: Admission | None = None) -> None:
        """Proxy socket ``a`` to socket ``b`` as one tracked connection, until either side ends."""
        s = Splice()
        key = self.track(Live(conn, s.reset, uid, admission))
        try:
            await s.start(a, b)
            exc = await s.done
            if exc is not None and conn.outcome == "open":
                conn.outcome, conn.reason = "reset", repr(exc)
        except asyncio.CancelledError:
            s.reset()
            raise
        finally:
            conn.sent, conn.received = s.counts.up, s.counts.down
            self.untrack(key)
