"""The Envoy waypoint's certificate rotates through SDS (issue 16): with Istio's
DEFAULT_WORKLOAD_CERT_TTL=6s, the certificate Envoy presents on the waypoint's HBONE port 15008
to a fresh mesh client is replaced by a new serial, valid now, before the old one expires, while
the same Envoy process keeps running (its PID from the agent's /stats) and traffic through the
waypoint keeps succeeding after the first certificate's expiry."""
from __future__ import annotations

import datetime
import time

import pytest

from reference_impl.cluster import client as cluster_client

from meshkit import istiod_deployment, until, ztunnels_in_sync
from test_envoy_waypoint import _agent_stats, _waypoint, _yaml
from test_mesh_cert_rotation import TTL_S, lifetime, presented_cert
from test_seed_walkthrough import HTTPBIN, SEED, converge, is_status, pod_named


@pytest.fixture(scope="module")
def c(cluster_factory):
    c = cluster_factory("envoyrot", [])
    c.apply([istiod_deployment({"DEFAULT_WORKLOAD_CERT_TTL": f"{TTL_S}s"}), cluster_client.waypoint_default("envoy")])

    def rolled_out():
        pods = c.list("Pod", "istio-system", selector={"app": "istiod"})
        return len(pods) == 1 and pods[0]["spec"]["containers"][0].get("env") and all(
            e.get("value") == f"{TTL_S}s" for e in pods[0]["spec"]["containers"][0]["env"]) \
            and pods[0].get("status", {}).get("phase") == "Running"
    until(rolled_out, 30, what="istiod rolled out with DEFAULT_WORKLOAD_CERT_TTL")
    until(lambda: ztunnels_in_sync(c), 15, what="ztunnels connected to the new istiod")
    c.apply([o for name in ("namespaces.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml", "waypoint.yaml")
             for o in _yaml(SEED / name)])
    c.wait_ready(60)
    return c


def _envoy_waypoint(c) -> dict:
    """The Ready Envoy waypoint pod serving 15008 to the node (istiod's restart with the short TTL
    may first have provisioned, then replaced, a pod of the other implementation)."""
    def serving():
        pod = _waypoint(c)
        if [x["image"] for x in pod["spec"]["containers"]] != ["ambient-conformance/waypoint-envoy"]:
            return None
        try:
            presented_cert(c, pod["spec"]["nodeName"], pod["status"]["podIP"])
        except AssertionError:
            return None
        return pod
    return until(serving, 60, 0.5, what="a Ready Envoy waypoint pod answering TLS on 15008")


def test_the_envoy_waypoint_certificate_rotates_through_sds_without_a_restart(c):
    waypoint = _envoy_waypoint(c)
    node, ip = waypoint["spec"]["nodeName"], waypoint["status"]["podIP"]
    pid = _agent_stats(c, waypoint)["envoyPid"]
    first = presented_cert(c, node, ip)
    assert lifetime(first) <= TTL_S + 1, f"the waypoint's certificate lives {lifetime(first)} s, not {TTL_S} s"

    def renewed():
        now = presented_cert(c, node, ip)
        return now if now.serial_number != first.serial_number else None
    second = until(renewed, TTL_S * 3, 0.5, what="Envoy presenting a renewed certificate on 15008")
    assert second.not_valid_before_utc <= datetime.datetime.now(datetime.timezone.utc) <= second.not_valid_after_utc
    assert second.not_valid_before_utc > first.not_valid_before_utc

    # past the first certificate's expiry: the waypoint still serves, and is the same Envoy
    time.sleep(max(0.0, (first.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).total_seconds()))
    sleep = pod_named(c, "ambient-apps", "sleep-ambient")
    converge(c, sleep, f"{HTTPBIN}/headers", is_status(200), "sleep -> httpbin via the Envoy waypoint after expiry")
    assert presented_cert(c, node, ip).not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc)
    assert _agent_stats(c, _waypoint(c))["envoyPid"] == pid, "Envoy was restarted to rotate its certificate"
