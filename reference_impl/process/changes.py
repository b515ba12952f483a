"""A proxy's "a newer config was applied" signal, for a connection that waits (bounded) for it."""

from __future__ import annotations

import asyncio


class ConfigChanges:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def applied(self) -> None:
        """Wake every waiter; later waits wait for the next config."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """Whether a newer config is applied within `timeout` seconds."""
        if timeout <= 0:
            return False
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
