"""The seed article's manifests (fixtures/seed/), shared by the SEED-WALKTHROUGH tests, and their
corrected forms: what the article's Step 3 and L7 step must be for a current Istio.

The article's waypoint (`gatewayClassName: istio`, an HBONE listener) is not a waypoint in any
Istio release: `istio` is Istio's ingress class (early ambient's waypoint class was `istio-mesh`,
Istio 1.18 introduced `istio-waypoint`), and a current Istio binds a waypoint only to what carries
`istio.io/use-waypoint`, and enforces at it only the policies attached by `targetRefs` (a
`selector` policy stays at ztunnel). docs/ISTIO-NOTES.md has the sources.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

SEED = Path(__file__).resolve().parents[2] / "fixtures" / "seed"
WAYPOINT_CLASS = "istio-waypoint"
USE_WAYPOINT = "istio.io/use-waypoint"
#: the Service the article's L7 policies are about; the corrected policies attach to it
POLICY_SERVICE = {"group": "", "kind": "Service", "name": "httpbin-ambient"}


def seed(name: str) -> Path:
    path = SEED / name
    if not path.is_file():
        pytest.fail(f"{path}: the seed manifest is missing; the walkthrough needs fixtures/seed/ from the repository")
    return path


def corrected(name: str) -> list[dict]:
    """The seed manifest `name` as a current Istio wants it (same names, same meaning):
    - waypoint.yaml: gateway.networking.k8s.io/v1, class `istio-waypoint`,
      `istio.io/waypoint-for: service` (that class's default, said out loud);
    - jwt-policy.yaml, l7-authz-policy.yaml: security.istio.io/v1, `targetRefs` to the Service
      httpbin-ambient instead of a `selector`, so the waypoint enforces them.
    The Service itself is bound with the `istio.io/use-waypoint` label (`USE_WAYPOINT`)."""
    docs = [copy.deepcopy(d) for d in yaml.safe_load_all(seed(name).read_text()) if d]
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Gateway":
            doc["apiVersion"] = "gateway.networking.k8s.io/v1"
            doc["spec"]["gatewayClassName"] = WAYPOINT_CLASS
            doc["metadata"].setdefault("labels", {})["istio.io/waypoint-for"] = "service"
        elif kind in ("RequestAuthentication", "AuthorizationPolicy"):
            doc["apiVersion"] = "security.istio.io/v1"
            doc["spec"].pop("selector", None)
            doc["spec"]["targetRefs"] = [dict(POLICY_SERVICE)]
        else:
            raise ValueError(f"{name}: no corrected form of a {kind}")
    return docs


def attached_to_service(policy: dict) -> dict:
    """A policy of the suite's own written with a `selector`, attached by `targetRefs` instead."""
    policy = copy.deepcopy(policy)
    policy["spec"].pop("selector", None)
    policy["spec"]["targetRefs"] = [dict(POLICY_SERVICE)]
    return policy
