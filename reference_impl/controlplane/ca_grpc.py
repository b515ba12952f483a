"""istiod's CA over gRPC, in Istio's shape (docs/ISTIO-NOTES.md, "The CA over gRPC"):
`istio.v1.auth.IstioCertificateService/CreateCertificate` on 15012, TLS with a serving
certificate of the mesh root for `istiod.istio-system.svc`, HTTP/2 by grpcio.

A caller authenticates with `authorization: Bearer <service-account token, audience istio-ca>`.
Istio's istiod sends that token to the API server in a TokenReview; the reference istiod reaches
the store over its Unix socket but not the Kubernetes API (which listens on the machine's
loopback only, out of reach of istiod's node network namespace), so it verifies the token
itself, with the API server's service-account public key (`<run dir>/kubeapi/sa.pub`, what
kube-apiserver's `--service-account-key-file` and its OIDC JWKS publish) and then makes the
review's own liveness check against its store view: the pod the token is bound to must still
exist with the uid the token names. A request whose `metadata` Struct carries
`ImpersonatedIdentity` is a node proxy asking for a workload: the node authorizer's rules
(Istio's node_auth.go) decide, and a refusal is Istio's opaque Unauthenticated answer, the
reason going to the log.

The config stream's CA (ca_policy.authorize_csr) is unchanged; this is a second door to the
same CA for clients that speak Istio's protocol (the kubernetes target, a real ztunnel).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

from reference_impl.identity import CertificateAuthority
from reference_impl.identity.certificate import CertificateError
from reference_impl.identity.spiffe import Identity

from .ca_policy import identity_on_node, parse_mesh_identity
from .index import TRUST_DOMAIN, MeshIndex, meta, pod_service_account, pod_node, pod_terminating

log = logging.getLogger("controlplane.ca_grpc")

SERVICE = "istio.v1.auth.IstioCertificateService"
METHOD = "CreateCertificate"
PORT = 15012
TOKEN_AUDIENCE = "istio-ca"                                   # Istio's security.TokenAudiences
ISSUER = "https://kubernetes.default.svc.cluster.local"       # the reference API server's
PUBLIC_KEY = os.path.join("kubeapi", "sa.pub")                # under the run dir
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"                # Istio's security.ImpersonatedIdentity
TRUSTED_NODE_ACCOUNTS_ENV = "CA_TRUSTED_NODE_ACCOUNTS"        # Istio's; the ambient profile's value
DEFAULT_TRUSTED_NODE_ACCOUNTS = "istio-system/ztunnel"
SERVING_NAMES = ("istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "istiod")
AUTHN_FAILURE = "request authenticate failure"                # istiod's own messages
IMPERSONATION_FAILURE = "request impersonation authentication failure"


# -- the messages of istio/api security/v1alpha1/ca.proto, declared for the protobuf runtime ---
def _declare_messages():
    file = descriptor_pb2.FileDescriptorProto(
        name="reference_impl/istio/v1/auth/ca.proto", package="istio.v1.auth", syntax="proto3",
        dependency=["google/protobuf/struct.proto"])
    F = descriptor_pb2.FieldDescriptorProto
    request = file.message_type.add(name="IstioCertificateRequest")
    request.field.add(name="csr", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    request.field.add(name="validity_duration", number=3, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    request.field.add(name="metadata", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                      type_name=".google.protobuf.Struct")
    response = file.message_type.add(name="IstioCertificateResponse")
    response.field.add(name="cert_chain", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"istio.v1.auth.{n}"))
                 for n in ("IstioCertificateRequest", "IstioCertificateResponse"))


IstioCertificateRequest, IstioCertificateResponse = _declare_messages()


class Refused(Exception):
    """A refusal: `code` a grpc.StatusCode name, `message` what the caller is told."""

    def __init__(self, code: str, message: str, reason: str = ""):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason or message


@dataclass(frozen=True)
class Caller:
    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str

    @property
    def identity(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/sa/{self.service_account}"


def trusted_node_accounts(env=os.environ) -> frozenset[tuple[str, str]]:
    """CA_TRUSTED_NODE_ACCOUNTS ("ns/sa,ns/sa"): who may impersonate a workload of its node."""
    out = set()
    for entry in (env.get(TRUSTED_NODE_ACCOUNTS_ENV, DEFAULT_TRUSTED_NODE_ACCOUNTS) or "").split(","):
        namespace, _, name = entry.strip().partition("/")
        if namespace and name:
            out.add((namespace, name))
    return frozenset(out)


# -- who is calling ---------------------------------------------------------------------------
def bearer_token(metadata) -> str:
    for key, value in metadata or ():
        if key.lower() == "authorization" and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    raise Refused("UNAUTHENTICATED", AUTHN_FAILURE, "no `authorization: Bearer` metadata")


def authenticate(token: str, public_key_pem: bytes, index: MeshIndex) -> Caller:
    """The token's caller, or Refused: signature, issuer, expiry and audience `istio-ca`, then
    the review's check that the bound pod still exists with the token's uid."""
    try:
        claims = jwt.decode(token, public_key_pem, algorithms=["ES256", "RS256"], issuer=ISSUER,
                            audience=TOKEN_AUDIENCE, options={"require": ["exp", "iss", "sub", "aud"]})
    except jwt.PyJWTError as exc:
        raise Refused("UNAUTHENTICATED", AUTHN_FAILURE, f"the token does not verify: {exc}") from None
    info = claims.get("kubernetes.io") or {}
    namespace = info.get("namespace") or ""
    account = (info.get("serviceaccount") or {}).get("name") or ""
    pod = info.get("pod") or {}
    if not namespace or not account or claims.get("sub") != f"system:serviceaccount:{namespace}:{account}":
        raise Refused("UNAUTHENTICATED", AUTHN_FAILURE, "the token names no service account")
    if pod:
        live = index.get("Pod", namespace, pod.get("name") or "")
        if live is None or meta(live).get("uid") != pod.get("uid") or meta(live).get("deletionTimestamp"):
            raise Refused("UNAUTHENTICATED", AUTHN_FAILURE,
                          f"pod {namespace}/{pod.get('name')} the token is bound to no longer exists")
    return Caller(namespace, account, pod.get("name") or "", pod.get("uid") or "")


def authorize_impersonation(index: MeshIndex, caller: Caller, identity_uri: str,
                            trusted: frozenset[tuple[str, str]]) -> Identity:
    """Istio's node authorizer: a trusted node account, bound to a pod that is still the one the
    token names, asking for an identity some pod on that pod's node runs as."""
    def refuse(reason: str):
        return Refused("UNAUTHENTICATED", IMPERSONATION_FAILURE, reason)
    if (caller.namespace, caller.service_account) not in trusted:
        raise refuse(f"caller {caller.namespace}/{caller.service_account} is not allowed to impersonate "
                     f"(not in {TRUSTED_NODE_ACCOUNTS_ENV})")
    try:
        identity = parse_mesh_identity(identity_uri)
    except ValueError as exc:
        raise refuse(f"failed to validate impersonated identity: {exc}") from None
    pod = index.get("Pod", caller.namespace, caller.pod_name) if caller.pod_name else None
    if pod is None:
        raise refuse(f"the caller's token is bound to no pod {caller.namespace}/{caller.pod_name or '(none)'}")
    if meta(pod).get("uid") != caller.pod_uid:
        raise refuse(f"pod {caller.namespace}/{caller.pod_name} found, but its uid is not the token's")
    if pod_service_account(pod) != caller.service_account or pod_terminating(pod):
        raise refuse(f"pod {caller.namespace}/{caller.pod_name} does not run as {caller.service_account} "
                     "or is terminating")
    node = pod_node(pod)
    if not identity_on_node(index, identity, identity_uri, node):
        raise refuse(f"no instances of {identity.namespace}/{identity.service_account} found on node {node!r}")
    return identity


