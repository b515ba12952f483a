"""Validation of the HTTP routing kinds: Gateway API HTTPRoute (v1.2, the GAMMA mesh profile) and
Istio's VirtualService (networking.istio.io/v1, the parts a waypoint applies).

Each problem is one ManifestError naming the field (`spec.rules[0].filters[1].requestRedirect.
statusCode: ...`) and what to do. The control plane (controlplane/routes.py) compiles from the
same objects and relies on these checks (durations parse, filter types are known, ...).
"""

from __future__ import annotations

import re

from .checker import Checker, describe

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
PATH_MATCH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_MATCH_TYPES = ("Exact", "RegularExpression")
PATH_MODIFIER_TYPES = ("ReplaceFullPath", "ReplacePrefixMatch")
REDIRECT_CODES = (301, 302, 303, 307, 308)
REDIRECT_SCHEMES = ("http", "https")
FILTER_TYPES = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")
UNSUPPORTED_FILTERS = ("RequestMirror", "ExtensionRef", "CORS")
BACKEND_FILTER_TYPES = ("RequestHeaderModifier", "ResponseHeaderModifier")

HTTPROUTE_SPEC = ("parentRefs", "hostnames", "rules")
PARENT_REF = ("group", "kind", "namespace", "name", "sectionName", "port")
HTTPROUTE_RULE = ("name", "matches", "filters", "backendRefs", "timeouts", "retry",
                  "sessionPersistence")
HTTPROUTE_MATCH = ("path", "headers", "queryParams", "method")
BACKEND_REF = ("group", "kind", "name", "namespace", "port", "weight", "filters")
FILTER = ("type", "requestHeaderModifier", "responseHeaderModifier", "requestRedirect", "urlRewrite",
          "requestMirror", "extensionRef", "cors")
HEADER_MODIFIER = ("set", "add", "remove")
REDIRECT = ("scheme", "hostname", "path", "port", "statusCode")
REWRITE = ("hostname", "path")
PATH_MODIFIER = ("type", "replaceFullPath", "replacePrefixMatch")
TIMEOUTS = ("request", "backendRequest")
RETRY = ("attempts", "codes", "backoff")

# Gateway API's Duration (GEP-2257) is `^([0-9]{1,5}(h|m|s|ms)){1,4}$`; Istio's durations are Go's,
# which also allow fractions (`0.5s`). Both are accepted here.
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|ms|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_seconds(text: str) -> float:
    """Seconds in a duration such as `1s`, `500ms`, `1m30s` (ValueError if it is none)."""
    if not isinstance(text, str) or not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def _duration(check: Checker, mapping: dict, key: str, path) -> float | None:
    value = check.get(mapping, key, path, str, hint="write a duration such as 1s or 500ms")
    if value is None:
        return None
    try:
        return duration_seconds(value)
    except ValueError:
        check.fail((*path, key), f"{value!r} is not a duration", "write a duration such as 1s, 500ms or 1m30s")


def _regex(check: Checker, value: str, field) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        check.fail(field, f"{value!r} is not a regular expression ({exc})", "fix the pattern")


# -- HTTPRoute ---------------------------------------------------------------------------------

