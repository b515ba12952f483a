"""Capture rules and pod-namespace sockets on scratch namespaces (no cluster needed).

Topology: `tz-<id>-n` plays the node (10.250.0.1), `tz-<id>-p` the pod (10.250.0.2, eth0).
The proxy side runs in this test process: its listeners and upstream sockets are created inside
the pod namespace with setns, exactly as ztunnel does.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conformance import curl
from meshkit import call_in_netns
from reference_impl.ztunnel import capture, pipe, sockets
from reference_impl.ztunnel.listeners import Listener

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft"),
]

NODE_IP, POD_IP = "10.250.0.1", "10.250.0.2"


def sh(*argv, check=True, timeout=15, **kw):
    return subprocess.run(argv, check=check, timeout=timeout, capture_output=True, text=True, **kw)


@pytest.fixture
def scratch():
    tag = f"tz-{os.getpid() % 100000}"
    node, pod = f"{tag}-n", f"{tag}-p"
    for ns in (node, pod):
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "add", ns)
    procs = []
    try:
        sh("ip", "-n", node, "link", "add", "veth-p", "type", "veth", "peer", "name", "eth0", "netns", pod)
        sh("ip", "-n", node, "addr", "add", f"{NODE_IP}/24", "dev", "veth-p")
        sh("ip", "-n", pod, "addr", "add", f"{POD_IP}/24", "dev", "eth0")
        for ns, dev in ((node, "veth-p"), (pod, "eth0"), (node, "lo"), (pod, "lo")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", pod, "route", "add", "default", "via", NODE_IP)
        for ns, bind, port in ((node, NODE_IP, 8080), (pod, "0.0.0.0", 8081)):
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "http.server",
                                           str(port), "--bind", bind],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield node, pod
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
        for ns in (node, pod):
            sh("ip", "netns", "del", ns, check=False)


class PassthroughProxy:
    """Outbound 15001 → original destination, inbound 15006 → the local app, both from sockets
    made inside the pod namespace and marked so they bypass capture."""

    def __init__(self, pod: str, original_source: bool = False):
        self.pod = pod
        self.original_source = original_source
        self.seen: list[tuple[str, tuple, tuple]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self):
        self.listeners = [Listener(self.pod, 15001, self._relay("outbound")).start(),
                          Listener(self.pod, 15006, self._relay("inbound")).start()]

    def _relay(self, direction):
        async def handle(conn, peer):
            dst = sockets.original_dst(conn)
            self.seen.append((direction, peer, dst))
            if dst[1] in capture.PROXY_PORTS:
                sockets.reset(conn)
                return
            if direction == "inbound" and self.original_source:
                upstream = await sockets.connect_as(self.pod, peer[0], dst)
            else:
                upstream = await sockets.connect_marked(self.pod, dst)
            await pipe.splice(conn, upstream)
        return handle

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        async def stop():
            for listener in self.listeners:
                listener.stop_accepting()
            await asyncio.sleep(0)
            self.loop.stop()
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(stop()))
        self.thread.join(10)


def get(ns, url, timeout=5):
    [r] = call_in_netns(ns, url, timeout=timeout)
    return r


def wait_http(ns, url, deadline_s=10):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if get(ns, url, 2).outcome == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered from {ns}")


def test_capture_redirects_both_ways_and_keeps_the_pod_ip(scratch):
    node, pod = scratch
    wait_http(pod, f"http://{NODE_IP}:8080/")
    wait_http(node, f"http://{POD_IP}:8081/")
    capture.install(pod)
    capture.install(pod)  # idempotent
    assert capture.installed(pod)
    with PassthroughProxy(pod) as proxy:
        assert get(pod, f"http://{NODE_IP}:8080/").outcome == 200
        assert get(node, f"http://{POD_IP}:8081/").outcome == 200
        outbound = [s for s in proxy.seen if s[0] == "outbound"]
        inbound = [s for s in proxy.seen if s[0] == "inbound"]
        assert outbound and outbound[0][2] == (NODE_IP, 8080)
        assert outbound[0][1][0] == POD_IP  # the app's own address, inside the pod
        assert inbound and inbound[0][2] == (POD_IP, 8081) and inbound[0][1][0] == NODE_IP


def test_pod_cannot_call_its_own_proxy_ports(scratch):
    node, pod = scratch
    capture.install(pod)
    with PassthroughProxy(pod):
        for target in (f"http://{POD_IP}:15001/", "http://127.0.0.1:15006/", f"http://{POD_IP}:15008/"):
            r = get(pod, target)
            assert r.outcome == curl.REFUSED, (target, r)


def test_removing_rules_stops_capture_without_touching_the_app(scratch):
    node, pod = scratch
    wait_http(pod, f"http://{NODE_IP}:8080/")
    wait_http(node, f"http://{POD_IP}:8081/")
    capture.install(pod)
    with PassthroughProxy(pod) as proxy:
        assert get(pod, f"http://{NODE_IP}:8080/").outcome == 200
        before = len(proxy.seen)
        capture.remove(pod)
        capture.remove(pod)  # idempotent
        assert not capture.installed(pod)
        assert get(pod, f"http://{NODE_IP}:8080/").outcome == 200
        assert get(node, f"http://{POD_IP}:8081/").outcome == 200
        assert len(proxy.seen) == before


def test_captured_traffic_fails_when_no_proxy_listens(scratch):
    node, pod = scratch
    wait_http(pod, f"http://{NODE_IP}:8080/")
    capture.install(pod)
    assert get(pod, f"http://{NODE_IP}:8080/").outcome == curl.REFUSED


# Answers each connection with the address it came from, then closes.
PEER_ECHO = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8082)); s.listen(16)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode()); c.close()
"""


