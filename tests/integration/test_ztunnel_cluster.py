"""ztunnel on a real 2-node local cluster: mTLS, the article's L4 step, capture on label change,
refusals at 15008, metrics/config_dump/readiness, losing and draining a ztunnel.

Clients are pinned to each node so every path is exercised both across nodes and on one node.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from conformance import curl
from meshkit import (NS, SEED, InFlight, allowed, captured, denied, namespace, node_get,
                     pinned_pod, response, running_pods, until)
from reference_impl.cluster import client as cluster, naming
from reference_impl.identity import CertificateAuthority, Identity, WorkloadCertificate, make_csr
from reference_impl.identity.tls import client_context
from reference_impl.netns import socket_in
from reference_impl.ztunnel import capture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft"),
]

RESTART_REQUEST_SECONDS = 5   # the drain test's requests, as slow as a restart may make them


@pytest.fixture(scope="module")
def c():
    name = f"tz{os.getpid() % 10000}"
    extra = [namespace("tz-plain")]
    for node in ("node-0", "node-1"):
        extra += [pinned_pod(f"sleep-{node}", NS, node, "sleep-ambient"),
                  pinned_pod(f"rogue-{node}", NS, node, "rogue-sa"),
                  pinned_pod(f"plain-{node}", "tz-plain", node, "default")]
    manifests = [SEED / f for f in ("namespaces.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml",
                                    "rogue-client.yaml")]
    client = cluster.up(name, nodes=2, manifests=manifests, timeout=120)
    try:
        client.apply(extra)
        client.wait_ready(90)
        for pod in client.list("Pod", NS):
            until(lambda: captured(client, NS, pod["metadata"]["name"]), what=f"capture of {pod['metadata']['name']}")
        yield client
    finally:
        client.down()


# ---------------------------------------------------------------- helpers
def httpbin(c):
    pods = running_pods(c, NS, {"app": "httpbin-ambient"})
    assert pods, "no running httpbin-ambient pod"
    return pods[0]


def ztunnel_on(c, node):
    for p in c.list("Pod", "istio-system", selector={"app": "ztunnel"}):
        if p["spec"].get("nodeName") == node and (p.get("status") or {}).get("phase") == "Running" \
                and not p["metadata"].get("deletionTimestamp"):
            return p
    return None


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------- traffic
def test_mtls_between_nodes_and_on_one_node(c):
    dest_node = httpbin(c)["spec"]["nodeName"]
    for node in ("node-0", "node-1"):
        until(lambda: allowed(c, NS, f"sleep-{node}"), what=f"sleep on {node} reaching httpbin")
    principal = "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"
    for node in ("node-0", "node-1"):
        metrics = node_get(c, dest_node, 15020, "/metrics")
        assert metric_sum(metrics, "istio_tcp_connections_opened_total", reporter="destination",
                          source_workload=f"sleep-{node}", source_principal=principal,
                          connection_security_policy="mutual_tls",
                          destination_principal="spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient") >= 1
        assert metric_sum(metrics, "istio_tcp_received_bytes_total", reporter="destination",
                          source_workload=f"sleep-{node}") > 0


def test_metrics_name_the_destination_service_on_both_sides(c):
    dest_node = httpbin(c)["spec"]["nodeName"]
    service = {"destination_service": "httpbin-ambient.ambient-apps.svc.cluster.local",
               "destination_service_name": "httpbin-ambient", "destination_service_namespace": "ambient-apps"}
    for node in ("node-0", "node-1"):
        until(lambda: allowed(c, NS, f"sleep-{node}"), what=f"sleep on {node} reaching httpbin")
        # source side: from the service the VIP resolved to
        assert metric_sum(node_get(c, node, 15020, "/metrics"), "istio_tcp_connections_opened_total",
                          reporter="source", source_workload=f"sleep-{node}", **service) >= 1, node
    # destination side: from `forwarded ;host=` over HBONE, from the target port for plaintext
    until(lambda: allowed(c, "tz-plain", "plain-node-0"), what="plaintext client reaching httpbin")
    metrics = node_get(c, dest_node, 15020, "/metrics")
    for node in ("node-0", "node-1"):
        assert metric_sum(metrics, "istio_tcp_connections_opened_total", reporter="destination",
                          source_workload=f"sleep-{node}", connection_security_policy="mutual_tls", **service) >= 1
    assert metric_sum(metrics, "istio_tcp_connections_opened_total", reporter="destination",
                      source_workload="plain-node-0", connection_security_policy="unknown", **service) >= 1
    assert metric_sum(metrics, "istio_tcp_connections_opened_total", reporter="destination",
                      destination_service="unknown") == 0


def origin_seen_by_httpbin(c, ns, pod):
    r = response(c, ns, pod, "http://httpbin-ambient.ambient-apps:8000/ip", timeout=5, body=True)
    try:
        return json.loads(r.body)["origin"]
    except (ValueError, KeyError):
        return None


def test_app_sees_the_original_source_ip(c):
    """Over HBONE (both nodes) and as plaintext from an uncaptured pod, httpbin's /ip is the
    client pod's IP, not the destination pod's own address."""
    hb_ip = httpbin(c)["status"]["podIP"]
    for ns, pod in ((NS, "sleep-node-0"), (NS, "sleep-node-1"), ("tz-plain", "plain-node-0"),
                    ("tz-plain", "plain-node-1")):
        client_ip = c.get("Pod", ns, pod)["status"]["podIP"]
        origin = until(lambda: origin_seen_by_httpbin(c, ns, pod), what=f"{pod} reaching httpbin /ip")
        assert origin == client_ip, f"{ns}/{pod} ({client_ip}) seen as {origin} (httpbin is {hb_ip})"
    # the connections really went through ztunnel: the inbound access log names both sources
    log = c.logs("istio-system", ztunnel_on(c, httpbin(c)["spec"]["nodeName"])["metadata"]["name"])
    for ns, pod in ((NS, "sleep-node-0"), ("tz-plain", "plain-node-1")):
        assert f'src.addr="{c.get("Pod", ns, pod)["status"]["podIP"]}:' in log


def test_ip_block_policy_sees_the_original_source(c):
    """L4 ipBlocks match the client pod's IP (the tunnel's TCP peer over HBONE, the peer for
    plaintext), the same address the app sees."""
    blocked = c.get("Pod", NS, "sleep-node-1")["status"]["podIP"]
    plain = c.get("Pod", "tz-plain", "plain-node-0")["status"]["podIP"]
    policy = {"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "tz-deny-ips", "namespace": NS},
              "spec": {"selector": {"matchLabels": {"app": "httpbin-ambient"}}, "action": "DENY",
                       "rules": [{"from": [{"source": {"ipBlocks": [f"{blocked}/32", f"{plain}/32"]}}]}]}}
    c.apply([policy])
    try:
        until(lambda: denied(c, NS, "sleep-node-1"), what="sleep-node-1 denied by its IP")
        until(lambda: denied(c, "tz-plain", "plain-node-0"), what="plaintext client denied by its IP")
        assert allowed(c, NS, "sleep-node-0") and allowed(c, "tz-plain", "plain-node-1")
    finally:
        c.delete([policy])
    until(lambda: allowed(c, NS, "sleep-node-1"), what="sleep-node-1 allowed again")


def test_article_l4_policy_allows_sleep_and_resets_rogue(c):
    c.apply([SEED / "l4-policy.yaml"])
    try:
        for node in ("node-0", "node-1"):
            until(lambda: denied(c, NS, f"rogue-{node}"), what=f"rogue on {node} denied")
            assert allowed(c, NS, f"sleep-{node}")
        # plaintext from an uncaptured pod has no identity: denied by the same ALLOW policy
        assert denied(c, "tz-plain", "plain-node-0")
        log = c.logs("istio-system", ztunnel_on(c, httpbin(c)["spec"]["nodeName"])["metadata"]["name"])
        assert re.search(r'outcome="denied".*require-sleep-identity', log)
    finally:
        c.delete([SEED / "l4-policy.yaml"])
    until(lambda: allowed(c, NS, "rogue-node-0"), what="rogue allowed again after the policy is deleted")


def test_policy_change_resets_a_live_connection(c):
    # a long request from the rogue client is in flight when the policy starts denying it
    long = InFlight(c, NS, "rogue-node-0", "http://httpbin-ambient.ambient-apps:8000/delay/8", timeout=20)
    try:
        hb = ztunnel_on(c, httpbin(c)["spec"]["nodeName"])["metadata"]["name"]
        node = httpbin(c)["spec"]["nodeName"]
        until(lambda: metric_sum(node_get(c, node, 15020, "/metrics"), "ztunnel_active_connections") >= 1,
              what="the long request is being proxied")
        started = time.monotonic()
        c.apply([SEED / "l4-policy.yaml"])
        result = long.result()
        assert result.outcome in curl.L4_REFUSALS, result
        assert time.monotonic() - started < 7, "the connection ran to completion instead of being reset"
        assert "policy changed" in c.logs("istio-system", hb)
    finally:
        long.close()
        c.delete([SEED / "l4-policy.yaml"])


def test_label_and_unlabel_namespace_starts_and_stops_capture_without_restart(c):
    pod = c.get("Pod", "tz-plain", "plain-node-1")
    before = [(s.get("restartCount"), s.get("pid")) for s in pod["status"]["containerStatuses"]]

    def has_rules():
        return captured(c, "tz-plain", "plain-node-1")

    assert not has_rules()
    c.apply([namespace("tz-plain", {"istio.io/dataplane-mode": "ambient"})])
    try:
        until(has_rules, what="capture rules installed")
        assert capture.reply_routing_installed(c.pod_netns("tz-plain", "plain-node-1"))
        until(lambda: allowed(c, "tz-plain", "plain-node-1"), what="captured pod reaching httpbin")
        log = c.logs("istio-system", ztunnel_on(c, "node-1")["metadata"]["name"])
        assert "spiffe://cluster.local/ns/tz-plain/sa/default" in log
    finally:
        c.apply([namespace("tz-plain")])
    # capture.remove drops the nft table first, then the reply routing: wait for both
    until(lambda: not has_rules() and not capture.reply_routing_installed(c.pod_netns("tz-plain", "plain-node-1")),
          what="capture rules and reply routing removed")
    assert allowed(c, "tz-plain", "plain-node-1")
    after = [(s.get("restartCount"), s.get("pid")) for s in c.get("Pod", "tz-plain", "plain-node-1")["status"]["containerStatuses"]]
    assert after == before


def test_pod_labelled_dataplane_mode_none_in_an_ambient_namespace_is_not_captured(c):
    node = "node-0"
    labels = {"app": "optout", "istio.io/dataplane-mode": "none"}
    pod = pinned_pod("optout", NS, node, "sleep-ambient", labels=labels)
    c.apply([pod])

    def relabel(name, new_labels):
        # the running pod as stored (with the kubelet's annotations), only its labels changed
        obj = c.get("Pod", NS, name)
        obj["metadata"]["labels"] = new_labels
        c.apply([obj])
    try:
        until(lambda: ((c.get("Pod", NS, "optout") or {}).get("status") or {}).get("phase") == "Running",
              timeout=60, what="opted-out pod running")

        def known_to_ztunnel():
            dump = json.loads(node_get(c, node, 15000, "/config_dump") or "{}")
            if any(w["name"] == "optout" for w in dump.get("workloads", [])):
                return dump
            return None
        dump = until(known_to_ztunnel, what="ztunnel knowing the opted-out pod")
        assert "optout" not in {p["name"] for p in dump["capturedPods"]}
        assert not captured(c, NS, "optout")
        until(lambda: allowed(c, NS, "optout"), what="opted-out pod reaching httpbin")
        # it arrives as plaintext: no identity at the destination
        metrics = node_get(c, httpbin(c)["spec"]["nodeName"], 15020, "/metrics")
        assert metric_sum(metrics, "istio_tcp_connections_opened_total", reporter="destination",
                          source_workload="optout", connection_security_policy="unknown") >= 1
        assert metric_sum(metrics, "istio_tcp_connections_opened_total", reporter="destination",
                          source_workload="optout", connection_security_policy="mutual_tls") == 0
        # dropping the pod label captures it (the namespace is ambient), putting it back releases it
        before = [(s.get("restartCount"), s.get("pid")) for s in c.get("Pod", NS, "optout")["status"]["containerStatuses"]]
        relabel("optout", {"app": "optout"})
        until(lambda: captured(c, NS, "optout"), what="capture once the opt-out label is gone")
        relabel("optout", labels)
        until(lambda: not captured(c, NS, "optout"), what="release once the opt-out label is back")
        assert allowed(c, NS, "optout")
        after = [(s.get("restartCount"), s.get("pid")) for s in c.get("Pod", NS, "optout")["status"]["containerStatuses"]]
        assert after == before, "relabelling restarted the pod"
    finally:
        c.delete([pod])


def test_pod_calling_its_own_proxy_ports_is_refused(c):
    ip = c.get("Pod", NS, "sleep-node-0")["status"]["podIP"]
    for port in (15001, 15006, 15008):
        r = response(c, NS, "sleep-node-0", f"http://{ip}:{port}/")
        assert r.exit_code == 7, (port, r)


# ---------------------------------------------------------------- refusals at 15008
def _ca(c):
    return CertificateAuthority.load(Path("/run/ambient-conformance") / c.name / "ca",
                                     trust_domain_aliases=("evil.local",))


def _cert(ca, uri, ttl=3600):
    ident = Identity.parse(uri)
    key, csr = make_csr(ident)
    return WorkloadCertificate.from_pem(ident, key, [ca.sign_csr(csr, ident, ttl)], ca.root_pem)


def _context(cert=None, root_pem=None):
    if cert is not None:
        return client_context(cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=root_pem)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def hbone_request(c, node, ip, ctx, method="CONNECT", authority=None, timeout=5, extra_headers=()):
    """One HTTP/2 request to ip:15008 from the node's namespace: the status, or the failure."""
    sock = socket_in(c.node_netns(node))
    sock.settimeout(timeout)
    try:
        sock.connect((ip, 15008))
        if ctx is None:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return f"plaintext answered {sock.recv(100)!r}"
        tls = ctx.wrap_socket(sock)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        headers = [(":method", method), (":authority", authority or f"{ip}:80"), *extra_headers]
        if method != "CONNECT":
            headers += [(":scheme", "https"), (":path", "/")]
        conn.send_headers(1, headers, end_stream=method != "CONNECT")
        tls.sendall(conn.data_to_send())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = tls.recv(65536)
            if not data:
                return "closed"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
            tls.sendall(conn.data_to_send())
        return "no answer"
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc.__class__.__name__}"
    finally:
        sock.close()


