"""Workloads the AMBIENT-L4 tests share: an httpbin server and two clients with distinct
identities, each in its own fresh namespace, the server on one node and the clients on another
(so every call crosses the node-to-node link)."""
from __future__ import annotations

from dataclasses import dataclass

from conformance import workloads as w
from conformance.scenario import Scenario
from conformance.targets.base import Pod


@dataclass
class L4World:
    sc: Scenario
    server_ns: str
    a_ns: str
    b_ns: str
    server: Pod
    a: Pod
    b: Pod

    @property
    def url(self) -> str:
        return w.service_url("httpbin", self.server_ns)

    def alt_url(self) -> str:
        return w.service_url("httpbin", self.server_ns, port=w.ALT_PORT)

    @property
    def principal_a(self) -> str:
        return w.principal(self.a_ns, "client-a")

    @property
    def principal_b(self) -> str:
        return w.principal(self.b_ns, "client-b")

    def policy(self, name: str, spec: dict) -> None:
        self.sc.apply([w.authorization_policy(self.server_ns, name, spec, selector_app="httpbin")])


def spread_nodes(sc: Scenario) -> tuple[str | None, str | None]:
    return sc.spread_nodes()


def build_l4_world(sc: Scenario, alt_port: bool = False, server_ambient: bool = True) -> L4World:
    server_node, client_node = spread_nodes(sc)
    srv, a_ns, b_ns = (sc.namespace("srv", ambient=server_ambient), sc.namespace("cla"), sc.namespace("clb"))
    sc.apply(w.httpbin(srv, node=server_node, alt_port=alt_port)
             + w.client(a_ns, "client-a", node=client_node) + w.client(b_ns, "client-b", node=client_node))
    sc.ready(srv, a_ns, b_ns)
    return L4World(sc, srv, a_ns, b_ns, sc.pod(srv, "httpbin"), sc.pod(a_ns, "client-a"), sc.pod(b_ns, "client-b"))


