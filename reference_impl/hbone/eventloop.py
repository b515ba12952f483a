"""The event loop the HBONE proxies run on: uvloop by default, the stdlib's on request.

uvloop's loop and TLS transport are C (libuv, Cython) where the stdlib's selector loop and
`asyncio.sslproto` are Python: about a third of a hop's CPU went there (README, "Data-plane hop").
"""
from __future__ import annotations

import asyncio

KINDS = ("uvloop", "asyncio")


def run(coro, kind: str = "uvloop", who: str = "proxy"):
    """asyncio.run(coro) on the loop `kind` names; `who` names the setting in the error."""
    if kind not in KINDS:
        raise SystemExit(f"{who}: event loop {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)
