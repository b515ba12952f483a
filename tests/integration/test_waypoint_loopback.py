"""The waypoint end to end on loopback, no cluster: a real source HBONE client, the waypoint,
and the real HBONE server standing in for the destination pod's ztunnel in front of a real
httpbin (gunicorn). Plays the seed article's L7 step with its own policy files and token."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import h11
import pytest

from hbone_testing import LocalPKI
from reference_impl.hbone import HboneClient, HboneError, HboneServer, Outcome
from reference_impl.identity import CertificateAuthority, CertificateManager, Identity
from reference_impl.waypoint import Waypoint
from tests.support.waypoint_seed import (HTTPBIN_IDENTITY_URI, SLEEP_IDENTITY_URI, WAYPOINT_IDENTITY_URI,
                                             seed_snapshot, seed_token)
from tests.unit.test_waypoint_pipeline import tampered

REPO = Path(__file__).resolve().parents[2]
GUNICORN = REPO / ".venv-httpbin" / "bin" / "gunicorn"
SLEEP = Identity.parse(SLEEP_IDENTITY_URI)
HTTPBIN = Identity.parse(HTTPBIN_IDENTITY_URI)
WAYPOINT = Identity.parse(WAYPOINT_IDENTITY_URI)
VIP_AUTHORITY = "10.96.0.50:8000"
TIMEOUT = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {deadline_s:g}s: {exc}") from None
        time.sleep(0.1)


@pytest.fixture(scope="module")
def httpbin_port():
    if not GUNICORN.exists():
        pytest.skip(f"{GUNICORN} is missing; run the set-up script to create .venv-httpbin")
    port = free_port()
    proc = subprocess.Popen([str(GUNICORN), "-b", f"127.0.0.1:{port}", "-w", "2", "httpbin:app"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/get")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def http(stream, path: str, token: str | None = None):
    """One HTTP/1.1 request over an HBONE stream: (status, headers, body)."""
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", "httpbin-ambient.ambient-apps:8000"), ("connection", "close")]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    stream.write(conn.send(h11.Request(method="GET", target=path, headers=headers)) + conn.send(h11.EndOfMessage()))
    status, response_headers, body = None, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            response_headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, response_headers, body
        else:
            raise AssertionError(f"connection ended before the response: {event!r}")


class Mesh:
    """CA, destination 'ztunnel' (HBONE server -> httpbin), waypoint, source client."""

    def __init__(self, httpbin_port: int, allow_principals=None):
        self.httpbin_port = httpbin_port
        self.allow_principals = allow_principals
        self.ca = CertificateAuthority.create()
        self.pki = LocalPKI(self.ca)
        self.seen: list[tuple[Identity, tuple[str, int]]] = []

    async def _destination(self, request):
        self.seen.append((request.peer_identity, request.authority))
        if self.allow_principals is not None and request.peer_identity not in self.allow_principals:
            return Outcome.refused(401, f"{request.peer_identity} not allowed")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", request.authority[1])
        except OSError as exc:
            return Outcome.refused(503, str(exc))
        return Outcome.connected(reader, writer)

    async def _sign(self, identity, csr_pem):
        return [self.ca.sign_csr(csr_pem, identity)], self.ca.root_pem

    async def start(self, snapshot: dict | None):
        self.destination = HboneServer(self._destination, self.pki.context)
        listener = await self.destination.listen(("127.0.0.1", 0), HTTPBIN)
        self.certs = CertificateManager(self._sign)
        self.waypoint = Waypoint(WAYPOINT, self.certs.ssl_context_for, hbone_port=listener.address[1])
        if snapshot is not None:
            self.waypoint.apply(snapshot, 1)
        self.waypoint_address = (await self.waypoint.listen(("127.0.0.1", 0))).address
        self.client = HboneClient(self.pki.context)
        return self

    async def tunnel(self, authority=VIP_AUTHORITY):
        return await asyncio.wait_for(
            self.client.connect(SLEEP, self.waypoint_address, [WAYPOINT], authority,
                                {"forwarded": 'for="10.244.0.9:40000"'}), TIMEOUT)

    async def get(self, path, token=None):
        return await asyncio.wait_for(http(await self.tunnel(), path, token), TIMEOUT)

    async def close(self):
        await self.client.close()
        await self.waypoint.close()
        await self.destination.close()
        await self.certs.close()


def seed(httpbin_port: int, **kwargs) -> dict:
    return seed_snapshot(httpbin_ip="127.0.0.1", target_port=httpbin_port, **kwargs)


def test_article_l7_step_through_the_waypoint(httpbin_port):
    async def main():
        mesh = await Mesh(httpbin_port).start(seed(httpbin_port))
        try:
            status, _, body = await mesh.get("/headers", seed_token())
            assert (status, body) == (403, b"RBAC: access denied")
            status, _, body = await mesh.get("/ip")
            assert (status, body) == (403, b"RBAC: access denied")
            status, _, body = await mesh.get("/ip", tampered(seed_token()))
            assert status == 401, body
            assert mesh.seen == [], "denied requests must not reach the destination"
            status, _, body = await mesh.get("/ip", seed_token())
            assert status == 200 and "origin" in json.loads(body)
            # Path 6: a new HBONE connection, with the waypoint's identity, to pod:targetPort.
            assert mesh.seen == [(WAYPOINT, ("127.0.0.1", httpbin_port))]
            assert [r.status for r in mesh.waypoint.records] == [403, 403, 401, 200]
        finally:
            await mesh.close()

    asyncio.run(main())


def test_token_is_removed_before_httpbin_sees_it(httpbin_port):
    async def main():
        snapshot = seed(httpbin_port)
        snapshot["authorizationPolicies"] = []  # only the RequestAuthentication
        mesh = await Mesh(httpbin_port).start(snapshot)
        try:
            # show_env: httpbin hides x-forwarded-* and x-request-id otherwise.
            status, _, body = await mesh.get("/headers?show_env=1", seed_token())
            assert status == 200
            seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
            assert "authorization" not in seen
            assert seen.get("x-forwarded-proto") == "http" and seen.get("x-request-id")
            status, _, _ = await mesh.get("/headers", tampered(seed_token()))
            assert status == 401
        finally:
            await mesh.close()

    asyncio.run(main())


def test_destination_policy_sees_the_waypoint_not_the_client(httpbin_port):
    async def main():
        # The destination allows only the original client: the waypoint's hop is refused (401),
        # which the waypoint reports as Envoy does, 503.
        mesh = await Mesh(httpbin_port, allow_principals={SLEEP}).start(seed(httpbin_port, policies=False))
        try:
            status, _, body = await mesh.get("/get")
            assert status == 503 and body.startswith(b"upstream connect error")
            assert mesh.seen[0][0] == WAYPOINT
        finally:
            await mesh.close()

    asyncio.run(main())


def test_connect_refused_before_config_and_for_unknown_destinations(httpbin_port):
    async def main():
        mesh = await Mesh(httpbin_port).start(None)
        try:
            with pytest.raises(HboneError) as err:
                await mesh.tunnel()
            assert err.value.status == 503
            mesh.waypoint.apply(seed(httpbin_port), 2)
            with pytest.raises(HboneError) as err:
                await mesh.tunnel("10.96.0.99:8000")
            assert err.value.status == 503
            status, _, _ = await mesh.get("/ip", seed_token())
            assert status == 200
        finally:
            await mesh.close()

    asyncio.run(main())


def test_waypoint_process_with_static_config(httpbin_port, tmp_path):
    """`python -m reference_impl.waypoint --config --ca-dir`: readiness, then the article's 200."""
    async def main():
        mesh = Mesh(httpbin_port)
        mesh.ca.save(tmp_path / "ca")
        destination = HboneServer(mesh._destination, mesh.pki.context)
        dest_port = (await destination.listen(("127.0.0.1", 0), HTTPBIN)).address[1]
        config = tmp_path / "waypoint.json"
        config.write_text(json.dumps(seed(httpbin_port)))
        hbone_port, status_port = free_port(), free_port()
        env = {**os.environ, "POD_NAME": "httpbin-ambient-waypoint-0", "POD_NAMESPACE": "ambient-apps",
               "SERVICE_ACCOUNT": "httpbin-ambient-waypoint", "INSTANCE_IP": "127.0.0.1"}
        env.pop("AC_RUN_DIR", None)
        # The destination HBONE port is fixed at 15008 in a cluster; here it is the test's listener.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reference_impl.waypoint", "--config", str(config), "--ca-dir",
            str(tmp_path / "ca"), "--hbone-port", str(hbone_port), "--status-port", str(status_port),
            "--upstream-hbone-port", str(dest_port), env=env, cwd=str(REPO),
            stderr=asyncio.subprocess.PIPE)
        client = HboneClient(mesh.pki.context)
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{status_port}/healthz/ready", 20)
            stream = await client.connect(SLEEP, ("127.0.0.1", hbone_port), [WAYPOINT], VIP_AUTHORITY)
            status, _, _ = await asyncio.wait_for(http(stream, "/ip", seed_token()), TIMEOUT)
            assert status == 200
            assert mesh.seen[-1][0] == WAYPOINT
        finally:
            await client.close()
            proc.terminate()
            _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
            await destination.close()
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert b'"GET /ip" 200 src=spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient' in stderr

    asyncio.run(main())


def test_drain_closes_idle_keep_alive_tunnels_quickly(httpbin_port):
    async def main():
        mesh = await Mesh(httpbin_port).start(seed(httpbin_port, policies=False))
        try:
            stream = await mesh.tunnel()
            conn = h11.Connection(h11.CLIENT)
            stream.write(conn.send(h11.Request(method="GET", target="/get", headers=[("host", "x")]))
                         + conn.send(h11.EndOfMessage()))
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    conn.receive_data(await asyncio.wait_for(stream.read(65536), TIMEOUT))
            started = time.monotonic()
            await mesh.waypoint.drain(10)
            assert time.monotonic() - started < 5, "an idle keep-alive tunnel must not hold the drain"
            assert await asyncio.wait_for(stream.read(65536), TIMEOUT) == b""
        finally:
            await mesh.close()

    asyncio.run(main())