def test_hbone_port_refusals(c):
    pod = httpbin(c)
    node, ip = pod["spec"]["nodeName"], pod["status"]["podIP"]
    other_ip = c.get("Pod", NS, f"sleep-{node}")["status"]["podIP"]
    ca = _ca(c)
    good = _context(_cert(ca, "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"))
    assert hbone_request(c, node, ip, good) == 200  # the baseline the refusals are measured against
    assert hbone_request(c, node, ip, good, authority=f"{other_ip}:80") == 400
    assert hbone_request(c, node, ip, good, authority="10.9.9.9:80") == 400
    for port in (15001, 15006, 15008):
        assert hbone_request(c, node, ip, good, authority=f"{ip}:{port}") == 400
    assert hbone_request(c, node, ip, good, method="GET") == 400

    refused = {
        "no client certificate": _context(root_pem=ca.root_pem),
        "another CA": _context(_cert(CertificateAuthority.create(),
                                     "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient")),
        "another trust domain": _context(_cert(ca, "spiffe://evil.local/ns/ambient-apps/sa/sleep-ambient")),
    }
    expired = _cert(ca, "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient", ttl=1)
    until(lambda: expired.is_expired(), timeout=5, what="test certificate expiry")
    refused["expired"] = _context(expired)
    for case, ctx in refused.items():
        result = hbone_request(c, node, ip, ctx)
        assert result != 200 and not isinstance(result, int), (case, result)
    assert "plaintext answered b''" == hbone_request(c, node, ip, None) or \
        hbone_request(c, node, ip, None).startswith("refused")
    log = c.logs("istio-system", ztunnel_on(c, node)["metadata"]["name"])
    for reason in ("client presented no certificate", "plaintext", "is not in trust domain",
                   "is not this pod", "not CONNECT", "proxy's own ports"):
        assert reason in log, reason


