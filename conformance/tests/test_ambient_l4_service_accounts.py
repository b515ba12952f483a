"""AMBIENT-L4: `source.serviceAccounts` and `notServiceAccounts` at ztunnel (Istio 1.25 and later).

A value is `namespace/name`, or a bare `name` meaning that service account in the POLICY's
namespace, and the name is matched exactly, each character for itself. Istio 1.25.0 to 1.29.1 read
a dot in it as a regular expression's "any character" (CVE-2026-39350, GHSA-9gcg-w975-3rjh), so an
ALLOW of `build.bot` also admitted `build-bot`, and a DENY of it let `build-bot` through; the
dotted and dashed clients here tell the two apart.
"""
from __future__ import annotations

from typing import Callable

import pytest

from conformance import workloads as w
from conformance.tests.l4table import ALLOWED, DENIED, PORT, Step, on_server, run_steps
from conformance.tests.l4world import L4World

DOTTED, DASHED = "build.bot", "build-bot"


def _client(ns: str, service_account: str, app: str, node: str) -> list[dict]:
    """A curl client running as `service_account` (a Deployment name may not hold every such name)."""
    curl = {"name": "curl", "image": w.CURL_IMAGE, "imagePullPolicy": w.PULL_POLICY,
            "command": ["/bin/sleep", "3650d"]}
    deployment = w.deployment(ns, app, [curl], node=node, terminationGracePeriodSeconds=0)
    deployment["spec"]["template"]["spec"]["serviceAccountName"] = service_account
    return [w.service_account(ns, service_account), deployment]


def _from(action: str, field: str, values: Callable[[L4World], list[str]]) -> Callable[[L4World], dict]:
    """A policy of one rule: `action` for sources whose `field` holds `values(world)`."""
    return lambda l4: {"action": action, "rules": [{"from": [{"source": {field: values(l4)}}]}]}


@pytest.mark.features("L4AuthorizationServiceAccounts")
def test_service_accounts_match_exactly_and_a_bare_name_is_the_policys_namespace(l4: L4World):
    """An ALLOW of `serviceAccounts: [<a's namespace>/client-a]` MUST admit client-a only; one of
    `<namespace>/build.bot` MUST admit the pod running as `build.bot` and refuse the one running as
    `build-bot` (a dot is a dot); a DENY of `notServiceAccounts` of it MUST refuse `build-bot`; and a
    DENY of the bare `client-a` names the server's namespace, where no client-a runs, so client-a
    MUST still be admitted."""
    sc = l4.sc
    sc.deploy(_client(l4.a_ns, DOTTED, "dotted", l4.a.node) + _client(l4.a_ns, DASHED, "dashed", l4.a.node),
              l4.a_ns)
    callers = {"dotted": sc.pod(l4.a_ns, "dotted"), "dashed": sc.pod(l4.a_ns, "dashed")}
    for name, pod in (("a", l4.a), ("b", l4.b), *callers.items()):
        sc.expect_allowed(pod, l4.url, f"client {name} before any policy")
    steps = [
        Step("serviceAccounts: [a's ns/client-a]",
             on_server("by-sa", _from("ALLOW", "serviceAccounts", lambda l4: [f"{l4.a_ns}/client-a"])),
             (("b", PORT, DENIED), ("dotted", PORT, DENIED), ("a", PORT, ALLOWED))),
        Step(f"serviceAccounts: [a's ns/{DOTTED}]",
             on_server("by-sa", _from("ALLOW", "serviceAccounts", lambda l4: [f"{l4.a_ns}/{DOTTED}"])),
             (("dashed", PORT, DENIED), ("a", PORT, DENIED), ("dotted", PORT, ALLOWED))),
        Step("the ALLOW removed",
             lambda l4: [w.authorization_policy(l4.server_ns, "by-sa", {}, selector_app="httpbin")], (), delete=True),
        Step(f"DENY notServiceAccounts: [a's ns/{DOTTED}]",
             on_server("deny-sa", _from("DENY", "notServiceAccounts", lambda l4: [f"{l4.a_ns}/{DOTTED}"])),
             (("dashed", PORT, DENIED), ("a", PORT, DENIED), ("dotted", PORT, ALLOWED))),
        Step("DENY serviceAccounts: [client-a] (bare: the server's namespace)",
             on_server("deny-sa", _from("DENY", "serviceAccounts", lambda l4: ["client-a"])),
             (("a", PORT, ALLOWED), ("b", PORT, ALLOWED))),
    ]
    run_steps(l4, "service-accounts", steps, clients=callers)
