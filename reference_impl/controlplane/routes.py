"""HTTP routes for the services a waypoint fronts: HTTPRoutes whose parentRef is a Service (the
Gateway API mesh profile, GAMMA) and Istio VirtualServices, compiled to xds ServiceRoutes.

Done here, once, so the waypoint only walks an ordered list:
- references are resolved (a backendRef naming a Service that does not exist, another namespace's
  Service without a ReferenceGrant, or a port the Service lacks keeps its weight and gets 500);
- the matches of every route bound to a service are ordered by Gateway API's precedence: an Exact
  path, then the longest PathPrefix, then a method, then the most header matches, then the most
  query matches; ties go to the oldest route, then by namespace/name, then rule and match order.
A VirtualService's `http` routes keep their own order (first match wins, as Istio does). A service
bound by any HTTPRoute ignores VirtualServices for the same host.
Only producer routes are handled: a route in another namespace than its parent Service (a consumer
route) is not applied.
"""

from __future__ import annotations

from reference_impl.api.routes import duration_seconds
from reference_impl.xds import Service
from reference_impl.xds.resources import (RouteBackend, RouteEntry, RouteFault, RouteHeaderModifier,
                                          RouteMatch, RouteNameValue, RoutePathModifier, RouteRedirect,
                                          RouteRetry, RouteRewrite, RouteRule, RouteValueMatch,
                                          ServiceRoutes)

from .index import MeshIndex, meta, ns_name

DEFAULT_RETRY_ATTEMPTS = 2          # Istio's, when a retry leaves attempts unset
GATEWAY_ERRORS = (502, 503, 504)    # Envoy's `gateway-error`


def service_routes(index: MeshIndex, services: dict[str, Service],
                   fronted: list[Service]) -> list[ServiceRoutes]:
    """The compiled routes of each service in `fronted` that some route binds."""
    out = []
    for service in fronted:
        compiled = _from_httproutes(index, services, service) or _from_virtualservices(index, services, service)
        if compiled is not None:
            out.append(compiled)
    return out


def _service_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}.{namespace}.svc.cluster.local"


def _age(obj: dict) -> tuple[str, str, str]:
    namespace, name = ns_name(obj)
    return (meta(obj).get("creationTimestamp") or "", namespace, name)


# -- HTTPRoute ---------------------------------------------------------------------------------

def _bound_ports(route: dict, service: Service) -> list[int | None]:
    """The ports of `service` this route's parentRefs bind it to (None: every port)."""
    route_ns, _ = ns_name(route)
    ports = []
    for ref in (route.get("spec") or {}).get("parentRefs") or ():
        if ref.get("kind") != "Service" or ref.get("group", "") not in ("", "core"):
            continue
        if (ref.get("namespace") or route_ns, ref.get("name")) != (service.namespace, service.name):
            continue
        if route_ns != service.namespace:
            continue  # a consumer route: not applied by this mesh
        ports.append(ref.get("port"))
    return ports


def _from_httproutes(index: MeshIndex, services: dict[str, Service], service: Service) -> ServiceRoutes | None:
    bound = []
    for route in index.kind("HTTPRoute"):
        ports = _bound_ports(route, service)
        if ports:
            bound.append((route, None if None in ports else sorted(set(ports))))
    if not bound:
        return None
    rules, keyed = [], []
    for route_order, (route, ports) in enumerate(sorted(bound, key=lambda b: _age(b[0]))):
        namespace, name = ns_name(route)
        for r, rule in enumerate((route.get("spec") or {}).get("rules") or ()):
            rules.append(_httproute_rule(rule, f"HTTPRoute {namespace}/{name} rules[{r}]", namespace, services))
            for m, match in enumerate(rule.get("matches") or [{}]):
                compiled = _match(match)
                keyed.append((_precedence(compiled) + (route_order, r, m),
                              RouteEntry(rule=len(rules) - 1, ports=ports, match=compiled)))
    all_ports = [p for _, p in bound]
    return ServiceRoutes(service=service.key, rules=rules, matches=[e for _, e in sorted(keyed, key=lambda k: k[0])],
                         ports=None if None in all_ports else sorted({p for ps in all_ports for p in ps}))


def _precedence(match: RouteMatch) -> tuple:
    kind_rank = {"Exact": 0, "PathPrefix": 1, "RegularExpression": 2}[match.path_type]
    length = len(match.path.rstrip("/")) if match.path_type == "PathPrefix" else 0
    return (kind_rank, -length, match.method is None, -len(match.headers), -len(match.query_params))


