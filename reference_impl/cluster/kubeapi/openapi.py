"""OpenAPI v3 as kubectl reads it: `/openapi/v3` lists one document per group-version, and each
document's PATCH operations carry `x-kubernetes-group-version-kind` and the `fieldValidation`
query parameter, which is how kubectl learns that the server validates strictly itself
(`kubectl apply --validate=strict`, the default). The documents hold no component schemas: for
the built-in kinds kubectl then builds its strategic merge patches from its compiled-in types
(the real list-merge keys), and for the CRDs it sends JSON merge patches, as with a CRD whose
schema preserves unknown fields. `/openapi/v2` is not served (kubectl 1.27+ does not need it).
"""
from __future__ import annotations

import hashlib
import json

from .resources import Resource, ResourceTable
from .status import ApiError

_QUERY_PARAMS = ("fieldValidation", "fieldManager", "dryRun", "force")


def _gv_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _operation(r: Resource, group: str, version: str, verb: str) -> dict:
    params = [{"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
              for p in _QUERY_PARAMS]
    return {"operationId": f"{verb}{r.kind}", "tags": [_gv_key(group, version)],
            "parameters": params, "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": {"group": group, "version": version,
                                                "kind": r.kind}}


def document(table: ResourceTable, group: str, version: str) -> dict | None:
    resources = table.in_version(group, version)
    if not resources:
        return None
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths = {}
    for r in resources:
        base = f"{prefix}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else \
            f"{prefix}/{r.plural}"
        item = {"get": _operation(r, group, version, "get")}
        if r.writable:
            item["patch"] = _operation(r, group, version, "patch")
            item["put"] = _operation(r, group, version, "put")
            item["delete"] = _operation(r, group, version, "delete")
        paths[f"{base}/{{name}}"] = item
        collection = {"get": _operation(r, group, version, "list")}
        if r.writable:
            collection["post"] = _operation(r, group, version, "post")
        paths[base] = collection
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": {}}}


def _hash(doc: dict) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


def route(table: ResourceTable, parts: list[str], query: dict):
    if parts == ["v3"]:
        out = {}
        for group, versions in table.groups().items():
            for version in versions:
                doc = document(table, group, version)
                key = _gv_key(group, version)
                out[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={_hash(doc)}"}
        return 200, {"paths": out}, "application/json"
    if parts[:1] == ["v3"] and len(parts) >= 3:
        if parts[1] == "api":
            group, version = "", parts[2]
        elif parts[1] == "apis" and len(parts) == 4:
            group, version = parts[2], parts[3]
        else:
            group, version = None, None
        doc = document(table, group, version) if group is not None else None
        if doc is not None:
            return 200, doc, "application/json"
    raise ApiError(404, "the server could not find the requested resource")
