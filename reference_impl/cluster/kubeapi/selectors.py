"""Label and field selectors as the API server parses them (`app=x,tier!=db`, `env in (a,b)`,
`!legacy`, `metadata.name=x`, `status.phase!=Running`)."""
from __future__ import annotations

import re

from .status import ApiError

_SET = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_matcher(text: str | None):
    """A predicate over a labels dict; ApiError 400 for a selector that does not parse."""
    if not text:
        return lambda labels: True
    tests = []
    for part in _split(text):
        m = _SET.match(part)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            tests.append(lambda l, k=key, vs=values, neg=(op == "notin"):
                         (l.get(k) in vs) != neg if (k in l or not neg) else True)
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, _, value = (s.strip() for s in part.partition(op))
                if not key:
                    break
                if op == "!=":
                    tests.append(lambda l, k=key, v=value: l.get(k) != v)
                else:
                    tests.append(lambda l, k=key, v=value: l.get(k) == v)
                break
        else:
            if part.startswith("!"):
                tests.append(lambda l, k=part[1:].strip(): k not in l)
            elif re.fullmatch(r"[A-Za-z0-9_./-]+", part):
                tests.append(lambda l, k=part: k in l)
            else:
                raise ApiError(400, f"unable to parse requirement: {part!r}")
            continue
        if not key:
            raise ApiError(400, f"unable to parse requirement: {part!r}")
    return lambda labels: all(t(labels or {}) for t in tests)


def _field(obj: dict, path: str):
    value = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def field_matcher(text: str | None):
    """A predicate over an object for `fieldSelector` (equality and inequality on any field
    path, as the API server allows for the fields it indexes)."""
    if not text:
        return lambda obj: True
    tests = []
    for part in _split(text):
        for op in ("!=", "==", "="):
            if op in part:
                path, _, value = (s.strip() for s in part.partition(op))
                break
        else:
            raise ApiError(400, f"invalid field selector {part!r}: write it as field=value")

        def test(obj, path=path, value=value, negate=(op == "!=")):
            actual = _field(obj, path)
            actual = "" if actual is None else str(actual)
            return (actual == value) != negate
        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)
