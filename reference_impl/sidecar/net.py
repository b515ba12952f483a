"""Sockets of the sidecar: marked so its own traffic is not captured again, the original
destination of a redirected connection, and a reset close."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

from ..hbone import abort
from .capture import PROXY_MARK

SO_ORIGINAL_DST = 80
CONNECT_TIMEOUT = 10.0


def marked_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, PROXY_MARK)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


async def connect_marked(addr: tuple[str, int], timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    sock = marked_socket()
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, addr), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_marked(addr: tuple[str, int], timeout: float = CONNECT_TIMEOUT):
    """(reader, writer) of a marked TCP connection."""
    sock = await connect_marked(addr, timeout)
    return await asyncio.open_connection(sock=sock, limit=256 * 1024)


def redirected(writer: asyncio.StreamWriter, listener: str) -> tuple[str, int] | None:
    """The original destination of a connection the capture rules redirected to `listener`, or
    None (the connection reset and the reason logged) when the kernel has none for it."""
    try:
        return original_dst(writer)
    except OSError as exc:
        logging.getLogger("sidecar").info("%s connection from %s without an original destination: %s",
                                          listener, writer.get_extra_info("peername"), exc)
        abort(writer)
        return None


def original_dst(writer: asyncio.StreamWriter) -> tuple[str, int]:
    sock = writer.get_extra_info("socket")
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack_from("!H", raw, 2)
    return socket.inet_ntoa(raw[4:8]), port
