"""Which protocol a Service port speaks, as Istio decides it, and how a proxy tells HTTP from the
first bytes of a connection when the port does not say.

Istio (pilot's kube ConvertProtocol + protocol.Parse): the port's `appProtocol` wins over its
name; a name counts up to its first `-` (`http-api` is http, `grpc-web` is grpc-web), case
folded; `kubernetes.io/h2c` and `kubernetes.io/ws` are HTTP; an unnamed port on a well-known
server-first port (SSH, SMTP, DNS, MySQL, MongoDB) is TCP; anything else is unknown, and the
waypoint sniffs it (Envoy's http_inspector): HTTP/1.x or the HTTP/2 preface goes to the HTTP
chain, everything else is proxied as TCP with L4 policy only.
"""

from __future__ import annotations

import re

HTTP, TCP, UNKNOWN = "http", "tcp", "unknown"

_HTTP_NAMES = frozenset({"http", "http2", "http_proxy", "grpc", "grpc-web"})
_TCP_NAMES = frozenset({"tcp", "https", "tls", "mongo", "redis", "mysql"})
_KUBERNETES_APP_PROTOCOLS = {"kubernetes.io/h2c": HTTP, "kubernetes.io/ws": HTTP, "kubernetes.io/wss": TCP}
_SERVER_FIRST_PORTS = frozenset({22, 25, 53, 3306, 27017})

#: the client connection preface of HTTP/2 (RFC 9113 section 3.4): h2c with prior knowledge
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: an HTTP/1.x request line: a method token, a target, the version (RFC 9112 section 3)
_HTTP1_REQUEST_LINE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ \r\n]+ HTTP/1\.[01]\r?\n")
_METHOD_PREFIX = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]*$")
#: enough bytes to see a request line of a normal size; longer ones are read to the line's end
SNIFF_BYTES = 8 * 1024


def port_protocol(port: int, name: str | None, app_protocol: str | None) -> str:
    """HTTP, TCP or UNKNOWN for one Service port."""
    label = app_protocol or name or ""
    if app_protocol and app_protocol in _KUBERNETES_APP_PROTOCOLS:
        return _KUBERNETES_APP_PROTOCOLS[app_protocol]
    label = label.lower()
    if label.startswith("grpc-web"):
        return HTTP
    prefix = label.split("-", 1)[0]
    if prefix in _HTTP_NAMES:
        return HTTP
    if prefix in _TCP_NAMES:
        return TCP
    return TCP if port in _SERVER_FIRST_PORTS else UNKNOWN


def sniff(first_bytes: bytes) -> str | None:
    """HTTP if the bytes open an HTTP/1.x request or the HTTP/2 preface, TCP if they cannot,
    None if more bytes are needed to tell."""
    if H2_PREFACE.startswith(first_bytes[:len(H2_PREFACE)]):
        return HTTP if len(first_bytes) >= len(H2_PREFACE) else None
    if _HTTP1_REQUEST_LINE.match(first_bytes):
        return HTTP
    line, newline, _ = first_bytes.partition(b"\n")
    if newline or len(first_bytes) >= SNIFF_BYTES:
        return TCP
    method = line.partition(b" ")[0]
    return None if method and _METHOD_PREFIX.match(method) else TCP

