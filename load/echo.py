"""The load's server: HTTP/1.1 keep-alive, `GET /bytes/N` answers N bytes (httpbin's URL form).

Small and fast on purpose: at the sub-millisecond scale of a hop, a slow server (httpbin under
gunicorn takes milliseconds) would hide what the paths differ by. Standard library only, because
the same source runs in a stock Python image (`python3 -c SOURCE PORT`) on any target.
"""
import asyncio
import socket
import sys

MAX_BYTES = 1 << 20


async def serve(reader, writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].split()
            path = line[1].decode() if len(line) > 1 else "/"
            length, request_id = 0, b"-"
            for h in head.split(b"\r\n")[1:]:
                if h[:15].lower() == b"content-length:":
                    length = int(h[15:])
                elif h[:13].lower() == b"x-request-id:":
                    request_id = b"yes"
            if length:
                await reader.readexactly(length)
            size = 2
            if path.startswith("/bytes/") and path[7:].isdigit():
                size = min(int(path[7:]), MAX_BYTES)
            # an L7 proxy on the way adds x-request-id (Istio's own tests tell L7 from L4 by it)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"X-Saw-Request-Id: %s\r\nContent-Length: %d\r\n\r\n" % (request_id, size)
                         + b"x" * size)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(serve, "0.0.0.0", port, backlog=512)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8080))
