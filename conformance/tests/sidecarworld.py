"""Workloads the SIDECAR-INTEROP tests share: namespaces of each data-plane mode (sidecar by
`istio-injection=enabled`, ambient, none) and small helpers for the policies they apply."""
from __future__ import annotations

from conformance import workloads as w
from conformance.scenario import Scenario

INJECTION = {"istio-injection": "enabled"}
INJECT = "sidecar.istio.io/inject"   # the pod label that opts one pod in or out
PROXY = "istio-proxy"
OTHER = "someone-else"   # a service account no pod runs as: a policy naming it admits nobody here


def forbidden(outcome) -> bool:
    """An L7 deny at the sidecar: HTTP 403 (Envoy's RBAC filter), never a reset or a timeout."""
    return outcome == 403


def sidecar_namespace(sc: Scenario, role: str) -> str:
    return sc.namespace(role, ambient=False, labels=INJECTION)


def allow_principals(sc: Scenario, ns: str, name: str, principals: list[str], app: str = "httpbin") -> None:
    sc.apply([w.authorization_policy(ns, name, {"action": "ALLOW",
                                                "rules": [{"from": [{"source": {"principals": principals}}]}]},
                                     selector_app=app)])