def test_a_forwarded_header_cannot_claim_an_admitted_source_ip(c):
    """ipBlocks judge the tunnel's TCP peer: a mesh client that writes another pod's address in
    `forwarded: for=` is judged by its own address, as real ztunnel does."""
    pod = httpbin(c)
    node, ip = pod["spec"]["nodeName"], pod["status"]["podIP"]
    admitted = c.get("Pod", NS, f"sleep-{node}")["status"]["podIP"]
    policy = {"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "tz-allow-one-ip", "namespace": NS},
              "spec": {"selector": {"matchLabels": {"app": "httpbin-ambient"}}, "action": "ALLOW",
                       "rules": [{"from": [{"source": {"ipBlocks": [f"{admitted}/32"]}}]}]}}
    ctx = _context(_cert(_ca(c), "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"))
    spoof = [("forwarded", f'for="{admitted}:40000"')]
    assert hbone_request(c, node, ip, ctx, extra_headers=spoof) == 200  # before the policy
    c.apply([policy])
    try:
        until(lambda: hbone_request(c, node, ip, ctx) == 401, what="the node's own address refused")
        assert allowed(c, NS, f"sleep-{node}"), "the admitted pod itself must still get through"
        assert hbone_request(c, node, ip, ctx, extra_headers=spoof) == 401
    finally:
        c.delete([policy])


