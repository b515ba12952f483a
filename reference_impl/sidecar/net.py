"""Sockets of the sidecar: marked so its own traffic is not captured again, the original
destination of a redirected connection, and a reset close."""

from __future__ import annotations

import asyncio
import socket
import struct

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


def original_dst(writer: asyncio.StreamWriter) -> tuple[str, int]:
    sock = writer.get_extra_info("socket")
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack_from("!H", raw, 2)
    return socket.inet_ntoa(raw[4:8]), port