def read_peer_echo(ns, ip, timeout=5):
    r = sh("ip", "netns", "exec", ns, "curl", "-s", "--max-time", str(timeout), "--http0.9",
           f"http://{ip}:8082/", check=False, timeout=timeout + 5)
    return r.stdout


def test_app_sees_the_client_ip_and_replies_reach_the_proxy(scratch):
    node, pod = scratch
    wait_http(pod, f"http://{NODE_IP}:8080/")  # the node's server, called through the proxy below
    echo = subprocess.Popen(["ip", "netns", "exec", pod, sys.executable, "-c", PEER_ECHO],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while read_peer_echo(node, POD_IP, 1) != NODE_IP and time.monotonic() < deadline:
            time.sleep(0.1)
        capture.install(pod)
        assert capture.reply_routing_installed(pod)
        with PassthroughProxy(pod, original_source=True) as proxy:
            # through 15006, bound to the node's address which the pod does not own
            assert read_peer_echo(node, POD_IP) == NODE_IP
            assert [s for s in proxy.seen if s[0] == "inbound" and s[2] == (POD_IP, 8082)]
            # the pod's own outbound traffic is unaffected by the reply routing
            assert get(pod, f"http://{NODE_IP}:8080/").outcome == 200
        capture.remove(pod)
        assert not capture.reply_routing_installed(pod) and not capture.installed(pod)
        assert read_peer_echo(node, POD_IP) == NODE_IP
    finally:
        echo.kill()
        echo.wait(5)


def test_closing_listener_hands_queued_connections_to_its_replacement(scratch):
    """The restart handover: connections queued on the old proxy's socket when it closes move
    to the replacement's SO_REUSEPORT socket (tcp_migrate_req in the pod namespace)."""
    from reference_impl.netns import socket_in, write_sysctls
    node, pod = scratch
    write_sysctls(pod, {"net.ipv4.tcp_migrate_req": "1"})
    loop = asyncio.new_event_loop()
    served = []

    async def answer(conn, peer):
        served.append(peer)
        await loop.sock_sendall(conn, b"new")
        conn.close()

    async def setup():
        old = Listener(pod, 15001, answer)          # bound but never accepting: its queue fills
        new = Listener(pod, 15001, answer)
        return old, new

    old, new = loop.run_until_complete(setup())
    clients = []
    try:
        assert sockets.listeners_on(pod, [15001]) == {15001: 2}
        for _ in range(20):
            s = socket_in(node)
            s.settimeout(5)
            s.connect((POD_IP, 15001))
            clients.append(s)
        old.stop_accepting()
        assert sockets.listeners_on(pod, [15001]) == {15001: 1}

        async def serve_until_answered():
            new.start()
            deadline = loop.time() + 5
            while len(served) < len(clients) and loop.time() < deadline:
                await asyncio.sleep(0.02)
        loop.run_until_complete(serve_until_answered())
        answers = [c.recv(16) for c in clients]
        assert answers == [b"new"] * len(clients)
    finally:
        for s in clients:
            s.close()
        new.stop_accepting()
        loop.close()