# ---------------------------------------------------------------- operations
def test_metrics_config_dump_and_readiness(c):
    node = httpbin(c)["spec"]["nodeName"]
    assert node_get(c, node, 15021, "/healthz/ready").strip() == "ready"
    dump = json.loads(node_get(c, node, 15000, "/config_dump"))
    names = {w["name"] for w in dump["workloads"]}
    assert httpbin(c)["metadata"]["name"] in names
    assert any(s["name"] == "httpbin-ambient" for s in dump["services"])
    assert "policies" in dump and "certificates" in dump
    assert all("key" not in k.lower() for cert in dump["certificates"] for k in cert)
    assert any(cert["identity"].endswith("/sa/httpbin-ambient") and "BEGIN CERTIFICATE" in cert["certChain"]
               for cert in dump["certificates"])
    assert "PRIVATE KEY" not in json.dumps(dump)
    metrics = node_get(c, node, 15020, "/metrics", host=None or "172.18.0.10" if node == "node-0" else "172.18.0.11")
    for name in ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                 "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"):
        assert name in metrics


def test_killed_ztunnel_breaks_only_its_node_until_replaced(c):
    dest = httpbin(c)["spec"]["nodeName"]
    other = "node-1" if dest == "node-0" else "node-0"
    # the client node's ztunnel dies; the destination node keeps serving others
    victim = ztunnel_on(c, other)
    c.delete_pod("istio-system", victim["metadata"]["name"], grace_period=0)
    saw_failure = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert allowed(c, NS, f"sleep-{dest}"), "traffic from the other node failed"
        if allowed(c, NS, f"sleep-{other}"):
            if saw_failure:
                break
        else:
            saw_failure = True
        time.sleep(0.1)
    assert saw_failure, "captured traffic kept flowing while its ztunnel was dead"
    until(lambda: allowed(c, NS, f"sleep-{other}"), what="recovery after the DaemonSet replaced ztunnel")
    new = ztunnel_on(c, other)
    assert new is not None and new["metadata"]["name"] != victim["metadata"]["name"]


