"""Small helpers for Linux network namespaces, shared by the local cluster and ztunnel.

- `run(netns, argv)` runs a program inside a named namespace (`ip netns exec`, so the
  namespace's `/etc/netns/<name>/` files replace `/etc/hosts` and `/etc/resolv.conf` for it).
- `setns(path)` moves the *calling thread* into a namespace and back. Namespaces are a property
  of a thread, not of a process: only code running on the same thread between enter and exit
  sees the other namespace, and an asyncio loop must not `await` inside the block (another task
  would run in the wrong namespace).
- `socket_in(path, family, type)` opens a socket inside a namespace. A socket keeps the
  namespace it was created in for its whole life, so it can be used from any thread afterwards
  (this is how ztunnel listens inside pod namespaces and how the kubelet probes pods).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
from typing import Iterator, Sequence

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str) -> str:
    """The bind-mount path of a named namespace (`ip netns add NAME`), or `netns` if it is a path."""
    return netns if netns.startswith("/") else os.path.join(NETNS_RUN_DIR, netns)


def run(netns: str, argv: Sequence[str], *, check: bool = True, timeout: float | None = 30,
        input: str | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    """Run `argv` inside the named namespace and wait for it."""
    return subprocess.run(["ip", "netns", "exec", netns, *argv], check=check, timeout=timeout,
                          input=input, text=True, capture_output=capture)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def setns(netns: str) -> Iterator[None]:
    """Enter a network namespace on this thread for the duration of the block, then come back."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path(netns), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


def socket_in(netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
              proto: int = 0) -> socket.socket:
    """A new socket that lives in `netns` (a name under /run/netns or a path such as /proc/PID/ns/net)."""
    with setns(netns):
        return socket.socket(family, type, proto)


def write_sysctls(netns: str, values: dict[str, str]) -> None:
    """Write /proc/sys entries as seen from `netns` (net.* sysctls are per namespace)."""
    with setns(netns):
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
