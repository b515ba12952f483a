"""Waypoint provisioning: a waypoint Gateway gets a ServiceAccount, Deployment and Service.

Pure: `plan_waypoint_objects(index)` returns what to apply and what to delete; the istiod process
sends that to the store. The provisioned pod runs `ambient-conformance/waypoint`
(reference_impl.waypoint); until that module exists its pod fails to start, which is expected.
"""

from __future__ import annotations

import hashlib
import json

from .index import GATEWAY_NAME_LABEL, MeshIndex, annotations_of, labels_of, meta, ns_name
from .waypoints import HBONE_PORT, Waypoint, find_waypoints

WAYPOINT_IMAGE = "ambient-conformance/waypoint"
MANAGED_BY_LABEL = "gateway.istio.io/managed"
MANAGED_BY = "istio.io-mesh-controller"
OWNER_LABEL = "ambient-conformance.io/owned-by-gateway"
HASH_ANNOTATION = "ambient-conformance.io/desired-hash"
PROVISIONED_KINDS = ("ServiceAccount", "Deployment", "Service")

# -- which waypoint implementation (issue 16: a real Envoy as the waypoint) --
#: the annotation choosing it: on a Gateway for that waypoint, on the root namespace (istio-system)
#: for the cluster's default (`cluster up --waypoint envoy` sets it there)
IMPLEMENTATION_ANNOTATION = "ambient-conformance.io/waypoint-implementation"
WAYPOINT_IMAGES = {"python": WAYPOINT_IMAGE, "envoy": "ambient-conformance/waypoint-envoy"}
ROOT_NAMESPACE = "istio-system"


def waypoint_implementation(index: MeshIndex, gateway: dict) -> str:
    """The Gateway's annotation, else the root namespace's, else the Python waypoint; an unknown
    value falls back to the Python waypoint."""
    for obj in (gateway, index.namespaces.get(ROOT_NAMESPACE) or {}):
        chosen = annotations_of(obj).get(IMPLEMENTATION_ANNOTATION)
        if chosen in WAYPOINT_IMAGES:
            return chosen
    return "python"


def _labels(waypoint: Waypoint) -> dict:
    return {GATEWAY_NAME_LABEL: waypoint.name, MANAGED_BY_LABEL: MANAGED_BY,
            OWNER_LABEL: waypoint.name}


def _metadata(waypoint: Waypoint, gateway: dict) -> dict:
    return {"name": waypoint.name, "namespace": waypoint.namespace, "labels": _labels(waypoint),
            "ownerReferences": [{"apiVersion": gateway.get("apiVersion"), "kind": "Gateway",
                                 "name": waypoint.name, "uid": meta(gateway).get("uid"),
                                 "controller": True}]}


def desired_objects(waypoint: Waypoint, gateway: dict, image: str = WAYPOINT_IMAGE) -> list[dict]:
    pod_labels = {GATEWAY_NAME_LABEL: waypoint.name, "istio.io/gateway-name": waypoint.name,
                  # A waypoint is never captured itself: it terminates and originates HBONE.
                  "istio.io/dataplane-mode": "none"}
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(waypoint, gateway)},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(waypoint, gateway),
         "spec": {"replicas": 1,
                  "selector": {"matchLabels": {GATEWAY_NAME_LABEL: waypoint.name}},
                  "template": {"metadata": {"labels": pod_labels},
                               "spec": {"serviceAccountName": waypoint.name,
                                        "containers": [{
                                            "name": "istio-proxy", "image": image,
                                            "ports": [{"name": "hbone", "containerPort": HBONE_PORT},
                                                      {"name": "status-port", "containerPort": 15021},
                                                      {"name": "metrics", "containerPort": 15020}],
                                            # As Istio's waypoint template: ready when it holds config
                                            # and a certificate, not when 15008 merely accepts.
                                            "readinessProbe": {"httpGet": {"path": "/healthz/ready",
                                                                           "port": 15021}},
                                            "env": [{"name": "WAYPOINT_NAME", "value": waypoint.name},
                                                    {"name": "WAYPOINT_NAMESPACE",
                                                     "value": waypoint.namespace}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(waypoint, gateway),
         "spec": {"selector": {GATEWAY_NAME_LABEL: waypoint.name},
                  "ports": [{"name": "mesh", "port": HBONE_PORT, "targetPort": HBONE_PORT,
                             "protocol": "TCP"}]}},
    ]
    for obj in objects:
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
        obj["metadata"]["annotations"] = {HASH_ANNOTATION: digest}
    return objects


def plan_waypoint_objects(index: MeshIndex) -> tuple[list[dict], list[dict]]:
    """(to_apply, to_delete): provisioned objects missing or changed, and orphans of deleted Gateways."""
    waypoints = find_waypoints(index)
    gateways = {ns_name(g): g for g in index.kind("Gateway")}
    existing = {}
    for kind in PROVISIONED_KINDS:
        for obj in index.kind(kind):
            if OWNER_LABEL in labels_of(obj):
                existing[(kind, *ns_name(obj))] = obj
    to_apply, wanted = [], set()
    for key, waypoint in sorted(waypoints.items()):
        gateway = gateways[key]
        image = WAYPOINT_IMAGES[waypoint_implementation(index, gateway)]
        for obj in desired_objects(waypoint, gateway, image):
            obj_key = (obj["kind"], waypoint.namespace, waypoint.name)
            wanted.add(obj_key)
            current = existing.get(obj_key)
            if current is None or annotations_of(current).get(HASH_ANNOTATION) != \
                    obj["metadata"]["annotations"][HASH_ANNOTATION]:
                if current is not None and obj["kind"] == "Deployment":
                    # The user owns the replica count (`kubectl scale`), as with Istio's waypoints.
                    obj["spec"]["replicas"] = (current.get("spec") or {}).get("replicas", 1)
                to_apply.append(obj)
    to_delete = [{"apiVersion": obj.get("apiVersion"), "kind": kind,
                  "metadata": {"name": name, "namespace": namespace}}
                 for (kind, namespace, name), obj in sorted(existing.items())
                 if (kind, namespace, name) not in wanted]
    return to_apply, to_delete
