"""The peer: a real Envoy doing the same HBONE hop pair as two ztunnels.

TCP in → HTTP/2 CONNECT over mutual TLS 1.3 (ALPN h2, SPIFFE URI SANs checked both ways) → TCP
out, one worker each, as Istio's own waypoints and sidecars are Envoy. The client Envoy runs in
the direct path's client pod (a local listener, as ztunnel's outbound listener is in the pod's
namespace) and the server Envoy in the direct path's server pod, so the peer crosses the same node
pair to the same server. Its certificates come from a CA of its own, made here: the peer is not
part of the mesh under test. The whole bootstrap goes in `--config-yaml` (inline certificates),
so the same container spec runs on any target without files or ConfigMaps.
"""
from __future__ import annotations

import datetime
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

IMAGE = "docker.io/envoyproxy/envoy:v1.40-latest"
CLIENT_PORT = 15101  # the client Envoy's plain TCP listener (ztunnel's outbound would be 15001)
HBONE_PORT = 15008


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_cert(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class PeerPKI:
    """A throw-away root and one leaf per SPIFFE identity (ECDSA P-256, as the mesh's CA)."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ambient-conformance load peer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.root = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.root_pem = _pem_cert(self.root)

    def leaf(self, spiffe_id: str) -> dict:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.root.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                               critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return {"chain": _pem_cert(cert), "key": _pem_key(key), "root": self.root_pem}


def _tls(certs: dict, peer_san: str) -> dict:
    return {"tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
            "alpn_protocols": ["h2"],
            "tls_certificates": [{"certificate_chain": {"inline_string": certs["chain"]},
                                  "private_key": {"inline_string": certs["key"]}}],
            "validation_context": {"trusted_ca": {"inline_string": certs["root"]},
                                   "match_typed_subject_alt_names": [
                                       {"san_type": "URI", "matcher": {"exact": peer_san}}]}}


def _cluster(name: str, host: str, port: int, **extra) -> dict:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
    return {"name": name, "type": "STATIC", "connect_timeout": "5s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]}, **extra}


def server_bootstrap(certs: dict, client_id: str, app_port: int, *, app_host: str = "127.0.0.1",
                     listen: tuple[str, int] = ("0.0.0.0", HBONE_PORT)) -> dict:
    """Terminates mutual TLS + HTTP/2 CONNECT on 15008 and tunnels to the app on loopback
    (`listen` and `app_host` let bench/hbone_throughput.py run the pair on one host's loopback)."""
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "hbone_in", "codec_type": "HTTP2", "http2_protocol_options": {"allow_connect": True},
           "upgrade_configs": [{"upgrade_type": "CONNECT"}],
           "route_config": {"name": "tunnels", "virtual_hosts": [{
               "name": "app", "domains": ["*"],
               "routes": [{"match": {"connect_matcher": {}},
                           "route": {"cluster": "app", "timeout": "0s",
                                     "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "require_client_certificate": True, "common_tls_context": _tls(certs, client_id)}
    listener = {"name": "hbone", "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [{"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                                   "filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}
    return {"static_resources": {"listeners": [listener], "clusters": [_cluster("app", app_host, app_port)]}}


def client_bootstrap(certs: dict, server_id: str, server_addr: tuple[str, int], app_port: int, *,
                     listen: tuple[str, int] = ("0.0.0.0", CLIENT_PORT)) -> dict:
    """A plain TCP listener whose connections go over HTTP/2 CONNECT with mutual TLS to the
    server Envoy (one pooled connection, as ztunnel pools its tunnels)."""
    tcp = {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
           "stat_prefix": "hbone_out", "cluster": "hbone",
           "tunneling_config": {"hostname": f"127.0.0.1:{app_port}"}}
    listener = {"name": "outbound", "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp}]}]}
    tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
           "common_tls_context": _tls(certs, server_id)}
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    cluster = _cluster("hbone", server_addr[0], server_addr[1], typed_extension_protocol_options=h2,
                       transport_socket={"name": "envoy.transport_sockets.tls", "typed_config": tls})
    return {"static_resources": {"listeners": [listener], "clusters": [cluster]}}


def container(name: str, bootstrap: dict, port: int) -> dict:
    return {"name": name, "image": IMAGE,
            "command": ["envoy", "--config-yaml", json.dumps(bootstrap), "--concurrency", "1",
                        "--disable-hot-restart", "-l", "warning"],
            "ports": [{"containerPort": port}]}