def httproute(check: Checker, obj: dict, spec) -> None:
    spec = spec if spec is not None else {}
    path = ("spec",)
    check.known(spec, path, HTTPROUTE_SPEC)
    for ppath, ref in check.items(spec, "parentRefs", path):
        check.known(ref, ppath, PARENT_REF)
        check.get(ref, "name", ppath, str, required=True, hint="name the parent Gateway or Service")
        for key in ("group", "kind", "namespace", "sectionName"):
            check.get(ref, key, ppath, str)
        check.port(ref, "port", ppath)
    check.strings(spec, "hostnames", path)
    for rpath, rule in check.items(spec, "rules", path):
        check.known(rule, rpath, HTTPROUTE_RULE)
        for mpath, match in check.items(rule, "matches", rpath):
            _match(check, match, mpath)
        filters = _filters(check, rule, rpath, FILTER_TYPES)
        redirects = [f for f in filters if f.get("type") == "RequestRedirect"]
        rewrites = [f for f in filters if f.get("type") == "URLRewrite"]
        if redirects and rewrites:
            check.fail((*rpath, "filters"), "RequestRedirect and URLRewrite cannot be used together",
                       "keep one of them")
        for bpath, backend in check.items(rule, "backendRefs", rpath):
            check.known(backend, bpath, BACKEND_REF)
            check.get(backend, "name", bpath, str, required=True, hint="name the backend Service")
            kind = check.get(backend, "kind", bpath, str) or "Service"
            check.get(backend, "group", bpath, str)
            check.get(backend, "namespace", bpath, str)
            check.port(backend, "port", bpath, required=kind == "Service")
            weight = check.get(backend, "weight", bpath, int)
            if weight is not None and not 0 <= weight <= 1_000_000:
                check.fail((*bpath, "weight"), f"{weight} is out of range", "use 0 to 1000000")
            _filters(check, backend, bpath, BACKEND_FILTER_TYPES)
        if redirects and rule.get("backendRefs"):
            check.fail((*rpath, "backendRefs"), "a rule that redirects sends nothing to a backend",
                       "remove backendRefs from the rule with the RequestRedirect filter")
        timeouts = check.get(rule, "timeouts", rpath, dict)
        if timeouts is not None:
            tpath = (*rpath, "timeouts")
            check.known(timeouts, tpath, TIMEOUTS)
            request = _duration(check, timeouts, "request", tpath)
            backend = _duration(check, timeouts, "backendRequest", tpath)
            if request and backend and backend > request:
                check.fail((*tpath, "backendRequest"), "is longer than timeouts.request",
                           "make backendRequest at most request")
        retry, ypath = _retry(check, rule, "retry", rpath, RETRY)
        if retry is not None:
            codes = check.get(retry, "codes", ypath, list) or []
            for i, code in enumerate(codes):
                if not isinstance(code, int) or isinstance(code, bool) or not 400 <= code <= 599:
                    check.fail((*ypath, "codes", i), f"{describe(code)} is not an HTTP status 400-599",
                               "list status codes such as 500 or 503")
            _duration(check, retry, "backoff", ypath)


def _retry(check: Checker, owner: dict, key: str, path, fields) -> tuple[dict | None, tuple]:
    """The retry settings at owner[key] (HTTPRoute `retry`, VirtualService `retries`): known
    fields only and a non-negative `attempts`; with their path."""
    retry = check.get(owner, key, path, dict)
    ypath = (*path, key)
    if retry is not None:
        check.known(retry, ypath, fields)
        attempts = check.get(retry, "attempts", ypath, int)
        if attempts is not None and attempts < 0:
            check.fail((*ypath, "attempts"), f"{attempts} is negative", "use 0 or more retries")
    return retry, ypath


def _match(check: Checker, match: dict, mpath) -> None:
    check.known(match, mpath, HTTPROUTE_MATCH)
    match_path = check.get(match, "path", mpath, dict)
    if match_path is not None:
        ppath = (*mpath, "path")
        check.known(match_path, ppath, ("type", "value"))
        kind = check.enum(match_path, "type", ppath, PATH_MATCH_TYPES, default="PathPrefix")
        value = check.get(match_path, "value", ppath, str)
        if value is not None:
            if kind == "RegularExpression":
                _regex(check, value, (*ppath, "value"))
            elif not value.startswith("/"):
                check.fail((*ppath, "value"), f"{value!r} does not start with '/'",
                           "write an absolute path such as /ip")
    check.enum(match, "method", mpath, HTTP_METHODS)
    for key in ("headers", "queryParams"):
        for hpath, header in check.items(match, key, mpath):
            check.known(header, hpath, ("type", "name", "value"))
            check.get(header, "name", hpath, str, required=True, hint="name the header or parameter")
            value = check.get(header, "value", hpath, str, required=True, hint="give the value to match")
            if check.enum(header, "type", hpath, VALUE_MATCH_TYPES) == "RegularExpression":
                _regex(check, value, (*hpath, "value"))


