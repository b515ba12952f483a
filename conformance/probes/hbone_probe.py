"""An adversarial HBONE client, run inside an uncaptured pod of the conformance suite.

Standalone on purpose: it runs in a stock `python:3.11-slim` container (shipped as a ConfigMap)
as well as on the reference target, so it needs only the standard library. It uses `h2` when the
interpreter has it and otherwise speaks just enough HTTP/2 itself (one CONNECT stream).

    python3 hbone_probe.py <base64 of a JSON spec>

The spec is `{"attempts": [attempt, ...]}`; each attempt is
`{"name", "host", "port", "mode": "tls"|"plaintext", "cert_pem", "key_pem" (optional: no client
certificate), "root_pem" (optional: verify the server's chain and report its URI SAN),
"authority", "headers": {...}, "request": "raw HTTP/1.1 bytes to send through the tunnel",
"timeout": seconds}`. For each attempt it prints ONE JSON line:
`{"name", "outcome", "status", "server_identity", "server_cert_sha256", "server_not_after",
"tunnel_status", "detail", "seconds"}` (`server_not_after`, epoch seconds, only with `root_pem`) where
outcome is `status` (the CONNECT got an HTTP/2 response; see `status`), `tls_refused` (the TLS
handshake failed, or the server closed the TLS session before any HTTP/2 frame), `closed` /
`reset` (plaintext mode: the connection ended without an HTTP answer), `http_answer` (plaintext
mode: the server answered HTTP), `connect_refused`, `timeout` or `error`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import tempfile
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    HAVE_H2 = True
except ImportError:  # a stock python image: the minimal client below does the job
    HAVE_H2 = False


class Refused(Exception):
    """The peer ended the session before answering (TLS alert, EOF, reset)."""


def _client_context(attempt: dict, tmp: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    ctx.check_hostname = False
    if attempt.get("root_pem"):
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=attempt["root_pem"])
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if attempt.get("cert_pem"):
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert, "w") as f:
            f.write(attempt["cert_pem"])
        with open(key, "w") as f:
            f.write(attempt["key_pem"])
        ctx.load_cert_chain(cert, key)
    return ctx


def _server_identity(tls: ssl.SSLSocket) -> str:
    peer = tls.getpeercert() or {}
    uris = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
    return uris[0] if uris else ""


def _server_certificate(tls: ssl.SSLSocket) -> dict:
    """Which certificate the server presented (its DER digest) and until when it is valid."""
    der = tls.getpeercert(binary_form=True) or b""
    not_after = (tls.getpeercert() or {}).get("notAfter")
    return {"server_cert_sha256": hashlib.sha256(der).hexdigest() if der else "",
            "server_not_after": ssl.cert_time_to_seconds(not_after) if not_after else None}


def _recv(sock, n: int = 65536) -> bytes:
    try:
        data = sock.recv(n)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        raise Refused(f"{type(e).__name__}: {e}") from None
    if not data:
        raise Refused("EOF")
    return data


# -- HTTP/2 with the h2 library ------------------------------------------------------------------
def _connect_h2(tls, authority: str, headers: dict, request: bytes, deadline: float) -> tuple[int, int | None]:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "CONNECT"), (":authority", authority)] + list(headers.items()))
    tls.sendall(conn.data_to_send())
    status, tunnel, got_frame = None, b"", False
    while time.monotonic() < deadline:
        try:
            data = _recv(tls)
        except Refused:
            if not got_frame:
                raise
            break
        got_frame = True
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[":status"])
                if status == 200 and request:
                    conn.send_data(1, request)
                elif status != 200:
                    return status, None
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, 1)
                tunnel += event.data
            elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                if status is None:
                    raise Refused(type(event).__name__)
        tls.sendall(conn.data_to_send())
        if status == 200 and (not request or b"\r\n" in tunnel):
            break
    return _finish(status, tunnel)


def _finish(status, tunnel: bytes) -> tuple[int, int | None]:
    if status is None:
        raise socket.timeout("no CONNECT response")
    line = tunnel.split(b"\r\n", 1)[0].split()
    return status, int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


# -- HTTP/2 by hand (no h2 in the image): one CONNECT stream, enough HPACK for :status ---------
_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
# RFC 7541 Appendix B Huffman codes of the characters a :status value can hold.
_HUFFMAN_DIGITS = {(0b00000, 5): "0", (0b00001, 5): "1", (0b00010, 5): "2", (0b011001, 6): "3",
                   (0b011010, 6): "4", (0b011011, 6): "5", (0b011100, 6): "6", (0b011101, 6): "7",
                   (0b011110, 6): "8", (0b011111, 6): "9"}


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix: int, first: int = 0) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out, value = [first | limit], value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes(out + [value])


def _read_int(block: bytes, i: int, prefix: int) -> tuple[int, int]:
    limit = (1 << prefix) - 1
    value, i = block[i] & limit, i + 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        b, i = block[i], i + 1
        value += (b & 127) << shift
        shift += 7
        if not b & 128:
            return value, i


def _huffman_digits(data: bytes) -> str:
    bits = "".join(f"{b:08b}" for b in data)
    out, code, n = "", 0, 0
    for bit in bits:
        code, n = code << 1 | int(bit), n + 1
        if (code, n) in _HUFFMAN_DIGITS:
            out, code, n = out + _HUFFMAN_DIGITS[(code, n)], 0, 0
    return out


def _status_of(block: bytes) -> int | None:
    i = 0
    while i < len(block):
        b = block[i]
        if b & 0x80:  # indexed
            index, i = _read_int(block, i, 7)
            if index in _STATIC_STATUS:
                return _STATIC_STATUS[index]
            continue
        if b & 0xE0 == 0x20:  # dynamic table size update
            _, i = _read_int(block, i, 5)
            continue
        index, i = _read_int(block, i, 6 if b & 0x40 else 4)
        if index == 0:
            length, i = _read_int(block, i, 7)
            i += length
        huffman = bool(block[i] & 0x80)
        length, i = _read_int(block, i, 7)
        value, i = block[i:i + length], i + length
        if 8 <= index <= 14:
            text = _huffman_digits(value) if huffman else value.decode()
            return int(text)
    return None


def _connect_minimal(tls, authority: str, headers: dict, request: bytes, deadline: float) -> tuple[int, int | None]:
    block = b""
    for name, value in [(":method", "CONNECT"), (":authority", authority)] + list(headers.items()):
        block += b"\x00" + _hpack_int(len(name), 7) + name.encode() + _hpack_int(len(value), 7) + value.encode()
    tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"") + _frame(1, 0x4, 1, block))
    buf, status, tunnel, got_frame = b"", None, b"", False
    while time.monotonic() < deadline:
        try:
            buf += _recv(tls)
        except Refused:
            if not got_frame:
                raise
            break
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            length = int.from_bytes(buf[:3], "big")
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + length], buf[9 + length:]
            got_frame = True
            if kind == 4 and not flags & 1:          # SETTINGS: acknowledge
                tls.sendall(_frame(4, 1, 0, b""))
            elif kind == 6 and not flags & 1:        # PING: answer
                tls.sendall(_frame(6, 1, 0, payload))
            elif kind == 1 and stream == 1:          # HEADERS (no CONTINUATION from a CONNECT answer)
                if flags & 0x8:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & 0x20:
                    payload = payload[5:]
                status = _status_of(payload)
                if status != 200:
                    return status, None
                if request:
                    tls.sendall(_frame(0, 0, 1, request))
            elif kind == 0 and stream == 1:          # DATA
                tunnel += payload
                if payload:
                    tls.sendall(_frame(8, 0, 0, struct.pack(">I", len(payload)))
                                + _frame(8, 0, 1, struct.pack(">I", len(payload))))
            elif kind in (3, 7) and status is None:  # RST_STREAM / GOAWAY before an answer
                raise Refused("RST_STREAM" if kind == 3 else "GOAWAY")
        if status == 200 and (not request or b"\r\n" in tunnel):
            break
    return _finish(status, tunnel)


# -- one attempt ------------------------------------------------------------------------------
def attempt_tls(attempt: dict, result: dict, deadline: float) -> None:
    with tempfile.TemporaryDirectory(prefix="hbone-probe-") as tmp:
        ctx = _client_context(attempt, tmp)
    raw = socket.create_connection((attempt["host"], int(attempt["port"])), timeout=attempt.get("timeout", 5))
    try:
        try:
            tls = ctx.wrap_socket(raw)   # no server_hostname: HBONE sends no SNI
        except ssl.SSLCertVerificationError as e:
            result.update(outcome="error", detail=f"server certificate not verified: {e.verify_message}")
            return
        except (ssl.SSLError, ConnectionResetError) as e:
            result.update(outcome="tls_refused", detail=f"handshake: {e}")
            return
        result["server_identity"] = _server_identity(tls)
        result.update(_server_certificate(tls))
        request = (attempt.get("request") or "").encode()
        connect = _connect_h2 if HAVE_H2 and not attempt.get("minimal_h2") else _connect_minimal
        try:
            status, tunnel_status = connect(tls, attempt["authority"], attempt.get("headers") or {}, request, deadline)
        except (Refused, ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            result.update(outcome="tls_refused", detail=f"session ended before any HTTP/2 frame: {e}")
            return
        result.update(outcome="status", status=status, tunnel_status=tunnel_status)
    finally:
        raw.close()


def attempt_plaintext(attempt: dict, result: dict, deadline: float) -> None:
    sock = socket.create_connection((attempt["host"], int(attempt["port"])), timeout=attempt.get("timeout", 5))
    try:
        sock.sendall((attempt.get("request") or "GET / HTTP/1.1\r\nHost: x\r\n\r\n").encode())
        answer = b""
        while time.monotonic() < deadline:
            try:
                answer += _recv(sock)
            except Refused as e:
                result.update(outcome="reset" if "Reset" in str(e) else "closed", detail=str(e),
                              answer=answer[:64].hex())
                return
            if answer.startswith(b"HTTP/"):
                result.update(outcome="http_answer", detail=answer.split(b"\r\n", 1)[0].decode(errors="replace"))
                return
        raise socket.timeout("no answer, connection still open")
    finally:
        sock.close()


def run(attempt: dict) -> dict:
    result = {"name": attempt.get("name", ""), "outcome": "error", "status": None, "server_identity": "",
              "server_cert_sha256": "", "server_not_after": None,
              "tunnel_status": None, "detail": "", "h2": "h2" if HAVE_H2 and not attempt.get("minimal_h2") else "minimal"}
    started = time.monotonic()
    deadline = started + float(attempt.get("timeout", 5))
    try:
        (attempt_plaintext if attempt.get("mode") == "plaintext" else attempt_tls)(attempt, result, deadline)
    except ConnectionRefusedError as e:
        result.update(outcome="connect_refused", detail=str(e))
    except (socket.timeout, TimeoutError) as e:
        result.update(outcome="timeout", detail=str(e) or "timed out")
    except Exception as e:  # reported, never raised: one bad attempt must not hide the others
        result.update(outcome="error", detail=f"{type(e).__name__}: {e}")
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: hbone_probe.py <base64 JSON spec>", file=sys.stderr)
        return 2
    spec = json.loads(base64.b64decode(argv[1]))
    for attempt in spec["attempts"]:
        print(json.dumps(run(attempt)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
