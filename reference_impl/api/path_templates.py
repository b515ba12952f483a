"""Istio's path templates in AuthorizationPolicy `paths` (Envoy's uri_template matcher).

A `paths` value holding `{*}` or `{**}` is an Envoy URI template (istio/api Operation.paths):
validated here at apply, matched by reference_impl.policy at the waypoint.
"""

from __future__ import annotations

import re


class PathTemplateError(ValueError):
    """A path template Istio refuses; the message says which part and why."""


# Envoy's uri_template (extensions/path/match/uri_template): the characters a path glob may
# span (RFC 3986 pchar, without `/`); `{*}` is one or more of them, `{**}` also spans `/`.
_PCHAR = r"[A-Za-z0-9\-._~%!$&'()+,;:@=]"
PATH_TEMPLATE_OPERATORS = ("{*}", "{**}")


def is_path_template(pattern: str) -> bool:
    """Istio reads a `paths` value holding `{*}` or `{**}` as an Envoy URI template."""
    return any(op in pattern for op in PATH_TEMPLATE_OPERATORS)


def path_template_regex(pattern: str) -> re.Pattern[str]:
    """The regex of a path template; PathTemplateError when Istio would refuse it (a `*`, `{` or `}`
    outside an operator, other characters in an operator's segment, `{**}` not the last)."""
    segments = pattern.split("/")
    out, seen_double = [], False
    for segment in segments:
        if segment in PATH_TEMPLATE_OPERATORS:
            if seen_double:
                raise PathTemplateError(f"path template {pattern!r}: {{**}} must be its last operator")
            seen_double = segment == "{**}"
            out.append(f"{_PCHAR}+" if segment == "{*}" else f"(?:{_PCHAR}|/)*")
        elif any(c in segment for c in "*{}"):
            raise PathTemplateError(f"path template {pattern!r}: segment {segment!r} mixes an operator "
                                    "with other characters, or uses `*`, `{` or `}` outside {*} / {**}")
        else:
            out.append(re.escape(segment))
    return re.compile("/".join(out))
