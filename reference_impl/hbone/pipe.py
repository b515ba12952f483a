"""Bidirectional copy between two reader/writer pairs (asyncio streams or HBONE streams).

EOF on one side becomes a half-close (TCP FIN / HTTP/2 END_STREAM) on the other; an error or reset
on either side aborts both (TCP RST / RST_STREAM), as a proxy in the path must not hide a reset.
"""

from __future__ import annotations

import asyncio
import socket
import struct

CHUNK = 256 * 1024


def abort(writer) -> None:
    """Tear a writer down hard: RST_STREAM for HBONE, TCP RST (linger 0) for a socket."""
    reset = getattr(writer, "reset", None)
    if callable(reset):
        reset()
        return
    transport = getattr(writer, "transport", None)
    if transport is not None and not transport.is_closing():
        reset_transport(transport)


def reset_transport(transport) -> None:
    """Close a TCP transport with RST (linger 0), not FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def _copy(reader, writer) -> int:
    total = 0
    while True:
        data = await reader.read(CHUNK)
        if not data:
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
            return total
        writer.write(data)
        total += len(data)
        await writer.drain()


async def pipe(a_reader, a_writer, b_reader, b_writer) -> tuple[int, int]:
    """Copy a→b and b→a until both directions end; returns (bytes a→b, bytes b→a)."""
    forward = asyncio.ensure_future(_copy(a_reader, b_writer))
    backward = asyncio.ensure_future(_copy(b_reader, a_writer))
    try:
        done, _ = await asyncio.wait((forward, backward), return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        sent, received = await asyncio.gather(forward, backward)
    except BaseException:
        forward.cancel()
        backward.cancel()
        await asyncio.gather(forward, backward, return_exceptions=True)
        abort(a_writer)
        abort(b_writer)
        raise
    for writer in (a_writer, b_writer):
        writer.close()
    return sent, received
