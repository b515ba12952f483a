"""The conformance suite's stream server: a TCP echo that answers the client's half-close.

Standalone (standard library only): it runs in a stock Python image, its source passed as
`python3 -c`.

    python3 stream_server.py --port PORT

Every byte received is echoed back as it arrives. When the client shuts down its write side
(EOF), the server writes one more line, the trailer `{"bytes": N, "sha256": "..."}` of everything
it received, and closes. So a client sees the echo of its upload (the download), and, after its
half-close, the server's account of the upload: both directions can be compared byte for byte,
and the trailer arrives only if the half-close reached the server while the way back stayed open.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    digest, count = hashlib.sha256(), 0
    try:
        while data := await reader.read(1 << 16):
            digest.update(data)
            count += len(data)
            writer.write(data)
            await writer.drain()   # a client that does not read holds this server back
        writer.write(b"\n" + json.dumps({"bytes": count, "sha256": digest.hexdigest()}).encode() + b"\n")
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "0.0.0.0", port)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
