"""The life of a proxy process, as its container runs it: start, serve until SIGTERM or SIGINT,
then shut down within the drain deadline. One place, so the ztunnel, the waypoints and the
sidecar stop the same way (the kubelet's grace period relies on it)."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Awaitable, Callable, Protocol


class Proxy(Protocol):
    async def start(self) -> None: ...
    async def shutdown(self, *deadline: float) -> None: ...


def configure_logging(level: str) -> None:
    logging.logProcesses = False   # the format has no %(process)d; each record's getpid() is a system call
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


async def until_signalled(proxy: Proxy, *, logger: str, what: str,
                          start_errors: tuple[type[BaseException], ...] = (Exception,),
                          shut_down_after_failed_start: bool = True,
                          drain_deadline: Callable[[], float | None] = lambda: None,
                          serve: Callable[[asyncio.Event], Awaitable[int]] | None = None) -> int:
    """Start `proxy`; 1 when it cannot (logged as "`what` cannot start"). Then serve until a
    signal (or until `serve(stop)` returns, for a proxy with a child process of its own), and shut
    down within `drain_deadline()` seconds (None: the proxy's own shutdown, without a deadline).
    Returns the process's exit code."""
    log = logging.getLogger(logger)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await proxy.start()
    except start_errors as exc:
        log.error("%s cannot start: %s", what, exc)
        if shut_down_after_failed_start:
            await proxy.shutdown()
        return 1
    if serve is not None:
        code = await serve(stop)
    else:
        await stop.wait()
        code = 0
    deadline = drain_deadline()
    if deadline is None:
        await proxy.shutdown()
    else:
        log.info("%s stopping: draining for up to %gs", what, deadline)
        await proxy.shutdown(deadline)
    return code
