"""Validation of Secrets (issue 14 item 5), as the API server converts and checks them:
`stringData` written into base64 `data` (and winning over it), `type` defaulted to Opaque,
`data` values that are not base64 and the keys a built-in type needs refused naming the field;
and the protobuf body `kubectl create secret` sends."""
from __future__ import annotations

import base64

import pytest

from reference_impl import api
from reference_impl.cluster.kubeapi import protobuf


def _secret(**fields) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, **fields}


def _error(obj) -> str:
    with pytest.raises(api.ManifestError) as info:
        api.validate(obj)
    return str(info.value)


def test_string_data_is_written_into_base64_data_and_never_stored():
    got = api.validate(_secret(data={"a": "eA==", "b": "eQ=="}, stringData={"b": "z\n", "c": "é"}))
    assert got["data"] == {"a": "eA==", "b": base64.b64encode(b"z\n").decode(),
                           "c": base64.b64encode("é".encode()).decode()}
    assert "stringData" not in got and got["type"] == "Opaque"
    assert api.validate(_secret(type="istio.io/ca-root"))["type"] == "istio.io/ca-root"


def test_bad_secrets_are_refused_naming_the_field():
    assert "data.a: the value is not base64" in _error(_secret(data={"a": "not base64!"}))
    assert "stringData.bad/key" in _error(_secret(stringData={"bad/key": "x"}))
    assert "stringData.n: expected a string" in _error(_secret(stringData={"n": 1}))
    assert "data.tls.key: Required value" in _error(_secret(type="kubernetes.io/tls",
                                                            stringData={"tls.crt": "c"}))
    assert "data.tls.crt: Required value" in _error(_secret(type="kubernetes.io/tls"))
    assert "Too long" in _error(_secret(stringData={"big": "x" * (1024 * 1024 + 1)}))
    assert "a Secret has no spec" in _error(_secret(spec={}))
    assert "secretData" in _error(_secret(secretData={}))


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_the_protobuf_body_of_kubectl_create_secret_is_decoded():
    secret = (_field(1, _field(1, b"s") + _field(3, b"ns")) + _field(2, _field(1, b"k") + _field(2, b"\x00\xff"))
              + _field(3, b"Opaque") + _field(4, _field(1, b"t") + _field(2, b"txt")))
    body = protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"Secret")) + _field(2, secret)
    obj = protobuf.decode(body)
    assert obj["data"] == {"k": base64.b64encode(b"\x00\xff").decode()}
    assert obj["stringData"] == {"t": "txt"} and obj["type"] == "Opaque"
    assert obj["metadata"] == {"name": "s", "namespace": "ns"}