def _filters(check: Checker, owner: dict, path, allowed: tuple[str, ...]) -> list[dict]:
    out = []
    for fpath, flt in check.items(owner, "filters", path):
        check.known(flt, fpath, FILTER)
        kind = check.get(flt, "type", fpath, str, required=True, hint=f"use one of {', '.join(allowed)}")
        if kind in UNSUPPORTED_FILTERS:
            check.fail((*fpath, "type"), f"filter {kind} is not supported by this mesh",
                       f"use one of {', '.join(allowed)}")
        if kind not in allowed:
            check.fail((*fpath, "type"), f"unknown filter type {kind!r}", f"use one of {', '.join(allowed)}")
        key = kind[0].lower() + kind[1:] if kind != "URLRewrite" else "urlRewrite"
        body = check.get(flt, key, fpath, dict, required=True, hint=f"add {key} with the filter's settings")
        bpath = (*fpath, key)
        if kind.endswith("HeaderModifier"):
            header_modifier(check, body, bpath)
        elif kind == "RequestRedirect":
            check.known(body, bpath, REDIRECT)
            check.enum(body, "scheme", bpath, REDIRECT_SCHEMES)
            check.get(body, "hostname", bpath, str)
            check.port(body, "port", bpath)
            code = check.get(body, "statusCode", bpath, int)
            if code is not None and code not in REDIRECT_CODES:
                check.fail((*bpath, "statusCode"), f"{code} is not a redirect status",
                           f"use one of {', '.join(map(str, REDIRECT_CODES))}")
            _path_modifier(check, body, bpath)
        else:
            check.known(body, bpath, REWRITE)
            check.get(body, "hostname", bpath, str)
            _path_modifier(check, body, bpath)
        out.append(flt)
    return out


def header_modifier(check: Checker, body: dict, path) -> None:
    check.known(body, path, HEADER_MODIFIER)
    for key in ("set", "add"):
        for hpath, header in check.items(body, key, path):
            check.known(header, hpath, ("name", "value"))
            check.get(header, "name", hpath, str, required=True, hint="name the header")
            check.get(header, "value", hpath, str, required=True, hint="give the header's value")
    check.strings(body, "remove", path, non_empty_values=True)


def _path_modifier(check: Checker, body: dict, path) -> None:
    modifier = check.get(body, "path", path, dict)
    if modifier is None:
        return
    mpath = (*path, "path")
    check.known(modifier, mpath, PATH_MODIFIER)
    kind = check.enum(modifier, "type", mpath, PATH_MODIFIER_TYPES, required=True)
    key = "replaceFullPath" if kind == "ReplaceFullPath" else "replacePrefixMatch"
    value = check.get(modifier, key, mpath, str, required=True, hint=f"add {key} (a path such as /new)")
    if not value.startswith("/"):
        check.fail((*mpath, key), f"{value!r} does not start with '/'", "write an absolute path")


# -- VirtualService (networking.istio.io/v1): hosts, http[] with match, route, fault, timeout, retries --

VS_SPEC = ("hosts", "gateways", "http", "tcp", "tls", "exportTo")
VS_HTTP = ("name", "match", "route", "redirect", "rewrite", "timeout", "retries", "fault", "headers",
           "mirror", "mirrorPercentage", "corsPolicy", "delegate", "directResponse")
VS_MATCH = ("name", "uri", "method", "headers", "queryParams", "ignoreUriCase", "port")
VS_STRING_MATCH = ("exact", "prefix", "regex")
VS_ROUTE = ("destination", "weight", "headers")
VS_DESTINATION = ("host", "subset", "port")
VS_RETRIES = ("attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities")
VS_FAULT = ("delay", "abort")
VS_DELAY = ("fixedDelay", "percentage", "percent")
VS_ABORT = ("httpStatus", "percentage")
VS_UNSUPPORTED_HTTP = ("redirect", "rewrite", "mirror", "mirrorPercentage", "corsPolicy", "delegate",
                       "directResponse")


def string_match(check: Checker, value, field) -> tuple[str, str]:
    """An Istio StringMatch: exactly one of exact / prefix / regex."""
    if not isinstance(value, dict):
        check.fail(field, f"expected a mapping, got {describe(value)}", "write {exact: /x}, {prefix: /x} or {regex: ...}")
    check.known(value, field, VS_STRING_MATCH)
    present = [k for k in VS_STRING_MATCH if k in value]
    if len(present) != 1:
        check.fail(field, "needs exactly one of exact, prefix, regex", "write e.g. {prefix: /api}")
    text = check.get(value, present[0], field, str, required=True)
    if present[0] == "regex":
        _regex(check, text, (*field, "regex"))
    return present[0], text