def _match(match: dict) -> RouteMatch:
    path = match.get("path") or {}
    return RouteMatch(
        path_type=path.get("type", "PathPrefix"), path=path.get("value", "/"),
        headers=_first_by_name(match.get("headers"), fold_case=True),
        query_params=_first_by_name(match.get("queryParams"), fold_case=False),
        method=match.get("method"))


def _first_by_name(items, fold_case: bool) -> list[RouteValueMatch]:
    """Gateway API: of several matches for the same name only the first counts."""
    seen, out = set(), []
    for item in items or ():
        key = item["name"].lower() if fold_case else item["name"]
        if key not in seen:
            seen.add(key)
            out.append(RouteValueMatch(name=key, value=item["value"], type=item.get("type", "Exact")))
    return out


def _header_modifier(body: dict | None) -> RouteHeaderModifier | None:
    if body is None:
        return None
    return RouteHeaderModifier(
        set=[RouteNameValue(name=h["name"], value=h["value"]) for h in body.get("set") or ()],
        add=[RouteNameValue(name=h["name"], value=h["value"]) for h in body.get("add") or ()],
        remove=list(body.get("remove") or ()))


def _path_modifier(body: dict) -> RoutePathModifier | None:
    path = body.get("path")
    if not path:
        return None
    key = "replaceFullPath" if path["type"] == "ReplaceFullPath" else "replacePrefixMatch"
    return RoutePathModifier(type=path["type"], value=path[key])


def _httproute_rule(rule: dict, source: str, namespace: str, services: dict[str, Service]) -> RouteRule:
    compiled = RouteRule(source=source)
    for flt in rule.get("filters") or ():
        kind = flt["type"]
        if kind == "RequestHeaderModifier":
            compiled.request_headers = _header_modifier(flt.get("requestHeaderModifier"))
        elif kind == "ResponseHeaderModifier":
            compiled.response_headers = _header_modifier(flt.get("responseHeaderModifier"))
        elif kind == "RequestRedirect":
            body = flt.get("requestRedirect") or {}
            compiled.redirect = RouteRedirect(scheme=body.get("scheme"), hostname=body.get("hostname"),
                                              path=_path_modifier(body), port=body.get("port"),
                                              status_code=body.get("statusCode", 302))
        elif kind == "URLRewrite":
            body = flt.get("urlRewrite") or {}
            compiled.rewrite = RouteRewrite(hostname=body.get("hostname"), path=_path_modifier(body))
    for ref in rule.get("backendRefs") or ():
        compiled.backends.append(_backend(ref, namespace, services))
    timeouts = rule.get("timeouts") or {}
    if timeouts.get("request"):
        compiled.timeout_seconds = duration_seconds(timeouts["request"]) or None
    per_try = duration_seconds(timeouts["backendRequest"]) if timeouts.get("backendRequest") else None
    retry = rule.get("retry")
    if retry is not None:
        attempts = retry.get("attempts")
        compiled.retry = RouteRetry(
            attempts=DEFAULT_RETRY_ATTEMPTS if attempts is None else attempts,
            codes=sorted(set(retry.get("codes") or ())),
            backoff_seconds=duration_seconds(retry["backoff"]) if retry.get("backoff") else 0.025,
            per_try_timeout_seconds=per_try or None)
    elif per_try:
        compiled.retry = RouteRetry(attempts=0, per_try_timeout_seconds=per_try)
    return compiled


def _backend(ref: dict, route_ns: str, services: dict[str, Service]) -> RouteBackend:
    namespace = ref.get("namespace") or route_ns
    name, port, weight = ref["name"], ref.get("port") or 0, ref.get("weight", 1)
    headers = {}
    for flt in ref.get("filters") or ():
        if flt["type"] == "RequestHeaderModifier":
            headers["request_headers"] = _header_modifier(flt.get("requestHeaderModifier"))
        elif flt["type"] == "ResponseHeaderModifier":
            headers["response_headers"] = _header_modifier(flt.get("responseHeaderModifier"))
    def unresolved(why: str) -> RouteBackend:
        return RouteBackend(service=None, port=port, weight=weight, error=why, **headers)
    if ref.get("kind", "Service") != "Service" or ref.get("group", "") not in ("", "core"):
        return unresolved(f"backendRef kind {ref.get('group', '')}/{ref.get('kind')} is not supported")
    if namespace != route_ns:
        return unresolved(f"backendRef {namespace}/{name} is in another namespace and no ReferenceGrant "
                          f"is supported")
    key = _service_key(namespace, name)
    service = services.get(key)
    if service is None:
        return unresolved(f"Service {namespace}/{name} does not exist")
    if str(port) not in service.ports:
        return unresolved(f"Service {namespace}/{name} has no port {port}")
    return RouteBackend(service=key, port=port, weight=weight, **headers)


