"""XdsServer and XdsClient over a real Unix socket: versions, acks, reconnects, CSRs, debug."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile

import pytest

from conformance.targets import reference_ca
from reference_impl.hbone import eventloop
from reference_impl.xds import (CsrRefused, CsrRejected, XdsClient, XdsServer, XdsUnavailable,
                                debug_query)


@pytest.fixture
def sock_path():
    # pytest's tmp_path can exceed the 108-byte limit of a Unix socket path.
    with tempfile.TemporaryDirectory(prefix="tp-xds-") as directory:
        yield os.path.join(directory, "istiod.sock")


class Mesh:
    """A mutable config the server derives from, standing in for the store-backed cache."""

    def __init__(self):
        self.workloads = ["a"]

    def config_for(self, stream):
        return {"workloads": list(self.workloads), "node": stream.hello.node}


def node_signer(stream, identity, csr_pem, ttl_seconds):
    if not identity.endswith(f"/sa/{stream.hello.node}"):
        raise CsrRefused(f"identity {identity} has no workload on node {stream.hello.node}")
    return [f"chain-for-{identity}"], "root"


async def poll(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached within the deadline")
        await asyncio.sleep(0.01)


def client_for(path, node="node-0", **kwargs):
    return XdsClient(path, proxy="ztunnel", node=node, pod=f"ztunnel-{node}",
                     namespace="istio-system", max_backoff=0.2, **kwargs)


@contextlib.asynccontextmanager
async def serving(sock_path, config_for, signer=None, **client_options):
    """A started XdsServer and a connected-or-connecting client; both closed afterwards."""
    server = XdsServer(sock_path, config_for, signer=signer)
    await server.start()
    client = client_for(sock_path, **client_options)
    await client.start()
    try:
        yield server, client
    finally:
        await client.close()
        await server.close()


def test_snapshot_versions_only_change_with_the_config_and_acks_are_recorded(sock_path):
    async def scenario():
        mesh = Mesh()
        async with serving(sock_path, mesh.config_for) as (server, client):
            first = await client.wait_version(timeout=5)
            assert client.config == {"workloads": ["a"], "node": "node-0"}
            stream = server.streams["ztunnel/istio-system/ztunnel-node-0"]
            await poll(lambda: stream.acked_version == first)

            await server.push()  # nothing changed: no new version
            assert stream.sent_version == first

            mesh.workloads.append("b")
            await server.push()
            second = await client.wait_version(newer_than=first, timeout=5)
            assert second > first
            assert client.config["workloads"] == ["a", "b"]
            await poll(lambda: stream.acked_version == second)

    asyncio.run(scenario())


def test_client_keeps_last_config_while_server_is_down_and_resyncs_with_higher_version(sock_path):
    async def scenario():
        mesh = Mesh()
        server = XdsServer(sock_path, mesh.config_for)
        await server.start()
        client = client_for(sock_path)
        await client.start()
        try:
            before = await client.wait_version(timeout=5)
            await server.close()
            await poll(lambda: not client.connected.is_set())
            assert client.config["workloads"] == ["a"] and client.version == before

            mesh.workloads = ["a", "created-while-down"]
            restarted = XdsServer(sock_path, mesh.config_for)  # fresh counter, as after a restart
            await restarted.start()
            try:
                after = await client.wait_version(newer_than=before, timeout=5)
                assert after > before
                assert client.config["workloads"] == ["a", "created-while-down"]
                assert client.connects == 2
            finally:
                await restarted.close()
        finally:
            await client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("loop", eventloop.KINDS)
def test_client_reconnects_after_the_stream_is_reset_while_it_applies_a_snapshot(sock_path, loop):
    # istiod killed with a message of the proxy's unread resets the stream (ECONNRESET); the
    # proxy was applying a snapshot, and its ack met a transport already closed. On uvloop that
    # write raised RuntimeError, which ended the client's task: no reconnect, ever.
    async def scenario():
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(sock_path)
        server.listen(4)
        server.setblocking(False)
        loop_ = asyncio.get_running_loop()

        async def slow_apply(config, version):
            await asyncio.sleep(0.3)

        client = client_for(sock_path, on_snapshot=slow_apply)
        await client.start()
        try:
            first, _ = await asyncio.wait_for(loop_.sock_accept(server), 5)
            await poll(lambda: client.connected.is_set())   # its hello is in our queue, unread
            first.sendall(b'{"type":"snapshot","version":7,"config":{}}\n')
            await asyncio.sleep(0.05)
            first.close()                                   # unread data: the client's side is reset
            second, _ = await asyncio.wait_for(loop_.sock_accept(server), 5)
            hello = json.loads((await asyncio.wait_for(loop_.sock_recv(second, 4096), 5)).split(b"\n")[0])
            assert hello["type"] == "hello" and hello["version"] == 7
            second.close()
        finally:
            await client.close()
            server.close()

    eventloop.run(scenario(), loop)


def test_client_started_before_server_connects_with_backoff(sock_path):
    async def scenario():
        client = client_for(sock_path)
        await client.start()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await client.wait_version(timeout=0.3)
            server = XdsServer(sock_path, Mesh().config_for)
            await server.start()
            try:
                assert await client.wait_version(timeout=5) >= 1
            finally:
                await server.close()
        finally:
            await client.close()

    asyncio.run(scenario())


def test_rejected_snapshot_is_nacked_and_previous_config_kept(sock_path):
    async def scenario():
        mesh = Mesh()
        def apply(config, version):
            if "poison" in config["workloads"]:
                raise ValueError("workload 'poison' has no address")

        async with serving(sock_path, mesh.config_for, on_snapshot=apply) as (server, client):
            good = await client.wait_version(timeout=5)
            stream = server.streams["ztunnel/istio-system/ztunnel-node-0"]
            mesh.workloads.append("poison")
            await server.push()
            await poll(lambda: stream.nacked is not None)
            assert "no address" in stream.nacked["error"]
            assert client.version == good and "poison" not in client.config["workloads"]
            assert stream.acked_version == good
            # what the reference target's timeout message says of the stream names the NACK
            summary = await asyncio.get_running_loop().run_in_executor(
                None, reference_ca.ztunnel_streams_summary, sock_path)
            assert f"sent {stream.sent_version}, acked {good}, nacked" in summary and "no address" in summary

    asyncio.run(scenario())


def test_csr_is_signed_for_own_node_and_refused_with_a_reason_for_another(sock_path):
    async def scenario():
        async with serving(sock_path, Mesh().config_for, signer=node_signer, node="node-1") as (server, client):
            chain, root = await client.sign("spiffe://cluster.local/ns/a/sa/node-1", "CSR")
            assert chain == ["chain-for-spiffe://cluster.local/ns/a/sa/node-1"] and root == "root"
            with pytest.raises(CsrRejected, match="no workload on node node-1"):
                await client.sign("spiffe://cluster.local/ns/a/sa/node-0", "CSR")

    asyncio.run(scenario())


def test_sign_without_istiod_fails_within_its_timeout(sock_path):
    async def scenario():
        client = client_for(sock_path)
        await client.start()
        try:
            with pytest.raises(XdsUnavailable):
                await client.sign("spiffe://cluster.local/ns/a/sa/b", "CSR", timeout=0.3)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_debug_query_lists_connected_proxies_with_versions(sock_path):
    async def scenario():
        async with serving(sock_path, Mesh().config_for, node="node-3") as (server, client):
            version = await client.wait_version(timeout=5)
            stream = server.streams["ztunnel/istio-system/ztunnel-node-3"]
            await poll(lambda: stream.acked_version == version)
            result = await asyncio.get_running_loop().run_in_executor(
                None, debug_query, sock_path, "proxies")
            [proxy] = result["proxies"]
            assert (proxy["node"], proxy["sentVersion"], proxy["ackedVersion"]) == ("node-3", version, version)
            assert proxy["peerPid"] == os.getpid()

    asyncio.run(scenario())


def test_debug_query_without_istiod_says_so(sock_path):
    with pytest.raises(XdsUnavailable, match="not reachable"):
        debug_query(sock_path, "proxies", timeout=1)


def test_large_snapshot_crosses_the_stream(sock_path):
    async def scenario():
        mesh = Mesh()
        mesh.workloads = [f"workload-{i:05d}-" + "x" * 400 for i in range(3000)]  # ~1.3 MB
        async with serving(sock_path, mesh.config_for) as (server, client):
            await client.wait_version(timeout=10)
            assert len(client.config["workloads"]) == 3000

    asyncio.run(scenario())


IMPOSTOR = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((json.dumps({"type": "hello", "proxy": "ztunnel", "node": "node-0",
                       "pod": "ztunnel-node-0", "namespace": "istio-system"}) + "\n").encode())
s.settimeout(5)
print(s.makefile().readline().strip())
"""


def test_a_second_process_naming_a_connected_pod_is_refused_and_the_live_stream_stays(sock_path):
    async def scenario():
        mesh = Mesh()
        async with serving(sock_path, mesh.config_for) as (server, client):
            await client.wait_version(timeout=5)
            live = server.streams["ztunnel/istio-system/ztunnel-node-0"]
            impostor = await asyncio.create_subprocess_exec(
                sys.executable, "-c", IMPOSTOR, sock_path, stdout=asyncio.subprocess.PIPE)
            answer, _ = await asyncio.wait_for(impostor.communicate(), 10)
            assert b"already has a live stream" in answer, answer
            assert server.streams["ztunnel/istio-system/ztunnel-node-0"] is live
            assert not live.writer.is_closing()
            mesh.workloads.append("b")
            await server.push()
            await poll(lambda: client.config and client.config["workloads"] == ["a", "b"])

    asyncio.run(scenario())
