"""Request bodies in Kubernetes' protobuf encoding, for the few kinds kubectl's typed clients
create that way (`kubectl create namespace|serviceaccount|configmap|secret|token`): kubectl 1.32
sends `application/vnd.kubernetes.protobuf` there and does not fall back to JSON. The envelope is
`k8s\\0` + runtime.Unknown{typeMeta, raw}; `raw` is the object's message from k8s.io/api's
generated.proto. Only the fields below are decoded; any other kind gets 415 naming JSON."""
from __future__ import annotations

import base64
import datetime

from .status import ApiError

MAGIC = b"k8s\x00"

# field number -> (json name, type, repeated); type is "string", "int", "bool", "time", "map"
# or a nested schema (dict).
_OWNER_REF = {1: ("kind", "string", False), 3: ("name", "string", False),
              4: ("uid", "string", False), 5: ("apiVersion", "string", False),
              6: ("controller", "bool", False), 7: ("blockOwnerDeletion", "bool", False)}
_OBJECT_META = {1: ("name", "string", False), 2: ("generateName", "string", False),
                3: ("namespace", "string", False), 5: ("uid", "string", False),
                6: ("resourceVersion", "string", False), 7: ("generation", "int", False),
                11: ("labels", "map", False), 12: ("annotations", "map", False),
                13: ("ownerReferences", _OWNER_REF, True), 14: ("finalizers", "string", True)}
_LOCAL_REF = {1: ("name", "string", False)}
SCHEMAS = {
    "Namespace": {1: ("metadata", _OBJECT_META, False),
                  2: ("spec", {1: ("finalizers", "string", True)}, False)},
    "ServiceAccount": {1: ("metadata", _OBJECT_META, False),
                       3: ("automountServiceAccountToken", "bool", False),
                       4: ("imagePullSecrets", _LOCAL_REF, True)},
    # `kubectl create configmap` (k8s.io/api core/v1 ConfigMap)
    "ConfigMap": {1: ("metadata", _OBJECT_META, False), 2: ("data", "map", False),
                  3: ("binaryData", "bytesmap", False), 4: ("immutable", "bool", False)},
    # `kubectl create secret generic|tls` (k8s.io/api core/v1 Secret)
    "Secret": {1: ("metadata", _OBJECT_META, False), 2: ("data", "bytesmap", False),
               3: ("type", "string", False), 4: ("stringData", "map", False),
               5: ("immutable", "bool", False)},
    # `kubectl create token` (k8s.io/api authentication/v1 TokenRequest; field 2 of the spec is
    # unused, expirationSeconds is 4)
    "TokenRequest": {1: ("metadata", _OBJECT_META, False), 2: ("spec", {
        1: ("audiences", "string", True), 4: ("expirationSeconds", "int", False),
        3: ("boundObjectRef", {1: ("kind", "string", False), 2: ("apiVersion", "string", False),
                               3: ("name", "string", False), 4: ("uid", "string", False)}, False)},
        False)},
}
_TYPE_META = {1: ("apiVersion", "string", False), 2: ("kind", "string", False)}
_UNKNOWN = {1: ("typeMeta", _TYPE_META, False), 2: ("raw", "bytes", False)}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(data: bytes):
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def _decode(data: bytes, schema: dict) -> dict:
    out: dict = {}
    for number, value in _fields(data):
        if number not in schema:
            continue
        name, typ, repeated = schema[number]
        if isinstance(typ, dict):
            item = _decode(value, typ)
        elif typ == "string":
            item = value.decode()
        elif typ == "bytes":
            item = value
        elif typ == "int":
            item = value
        elif typ == "bool":
            item = bool(value)
        elif typ in ("map", "bytesmap"):
            entry = dict(_fields(value))
            raw = entry.get(2, b"")
            out.setdefault(name, {})[entry.get(1, b"").decode()] = \
                base64.b64encode(raw).decode() if typ == "bytesmap" else raw.decode()
            continue
        elif typ == "time":
            seconds = dict(_fields(value)).get(1, 0)
            item = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc) \
                .strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            continue
        if repeated:
            out.setdefault(name, []).append(item)
        else:
            out[name] = item
    return out


def decode(body: bytes) -> dict:
    """A JSON-shaped object from a protobuf request body, or ApiError 415."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "the protobuf body does not start with the k8s envelope")
    try:
        unknown = _decode(body[len(MAGIC):], _UNKNOWN)
        kind = unknown.get("typeMeta", {}).get("kind", "")
        schema = SCHEMAS.get(kind)
        if schema is None:
            raise ApiError(415, f"protobuf bodies are accepted only for {', '.join(SCHEMAS)}; "
                                f"send {kind or 'this object'} as application/json")
        obj = _decode(unknown.get("raw", b""), schema)
    except ValueError as exc:
        raise ApiError(400, f"the protobuf body cannot be decoded: {exc}") from None
    return {"apiVersion": unknown["typeMeta"].get("apiVersion", "v1"), "kind": kind, **obj}
