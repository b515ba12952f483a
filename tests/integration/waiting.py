"""Bounded waiting for integration tests: poll a condition until a deadline, never sleep-and-look."""
from __future__ import annotations

import asyncio
import time


def until(predicate, timeout: float = 20, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy (returned); AssertionError at `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


async def poll(predicate, timeout: float = 10, what: str = "condition") -> None:
    """The asyncio form of `until`, for tests that drive an event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def run_bounded(coro, timeout: float):
    """asyncio.run with an overall deadline, so a hung scenario fails instead of hanging the run."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())
