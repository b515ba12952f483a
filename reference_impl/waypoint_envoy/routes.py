"""A service's HTTP routes (l7.httproute.RouteTable, bound from the snapshot's HTTPRoute and
VirtualService rules) -> the Envoy routes of its inner listener. Pure.

The control plane already ordered the entries by Gateway API precedence; Envoy takes the first
route that matches, as the Python waypoint does, and answers 404 when none does. A backendRef
naming a Service that does not exist is a cluster that does not exist, answered 500
(`cluster_not_found_response_code`), as Gateway API requires.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..l7.httproute import WELL_KNOWN_PORTS, Entry, RouteTable
from ..xds.resources import RouteHeaderModifier, RouteMatch, RouteRule

T = "type.googleapis.com/"
FAULT_FILTER = "envoy.filters.http.fault"
REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
                  308: "PERMANENT_REDIRECT"}
MISSING_BACKEND = "missing-backend|"


def _path(match: RouteMatch) -> dict:
    if match.path_type == "Exact":
        return {"path": match.path}
    if match.path_type == "PathPrefix":
        prefix = match.path.rstrip("/")
        return {"path_separated_prefix": prefix} if prefix else {"prefix": "/"}
    if match.path_type == "StringPrefix":
        return {"prefix": match.path}
    return {"safe_regex": {"regex": match.path}}


def _value(kind: str, value: str) -> dict:
    if kind == "Exact":
        return {"exact": value}
    if kind == "Prefix":
        return {"prefix": value}
    return {"safe_regex": {"regex": value}}


def _match(match: RouteMatch) -> dict:
    out: dict[str, Any] = _path(match)
    headers = [{"name": h.name, "string_match": _value(h.type, h.value)} for h in match.headers]
    if match.method:
        headers.append({"name": ":method", "string_match": {"exact": match.method}})
    if headers:
        out["headers"] = headers
    if match.query_params:
        out["query_parameters"] = [{"name": q.name, "string_match": _value(q.type, q.value)}
                                   for q in match.query_params]
    return out


def _headers(modifier: RouteHeaderModifier | None, direction: str) -> dict:
    """Gateway API's HeaderModifier: remove, set (replaces), add (one more value)."""
    if modifier is None:
        return {}
    out: dict[str, Any] = {}
    add = [{"header": {"key": h.name, "value": h.value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
           for h in modifier.set]
    add += [{"header": {"key": h.name, "value": h.value}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
            for h in modifier.add]
    if add:
        out[f"{direction}_headers_to_add"] = add
    if modifier.remove:
        out[f"{direction}_headers_to_remove"] = list(modifier.remove)
    return out


def _rewrite(rule: RouteRule, match: RouteMatch) -> dict:
    out: dict[str, Any] = {}
    rewrite = rule.rewrite
    if rewrite is None:
        return out
    if rewrite.hostname:
        out["host_rewrite_literal"] = rewrite.hostname
    if rewrite.path is not None:
        out["regex_rewrite"] = _path_rewrite(rewrite.path.type, rewrite.path.value, match)
    return out


def _path_rewrite(kind: str, value: str, match: RouteMatch) -> dict:
    if kind == "ReplaceFullPath":
        return {"pattern": {"regex": "^.*$"}, "substitution": value}
    prefix = match.path.rstrip("/") if match.path_type in ("PathPrefix", "StringPrefix") else ""
    head = value.rstrip("/")
    if not head:   # /prefix -> /, /prefix/rest -> /rest
        return {"pattern": {"regex": f"^{re.escape(prefix)}/?(.*)$"}, "substitution": r"/\1"}
    return {"pattern": {"regex": f"^{re.escape(prefix)}(/.*)?$"}, "substitution": head + r"\1"}


def _redirect(rule: RouteRule, match: RouteMatch, port: int) -> dict:
    r = rule.redirect
    out: dict[str, Any] = {"response_code": REDIRECT_CODES.get(r.status_code, "FOUND")}
    if r.scheme:
        out["scheme_redirect"] = r.scheme
    if r.hostname:
        out["host_redirect"] = r.hostname
    # Gateway API: a port given, else the scheme's well-known one when a scheme is given, else the
    # request's; left out of the Location when it is the scheme's well-known port.
    scheme = r.scheme or "http"
    final = r.port if r.port is not None else (WELL_KNOWN_PORTS[scheme] if r.scheme else port)
    if final != WELL_KNOWN_PORTS.get(scheme):
        out["port_redirect"] = final
    if r.path is not None:
        if r.path.type == "ReplaceFullPath":
            out["path_redirect"] = r.path.value
        else:
            out["regex_rewrite"] = _path_rewrite(r.path.type, r.path.value, match)
    return out


def _fault(rule: RouteRule) -> dict | None:
    f = rule.fault
    if f is None:
        return None
    config: dict[str, Any] = {"@type": T + "envoy.extensions.filters.http.fault.v3.HTTPFault"}

    def percent(p: float) -> dict:
        return {"numerator": int(round(p * 10000)), "denominator": "MILLION"}
    if f.delay_seconds is not None:
        config["delay"] = {"fixed_delay": f"{f.delay_seconds}s", "percentage": percent(f.delay_percent)}
    if f.abort_status is not None:
        config["abort"] = {"http_status": f.abort_status, "percentage": percent(f.abort_percent)}
    return config


def envoy_routes(table: RouteTable, port: int, cluster_for: Callable[[Any, int], str]) -> list[dict]:
    """The routes of one service port. `cluster_for(service, port)` names (and creates) the
    cluster of a backend service port."""
    routes = []
    for entry in table.entries:
        if entry.ports is not None and port not in entry.ports:
            continue
        routes.append(_route(entry, port, cluster_for))
    return routes


def _route(entry: Entry, port: int, cluster_for) -> dict:
    rule = entry.rule.spec
    route: dict[str, Any] = {"match": _match(entry.match), "name": rule.source,
                             **_headers(rule.request_headers, "request"),
                             **_headers(rule.response_headers, "response")}
    fault = _fault(rule)
    if fault is not None:
        route["typed_per_filter_config"] = {FAULT_FILTER: fault}
    if rule.redirect is not None:
        route["redirect"] = _redirect(rule, entry.match, port)
        return route
    weighted = []
    for i, b in enumerate(entry.rule.backends):
        if b.weight <= 0:
            continue
        name = cluster_for(b.service, b.port or port) if b.service is not None else f"{MISSING_BACKEND}{i}"
        weighted.append({"name": name, "weight": b.weight, **_headers(b.request_headers, "request"),
                         **_headers(b.response_headers, "response")})
    if not weighted:
        route["direct_response"] = {"status": 500}
        return route
    action: dict[str, Any] = {"weighted_clusters": {"clusters": weighted}, "cluster_not_found_response_code":
                              "INTERNAL_SERVER_ERROR", "timeout": f"{rule.timeout_seconds or 0}s",
                              **_rewrite(rule, entry.match)}
    if rule.retry is not None:
        retry: dict[str, Any] = {"retry_on": "retriable-status-codes", "num_retries": rule.retry.attempts,
                                 "retriable_status_codes": list(rule.retry.codes),
                                 "retry_back_off": {"base_interval": f"{rule.retry.backoff_seconds}s"}}
        if rule.retry.per_try_timeout_seconds:
            retry["per_try_timeout"] = f"{rule.retry.per_try_timeout_seconds}s"
        action["retry_policy"] = retry
    route["route"] = action
    return route


def fault_filter() -> dict:
    """The fault filter, idle unless a route configures it (typed_per_filter_config)."""
    return {"name": FAULT_FILTER, "typed_config": {"@type": T + "envoy.extensions.filters.http.fault.v3.HTTPFault"}}
