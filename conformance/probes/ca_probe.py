"""A gRPC client of the suite's own for a mesh CA (Istio's IstioCertificateService on istiod's
15012): unary calls over ONE HTTP/2 connection over TLS, verified against the mesh root for
istiod's service name, each carrying the given bearer token. The request messages arrive already
serialized (protobuf, built by the suite), so this needs no gRPC or protobuf library: only `h2`,
the suite's own or, in a stock Python image, the copy the suite ships beside it
(adversary.H2_BUNDLE).

    python3 ca_probe.py <base64 of {"host", "port", "server_name", "root_pem", "token", "path",
                                     "requests": [base64 of a serialized request], "timeout"}>

Prints one JSON list, per request: {"status": grpc-status or null, "message": grpc-message,
"response": base64 of the response message or null, "error": why there is no answer or null}.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import sys
import tempfile
import time
import urllib.parse

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


def _connect(spec: dict) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=spec["root_pem"])
    ctx.set_alpn_protocols(["h2"])
    deadline = time.monotonic() + spec["timeout"]
    while True:  # a just-started istiod opens 15012 a moment after it is Ready
        try:
            raw = socket.create_connection((spec["host"], spec["port"]), timeout=spec["timeout"])
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    tls = ctx.wrap_socket(raw, server_hostname=spec["server_name"])
    if tls.selected_alpn_protocol() != "h2":
        raise OSError(f"the server did not choose h2 by ALPN ({tls.selected_alpn_protocol()!r})")
    return tls


def _call(tls: ssl.SSLSocket, conn: h2.connection.H2Connection, spec: dict, message: bytes) -> dict:
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [
        (":method", "POST"), (":scheme", "https"), (":path", spec["path"]),
        (":authority", f"{spec['server_name']}:{spec['port']}"), ("content-type", "application/grpc"),
        ("te", "trailers"), ("authorization", f"Bearer {spec['token']}"),
        ("user-agent", "ambient-conformance-ca-probe")])
    conn.send_data(stream, b"\x00" + len(message).to_bytes(4, "big") + message, end_stream=True)
    tls.sendall(conn.data_to_send())
    headers, body = {}, b""
    while True:
        data = tls.recv(65536)
        if not data:
            return {"status": None, "message": "", "response": None, "error": "the server closed the connection"}
        for event in conn.receive_data(data):
            if getattr(event, "stream_id", stream) != stream:
                continue
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                headers.update(dict(event.headers))
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamReset):
                return {"status": None, "message": "", "response": None,
                        "error": f"the server reset the stream (HTTP/2 error {event.error_code})"}
            elif isinstance(event, h2.events.StreamEnded):
                tls.sendall(conn.data_to_send())
                return _answer(headers, body)
        tls.sendall(conn.data_to_send())


def _answer(headers: dict, body: bytes) -> dict:
    if headers.get(":status") != "200" or "grpc-status" not in headers:
        return {"status": None, "message": "", "response": None,
                "error": f"not a gRPC answer: HTTP {headers.get(':status')}, headers {sorted(headers)}"}
    response = None
    if len(body) >= 5:
        size = int.from_bytes(body[1:5], "big")
        response = base64.b64encode(body[5:5 + size]).decode()
    return {"status": int(headers["grpc-status"]), "message": urllib.parse.unquote(headers.get("grpc-message", "")),
            "response": response, "error": None}


def main() -> None:
    spec = json.loads(base64.b64decode(sys.argv[1]))
    answers = []
    try:
        tls = _connect(spec)
    except (OSError, ssl.SSLError) as exc:
        error = f"cannot reach {spec['host']}:{spec['port']} over TLS as {spec['server_name']}: {exc}"
        print(json.dumps([{"status": None, "message": "", "response": None, "error": error}] * len(spec["requests"])))
        return
    with tls:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        for request in spec["requests"]:
            try:
                answers.append(_call(tls, conn, spec, base64.b64decode(request)))
            except (OSError, ssl.SSLError, h2.exceptions.ProtocolError) as exc:
                answers.append({"status": None, "message": "", "response": None, "error": f"{type(exc).__name__}: {exc}"})
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