def virtualservice(check: Checker, obj: dict, spec) -> None:
    if spec is None:
        check.fail(("spec",), "required field is missing", "add a spec with hosts and http routes")
    path = ("spec",)
    check.known(spec, path, VS_SPEC)
    if not check.strings(spec, "hosts", path, non_empty_values=True):
        check.fail((*path, "hosts"), "required field is missing", "list the service hosts it routes (e.g. [reviews])")
    for key in ("tcp", "tls"):
        if spec.get(key):
            check.fail((*path, key), f"{key} routes are not supported by this mesh", "route HTTP with spec.http")
    for hpath, route in check.items(spec, "http", path):
        check.known(route, hpath, VS_HTTP)
        for key in VS_UNSUPPORTED_HTTP:
            if route.get(key) is not None:
                check.fail((*hpath, key), f"{key} is not supported by this mesh",
                           "use an HTTPRoute for redirects and rewrites")
        for mpath, match in check.items(route, "match", hpath):
            check.known(match, mpath, VS_MATCH)
            if match.get("uri") is not None:
                string_match(check, match["uri"], (*mpath, "uri"))
            if match.get("method") is not None:
                string_match(check, match["method"], (*mpath, "method"))
            for key in ("headers", "queryParams"):
                for name, value in (check.get(match, key, mpath, dict) or {}).items():
                    string_match(check, value, (*mpath, key, name))
            check.port(match, "port", mpath)
        routes = check.items(route, "route", hpath)
        for rpath, dest in routes:
            check.known(dest, rpath, VS_ROUTE)
            destination = check.get(dest, "destination", rpath, dict, required=True,
                                    hint="add destination: {host: <service>}")
            dpath = (*rpath, "destination")
            check.known(destination, dpath, VS_DESTINATION)
            check.get(destination, "host", dpath, str, required=True, hint="name the destination service")
            if destination.get("subset") is not None:
                check.fail((*dpath, "subset"), "subsets (DestinationRule) are not supported by this mesh",
                           "route to a Service per version instead")
            port = check.get(destination, "port", dpath, dict)
            if port is not None:
                check.known(port, (*dpath, "port"), ("number",))
                check.port(port, "number", (*dpath, "port"), required=True)
            weight = check.get(dest, "weight", rpath, int)
            if weight is not None and not 0 <= weight <= 100:
                check.fail((*rpath, "weight"), f"{weight} is out of range", "use 0 to 100")
        _duration(check, route, "timeout", hpath)
        retries, ypath = _retry(check, route, "retries", hpath, VS_RETRIES)
        if retries is not None:
            _duration(check, retries, "perTryTimeout", ypath)
            check.get(retries, "retryOn", ypath, str)
        fault = check.get(route, "fault", hpath, dict)
        if fault is not None:
            fpath = (*hpath, "fault")
            check.known(fault, fpath, VS_FAULT)
            delay = check.get(fault, "delay", fpath, dict)
            if delay is not None:
                dpath = (*fpath, "delay")
                check.known(delay, dpath, VS_DELAY)
                if _duration(check, delay, "fixedDelay", dpath) is None:
                    check.fail((*dpath, "fixedDelay"), "required field is missing", "add fixedDelay: 1s")
                _percentage(check, delay, dpath)
            abort = check.get(fault, "abort", fpath, dict)
            if abort is not None:
                apath = (*fpath, "abort")
                check.known(abort, apath, VS_ABORT)
                status = check.get(abort, "httpStatus", apath, int, required=True, hint="add httpStatus: 503")
                if not 200 <= status <= 599:
                    check.fail((*apath, "httpStatus"), f"{status} is not an HTTP status", "use 200-599")
                _percentage(check, abort, apath)
            if delay is None and abort is None:
                check.fail(fpath, "needs delay or abort", "add fault.delay or fault.abort")


def _percentage(check: Checker, owner: dict, path) -> None:
    pct = check.get(owner, "percentage", path, dict)
    if pct is None:
        return
    check.known(pct, (*path, "percentage"), ("value",))
    value = pct.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
        check.fail((*path, "percentage", "value"), f"{describe(value)} is not a percentage", "use 0 to 100")
