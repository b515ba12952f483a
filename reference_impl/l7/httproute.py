"""HTTP routing of one request at the waypoint: the first matching route entry of the destination
service decides (the control plane already ordered them by Gateway API precedence), then its
rule's filters apply: request / response header modifiers, RequestRedirect (a local reply),
URLRewrite, a weighted backend pick with the backend's own header modifier, and VirtualService
fault injection. Timeouts and retries are carried to l7/retry.py, which forwards.

Pure: no sockets. `bind` turns the snapshot's xds ServiceRoutes into RouteTables (resolving
backend services); `route` decides one request.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ..xds.resources import (RouteHeaderModifier, RouteMatch, RouteRedirect, RouteRetry, RouteRule,
                             RoutePathModifier, ServiceRoutes)
from .config import L7Config, Service
from .routing import Destination, Router, Upstream

NO_ROUTE_BODY = b""                          # Envoy's 404 for a request no route matches has no body
FAULT_ABORT_BODY = b"fault filter abort"     # Envoy's fault filter
WELL_KNOWN_PORTS = {"http": 80, "https": 443}


class RouteConfigError(ValueError):
    """Route config the proxy cannot use; the message names the field."""


@dataclass(frozen=True)
class Backend:
    service: Service | None      # None: unresolved (500), see `error`
    port: int                    # 0: the port the request was sent to
    weight: int
    request_headers: RouteHeaderModifier | None
    response_headers: RouteHeaderModifier | None
    error: str | None


@dataclass(frozen=True)
class Rule:
    spec: RouteRule
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class Entry:
    rule: Rule
    ports: frozenset[int] | None
    match: RouteMatch
    path_regex: re.Pattern | None
    value_regexes: dict[str, re.Pattern]   # "h:<name>" / "q:<name>" -> compiled pattern


@dataclass(frozen=True)
class RouteTable:
    service: str
    entries: tuple[Entry, ...]
    ports: frozenset[int] | None         # ports some route binds (None: every port)

    def routes_port(self, port: int) -> bool:
        return self.ports is None or port in self.ports


def bind(resources: list[ServiceRoutes], services: dict[str, Service], where: str = "routes") -> dict[str, RouteTable]:
    """service key -> RouteTable; RouteConfigError naming the field for what cannot be used."""
    tables = {}
    for i, res in enumerate(resources):
        rules = []
        for r, rule in enumerate(res.rules):
            backends = []
            for b, ref in enumerate(rule.backends):
                service = services.get(ref.service) if ref.service else None
                if ref.service and service is None:
                    raise RouteConfigError(f"{where}[{i}].rules[{r}].backends[{b}].service: "
                                           f"{ref.service!r} is not among `allServices`")
                backends.append(Backend(service, ref.port, ref.weight, ref.request_headers, ref.response_headers,
                                        ref.error))
            rules.append(Rule(rule, tuple(backends)))
        entries = []
        for m, entry in enumerate(res.matches):
            if not 0 <= entry.rule < len(rules):
                raise RouteConfigError(f"{where}[{i}].matches[{m}].rule: {entry.rule} names no rule")
            try:
                entries.append(_entry(rules[entry.rule], entry.ports, entry.match))
            except re.error as exc:
                raise RouteConfigError(f"{where}[{i}].matches[{m}]: bad regular expression: {exc}") from None
        tables[res.service] = RouteTable(res.service, tuple(entries),
                                         None if res.ports is None else frozenset(res.ports))
    return tables


def _entry(rule: Rule, ports, match: RouteMatch) -> Entry:
    path_regex = re.compile(match.path) if match.path_type == "RegularExpression" else None
    regexes = {}
    for prefix, items in (("h:", match.headers), ("q:", match.query_params)):
        for item in items:
            if item.type == "RegularExpression":
                regexes[prefix + item.name] = re.compile(item.value)
    return Entry(rule, None if ports is None else frozenset(ports), match, path_regex, regexes)


# -- matching ----------------------------------------------------------------------------------

def path_matches(match: RouteMatch, path: str, regex: re.Pattern | None = None) -> bool:
    if match.path_type == "Exact":
        return path == match.path
    if match.path_type == "PathPrefix":
        # By path segment; a trailing '/' of the prefix is ignored: /abc matches /abc, /abc/, /abc/d, not /abcd
        prefix = match.path.rstrip("/")
        return not prefix or path == prefix or path.startswith(prefix + "/")
    if match.path_type == "StringPrefix":
        return path.startswith(match.path)
    return (regex or re.compile(match.path)).fullmatch(path) is not None


def _value_matches(kind: str, expected: str, actual: str | None, regex: re.Pattern | None) -> bool:
    if actual is None:
        return False
    if kind == "Exact":
        return actual == expected
    if kind == "Prefix":
        return actual.startswith(expected)
    return regex.fullmatch(actual) is not None


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """All values of a header joined with ',' (as Envoy matches them); names compare case-insensitively."""
    values = [v for n, v in headers if n.lower() == name.lower()]
    return ",".join(values) if values else None


def entry_matches(entry: Entry, method: str, path: str, query: str, headers: list[tuple[str, str]]) -> bool:
    match = entry.match
    if not path_matches(match, path, entry.path_regex):
        return False
    if match.method is not None and method != match.method:
        return False
    for h in match.headers:
        if not _value_matches(h.type, h.value, header_value(headers, h.name), entry.value_regexes.get("h:" + h.name)):
            return False
    if match.query_params:
        params = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(name, value)   # the first value of a repeated parameter counts
        for q in match.query_params:
            if not _value_matches(q.type, q.value, params.get(q.name), entry.value_regexes.get("q:" + q.name)):
                return False
    return True


# -- filters -----------------------------------------------------------------------------------

def modify_headers(headers: list[tuple[str, str]], modifier: RouteHeaderModifier | None) -> list[tuple[str, str]]:
    """Gateway API's HeaderModifier on (lower-case name, value) pairs: remove, then set (replaces
    every value), then add (one more value; the receiver sees them joined with ',')."""
    if modifier is None:
        return headers
    drop = {name.lower() for name in modifier.remove} | {h.name.lower() for h in modifier.set}
    out = [(n, v) for n, v in headers if n.lower() not in drop]
    out += [(h.name.lower(), h.value) for h in modifier.set]
    out += [(h.name.lower(), h.value) for h in modifier.add]
    return out


def rewrite_path(path: str, modifier: RoutePathModifier, match: RouteMatch) -> str:
    if modifier.type == "ReplaceFullPath":
        return modifier.value
    prefix = match.path.rstrip("/") if match.path_type in ("PathPrefix", "StringPrefix") else ""
    rest = path[len(prefix):] if path.startswith(prefix) else path
    replaced = modifier.value.rstrip("/") + rest
    if not replaced.startswith("/"):
        replaced = "/" + replaced
    return replaced


def split_host(host: str, default_port: int) -> tuple[str, int]:
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else default_port


def redirect_location(redirect: RouteRedirect, match: RouteMatch, host: str, path: str, query: str,
                      request_port: int) -> str:
    """The Location of a RequestRedirect (Gateway API v1.2): with no port given, a scheme given
    implies its well-known port, else the port the request was sent to; the port is left out
    when it is the scheme's well-known one."""
    scheme = redirect.scheme or "http"
    hostname, _ = split_host(host, request_port)
    hostname = redirect.hostname or hostname
    if redirect.port is not None:
        port = redirect.port
    elif redirect.scheme is not None:
        port = WELL_KNOWN_PORTS[scheme]
    else:
        port = request_port
    authority = hostname if WELL_KNOWN_PORTS.get(scheme) == port else f"{hostname}:{port}"
    new_path = rewrite_path(path, redirect.path, match) if redirect.path else path
    return f"{scheme}://{authority}{new_path}{'?' + query if query else ''}"