def serving_certificate(ca: CertificateAuthority, ip: str | None, ttl_days: int = 365) -> tuple[bytes, bytes]:
    """(key PEM, chain PEM) for istiod's 15012: DNS names of istiod's Service, signed by the mesh
    root, as Istio's istiod serves its own DNS certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(n) for n in SERVING_NAMES]
    if ip:
        names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.root_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(min(now + dt.timedelta(days=ttl_days), ca.root_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .sign(ca.root_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM) + ca.root_pem.encode()


class GrpcCA:
    """The gRPC service; `index()` is istiod's current store view, `fresh_index()` the store's
    own (the watch may lag a pod created a moment ago), `max_ttl()` the workload certificate TTL."""

    def __init__(self, ca: CertificateAuthority, run_dir: str, index, fresh_index, max_ttl,
                 trusted: frozenset[tuple[str, str]] | None = None):
        self.ca = ca
        self.public_key_path = os.path.join(run_dir, PUBLIC_KEY)
        self.index, self.fresh_index, self.max_ttl = index, fresh_index, max_ttl
        self.trusted = trusted_node_accounts() if trusted is None else trusted
        self._server = None

    def _public_key(self) -> bytes:
        try:
            with open(self.public_key_path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise Refused("UNAUTHENTICATED", AUTHN_FAILURE,
                          f"the API server's service-account key {self.public_key_path} is unreadable "
                          f"({exc.strerror}); is the Kubernetes API up?") from None

    def create_certificate(self, request, metadata) -> list[str]:
        """The chain to answer (leaf first, root last), or Refused."""
        token, key = bearer_token(metadata), self._public_key()
        try:
            caller, index = authenticate(token, key, self.index()), None
        except Refused:
            index = self.fresh_index()
            caller = authenticate(token, key, index)
        impersonated = request.metadata.fields.get(IMPERSONATED_IDENTITY) if request.HasField("metadata") else None
        wanted = impersonated.string_value if impersonated is not None else ""
        if wanted:
            try:
                identity = authorize_impersonation(index or self.index(), caller, wanted, self.trusted)
            except Refused:
                if index is not None:
                    raise
                identity = authorize_impersonation(self.fresh_index(), caller, wanted, self.trusted)
        else:
            identity = Identity.parse(caller.identity)  # no impersonation: the caller's own identity
        max_ttl = self.max_ttl()
        ttl = min(request.validity_duration, max_ttl) if request.validity_duration > 0 else max_ttl
        try:
            leaf = self.ca.sign_csr(request.csr, identity, ttl)
        except CertificateError as exc:
            raise Refused("INVALID_ARGUMENT", f"CSR signing error ({exc})") from None
        log.info("gRPC CA: signed %s for %s/%s (pod %s, ttl %ds)", identity.uri, caller.namespace,
                 caller.service_account, caller.pod_name or "-", ttl)
        return [leaf, self.ca.root_pem]

    async def start(self, address: str, ip: str | None = None) -> int:
        """Serve on `address` ("HOST:PORT", port 0 for any); returns the port."""
        import grpc
        import grpc.aio

        async def handler(request, context):
            try:
                chain = self.create_certificate(request, context.invocation_metadata())
            except Refused as refused:
                log.warning("gRPC CA: refused (%s): %s", refused.message, refused.reason)
                await context.abort(getattr(grpc.StatusCode, refused.code), refused.message)
            return IstioCertificateResponse(cert_chain=chain)

        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.unary_unary_rpc_method_handler(
                handler, request_deserializer=IstioCertificateRequest.FromString,
                response_serializer=IstioCertificateResponse.SerializeToString)})])
        key_pem, chain_pem = serving_certificate(self.ca, ip)
        port = self._server.add_secure_port(address, grpc.ssl_server_credentials([(key_pem, chain_pem)]))
        await self._server.start()
        log.info("gRPC CA (%s) serving on %s", SERVICE, address.rsplit(":", 1)[0] + f":{port}")
        return port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
