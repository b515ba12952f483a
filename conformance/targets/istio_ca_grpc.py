"""Asking Istio's CA as a ztunnel does (istio/ztunnel src/identity/caclient.rs), for the
kubernetes target: `istio.v1.auth.IstioCertificateService/CreateCertificate` over gRPC to
istiod:15012, with the ztunnel's own service-account token (audience `istio-ca`, bound to the
ztunnel pod) as `authorization: Bearer`, and the workload's SPIFFE ID as `ImpersonatedIdentity`
in the request's `metadata` Struct.

The suite builds the protobuf messages (istio/api security/v1alpha1/ca.proto, declared here for
the protobuf runtime: the suite and the mesh each keep their own copy of the schema, as ztunnel
and istiod do); the call itself runs in a probe pod inside the cluster (probes/ca_probe.py, gRPC
framing over `h2`), because istiod's 15012 is reachable from pods, not from the machine running
the suite.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

from conformance.targets.base import CertificateAnswer, TargetError
from conformance.targets.reference_ca import _csr as csr_for, _uri_sans as uri_sans

PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
PORT = 15012
SERVER_NAME = "istiod.istio-system.svc"        # a DNS SAN of istiod's serving certificate
TOKEN_AUDIENCE = "istio-ca"
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"
VALIDITY_SECONDS = 3600
PROBE_SCRIPT = "ca_probe.py"
#: gRPC status codes by number (grpc/status.h), for the refusal text
GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
              "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


def _messages():
    field = descriptor_pb2.FieldDescriptorProto
    schema = descriptor_pb2.FileDescriptorProto(name="conformance/istio/v1/auth/ca.proto",
                                                package="istio.v1.auth", syntax="proto3",
                                                dependency=["google/protobuf/struct.proto"])
    for name, fields in (("IstioCertificateRequest", [("csr", 1, field.TYPE_STRING, field.LABEL_OPTIONAL, ""),
                                                      ("validity_duration", 3, field.TYPE_INT64,
                                                       field.LABEL_OPTIONAL, ""),
                                                      ("metadata", 4, field.TYPE_MESSAGE, field.LABEL_OPTIONAL,
                                                       ".google.protobuf.Struct")]),
                         ("IstioCertificateResponse", [("cert_chain", 1, field.TYPE_STRING,
                                                        field.LABEL_REPEATED, "")])):
        message = schema.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            message.field.add(name=field_name, number=number, type=kind, label=label,
                              **({"type_name": type_name} if type_name else {}))
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(schema)
    return [message_factory.GetMessageClass(pool.FindMessageTypeByName(f"istio.v1.auth.{name}"))
            for name in ("IstioCertificateRequest", "IstioCertificateResponse")]


Request, Response = _messages()


def probe_scripts() -> dict[str, str]:
    """The probe pod's files: the gRPC client and the `h2` it needs in a stock Python image."""
    from conformance.adversary import H2_BUNDLE, h2_bundle
    source = Path(__file__).resolve().parents[1] / "probes" / PROBE_SCRIPT
    return {PROBE_SCRIPT: source.read_text(), H2_BUNDLE: h2_bundle()}


def requests_for(spiffe_ids: list[str]) -> list[str]:
    """Base64 of one serialized request per identity: a fresh key's CSR for it, impersonated."""
    out = []
    for spiffe_id in spiffe_ids:
        metadata = struct_pb2.Struct()
        metadata.update({IMPERSONATED_IDENTITY: spiffe_id})
        message = Request(csr=csr_for(spiffe_id), validity_duration=VALIDITY_SECONDS, metadata=metadata)
        out.append(base64.b64encode(message.SerializeToString()).decode())
    return out


def probe_spec(host: str, root_pem: str, token: str, spiffe_ids: list[str], timeout: float = 10) -> str:
    return base64.b64encode(json.dumps({
        "host": host, "port": PORT, "server_name": SERVER_NAME, "root_pem": root_pem, "token": token,
        "path": PATH, "requests": requests_for(spiffe_ids), "timeout": timeout}).encode()).decode()


def answers_from(stdout: str, spiffe_ids: list[str], where: str) -> list[CertificateAnswer]:
    """The probe's printed answers as CertificateAnswers, in the order asked."""
    try:
        results = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TargetError(f"the CA probe in {where} printed no answers: {stdout[-300:]!r}") from None
    if len(results) != len(spiffe_ids):
        raise TargetError(f"the CA probe in {where} answered {len(results)} of {len(spiffe_ids)} requests")
    answers = []
    for spiffe_id, result in zip(spiffe_ids, results):
        if result.get("error"):
            raise TargetError(f"asking istiod's CA for {spiffe_id} from {where}: {result['error']}")
        code = result["status"]
        if code == 0:
            chain = tuple(Response.FromString(base64.b64decode(result["response"] or "")).cert_chain)
            if not chain:
                raise TargetError(f"istiod's CA answered OK for {spiffe_id} with no certificate chain")
            answers.append(CertificateAnswer(True, chain, tuple(uri_sans(list(chain)))))
        else:
            name = GRPC_CODES[code] if 0 <= code < len(GRPC_CODES) else str(code)
            answers.append(CertificateAnswer(False, refusal=f"{name}: {result.get('message') or '(no message)'}"))
    return answers
