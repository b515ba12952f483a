"""Entering a pod's network namespace from the node proxy, one thread at a time.

setns(2) changes the namespace of the calling thread only, so the event loop thread enters the
pod namespace, creates its sockets there (a socket stays in the namespace it was created in)
and comes straight back, without awaiting in between. Python 3.11 has no os.setns: use libc.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(RuntimeError):
    pass


def netns_path(name_or_path: str) -> str:
    return name_or_path if name_or_path.startswith("/") else f"/run/netns/{name_or_path}"


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name_or_path: str | None) -> Iterator[None]:
    """Run the body with this thread inside the namespace; None means stay where we are."""
    if name_or_path is None:
        yield
        return
    path = netns_path(name_or_path)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(f"network namespace {path} cannot be opened: {exc.strerror}; is the pod still running?") from exc
    home = os.open(f"/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