# -- VirtualService ----------------------------------------------------------------------------

def _vs_hosts(vs: dict) -> set[str]:
    namespace, _ = ns_name(vs)
    out = set()
    for host in (vs.get("spec") or {}).get("hosts") or ():
        parts = host.split(".")
        if len(parts) == 1:
            out.add(_service_key(namespace, host))
        elif len(parts) == 2:
            out.add(_service_key(parts[1], parts[0]))
        elif host.endswith(".svc.cluster.local") and len(parts) == 5:
            out.add(_service_key(parts[1], parts[0]))
    return out


def _string_match(value: dict) -> tuple[str, str]:
    kind = next(k for k in ("exact", "prefix", "regex") if k in value)
    return kind, value[kind]


def _vs_match(match: dict) -> RouteMatch:
    compiled = RouteMatch()
    if match.get("uri"):
        kind, value = _string_match(match["uri"])
        compiled.path_type = {"exact": "Exact", "prefix": "StringPrefix", "regex": "RegularExpression"}[kind]
        compiled.path = value
    else:
        compiled.path_type, compiled.path = "StringPrefix", "/"
    if match.get("method"):
        compiled.method = _string_match(match["method"])[1]
    for key, fold in (("headers", True), ("queryParams", False)):
        out = []
        for name, value in (match.get(key) or {}).items():
            kind, text = _string_match(value)
            out.append(RouteValueMatch(name=name.lower() if fold else name, value=text,
                                       type={"exact": "Exact", "prefix": "Prefix", "regex": "RegularExpression"}[kind]))
        setattr(compiled, "headers" if key == "headers" else "query_params", out)
    return compiled


def _retry_codes(retry_on: str) -> list[int]:
    codes = set()
    for token in (t.strip() for t in retry_on.split(",")):
        if token.isdigit():
            codes.add(int(token))
        elif token == "5xx":
            codes.update(range(500, 600))
        elif token == "gateway-error":
            codes.update(GATEWAY_ERRORS)
    return sorted(codes)


def _percent(owner: dict) -> float:
    pct = owner.get("percentage")
    return float(pct["value"]) if pct else 100.0


def _vs_rule(http: dict, source: str, namespace: str, services: dict[str, Service]) -> RouteRule:
    compiled = RouteRule(source=source)
    destinations = http.get("route") or ()
    for dest in destinations:
        target = dest["destination"]
        hosts = _vs_hosts({"metadata": {"namespace": namespace}, "spec": {"hosts": [target["host"]]}})
        key = next(iter(hosts), None)
        port = (target.get("port") or {}).get("number", 0)
        weight = dest.get("weight", 100 if len(destinations) == 1 else 0)
        if key is None or key not in services:
            compiled.backends.append(RouteBackend(service=None, port=port, weight=weight,
                                                  error=f"host {target['host']} is not a Service of this mesh"))
        else:
            compiled.backends.append(RouteBackend(service=key, port=port, weight=weight))
    if http.get("timeout"):
        compiled.timeout_seconds = duration_seconds(http["timeout"]) or None
    retries = http.get("retries")
    if retries is not None:
        compiled.retry = RouteRetry(
            attempts=retries.get("attempts", DEFAULT_RETRY_ATTEMPTS),
            codes=_retry_codes(retries.get("retryOn", "")),
            per_try_timeout_seconds=duration_seconds(retries["perTryTimeout"]) if retries.get("perTryTimeout") else None)
    fault = http.get("fault")
    if fault:
        delay, abort = fault.get("delay"), fault.get("abort")
        compiled.fault = RouteFault(
            delay_seconds=duration_seconds(delay["fixedDelay"]) if delay else None,
            delay_percent=_percent(delay) if delay else 0.0,
            abort_status=abort["httpStatus"] if abort else None,
            abort_percent=_percent(abort) if abort else 0.0)
    return compiled


def _from_virtualservices(index: MeshIndex, services: dict[str, Service], service: Service) -> ServiceRoutes | None:
    bound = [vs for vs in index.kind("VirtualService") if service.key in _vs_hosts(vs)]
    if not bound:
        return None
    rules, entries = [], []
    for vs in sorted(bound, key=_age):
        namespace, name = ns_name(vs)
        for h, http in enumerate((vs.get("spec") or {}).get("http") or ()):
            rules.append(_vs_rule(http, f"VirtualService {namespace}/{name} http[{h}]", namespace, services))
            for match in http.get("match") or [{}]:
                port = match.get("port")
                entries.append(RouteEntry(rule=len(rules) - 1, ports=None if port is None else [port],
                                          match=_vs_match(match)))
    return ServiceRoutes(service=service.key, rules=rules, matches=entries, ports=None)
