"""Wire compatibility with HTTP/2 implementations we did not write (Debian's nghttpx, tinyproxy, curl).

(a) our client → nghttpx (TLS 1.3 h2 frontend with our CA's certificate, client certs required)
    → tinyproxy (HTTP/1 CONNECT) → TCP echo.
(b) curl → nghttpx (forward proxy; backend h2 over TLS with a client certificate) → our server → app.
"""

import asyncio
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from hbone_testing import LocalPKI, start_echo, tcp_connector
from reference_impl.hbone import HboneClient, HboneServer
from reference_impl.identity import Identity

NGHTTPX = shutil.which("nghttpx") or "/usr/sbin/nghttpx"
TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
CURL = shutil.which("curl") or "/usr/bin/curl"
CLIENT_ID = Identity.for_workload("th-client", "sleep")
SERVER_ID = Identity.for_workload("th-server", "nghttpx")

pytestmark = pytest.mark.skipif(
    not (os.access(NGHTTPX, os.X_OK) and os.access(TINYPROXY, os.X_OK) and os.access(CURL, os.X_OK)),
    reason="needs Debian's nghttpx (nghttp2-proxy), tinyproxy and curl: run `make setup`")


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
    head = await reader.readuntil(b"\r\n\r\n")
    body = b"app saw: " + head.split(b"\r\n", 1)[0]
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    writer.close()


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
        connect = tcp_connector()

        async def authorize_and_connect(request):
            requests.append(request)
            return await connect(request)

        server = HboneServer(authorize_and_connect, pki.context)
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
