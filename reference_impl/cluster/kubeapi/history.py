"""What watches read: the store's changes (and the API's own Events) in resourceVersion order,
kept for a while so that a watch from an older resourceVersion is replayed, and one from a
resourceVersion no longer kept gets 410 Gone, as etcd's compaction makes a real API server do."""
from __future__ import annotations

import asyncio
import collections

from reference_impl.cluster.store import Store

KEEP = 5000  # changes kept for watches (each an object version the store has replaced)


class History:
    def __init__(self, store: Store, keep: int = KEEP):
        self.store = store
        self._log: collections.deque = collections.deque(maxlen=keep)
        self.compacted = int(store.resource_version)  # changes at or below this are gone
        self._waiters: set[asyncio.Queue] = set()
        store.subscribe(self._on_change)

    def close(self) -> None:
        self.store.unsubscribe(self._on_change)
        for queue in list(self._waiters):
            queue.put_nowait(None)

    def _on_change(self, event: str, obj: dict) -> None:
        self.record(int(obj["metadata"]["resourceVersion"]), event, obj)

    def record(self, rv: int, event: str, obj: dict) -> None:
        if len(self._log) == self._log.maxlen:
            self.compacted = self._log[0][0]
        entry = (rv, event, obj)
        self._log.append(entry)
        for queue in self._waiters:
            queue.put_nowait(entry)

    def too_old(self, rv: int) -> bool:
        return rv < self.compacted

    def since(self, rv: int) -> list[tuple[int, str, dict]]:
        return [e for e in self._log if e[0] > rv]

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._waiters.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._waiters.discard(queue)
