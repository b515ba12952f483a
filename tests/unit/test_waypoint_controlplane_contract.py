"""The waypoint reads what the control plane derives: the seed's objects go through
controlplane.derive.waypoint_config and then through the waypoint's own parser and pipeline."""

from __future__ import annotations

import yaml

from reference_impl.controlplane.derive import derive_mesh, waypoint_config
from reference_impl.controlplane.jwks import JwksResolver, jwks_uris
from reference_impl.identity import Identity
from reference_impl.waypoint.config import WaypointConfig
from reference_impl.l7.pipeline import Tunnel, decide
from reference_impl.l7.routing import Router, resolve
from tests.support.waypoint_seed import SEED_DIR, SLEEP_IDENTITY_URI, seed_token

VIP = "10.96.0.20"


def running_pod(name, ip, sa, labels, node="node-0"):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ambient-apps", "labels": labels, "uid": f"uid-{name}"},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "app", "image": "img", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


def seed_objects():
    objects = []
    for name in ("namespaces.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml", "waypoint.yaml",
                 "jwt-policy.yaml", "l7-authz-policy.yaml"):
        objects += [o for o in yaml.safe_load_all((SEED_DIR / name).read_text()) if o]
    for obj in objects:
        if obj["kind"] == "Service":
            obj["spec"]["clusterIP"] = VIP if obj["metadata"]["name"] == "httpbin-ambient" else "10.96.0.21"
        if obj["kind"] == "Gateway":  # served: istiod wrote its address once its pod was ready
            obj["status"] = {"addresses": [{"type": "Hostname",
                                            "value": "httpbin-ambient-waypoint.ambient-apps.svc.cluster.local"}]}
    objects.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "httpbin-ambient-waypoint", "namespace": "ambient-apps"},
                    "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 15008}]}})
    objects.append(running_pod("httpbin-ambient-0", "10.244.0.5", "httpbin-ambient",
                               {"app": "httpbin-ambient", "version": "v1"}))
    objects.append(running_pod("sleep-ambient-0", "10.244.1.5", "sleep-ambient", {"app": "sleep-ambient"},
                               node="node-1"))
    return objects


def derived_config() -> WaypointConfig:
    snapshot = waypoint_config(derive_mesh(seed_objects(), ["ROOT"]), "ambient-apps", "httpbin-ambient-waypoint")
    # What istiod adds to each waypoint snapshot: the keys behind every jwksUri (here the seed's
    # sample URI, served from its local copy).
    snapshot["jwksByUri"] = JwksResolver(lambda: None).resolve(jwks_uris(snapshot["requestAuthentications"]))
    return WaypointConfig.from_snapshot(snapshot, 3)


def request(config, path, token=None):
    destination = resolve(config, (VIP, 8000))
    assert destination is not None, "the waypoint must front the httpbin-ambient service"
    headers = [("host", "httpbin-ambient.ambient-apps:8000")]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    tunnel = Tunnel(Identity.parse(SLEEP_IDENTITY_URI), "10.244.1.5", destination)
    return decide(config, Router(), tunnel, "GET", path, headers)


def test_derived_snapshot_parses_and_routes_to_the_endpoint():
    config = derived_config()
    assert config.identity == Identity.parse(
        "spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient-waypoint")
    assert len(config.authorization) == 1 and len(config.authentication) == 1
    assert request(config, "/ip").status == 403
    assert request(config, "/headers").status == 403


def test_derived_snapshot_verifies_the_seed_token():
    verdict = request(derived_config(), "/ip", seed_token())
    assert verdict.forwards, verdict.reason
    assert verdict.upstream.address == ("10.244.0.5", 80)
