"""The AMBIENT-L4 authorization tables: a step applies (or removes) policies, then each
(client, port, expected outcome) of it MUST hold; `run_steps` runs a table against an L4World.
Modelled on the Gateway API suite's mesh tests: data first, one helper that waits for
eventual consistency."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable

from conformance import workloads as w
from conformance.scenario import Scenario
from conformance.targets.base import PodRef
from conformance.tests.l4world import L4World

ALLOWED, DENIED = "allowed", "denied"
PORT, ALT = "port", "alt port"           # the server's service port and its second port
Policies = Callable[[L4World], list[dict]]


@dataclass(frozen=True)
class Step:
    """Apply (or, with `delete`, remove) `policies`, then each (client, port, outcome) MUST hold."""
    label: str
    policies: Policies
    expect: tuple[tuple[str, str, str], ...]
    delete: bool = False


def on_server(name: str, spec: Callable[[L4World], dict]) -> Policies:
    """One policy selecting the server's pods (`app: httpbin`)."""
    return lambda l4: [w.authorization_policy(l4.server_ns, name, spec(l4), selector_app="httpbin")]


def allow_from(**source) -> Callable[[L4World], dict]:
    """ALLOW from a source; values naming `a`/`b` are resolved against the world."""
    return lambda l4: {"action": "ALLOW", "rules": [{"from": [{"source": _resolve(l4, source)}]}]}


def deny_from(**source) -> Callable[[L4World], dict]:
    return lambda l4: {"action": "DENY", "rules": [{"from": [{"source": _resolve(l4, source)}]}]}


def allow_to(**operation) -> Callable[[L4World], dict]:
    return lambda l4: {"action": "ALLOW", "rules": [{"to": [{"operation": operation}]}]}


_KIND = {"principals": "principal", "notPrincipals": "principal", "namespaces": "namespace",
         "notNamespaces": "namespace", "ipBlocks": "address", "notIpBlocks": "address"}


def common_cidr(*ips: str) -> str:
    """The longest prefix that holds every address: a block, not an address, both clients are in."""
    addrs = [ipaddress.ip_address(ip) for ip in ips]
    prefix = addrs[0].max_prefixlen
    while prefix > 0 and len({ipaddress.ip_network(f"{a}/{prefix}", strict=False) for a in addrs}) > 1:
        prefix -= 1
    return str(ipaddress.ip_network(f"{addrs[0]}/{prefix}", strict=False))


def _resolve(l4: L4World, source: dict) -> dict:
    """`principals=["a"]` -> client-a's principal, `namespaces=["a"]` -> its namespace,
    `ipBlocks=["a"]` -> its address as a /32, `ipBlocks=["ab"]` -> the CIDR holding both clients
    (and the same for the `not*` fields)."""
    of = {"principal": {"a": l4.principal_a, "b": l4.principal_b},
          "namespace": {"a": l4.a_ns, "b": l4.b_ns},
          "address": {"a": f"{l4.a.ip}/32", "b": f"{l4.b.ip}/32", "ab": common_cidr(l4.a.ip, l4.b.ip)}}
    return {field: [of[_KIND[field]][client] for client in clients] for field, clients in source.items()}


def run_steps(l4: L4World, table: str, steps, clients: dict[str, PodRef] | None = None) -> None:
    """Each step in turn: its policies applied (or deleted), then every expected outcome
    converged. `clients` adds callers to client-a (`a`) and client-b (`b`)."""
    sc: Scenario = l4.sc
    callers = {"a": l4.a, "b": l4.b, **(clients or {})}
    urls = {PORT: l4.url, ALT: w.service_url("httpbin", l4.server_ns, port=w.ALT_PORT)}
    for step in steps:
        (sc.delete if step.delete else sc.apply)(step.policies(l4))
        for client, port, outcome in step.expect:
            what = f"{table}, {step.label}: client {client} to the {port}"
            expect = sc.expect_allowed if outcome == ALLOWED else sc.expect_denied
            expect(callers[client], urls[port], what)
