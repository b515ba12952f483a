"""The three PATCH types of the API: strategic merge patch (with the real list-merge keys of the
built-in kinds, and kubectl's `$patch` / `$setElementOrder` / `$retainKeys` /
`$deleteFromPrimitiveList` directives), JSON merge patch (RFC 7386) and JSON patch (RFC 6902).
Server-side apply (merge of an applied configuration) lives in apply.py on top of these.
"""
from __future__ import annotations

import copy

from .status import ApiError

# field name -> merge key, as `patchMergeKey` in k8s.io/api (the lists not named here are
# replaced whole, as those without a patch strategy are).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "hostAliases": "ip", "ownerReferences": "uid",
    "conditions": "type", "topologySpreadConstraints": "topologyKey", "resourceClaims": "name",
    "readinessGates": "conditionType", "secrets": "name",
}
PRIMITIVE_MERGE_LISTS = {"finalizers"}


def _merge_key(field: str, path: tuple, items: list) -> str | None:
    if field == "ports":
        # ContainerPort merges on containerPort, ServicePort on port.
        return "containerPort" if "containers" in path or "initContainers" in path else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(original, patch, path: tuple = ()):
    """`original` with `patch` applied as a strategic merge patch (a new value)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(original, dict):
        original = {}
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(original)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            merged = strategic_merge(current, value, (*path, key))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(current, value, key, (*path, key))
        else:
            result[key] = copy.deepcopy(value)
    for key, order in patch.items():
        if key.startswith("$setElementOrder/") and isinstance(order, list):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = _ordered(result[field], order, _merge_key(field, path, order))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current, patch: list, field: str, path: tuple) -> list:
    if field in PRIMITIVE_MERGE_LISTS:
        out = list(current or [])
        return out + [v for v in patch if v not in out]
    key = _merge_key(field, path[:-1], patch)
    if key is None or not isinstance(current, list) or \
            not all(isinstance(p, dict) for p in patch):
        if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
            return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
        return copy.deepcopy(patch)
    if any(p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if "$patch" not in p]
    out = copy.deepcopy(current)
    for item in patch:
        if key not in item:
            raise ApiError(422, f"{'.'.join(path)}: every element of a strategic merge patch "
                                f"needs its merge key {key!r}")
        index = next((i for i, c in enumerate(out) if isinstance(c, dict)
                      and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append(strategic_merge({}, item, path))
        else:
            out[index] = strategic_merge(out[index], item, path)
    return out


def _ordered(items: list, order: list, key: str | None) -> list:
    if key is None:
        return items
    wanted = [o.get(key) if isinstance(o, dict) else o for o in order]
    rank = {v: i for i, v in enumerate(wanted)}
    return sorted(items, key=lambda it: rank.get(it.get(key) if isinstance(it, dict) else it,
                                                 len(rank)))


def json_merge(original, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"JSON patch path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts: list[str]):
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        else:
            doc = doc[part]
    return doc


def json_patch(original, operations) -> dict:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise ApiError(400, "a JSON patch is a list of operations")
    doc = copy.deepcopy(original)
    for op in operations:
        try:
            kind, parts = op["op"], _pointer(op["path"])
            if kind in ("move", "copy"):
                value = copy.deepcopy(_walk(doc, _pointer(op["from"])))
                if kind == "move":
                    doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
                kind, op = "add", dict(op, value=value)
            if kind == "test":
                if _walk(doc, parts) != op["value"]:
                    raise ApiError(422, f"JSON patch test failed at {op['path']}")
                continue
            parent, last = _walk(doc, parts[:-1]), parts[-1]
            if kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind in ("add", "replace"):
                value = copy.deepcopy(op["value"])
                if isinstance(parent, list):
                    if last == "-":
                        parent.append(value)
                    elif kind == "add":
                        parent.insert(int(last), value)
                    else:
                        parent[int(last)] = value
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = value
            else:
                raise ApiError(422, f"unknown JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"JSON patch operation {op!r} cannot be applied: "
                                f"{type(exc).__name__} {exc}") from None
    return doc
