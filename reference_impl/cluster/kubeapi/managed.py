"""Field ownership for server-side apply (metadata.managedFields), as kube-apiserver keeps it:
each manager's Apply entry lists, in the FieldsV1 form (`f:name`, `k:{"name":"app"}` for an
item of a list merged by key, `v:"x"` for a set of scalars), the fields its applied configuration
set; a field another manager applied with a different value is a conflict (409, kubectl:
`Apply failed with 1 conflict: conflict with "other": .spec.replicas`) unless the apply forces,
which takes the field from the other manager.
"""
from __future__ import annotations

import json

from . import patch
from .status import ApiError

# Set by the server, never by an applied configuration.
_NOT_OWNED = {("metadata", "name"), ("metadata", "namespace"), ("metadata", "managedFields"),
              ("metadata", "resourceVersion"), ("metadata", "uid"),
              ("metadata", "creationTimestamp"), ("metadata", "generation")}


def _key(item: dict, key: str) -> str:
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"), sort_keys=True)


def fields_v1(obj: dict) -> dict:
    """The FieldsV1 set of an applied configuration."""
    return _fields({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}, ())


def _fields(value, path: tuple) -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if (*path, k) in _NOT_OWNED:
                continue
            out[f"f:{k}"] = _fields(v, (*path, k)) if isinstance(v, (dict, list)) else {}
        if path and path[-1] in ("labels", "annotations") and out:
            out["."] = {}
        return out
    if isinstance(value, list) and path:
        field = path[-1]
        key = patch._merge_key(field, path[:-1], value)
        if key and all(isinstance(i, dict) and key in i for i in value):
            return {_key(i, key): {".": {}, **_fields(i, (*path, "[]"))} for i in value}
        if field in patch.PRIMITIVE_MERGE_LISTS:
            return {"v:" + json.dumps(i): {} for i in value}
    return {}  # a scalar, or a list replaced whole (atomic)


def leaves(fields: dict, prefix: tuple = ()) -> set[tuple]:
    out = set()
    for name, sub in fields.items():
        if name == ".":
            continue
        path = (*prefix, name)
        children = {k: v for k, v in sub.items() if k != "."}
        out |= leaves(children, path) if children else {path}
    return out


def value_at(obj, path: tuple):
    """The value at a FieldsV1 path, or a marker when it is absent."""
    for step in path:
        kind, _, rest = step.partition(":")
        if kind == "f" and isinstance(obj, dict) and rest in obj:
            obj = obj[rest]
        elif kind == "k" and isinstance(obj, list):
            wanted = json.loads(rest)
            obj = next((i for i in obj if isinstance(i, dict) and
                        all(i.get(k) == v for k, v in wanted.items())), _ABSENT)
        elif kind == "v" and isinstance(obj, list):
            obj = json.loads(rest) if json.loads(rest) in obj else _ABSENT
        else:
            return _ABSENT
    return obj


_ABSENT = object()


def dotted(path: tuple) -> str:
    out = ""
    for step in path:
        kind, _, rest = step.partition(":")
        out += f".{rest}" if kind == "f" else f"[{rest}]"
    return out


def _strip(fields: dict, taken: set[tuple], prefix: tuple = ()) -> dict:
    out = {}
    for name, sub in fields.items():
        path = (*prefix, name)
        if path in taken:
            continue
        children = _strip(sub, taken, path) if sub else sub
        if sub and not {k for k in children if k != "."}:
            continue  # nothing left under it
        out[name] = children
    return out


def released(current: list[dict], manager: str, entry: dict) -> set[tuple]:
    """The fields `manager` applied before and leaves out now that no other manager owns: an apply
    removes them from the object, as kube-apiserver does (a map key dropped from the applied
    configuration goes). Only fields reached through map keys (`f:`); an item of a keyed list or
    set stays until its list is applied whole."""
    previous = next((m for m in current if m.get("manager") == manager and m.get("operation") == "Apply"), None)
    if previous is None:
        return set()
    others = set()
    for other in current:
        if other is not previous:
            others |= leaves(other.get("fieldsV1") or {})
    gone = leaves(previous.get("fieldsV1") or {}) - leaves(entry["fieldsV1"]) - others
    return {path for path in gone if all(part.startswith("f:") for part in path)}


def remove_fields(obj: dict, paths: set[tuple]) -> None:
    """Removes each path's field, and then each map on its way that it left empty (the dropped
    `portLevelMtls` key goes, not only the `mode` under it); top-level fields stay."""
    for path in paths:
        _remove(obj, path, top=True)


def _remove(node, path: tuple, top: bool = False) -> None:
    if not isinstance(node, dict):
        return
    for key in [k for k in node if str(k) == path[0][2:]]:
        if len(path) > 1:
            _remove(node[key], path[1:])
        if len(path) == 1 or (not top and node[key] == {}):
            del node[key]


def apply_entries(current: list[dict], manager: str, entry: dict, applied: dict, live: dict,
                  force: bool, group_resource: str, name: str) -> list[dict]:
    """The managedFields after `manager` applies `applied` to `live`; ApiError 409 on conflicts
    with other managers unless `force` (then their conflicting fields become `manager`'s)."""
    mine = leaves(entry["fieldsV1"])
    conflicts: list[tuple[str, tuple]] = []
    for other in current:
        if other.get("manager") == manager:
            continue
        for path in leaves(other.get("fieldsV1") or {}) & mine:
            if value_at(live, path) != value_at(applied, path):
                conflicts.append((other.get("manager", ""), path))
    if conflicts and not force:
        causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"',
                   "field": dotted(p)} for m, p in conflicts]
        listed = "; ".join(f'conflict with "{m}": {dotted(p)}' for m, p in conflicts)
        plural = "s" if len(conflicts) > 1 else ""
        raise ApiError(409, f"Apply failed with {len(conflicts)} conflict{plural}: {listed}",
                       "Conflict", {"name": name, "group": group_resource.partition(".")[2],
                                    "kind": group_resource.partition(".")[0], "causes": causes})
    taken = {p for _, p in conflicts}
    previous = next((m for m in current if m.get("manager") == manager and
                     m.get("operation") == "Apply"), None)
    if previous is not None and previous.get("fieldsV1") == entry["fieldsV1"] and \
            previous.get("apiVersion") == entry["apiVersion"]:
        entry = previous  # the same apply again is a no-op: its time stays
    out, placed = [], False
    for other in current:
        if other.get("manager") == manager and other.get("operation") == "Apply":
            out.append(entry)  # in its place, so that a repeated apply changes nothing
            placed = True
            continue
        if taken and other.get("manager") != manager:
            other = dict(other, fieldsV1=_strip(other.get("fieldsV1") or {}, taken))
            if not leaves(other["fieldsV1"]):
                continue
        out.append(other)
    return out if placed else out + [entry]
