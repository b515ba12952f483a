"""Sockets of the node proxy: listeners inside pod namespaces, marked upstream sockets,
the original destination of a redirected connection, and resets."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

from .capture import PROXY_MARK
from .podns import entered

SO_ORIGINAL_DST = 80
UPSTREAM_CONNECT_TIMEOUT = 10.0


def listener(netns: str | None, port: int, host: str = "0.0.0.0", backlog: int = 1024) -> socket.socket:
    """A non-blocking listening socket created inside netns. SO_REUSEPORT lets a replacement
    proxy bind the same port while the old one drains (ISTIO-SEMANTICS section 12)."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def original_dst(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack_from("!H", raw, 2)
    return socket.inet_ntoa(raw[4:8]), port


def tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def marked_socket(netns: str | None, mark: int = PROXY_MARK) -> socket.socket:
    """A socket in netns whose traffic bypasses the capture rules and leaves with the pod's IP."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    tune(sock)
    sock.setblocking(False)
    return sock


async def connect_marked(netns: str | None, addr: tuple[str, int],
                         timeout: float = UPSTREAM_CONNECT_TIMEOUT) -> socket.socket:
    sock = marked_socket(netns)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, addr), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_as(netns: str | None, source_ip: str, addr: tuple[str, int],
                     timeout: float = UPSTREAM_CONNECT_TIMEOUT) -> socket.socket:
    """A marked connection from inside netns whose source address is `source_ip`, an address the
    pod does not own (the original client's): IP_TRANSPARENT permits the bind, and the capture
    rules route the app's replies back to this socket (see capture.py)."""
    sock = marked_socket(netns)
    try:
        sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
        sock.bind((source_ip, 0))
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, addr), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_to_app(netns: str | None, source_ip: str, addr: tuple[str, int], original_source: bool,
                         timeout: float = UPSTREAM_CONNECT_TIMEOUT) -> socket.socket:
    """The connection to the app, from the original client's IP when ``original_source`` is on
    and that IP is a usable one, else from the pod's own."""
    if original_source and _is_ipv4(source_ip):
        return await connect_as(netns, source_ip, addr, timeout)
    return await connect_marked(netns, addr, timeout)


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def reset(sock_or_transport) -> None:
    """Close so that the peer sees RST, as ztunnel does for denied or failed connections."""
    sock = sock_or_transport
    if hasattr(sock_or_transport, "get_extra_info"):
        sock = sock_or_transport.get_extra_info("socket")
    try:
        if sock is not None and sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    if hasattr(sock_or_transport, "abort"):
        sock_or_transport.abort()
    elif sock is not None:
        sock.close()


def listeners_on(netns: str | None, ports) -> dict[int, int]:
    """How many sockets listen on each TCP port in netns (all processes): lets a draining proxy
    see that its replacement has bound the same ports with SO_REUSEPORT."""
    with entered(netns):
        with open("/proc/thread-self/net/tcp") as f:
            lines = f.read().splitlines()[1:]
    counts = {port: 0 for port in ports}
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A":  # TCP_LISTEN
            port = int(parts[1].rsplit(":", 1)[1], 16)
            if port in counts:
                counts[port] += 1
    return counts
