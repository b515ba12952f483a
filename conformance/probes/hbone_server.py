"""An HBONE server of the suite's own, to stand where a mesh client expects a workload: it
presents whatever certificate it is given, answers every CONNECT 200 and every tunnelled HTTP
request with `200 impostor`. Needs the `h2` package: the suite's own, or, in a stock Python
image, the copy the suite ships beside it (adversary.H2_BUNDLE).

    python3 hbone_server.py <base64 of {"cert_pem", "key_pem", "port", "seconds"}>

Prints `{"listening": port}` once bound, then `{"connections": n, "connects": n}` when it stops.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import time

try:
    import h2
except ImportError:  # a stock Python image: h2 as the suite ships it beside this script
    _bundle = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h2-bundle.zip.b64")
    _zip = os.path.join(tempfile.mkdtemp(prefix="h2-bundle-"), "h2.zip")
    with open(_bundle, "rb") as _src, open(_zip, "wb") as _dst:
        _dst.write(base64.b64decode(_src.read()))
    sys.path.insert(0, _zip)
import h2.config
import h2.connection
import h2.events
import h2.exceptions

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nimpostor"


def _context(spec: dict) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    with tempfile.TemporaryDirectory(prefix="hbone-server-") as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, text in ((cert, spec["cert_pem"]), (key, spec["key_pem"])):
            with open(path, "w") as f:
                f.write(text)
        ctx.load_cert_chain(cert, key)
    return ctx


def _serve(tls: ssl.SSLSocket, counts: dict) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    while True:
        data = tls.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                counts["connects"] += 1
                conn.send_headers(event.stream_id, [(":status", "200")])
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if b"\r\n\r\n" in event.data:
                    conn.send_data(event.stream_id, ANSWER, end_stream=True)
        tls.sendall(conn.data_to_send())


def _handle(raw: socket.socket, ctx: ssl.SSLContext, counts: dict) -> None:
    try:
        with ctx.wrap_socket(raw, server_side=True) as tls:
            _serve(tls, counts)
    except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
        pass  # a client that refuses our certificate ends here: that is the point


def main(argv: list[str]) -> int:
    spec = json.loads(base64.b64decode(argv[1]))
    ctx = _context(spec)
    listener = socket.create_server(("0.0.0.0", int(spec.get("port", 15008))), reuse_port=False)
    listener.settimeout(0.2)
    counts = {"connections": 0, "connects": 0}
    print(json.dumps({"listening": listener.getsockname()[1]}), flush=True)
    end = time.monotonic() + float(spec.get("seconds", 10))
    while time.monotonic() < end:
        try:
            raw, _ = listener.accept()
        except socket.timeout:
            continue
        counts["connections"] += 1
        raw.settimeout(5)
        threading.Thread(target=_handle, args=(raw, ctx, counts), daemon=True).start()
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
