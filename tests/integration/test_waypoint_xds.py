"""The waypoint process wiring against a real xDS server: hello as a waypoint, certificate via
the CSR round trip, readiness and 503s until the first snapshot, then serving; a NACKed bad
snapshot leaves the previous config in force; the config survives the control plane going away."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from reference_impl.hbone import HboneClient, HboneError, HboneServer
from reference_impl.identity import Identity
from reference_impl.waypoint.run import WaypointProcess
from tests.support.waypoint_seed import WAYPOINT_IDENTITY_URI
from reference_impl.xds import XdsServer
from tests.integration.test_waypoint_loopback import (HTTPBIN, SLEEP, TIMEOUT, VIP_AUTHORITY, WAYPOINT, Mesh,
                                                      free_port, http, httpbin_port, seed)  # noqa: F401
from tests.support.waypoint_seed import seed_token


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def until(predicate, timeout=TIMEOUT):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_waypoint_over_xds(httpbin_port, tmp_path):  # noqa: F811 - pytest fixture
    async def main():
        mesh = Mesh(httpbin_port)
        signed, hellos = [], []
        current = {"config": None}

        def config_for(stream):
            hellos.append(stream.hello)
            return current["config"]

        def signer(stream, identity, csr_pem, ttl):
            signed.append((stream.hello.proxy, identity))
            return [mesh.ca.sign_csr(csr_pem, Identity.parse(identity))], mesh.ca.root_pem

        xds = XdsServer(str(tmp_path / "istiod.sock"), config_for, signer)
        await xds.start()
        destination = HboneServer(mesh._destination, mesh.pki.context)
        dest_port = (await destination.listen(("127.0.0.1", 0), HTTPBIN)).address[1]
        status_port = free_port()
        env = {"POD_NAME": "httpbin-ambient-waypoint-0", "POD_NAMESPACE": "ambient-apps",
               "SERVICE_ACCOUNT": "httpbin-ambient-waypoint", "NODE_NAME": "node-0",
               "INSTANCE_IP": "127.0.0.1", "AC_RUN_DIR": str(tmp_path)}
        proc = WaypointProcess(env, hbone_port=0, status_port=status_port, upstream_hbone_port=dest_port)
        client = HboneClient(mesh.pki.context)
        ready_url = f"http://127.0.0.1:{status_port}/healthz/ready"
        try:
            await proc.start()
            waypoint_address = proc.waypoint.server.listeners[0].address
            # Certificate through the CSR round trip, but no config yet: not ready, CONNECT 503.
            await until(lambda: _true(signed))
            assert signed == [("waypoint", WAYPOINT_IDENTITY_URI)]
            assert hellos[0].proxy == "waypoint" and hellos[0].pod == "httpbin-ambient-waypoint-0"
            assert await asyncio.to_thread(status_of, ready_url) == 503
            try:
                await client.connect(SLEEP, waypoint_address, [WAYPOINT], VIP_AUTHORITY)
                raise AssertionError("CONNECT before the first snapshot must be refused")
            except HboneError as exc:
                assert exc.status == 503

            current["config"] = seed(httpbin_port)
            await xds.push()
            await until(lambda: _status_is(ready_url, 200))
            stream = await client.connect(SLEEP, waypoint_address, [WAYPOINT], VIP_AUTHORITY)
            assert (await asyncio.wait_for(http(stream, "/ip", seed_token()), TIMEOUT))[0] == 200
            good_version = proc.waypoint.config.version

            # A snapshot the waypoint cannot use is NACKed and the previous one keeps serving.
            bad = seed(httpbin_port)
            bad["services"] = ["ambient-apps/nowhere.svc.cluster.local"]
            current["config"] = bad
            await xds.push()
            await until(lambda: _true(next(iter(xds.streams.values())).nacked))
            assert proc.waypoint.config.version == good_version
            stream = await client.connect(SLEEP, waypoint_address, [WAYPOINT], VIP_AUTHORITY)
            assert (await asyncio.wait_for(http(stream, "/headers", seed_token()), TIMEOUT))[0] == 403

            # Control plane gone: the last config keeps serving.
            await xds.close()
            stream = await client.connect(SLEEP, waypoint_address, [WAYPOINT], VIP_AUTHORITY)
            assert (await asyncio.wait_for(http(stream, "/ip", seed_token()), TIMEOUT))[0] == 200
            stats = json.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{status_port}/stats"))
            assert stats["responses"] == {"200": 2, "403": 1}
        finally:
            await client.close()
            await proc.shutdown()
            await destination.close()
            await xds.close()

    asyncio.run(main())


async def _true(value) -> bool:
    return bool(value)


async def _status_is(url: str, code: int) -> bool:
    return await asyncio.to_thread(status_of, url) == code


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()