# -- the decision ------------------------------------------------------------------------------

@dataclass
class RouteAction:
    """How a routed request is forwarded (l7/retry.py), or the delay before its local reply."""

    source: str
    target: str
    response_headers: RouteHeaderModifier | None = None
    backend_response_headers: RouteHeaderModifier | None = None   # the picked backendRef's own filter
    timeout: float | None = None
    retry: RouteRetry | None = None
    delay: float | None = None
    repick: Callable[[], Upstream | None] | None = None   # another endpoint of the backend, for a retry

    def modify_response(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The answer's headers through the backendRef's ResponseHeaderModifier, then the rule's (as
        Envoy applies a weighted cluster's headers before the route's)."""
        return modify_headers(modify_headers(headers, self.backend_response_headers), self.response_headers)


@dataclass
class Routed:
    status: int | None                # a local reply (redirect, 404, 500, fault abort); None: forward
    reason: str
    action: RouteAction
    backend: Service | None = None
    backend_port: int = 0
    upstream: Upstream | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reply_headers: list[tuple[str, str]] = field(default_factory=list)


def _pick(backends: tuple[Backend, ...], rng: random.Random) -> Backend | None:
    weights = [b.weight for b in backends]
    if not backends or sum(weights) == 0:
        return None
    return rng.choices(backends, weights=weights)[0]


def route(tables: dict[str, RouteTable], service_key: str | None, port: int, method: str, target: str,
          headers: list[tuple[str, str]], rng: random.Random | None = None) -> Routed | None:
    """The routing decision for a request to `service_key` on `port`; None when no route binds them."""
    table = tables.get(service_key) if service_key else None
    if table is None or not table.routes_port(port):
        return None
    rng = rng or random   # the process's PRNG: a new random.Random() per request seeds from getrandom()
    path, _, query = target.partition("?")
    entry = next((e for e in table.entries
                  if (e.ports is None or port in e.ports) and entry_matches(e, method, path, query, headers)), None)
    if entry is None:
        return Routed(404, f"no route of {service_key} matches {method} {path}",
                      RouteAction(source="-", target=target), body=NO_ROUTE_BODY)
    rule = entry.rule.spec
    action = RouteAction(source=rule.source, target=target, response_headers=rule.response_headers,
                         timeout=rule.timeout_seconds or None, retry=rule.retry)
    fault = rule.fault
    if fault is not None and fault.delay_seconds and rng.random() * 100 < fault.delay_percent:
        action.delay = fault.delay_seconds
    if fault is not None and fault.abort_status and rng.random() * 100 < fault.abort_percent:
        return Routed(fault.abort_status, f"{rule.source}: fault abort", action, body=FAULT_ABORT_BODY)
    host = header_value(headers, "host") or ""
    if rule.redirect is not None:
        location = redirect_location(rule.redirect, entry.match, host, path, query, port)
        return Routed(rule.redirect.status_code, f"{rule.source}: redirect to {location}", action,
                      reply_headers=[("location", location)])
    headers = modify_headers(headers, rule.request_headers)
    if rule.rewrite is not None:
        if rule.rewrite.path is not None:
            action.target = rewrite_path(path, rule.rewrite.path, entry.match) + (f"?{query}" if query else "")
        if rule.rewrite.hostname:
            headers = [(n, v) for n, v in headers if n != "host"] + [("host", rule.rewrite.hostname)]
    backend = _pick(entry.rule.backends, rng)
    if backend is None:
        return Routed(500, f"{rule.source}: no backend to send to", action)
    if backend.service is None:
        return Routed(500, f"{rule.source}: {backend.error}", action)
    headers = modify_headers(headers, backend.request_headers)
    action.backend_response_headers = backend.response_headers
    return Routed(None, f"{rule.source} -> {backend.service.hostname}", action, backend=backend.service,
                  backend_port=backend.port or port, headers=headers)


def apply_routes(config: L7Config, router: Router, destination: Destination, method: str, target: str,
                 headers: list[tuple[str, str]], rng: random.Random | None = None) -> Routed | None:
    """`route` for a request tunnelled to `destination`, with the backend's endpoint picked (and a
    way to pick another one for a retry)."""
    service = destination.service
    routed = route(config.routes, service.key if service else None, destination.port, method, target,
                   headers, rng)
    if routed is None or routed.status is not None:
        return routed
    backend = Destination(routed.backend.vips[0] if routed.backend.vips else "", routed.backend_port,
                          service=routed.backend)
    routed.action.repick = lambda: router.pick(config, backend)
    routed.upstream = routed.action.repick()
    return routed