def test_graceful_delete_drains_and_the_replacement_serves_at_once(c):
    """Istio's TestZtunnelRestart: zero failed new requests across a graceful restart of the
    ztunnel that both the client (same node) and the server sit behind, and of cross-node
    traffic into it; an in-flight request is drained, not cut."""
    dest = httpbin(c)["spec"]["nodeName"]
    other = "node-1" if dest == "node-0" else "node-0"
    for pod in (f"sleep-{dest}", httpbin(c)["metadata"]["name"]):
        # set where the listeners live, so a closing listener hands queued connections over
        netns = c.pod_netns(NS, pod)
        migrate = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.tcp_migrate_req"],
                                 capture_output=True, text=True).stdout.strip()
        assert migrate == "1", (pod, migrate)
    long = InFlight(c, NS, f"sleep-{dest}", "http://httpbin-ambient.ambient-apps:8000/delay/2", timeout=20)
    try:
        until(lambda: metric_sum(node_get(c, dest, 15020, "/metrics"), "ztunnel_active_connections") >= 1,
              what="long request in flight")
        old = ztunnel_on(c, dest)["metadata"]["name"]
        c.delete_pod("istio-system", old, grace_period=30)
        failures, done, replaced_at = [], 0, None
        end = time.monotonic() + 20
        # Bounded: 200 requests or 20 s, and at least 20 after the old ztunnel has gone.
        while done < 200 and time.monotonic() < end:
            client = f"sleep-{dest}" if done % 2 == 0 else f"sleep-{other}"
            result = response(c, NS, client, timeout=RESTART_REQUEST_SECONDS)
            done += 1
            if result.outcome != 200:
                failures.append((done, client, result.outcome, result.message))
            if replaced_at is None and c.get("Pod", "istio-system", old) is None:
                replaced_at = done
            if replaced_at is not None and done - replaced_at >= 20:
                break
        drained = long.result()
        assert drained.outcome == 200, f"the in-flight request was not drained: {drained}"
        assert replaced_at is not None, f"the old ztunnel {old} was still there after {done} requests"
        if failures:
            new_name = (ztunnel_on(c, dest) or {}).get("metadata", {}).get("name", "")
            # the old pod is gone from the API; its log file stays until the cluster is torn down
            logs = [Path(naming.logs_dir(c.name), f"istio-system_{name}_istio-proxy.log") for name in (old, new_name)]
            trouble = [line for path in logs if path.exists()
                       for line in path.read_text(errors="replace").splitlines()
                       if ("outcome=" in line and 'outcome="ok"' not in line) or " WARNING " in line or " ERROR " in line]
            raise AssertionError(f"{len(failures)} of {done} new requests failed during the restart: {failures}\n"
                                 + "\n".join(trouble[-30:]))
    finally:
        long.close()
    new = ztunnel_on(c, dest)
    assert new is not None and new["metadata"]["name"] != old
