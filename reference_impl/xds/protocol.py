"""The message shapes of the control plane <-> proxy protocol and their NDJSON framing.

One JSON object per line over a Unix stream socket (docs/INTERNALS.md, "Control plane <-> data
plane"). Proxy -> istiod: hello, ack, nack, csr, debug. istiod -> proxy: snapshot, cert, error,
debug. Snapshots can be large (1,000 workloads is about half a megabyte), so readers must be
created with STREAM_LIMIT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# asyncio's default 64 KiB line limit is far below a full-mesh snapshot.
STREAM_LIMIT = 64 * 1024 * 1024

PROXY_KINDS = ("ztunnel", "waypoint", "sidecar", "debug")


class ProtocolError(ValueError):
    """A line that is not a message of this protocol."""


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def decode(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a message must be a JSON object with a string 'type'")
    return message


@dataclass(frozen=True)
class Hello:
    """Who is on the other end of a stream. `version` is the last snapshot version the proxy
    holds (0 if none), so a restarted istiod keeps versions increasing for that proxy."""

    proxy: str
    node: str
    pod: str
    namespace: str
    version: int = 0

    def to_message(self) -> dict:
        return {"type": "hello", "proxy": self.proxy, "node": self.node, "pod": self.pod,
                "namespace": self.namespace, "version": self.version}

    @classmethod
    def from_message(cls, message: dict) -> "Hello":
        proxy = message.get("proxy")
        if proxy not in PROXY_KINDS:
            raise ProtocolError(f"hello.proxy must be one of {', '.join(PROXY_KINDS)}, got {proxy!r}")
        fields = {}
        for key in ("node", "pod", "namespace"):
            value = message.get(key, "")
            if not isinstance(value, str):
                raise ProtocolError(f"hello.{key} must be a string, got {value!r}")
            fields[key] = value
        version = message.get("version", 0)
        if not isinstance(version, int) or version < 0:
            raise ProtocolError(f"hello.version must be a non-negative integer, got {version!r}")
        return cls(proxy=proxy, version=version, **fields)


def snapshot(version: int, config: dict) -> dict:
    return {"type": "snapshot", "version": version, "config": config}


def ack(version: int) -> dict:
    return {"type": "ack", "version": version}


def nack(version: int, error: str) -> dict:
    return {"type": "nack", "version": version, "error": error}


def csr(request_id: str, identity: str, csr_pem: str, ttl_seconds: int | None = None) -> dict:
    message = {"type": "csr", "id": request_id, "identity": identity, "csr": csr_pem}
    if ttl_seconds is not None:
        message["ttlSeconds"] = ttl_seconds  # tests ask for short-lived certs to see rotation
    return message


def cert(request_id: str, chain: list[str], root: str) -> dict:
    return {"type": "cert", "id": request_id, "chain": chain, "root": root}


def error(request_id, message: str) -> dict:
    return {"type": "error", "id": request_id, "message": message}


def debug_request(request_id: str, what: str, **params) -> dict:
    return {"type": "debug", "id": request_id, "what": what, **params}


def debug_reply(request_id, result) -> dict:
    return {"type": "debug", "id": request_id, "result": result}
