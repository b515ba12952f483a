"""The conformance suite's echo server: WebSocket and HTTP on one port, raw TCP echo on others.

Standalone on purpose: it runs in a stock `python:3.11-slim` container (its source passed as
`python3 -c`) as well as on the reference target, so it needs only the standard library.

    python3 echo_server.py --http PORT [--tcp PORT ...]

On the HTTP port: a WebSocket upgrade (RFC 6455) is answered 101, the server sends the text
frame `hello` first, then echoes every data frame it receives (text or binary, any length),
answers pings and closes on close. `GET /bytes/N` is answered 200 with N bytes (0, 1, ... 255
repeated; N up to 16 MiB). `GET /pause/MS` is answered 200 with a 2 KiB body whose first KiB
goes out with the head and whose second follows MS milliseconds later (up to 10 s), as a server
that streams a response it is still producing. Any other request is answered 200 with a JSON
body of the request line and headers it received, and the length and SHA-256 of the request body
(Content-Length or chunked). On a TCP port every byte is echoed back.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
GREETING = b"hello"


async def read_frame(reader):
    """(opcode, payload) of one frame, unmasking what a client sent; fragments are joined."""
    message, first_opcode = b"", None
    while True:
        b1, b2 = await reader.readexactly(2)
        length = b2 & 0x7F
        if length == 126:
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await reader.readexactly(8))[0]
        mask = await reader.readexactly(4) if b2 & 0x80 else None
        payload = await reader.readexactly(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        opcode = b1 & 0x0F
        if opcode >= 0x8:                       # control frames are never fragmented
            return opcode, payload
        first_opcode = first_opcode if first_opcode is not None else opcode
        message += payload
        if b1 & 0x80:
            return first_opcode, message


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked (server-to-client) final frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload

MAX_BYTES = 16 << 20  # GET /bytes/N answers N bytes (a body bigger than every buffer on the way)
MAX_PAUSE_MS = 10_000  # GET /pause/MS: the pause between the two halves of its body
HALF = bytes(range(256)) * 4  # one KiB


async def websocket(reader, writer, key: str) -> None:
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
    writer.write(frame(0x1, GREETING))
    await writer.drain()
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == 0x8:
            writer.write(frame(0x8, payload[:2]))
            await writer.drain()
            return
        if opcode == 0x9:
            writer.write(frame(0xA, payload))
        elif opcode in (0x1, 0x2):
            writer.write(frame(opcode, payload))
        await writer.drain()


async def read_chunked(reader) -> bytes:
    """A chunked request body (RFC 9112 section 7.1), trailers read and dropped."""
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def serve_http(reader, writer) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            request_line, headers = lines[0], {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if "websocket" in headers.get("upgrade", "").lower() and "sec-websocket-key" in headers:
                await websocket(reader, writer, headers["sec-websocket-key"])
                return
            if "chunked" in headers.get("transfer-encoding", "").lower():
                request_body = await read_chunked(reader)
            else:
                length = int(headers.get("content-length") or 0)
                request_body = await reader.readexactly(length) if length else b""
            path = request_line.split(" ")[1] if request_line.count(" ") >= 2 else "/"
            if path.startswith("/pause/") and path[7:].isdigit() and int(path[7:]) <= MAX_PAUSE_MS:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                             + f"content-length: {2 * len(HALF)}\r\n\r\n".encode() + HALF)
                await writer.drain()
                await asyncio.sleep(int(path[7:]) / 1000)
                writer.write(HALF)
                await writer.drain()
                continue
            if path.startswith("/bytes/") and path[7:].isdigit() and int(path[7:]) <= MAX_BYTES:
                body = bytes(range(256)) * (int(path[7:]) // 256) + bytes(int(path[7:]) % 256)
            else:
                body = json.dumps({"request": request_line, "headers": headers, "body_length": len(request_body),
                                   "body_sha256": hashlib.sha256(request_body).hexdigest()}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve_tcp(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(http_port: int, tcp_ports: list[int]) -> None:
    servers = [await asyncio.start_server(serve_http, "0.0.0.0", http_port, limit=1 << 20)]
    for port in tcp_ports:
        servers.append(await asyncio.start_server(serve_tcp, "0.0.0.0", port))
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, required=True)
    parser.add_argument("--tcp", type=int, action="append", default=[])
    args = parser.parse_args()
    asyncio.run(main(args.http, args.tcp))
