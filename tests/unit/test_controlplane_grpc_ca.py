"""istiod's CA over gRPC (reference_impl/controlplane/ca_grpc.py) with a real grpcio client over
TLS: a ztunnel's token bound to its pod gets certificates for identities of its own node's
workloads only; a bad, unbound-to-a-live-pod or wrong-audience token, and an account that is not
a node proxy's, get istiod's Unauthenticated answers. Tokens come from the reference API server's
own TokenRequest code, so the two agree on the claims."""
from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import subprocess
import sys
import threading

import grpc
import pytest
from cryptography import x509
from google.protobuf import struct_pb2

from reference_impl.cluster.kubeapi.tokens import ServiceAccountTokens
from reference_impl.controlplane import ca_grpc
from reference_impl.controlplane.index import MeshIndex
from reference_impl.identity import CertificateAuthority, Identity, make_csr

SYS, APPS = "istio-system", "apps"


def _obj(kind, ns, name, uid, spec=None):
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": ns, "uid": uid},
            "spec": spec or {}}


def _pod(ns, name, node, sa):
    return _obj("Pod", ns, name, f"uid-{name}", {"nodeName": node, "serviceAccountName": sa})


class World:
    def __init__(self, run_dir):
        self.objects = [_obj("ServiceAccount", SYS, "ztunnel", "uid-sa-zt"),
                        _obj("ServiceAccount", APPS, "on-x", "uid-sa-x"),
                        _obj("ServiceAccount", APPS, "on-y", "uid-sa-y"),
                        _pod(SYS, "ztunnel-x", "node-x", "ztunnel"), _pod(SYS, "ztunnel-y", "node-y", "ztunnel"),
                        _pod(APPS, "on-x", "node-x", "on-x"), _pod(APPS, "on-y", "node-y", "on-y")]
        self.tokens = ServiceAccountTokens(str(run_dir / "kubeapi"), self.lookup)

    def lookup(self, kind, ns, name):
        return next((o for o in self.objects if o["kind"] == kind and
                     (o["metadata"]["namespace"], o["metadata"]["name"]) == (ns or "", name)), None)

    def index(self):
        return MeshIndex.build(self.objects)

    def token(self, ns, account, pod, audiences=("istio-ca",)):
        body = {"spec": {"audiences": list(audiences), "expirationSeconds": 600,
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod}}}
        return self.tokens.request(ns, account, body)["status"]["token"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("grpc-ca")
    world = World(run_dir)
    ca = CertificateAuthority.create()
    service = ca_grpc.GrpcCA(ca, str(run_dir), world.index, world.index, lambda: 3600)
    loop = asyncio.new_event_loop()
    ready, port = threading.Event(), {}

    def run():
        asyncio.set_event_loop(loop)
        port["n"] = loop.run_until_complete(service.start("127.0.0.1:0"))
        ready.set()
        loop.run_forever()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(20)
    channel = grpc.secure_channel(f"127.0.0.1:{port['n']}", grpc.ssl_channel_credentials(ca.root_pem.encode()),
                                  options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")])
    call = channel.unary_unary(f"/{ca_grpc.SERVICE}/{ca_grpc.METHOD}",
                               request_serializer=ca_grpc.IstioCertificateRequest.SerializeToString,
                               response_deserializer=ca_grpc.IstioCertificateResponse.FromString)
    yield world, ca, call, port["n"]
    channel.close()
    asyncio.run_coroutine_threadsafe(service.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _ask(call, token, identity_uri, impersonate=True):
    _, csr = make_csr(Identity.parse(identity_uri))
    metadata = struct_pb2.Struct()
    if impersonate:
        metadata.update({ca_grpc.IMPERSONATED_IDENTITY: identity_uri})
    request = ca_grpc.IstioCertificateRequest(csr=csr, validity_duration=600, metadata=metadata)
    headers = [("authorization", f"Bearer {token}")] if token is not None else []
    return call(request, metadata=headers, timeout=10)


def _refused(call, token, identity_uri, message, impersonate=True):
    with pytest.raises(grpc.RpcError) as caught:
        _ask(call, token, identity_uri, impersonate)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == message


def _sans(chain):
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier)


ON_X, ON_Y = f"spiffe://cluster.local/ns/{APPS}/sa/on-x", f"spiffe://cluster.local/ns/{APPS}/sa/on-y"


def test_a_ztunnel_gets_its_own_nodes_workload_and_not_another_nodes(served):
    world, ca, call, _ = served
    token = world.token(SYS, "ztunnel", "ztunnel-x")
    answer = _ask(call, token, ON_X)
    assert _sans(answer.cert_chain) == [ON_X]
    assert answer.cert_chain[-1] == ca.root_pem
    _refused(call, token, ON_Y, ca_grpc.IMPERSONATION_FAILURE)
    _refused(call, token, f"spiffe://cluster.local/ns/{APPS}/sa/nobody", ca_grpc.IMPERSONATION_FAILURE)
    _refused(call, token, f"spiffe://evil.example/ns/{APPS}/sa/on-x", ca_grpc.IMPERSONATION_FAILURE)
    mirror = world.token(SYS, "ztunnel", "ztunnel-y")
    assert _sans(_ask(call, mirror, ON_Y).cert_chain) == [ON_Y]
    _refused(call, mirror, ON_X, ca_grpc.IMPERSONATION_FAILURE)


def test_an_account_that_is_no_node_proxys_may_not_impersonate(served):
    world, _, call, _ = served
    token = world.token(APPS, "on-x", "on-x")
    _refused(call, token, ON_X.replace("on-x", "on-y"), ca_grpc.IMPERSONATION_FAILURE)
    _refused(call, token, ON_X, ca_grpc.IMPERSONATION_FAILURE)  # not even its own node's
    # without impersonation a caller gets its own identity, as from Istio's istiod
    assert _sans(_ask(call, token, ON_X, impersonate=False).cert_chain) == [ON_X]


@pytest.mark.parametrize("case", ["no token", "garbage", "forged", "wrong audience", "pod gone"])
def test_tokens_istiod_does_not_accept(served, case):
    world, _, call, _ = served
    token = {"no token": lambda: None, "garbage": lambda: "not-a-jwt",
             "forged": lambda: world.token(SYS, "ztunnel", "ztunnel-x")[:-6] + "AAAAAA",
             "wrong audience": lambda: world.token(SYS, "ztunnel", "ztunnel-x", audiences=("kubernetes",)),
             "pod gone": lambda: world.token(SYS, "ztunnel", "ztunnel-x")}[case]()
    if case == "pod gone":
        pod = world.lookup("Pod", SYS, "ztunnel-x")
        world.objects[world.objects.index(pod)] = dict(pod, metadata=dict(pod["metadata"], uid="uid-recreated"))
        try:
            _refused(call, token, ON_X, ca_grpc.AUTHN_FAILURE)
        finally:
            world.objects[world.objects.index(world.lookup("Pod", SYS, "ztunnel-x"))] = pod
        return
    _refused(call, token, ON_X, ca_grpc.AUTHN_FAILURE)


def test_the_suites_probe_speaks_grpc_to_it_over_h2(served):
    """The kubernetes target's own client (probes/ca_probe.py, gRPC framing over h2, messages
    built by istio_ca_grpc) against this grpcio server: answers in order, signed and refused."""
    from conformance.targets import istio_ca_grpc
    world, ca, _, port = served
    spec = istio_ca_grpc.probe_spec("127.0.0.1", ca.root_pem, world.token(SYS, "ztunnel", "ztunnel-x"),
                                    [ON_X, ON_Y, ON_X])
    spec = json.loads(base64.b64decode(spec))
    spec["port"] = port
    probe = pathlib.Path(istio_ca_grpc.__file__).resolve().parents[1] / "probes" / istio_ca_grpc.PROBE_SCRIPT
    done = subprocess.run([sys.executable, str(probe), base64.b64encode(json.dumps(spec).encode()).decode()],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    own, foreign, again = istio_ca_grpc.answers_from(done.stdout, [ON_X, ON_Y, ON_X], "the test")
    assert own.signed and own.identities == (ON_X,) and own.chain[-1] == ca.root_pem
    assert not foreign.signed and foreign.refusal == f"UNAUTHENTICATED: {ca_grpc.IMPERSONATION_FAILURE}"
    assert again.signed and again.identities == (ON_X,)
